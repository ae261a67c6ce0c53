"""One place that checks a composed config before any work: every value's type and range and
every path, so a mistake stops the run in one line naming the key, the value and what is allowed
(``mcl.train`` exits with code 2) instead of a traceback minutes later.

``python -m mcl.train`` calls :func:`precheck` on its command line *before* Hydra starts, so a
bad value leaves no run directory behind and costs no model import; every run (a Hydra job, a
multirun job, ``mcl.train.run`` from Python) calls :func:`validate` again on its own config.

Rules, in order: the explicit ranges below (``RULES``); then, where the defaults are known (the
command line without its value overrides), a value whose default is a number must be a finite
number and one whose default is a boolean must be ``true``/``false``; then the paths (the run
directory's parents and the data, cache and log directories must be creatable, a local model
path and a real benchmark's ``bench.json`` must exist and parse); then the accelerator.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from mcl.config import CONF_DIR, GROUPS, ConfigError

# seed_everything takes [0, 2**32 - 1]; task t of a run is seeded with seed * 1000 + t
MAX_SEED = (2**32 - 1 - 999) // 1000
PRECISIONS = (
    "32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16",
    "16-true", "bf16-true", "transformer-engine", "transformer-engine-float16",
)  # fmt: skip
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")
_MISSING = object()


def show(value) -> str:
    """A value as the command line would spell it."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value and re.fullmatch(r"[\w./~:@+-]+", value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, hi: int | None = None, null: str | None = None) -> Callable:
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    if null:
        allowed += f", or null ({null})"

    def check(v, cfg):
        if v is None and null:
            return None
        ok = _is_int(v) and v >= lo and (hi is None or v <= hi)
        return None if ok else allowed

    return check


def _num(lo: float, hi: float | None = None, lo_open=False, null: str | None = None) -> Callable:
    lo_txt = f"> {lo:g}" if lo_open else f">= {lo:g}"
    allowed = f"a finite number {lo_txt}" + (f" and <= {hi:g}" if hi is not None else "")
    if null:
        allowed += f", or null ({null})"

    def check(v, cfg):
        if v is None and null:
            return None
        if not _is_num(v) or not math.isfinite(v):
            return allowed
        if (v <= lo if lo_open else v < lo) or (hi is not None and v > hi):
            return allowed
        return None

    return check


def _bool(v, cfg):
    return None if isinstance(v, bool) else "true or false"


def _steps(v, cfg):
    if v is None:
        if _get(cfg, "train.epochs") is None:
            return "an integer >= 1 (optimizer steps per task); null only with train.epochs set"
        return None
    return None if _is_int(v) and v >= 1 else "an integer >= 1 (optimizer steps per task), or null"


def _tasks(v, cfg):
    allowed = "a non-empty list of distinct task names, e.g. [color,count]"
    if not isinstance(v, (list, ListConfig)) or not len(v):
        return allowed
    names = list(v)
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        return allowed
    return None


def _unseen(v, cfg):
    allowed = "a list of distinct task names, not in bench.tasks (may be empty: [])"
    if v is None:
        return None
    if not isinstance(v, (list, ListConfig)):
        return allowed
    names = list(v)
    if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        return allowed
    tasks = _get(cfg, "bench.tasks")
    if isinstance(tasks, (list, ListConfig)) and set(names) & set(tasks):
        return allowed
    return None


def _accelerator(v, cfg):
    return None if v in ACCELERATORS else f"one of {', '.join(ACCELERATORS)}"


def _precision(v, cfg):
    return None if str(v) in PRECISIONS else f"one of {', '.join(PRECISIONS)}"


def _devices(v, cfg):
    if v == "auto" or (_is_int(v) and (v >= 1 or v == -1)):
        return None
    if isinstance(v, (list, ListConfig)) and len(v) and all(_is_int(d) and d >= 0 for d in v):
        return None
    return "an integer >= 1, -1 (all), auto, or a list of device indices"


RULES: dict[str, Callable] = {
    "seed": _int(0, MAX_SEED),
    "resume": _bool,
    "progress": _bool,
    "train.steps": _steps,
    "train.epochs": _int(1, null="train.steps sets the budget"),
    "train.batch_size": _int(1),
    "train.global_batch": _int(1, null="no gradient accumulation"),
    "train.num_workers": _int(0),
    "train.checkpoint_every": _int(1, null="task boundaries only"),
    "train.threads": _int(1, null="automatic"),
    "eval.batch_size": _int(1),
    "data.max_bad_share": _num(0, 1),
    "bench.tasks": _tasks,
    "bench.unseen": _unseen,
    "hardware.accelerator": _accelerator,
    "hardware.devices": _devices,
    "hardware.precision": _precision,
    "hardware.num_nodes": _int(1),
    "method.lr": _num(0, lo_open=True),
    "method.weight_decay": _num(0),
    "method.warmup_ratio": _num(0, 1),
    "method.min_lr_ratio": _num(0, 1),
}
# any other method key ending in "lr" (parts_lr, key_lr, ae_lr, ...): a positive rate or null
_LR = _num(0, lo_open=True, null="the method's default")


