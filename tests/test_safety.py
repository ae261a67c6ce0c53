"""Nothing in mcl unpickles files: checkpoints are safetensors, arrays are loaded with
``allow_pickle=False``, and a ``torch.load`` must pass ``weights_only=True``."""

from __future__ import annotations

import re
from pathlib import Path

import mcl

ROOT = Path(mcl.__file__).parent
UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)"), "unsafe torch.load"),
    (re.compile(r"\bjoblib\.load\("), "joblib.load"),
]


def test_no_module_unpickles_what_it_reads():
    sources = sorted(ROOT.rglob("*.py"))
    assert len(sources) > 20  # the scan really covers the package
    found = [
        f"{p.relative_to(ROOT.parent)}:{n}: {what}"
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        for rx, what in UNSAFE
        if rx.search(line)
    ]
    assert not found, found


def test_the_scan_catches_what_it_should():
    bad = ["torch.load(f)", "np.load(f, allow_pickle=True)", "pickle.loads(b)"]
    good = ["torch.load(f, weights_only=True)", "np.load(f, allow_pickle=False)"]
    assert all(any(rx.search(s) for rx, _ in UNSAFE) for s in bad)
    assert not any(rx.search(s) for s in good for rx, _ in UNSAFE)


def test_only_the_checked_adapter_loader_loads_non_strictly():
    """``load_state_dict(strict=False)`` silently accepts a checkpoint with missing tensors (an
    empty file resumed "fine"): the one call, in ContinualMethod.load_adapter_state, checks the
    keys and shapes itself first (tests/test_resume.py)."""
    import ast

    calls = []
    for p in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and any(
                k.arg == "strict" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in node.keywords
            ):
                name = getattr(node.func, "attr", getattr(node.func, "id", "?"))
                calls.append(f"{p.relative_to(ROOT.parent)}:{name}")
    assert calls == ["mcl/methods/base.py:load_state_dict"], calls