def _get(cfg, key: str, default=None):
    """The value at ``key`` (interpolations resolved), ``default`` when absent."""
    try:
        v = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"{key}: cannot be resolved ({_one_line(e)})") from None
    return default if v is _MISSING else v


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("See https://", "full_key:", "object_type"))]
    return "; ".join(lines) or type(e).__name__


def _leaves(node, prefix: str = ""):
    """``(dotted key, value)`` for every leaf of a config (lists count as leaves)."""
    if isinstance(node, DictConfig):
        for k in list(node):
            key = f"{prefix}{k}"
            if key == "hydra":
                continue
            try:
                child = node._get_node(k)
                value = node[k] if not OmegaConf.is_missing(node, k) else None
            except Exception:
                continue
            if isinstance(value, DictConfig):
                yield from _leaves(value, key + ".")
            else:
                yield key, (value if child is not None else None)


def validate(cfg: DictConfig, defaults: DictConfig | None = None, check_gpu: bool = True) -> None:
    """Raise :class:`ConfigError` (one line: key, value, what is allowed) on the first bad value
    of ``cfg``. ``defaults``: the same config without the command line's value overrides; with
    it, every numeric or boolean key is type-checked too."""
    for key, rule in RULES.items():
        v = _get(cfg, key, _MISSING)
        if v is _MISSING:
            continue
        allowed = rule(v, cfg)
        if allowed:
            raise ConfigError(f"{key}={show(v)}: expected {allowed}")
    method = _get(cfg, "method")
    if isinstance(method, DictConfig):
        for k in list(method):
            if k.endswith("lr") and f"method.{k}" not in RULES:
                v = _get(cfg, f"method.{k}")
                allowed = _LR(v, cfg)
                if allowed:
                    raise ConfigError(f"method.{k}={show(v)}: expected {allowed}")
    if defaults is not None:
        _check_types(cfg, defaults)
    _check_paths(cfg)
    if check_gpu:
        _check_accelerator(cfg)


def _check_types(cfg: DictConfig, defaults: DictConfig) -> None:
    for key, v in _leaves(cfg):
        if key in RULES or v is None:
            continue
        try:
            d = _get(defaults, key, _MISSING)
        except ConfigError:  # a default that resolves only inside Hydra's run (${hydra:...})
            continue
        if d is _MISSING or d is None:
            continue
        if isinstance(d, bool) and not isinstance(v, bool):
            raise ConfigError(f"{key}={show(v)}: expected true or false (default {show(d)})")
        if _is_num(d):
            if not _is_num(v):
                raise ConfigError(f"{key}={show(v)}: expected a number (default {show(d)})")
            if not math.isfinite(v) and math.isfinite(d):
                raise ConfigError(f"{key}={show(v)}: expected a finite number (default {show(d)})")


# ---------------------------------------------------------------------------------- paths
def unwritable(path: str | os.PathLike) -> str | None:
    """Why ``path`` (a directory, existing or not) cannot be written, or None. Tries for real
    (a probe file, or creating the first missing directory) and removes what it made, so it
    also catches read-only file systems, which ``os.access`` misses for root."""
    p = Path(path).expanduser().absolute()
    missing = None
    while not p.exists():
        missing, p = p, p.parent
    if not p.is_dir():
        return f"{p} is a file, not a directory"
    try:
        if missing is not None:
            os.mkdir(missing)
            os.rmdir(missing)
        else:
            fd, probe = tempfile.mkstemp(dir=p, prefix=".mcl-probe-")
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        return f"{e.strerror or e} ({e.filename or p})"
    return None


def _check_dir(key: str, value) -> None:
    if value in (None, ""):
        return
    if key in ("paths.cache_dir", "paths.data_dir") and Path(str(value)).expanduser().is_dir():
        return  # an existing cache may be a read-only, prepared one: it is only read then
    why = unwritable(str(value))
    if why:
        how = {
            "paths.log_dir": "set paths.log_dir=... or MCL_LOGS",
            "paths.data_dir": "set paths.data_dir=... or MCL_DATA",
            "paths.cache_dir": "set paths.cache_dir=... or MCL_CACHE",
        }.get(key, f"set {key}=..., or paths.log_dir=... / MCL_LOGS")
        raise ConfigError(
            f"{key}={show(str(value))}: not writable: {why}; expected a directory mcl can "
            f"create files in ({how})"
        )


def _check_paths(cfg: DictConfig) -> None:
    paths = _get(cfg, "paths")
    if not isinstance(paths, DictConfig):
        return
    for key in ("paths.log_dir", "paths.cache_dir"):
        _check_dir(key, _get(cfg, key))
    out = _output_dir(cfg)
    if out is not None:
        _check_dir("paths.output_dir", out)
    root = _get(cfg, "bench.root")
    source = _get(cfg, "bench.source", "auto")
    real = bool(root) and (source == "real" or Path(str(root)).expanduser().joinpath(
        "bench.json").exists())  # fmt: skip
    if real:
        spec = _check_bench_json(Path(str(root)).expanduser())
        names = [t["name"] for t in spec.get("tasks", []) + spec.get("unseen", [])]
        _check_task_names(cfg, names, f"{Path(str(root)) / 'bench.json'}")
        _check_splits(cfg, spec, str(root))
    elif source == "real" and not root:
        name = _get(cfg, "bench.name", "bench")
        raise ConfigError(f"bench.root=null: bench.source=real needs bench.root=/path/to/{name}")
    else:
        _check_dir("paths.data_dir", _get(cfg, "paths.data_dir"))
        twin = _get(cfg, "bench.synthetic.twin", "synth")
        if twin is not None and isinstance(_get(cfg, "bench.synthetic"), DictConfig):
            from mcl.data.synthetic import twins

            try:
                names = list(twins.recipes(str(twin)))
            except (ValueError, ModuleNotFoundError):
                raise ConfigError(
                    f"bench.synthetic.twin={show(twin)}: expected one of {', '.join(twins.TWINS)}"
                ) from None
            _check_task_names(cfg, names, f"the {twin} twin")
    model_path = _get(cfg, "model.path")
    local = isinstance(model_path, str) and model_path.startswith(("/", "./", "../", "~"))
    if local and not Path(model_path).expanduser().exists():
        raise ConfigError(
            f"model.path={show(model_path)}: the path does not exist; download the checkpoint "
            "and set model.path (expected a local Hugging Face checkpoint directory)"
        )


def _check_task_names(cfg: DictConfig, known: list[str], where: str) -> None:
    for key in ("bench.tasks", "bench.unseen"):
        names = _get(cfg, key) or []
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"{key}={show(names)}: {', '.join(map(str, unknown))} not in {where}; expected "
                f"names from: {', '.join(known)}"
            )


def _output_dir(cfg: DictConfig):
    """``paths.output_dir`` when it is set to a path (not Hydra's run dir, checked elsewhere)."""
    node = _get(cfg, "paths")
    raw = node._get_node("output_dir") if isinstance(node, DictConfig) else None
    if raw is None:
        return None
    text = raw._value()
    if isinstance(text, str) and "hydra:" in text:
        return None
    return _get(cfg, "paths.output_dir")


def _check_bench_json(root: Path) -> dict:
    path = root / "bench.json"
    where = f"bench.root={show(str(root))}"
    if not root.is_dir():
        raise ConfigError(f"{where}: no such directory; expected a directory with bench.json")
    if not path.exists():
        raise ConfigError(
            f"{where}: no bench.json there; expected a converted benchmark "
            "(`python -m mcl.data.prepare --bench B --root DIR --out DIR`) or "
            "bench.source=synthetic"
        )
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: {path} is not UTF-8 ({e.reason}); re-convert it") from None
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{where}: {path} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg}); "
            "re-convert the benchmark"
        ) from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror or e}") from None
    problem = _bench_spec_problem(spec)
    if problem:
        raise ConfigError(f"{where}: {path} {problem}; re-convert the benchmark")
    return spec


def _check_splits(cfg: DictConfig, spec: dict, root: str) -> None:
    """Every task the run trains has train and test shards, every unseen task test shards: a
    split that was never converted stops here, before the base model is built."""
    by_name = {t["name"]: t for t in spec.get("tasks", []) + spec.get("unseen", [])}
    tasks = list(_get(cfg, "bench.tasks") or [])
    need = [(n, s) for n in tasks for s in ("train", "test")]
    need += [(n, "test") for n in _get(cfg, "bench.unseen") or []]
    lacking = [f"{n} {s}" for n, s in need if n in by_name and s not in by_name[n]]
    if lacking:
        more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
        named = ", ".join(lacking[:3]) + more
        raise ConfigError(
            f"bench.root={show(root)}: bench.json has no shards for {named}; "
            f"convert every split with `python -m mcl.data.prepare --bench {spec['name']} "
            f"--root <the unpacked benchmark> --out {root}`"
        )


def _bench_spec_problem(spec) -> str | None:
    if not isinstance(spec, dict):
        return "is not a JSON object"
    if not isinstance(spec.get("name"), str):
        return 'has no "name" string'
    for part in ("tasks", "unseen"):
        tasks = spec.get(part, [])
        if not isinstance(tasks, list) or (part == "tasks" and not tasks):
            return f'has no "{part}" list' if part == "tasks" else '"unseen" is not a list'
        for t in tasks:
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                return f'has a "{part}" entry without a "name"'
            for split in ("train", "test"):
                s = t.get(split)
                if s is not None and (
                    not isinstance(s, dict)
                    or not isinstance(s.get("shards"), list)
                    or not all(isinstance(f, str) for f in s["shards"])
                ):
                    return f'task "{t["name"]}": "{split}" has no "shards" list of file names'
    return None


def _check_accelerator(cfg: DictConfig) -> None:
    acc = _get(cfg, "hardware.accelerator")
    if acc not in ("gpu", "cuda"):
        return
    import torch  # only when a GPU is asked for

    if not torch.cuda.is_available():
        raise ConfigError(
            f"hardware.accelerator={acc}: no CUDA GPU is visible on this machine "
            "(torch.cuda.is_available() is False); expected cpu here: hardware=cpu (or "
            "hardware=ddp_cpu, fsdp_cpu)"
        )
    devices, have = _get(cfg, "hardware.devices"), torch.cuda.device_count()
    want = len(devices) if isinstance(devices, (list, ListConfig)) else devices
    if _is_int(want) and want > have:
        raise ConfigError(
            f"hardware.devices={show(devices)}: {have} GPU(s) visible; expected at most {have}"
        )


# ---------------------------------------------------------------------------- command line
HYDRA_FLAGS = ("-m", "--multirun")
MAX_COMPOSES = 24


def precheck(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose the config of ``python -m mcl.train ARGV`` as Hydra will and validate it, every
    value of a multirun's comma sweeps included, without creating anything. Command lines with
    other Hydra flags (``--cfg``, ``--help``, ...) are left to Hydra (jobs validate themselves)."""
    flags = [a for a in argv if a.startswith("-")]
    if any(f not in HYDRA_FLAGS for f in flags):
        return
    multirun = bool(flags)
    args = [a for a in argv if not a.startswith("-")]
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise ConfigError(f"cannot parse the command line: {_one_line(e)}") from None
    fixed, sweeps = [], []
    for o in parsed:
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # glob(), interval(): known only to the sweeper; jobs check them
            continue
        sweeps.append((o.get_key_element(), values))
    variants = [fixed + [f"{k}={vals[0]}" for k, vals in sweeps]]
    for i, (key, vals) in enumerate(sweeps):
        for v in vals[1:]:
            over = list(variants[0])
            over[len(fixed) + i] = f"{key}={v}"
            variants.append(over)
    for over in variants[:MAX_COMPOSES]:
        cfg, defaults = _compose(over, conf_dir)
        validate(cfg, defaults)
        if _output_dir(cfg) is None:  # the directory Hydra is about to create
            key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
            _check_dir(key, _get(cfg, key))


def _is_group(override: str) -> bool:
    """A group choice, or the search path that makes a user's own group options findable."""
    key = override.lstrip("+~").split("=")[0].split("@")[0]
    return key in GROUPS or "/" in key or key == "hydra.searchpath"


def _compose(overrides: list[str], conf_dir: Path):
    """The composed config (with Hydra's node) and its defaults (group choices only)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    error = defaults = None
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
            try:
                cfg = compose("train", overrides=overrides, return_hydra_config=True)
            except HydraException as e:
                error = e
            else:
                groups = [o for o in overrides if _is_group(o)]
                with contextlib.suppress(HydraException):
                    defaults = compose("train", overrides=groups)
    finally:
        GlobalHydra.instance().clear()
    if error is not None:
        raise ConfigError(_composition_error(error, overrides, conf_dir))
    return cfg, defaults


def _composition_error(e: BaseException, overrides: list[str], conf_dir: Path) -> str:
    text = str(e)
    m = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if m:
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0] == key), "")
        leaf = key.split(".")[-1]
        near = sorted(
            (k for k in _all_keys(conf_dir) if k.split(".")[-1] == leaf and k != key),
            key=lambda k: (k.count("."), k),
        )
        hint = f"; did you mean {' or '.join(near[:3])}?" if near else ""
        return f"{key}={value}: unknown key{hint} (to add a new key write +{key}={value})"
    return _one_line(e)


def _all_keys(conf_dir: Path) -> list[str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
            return [k for k, _ in _leaves(compose("train"))]
    finally:
        GlobalHydra.instance().clear()
