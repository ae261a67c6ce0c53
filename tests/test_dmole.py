"""D-MoLE's mechanisms: the allocator's budget and floor, zero-cost scores from the pretrained
weights, autoencoder routing, frozen experts, and the run end to end (docs/methods/dmole.md)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mcl.adapters.dmole import DMoLELinear, TaskAutoencoder
from mcl.callbacks.allocation import allocate, round_half_up
from mcl.callbacks.curriculum import UpdateRatioCallback
from mcl.methods.dmole import DMoLE, zc_batches
from mcl.train import build, run
from tests.conftest import MICRO, compose_cfg


# ---------------------------------------------------------------- allocator
def _units(n_v: int, n_l: int, rng: random.Random):
    scores, modality, cost = {}, {}, {}
    for m, n in (("vision", n_v), ("lm", n_l)):
        for i in range(n):
            u = f"{m}.layers.{i}.q"
            scores[u] = rng.random() ** 3 * (0.05 if m == "vision" else 1.0)
            modality[u] = m
            cost[u] = rng.choice([8 * 64, 8 * 96, 8 * 128])
    return scores, modality, cost


@pytest.mark.parametrize("seed", range(40))
def test_allocator_never_exceeds_the_budget_and_respects_the_floor(seed):
    rng = random.Random(seed)
    scores, modality, cost = _units(rng.randint(1, 12), rng.randint(1, 24), rng)
    portion, floor = rng.choice([0.25, 0.5, 0.75, 1.0]), rng.choice([0.0, 0.25, 0.5])
    a = allocate(scores, modality, portion, floor)
    total = int(portion * len(scores) + 0.5)  # the code's rounding: halves up
    n_vis = sum(m == "vision" for m in modality.values())
    assert len(a["units"]) == a["n_vision"] + a["n_lm"] == total  # exactly the budget
    assert a["n_vision"] >= min(n_vis, math.floor(floor * total))  # the ViT floor
    assert a["n_vision"] >= min(n_vis, int(total * a["vision_share"] + 0.5))
    # within a modality, the chosen units are its top-scored ones
    for m in ("vision", "lm"):
        chosen = [u for u in a["units"] if modality[u] == m]
        rest = [u for u in scores if modality[u] == m and u not in chosen]
        if chosen and rest:
            assert min(scores[u] for u in chosen) >= max(scores[u] for u in rest)
    # a parameter budget is never exceeded either
    cap = rng.randint(1, sum(cost.values()))
    b = allocate(scores, modality, portion, floor, budget_params=cap, cost=cost)
    assert b["cost"] == sum(cost[u] for u in b["units"]) <= cap


def test_vision_share_follows_gradient_mass_above_the_floor():
    modality = {f"v{i}": "vision" for i in range(8)} | {f"l{i}": "lm" for i in range(16)}
    weak = {u: (0.01 if m == "vision" else 1.0) for u, m in modality.items()}
    a = allocate(weak, modality, 0.5, 0.25)
    assert (a["n_vision"], a["n_lm"]) == (3, 9)  # floor(0.25 * 12) = 3 despite ~0 mass
    strong = {u: (3.0 if m == "vision" else 1.0) for u, m in modality.items()}
    a = allocate(strong, modality, 0.5, 0.25)
    assert a["vision_share"] == pytest.approx(24 / 40)
    assert (a["n_vision"], a["n_lm"]) == (7, 5)  # round(12 * 0.6)
    even = allocate(strong, modality, 0.5, 0.25, curriculum="none")
    assert (even["n_vision"], even["n_lm"]) == (6, 6)  # the "no curriculum" ablation
    # the "no allocator" ablation picks the same evenly spaced units whatever the scores
    f1 = allocate(weak, modality, 0.5, 0.25, allocator="fixed")
    f2 = allocate(strong, modality, 0.5, 0.25, curriculum="split", allocator="fixed")
    assert set(f1["units"]) & {f"v{i}" for i in range(8)} <= set(f2["units"])
    ties = {u: 1.0 for u in modality}  # ties: a seeded shuffle, the same every time
    assert allocate(ties, modality)["units"] == allocate(ties, modality)["units"]
    with pytest.raises(ValueError, match="curriculum must be"):
        allocate(ties, modality, curriculum="soft")


def test_counts_round_halves_up_as_the_code_does():
    """Issue 26.10: the code rounds with ``int(x + 0.5)``; Python's ``round`` takes halves to
    the even neighbour, so 2.5 gave 2 units where the code places 3."""
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 2.49, 3.5)] == [1, 2, 3, 2, 4]
    modality = {f"v{i}": "vision" for i in range(5)} | {f"l{i}": "lm" for i in range(5)}
    even = {u: 1.0 for u in modality}  # vision share 0.5 of total 5 = 2.5 units
    a = allocate(even, modality, 0.5, 0.25)
    assert a["vision_share"] == 0.5 and (a["n_vision"], a["n_lm"]) == (3, 2)
    five = {u: modality[u] for u in list(modality)[:3] + list(modality)[5:7]}  # 5 x 0.5 = 2.5
    assert len(allocate({u: 1.0 for u in five}, five, 0.5, 0.0)["units"]) == 3
    # zero-cost batches: int(250 batches x 0.01 + 0.5) = 3, and the loop runs one more
    assert zc_batches(2000, 8, 0.01) == 4 and zc_batches(2001, 8, 0.01) == 4
    assert zc_batches(100, 8, 0.01) == 1  # int(13 x 0.01 + 0.5) = 0, plus one


# ---------------------------------------------------------------- the layer
def test_dmole_linear_sums_selected_experts_without_gates():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = DMoLELinear(base, r=2, alpha=4, dropout=0.0)
    x = torch.randn(3, 4, 6)
    layer.add_expert(0)
    layer.add_expert(2)
    layer.mask = torch.ones(3, 3)
    assert torch.equal(layer(x), base(x))  # B = 0: a new expert changes nothing
    for e in layer.experts.values():
        nn.init.normal_(e[1].weight)
    layer.mask = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])
    y = layer(x)
    e0 = layer.experts["t0"](x) * 2.0
    e2 = layer.experts["t2"](x) * 2.0
    assert torch.allclose(y[0], base(x[0]) + e0[0], atol=1e-6)
    assert torch.allclose(y[1], base(x[1]) + e2[1], atol=1e-6)
    assert torch.allclose(y[2], base(x[2]) + e0[2] + e2[2], atol=1e-6)  # task 1 has none here
    layer.mask = None
    assert torch.equal(layer(x), base(x))
    with pytest.raises(ValueError, match="exists already"):
        layer.add_expert(2)


def test_each_expert_draws_its_own_dropout_mask():
    """Issue 26.6: the code's loop calls ``lora_dropout(x)`` once per selected expert, so two
    experts see independent masks (mcl shared one). Expert t0 copies its input to outputs
    0..63 and t1 to 64..127, so the output shows each expert's mask."""
    torch.manual_seed(0)
    base = nn.Linear(64, 128)
    layer = DMoLELinear(base, r=64, alpha=64, dropout=0.5)
    for t in (0, 1):
        layer.add_expert(t)
        a, b = layer.experts[f"t{t}"]
        with torch.no_grad():
            a.weight.copy_(torch.eye(64))
            b.weight.copy_(torch.eye(128)[:, 64 * t : 64 * (t + 1)])
    x = torch.ones(3, 5, 64)
    layer.set_route(torch.ones(3, 2), [0, 1])
    layer.train()
    with torch.no_grad():
        y = layer(x) - base(x)
    kept0, kept1 = y[..., :64] != 0, y[..., 64:] != 0
    assert 0.3 < float(kept0.float().mean()) < 0.7 and 0.3 < float(kept1.float().mean()) < 0.7
    assert not torch.equal(kept0, kept1)  # two masks, not one
    assert float((kept0 == kept1).float().mean()) < 0.7  # independent: ~half agree
    layer.eval()
    with torch.no_grad():
        y = layer(x) - base(x)
    assert torch.allclose(y[..., :64], y[..., 64:], atol=1e-6)


def test_autoencoder_threshold_is_the_quantile_of_its_own_errors():
    torch.manual_seed(0)
    z = nn.functional.normalize(torch.randn(300, 16) + 2, dim=-1)
    ae = TaskAutoencoder(16, 8)
    info = ae.fit(z, epochs=50, batch_size=64, quantile=0.9)
    errors = ae.error(z).detach()
    assert float((errors < ae.tau).float().mean()) == pytest.approx(0.9, abs=0.01)
    assert info["tau"] == float(ae.tau) and 1 <= info["ae_epochs"] <= 50


# ---------------------------------------------------------------- on the micro model
DMOLE = [*MICRO, "method=dmole", "method.rep_samples=96", "method.ae_epochs=200"]


@pytest.fixture(scope="module")
def two_task_run(tmp_path_factory):
    """The default D-MoLE on two micro tasks; every routing vote recorded as (task being
    trained or None at test, whether the module was training, the AEs consulted)."""
    tmp = tmp_path_factory.mktemp("dmole")
    # ae_batch_size 10: ~10 AE steps an epoch on 96 samples, as the code's ~11 (batch 1024 over
    # ~11k); at the default 64 (2 steps an epoch here) task 0's AE stopped on the early plateau
    # after 19 epochs and every test batch voted for task 1
    cfg = compose_cfg(tmp, [*DMOLE, "++method.lr=1e-2", "method.ae_batch_size=10"])
    asked: list[tuple[int | None, bool, list[int]]] = []
    votes = DMoLE.votes

    def recording(self, z, tasks):
        asked.append((self.current_task, self.training, list(tasks)))
        return votes(self, z, tasks)

    DMoLE.votes = recording
    try:
        results = run(cfg, Path(cfg.paths.output_dir))
    finally:
        DMoLE.votes = votes
    return tmp / "run", results, asked


@pytest.mark.slow
def test_runs_end_to_end_and_accounts_parameters(two_task_run):
    out, res, _ = two_task_run
    assert res["complete"] and res["method"] == "dmole"
    info = res["method_info"]
    assert len(info) == 2
    for t, i in enumerate(info):
        n_cand = 12  # micro: 1 vision layer x 4 + 2 LM layers x 4 attention linears
        assert i["n_vision"] + i["n_lm"] == round(0.5 * n_cand)
        assert i["n_vision"] >= math.floor(0.25 * 6)
        assert res["params"][t]["trainable"] == i["new_params"] > 0
    assert info[1]["stored_params"] == info[0]["new_params"] + info[1]["new_params"]
    assert all(i["route_granularity"] == "batch" for i in info)  # the code's, by default


@pytest.mark.slow
def test_routes_test_batches_to_their_task_well_above_chance(two_task_run):
    """Issue 26.9: after both tasks, each test batch's vote picks its own task (chance: 50%)."""
    _, res, _ = two_task_run
    for row, tasks in ((1, ["color"]), (2, ["color", "position"])):
        for name in tasks:
            ev = res["method_eval"][row][name]
            assert ev["task_id_acc"] >= 90 and ev["no_expert_pct"] <= 10, (row, name, ev)


@pytest.mark.slow
def test_training_consults_only_earlier_tasks_autoencoders(two_task_run):
    """Issue 26.9: training task t votes with the AEs of tasks < t (task 0: none, so only its
    own experts); evaluation after task t with those of tasks <= t."""
    _, _, asked = two_task_run
    train = {(t, tuple(tasks)) for t, training, tasks in asked if training}
    assert train == {(0, ()), (1, (0,))}
    test = {tuple(tasks) for _, training, tasks in asked if not training}
    assert test == {(), (0,), (0, 1)}  # rows 0, 1, 2


@pytest.mark.slow
def test_frozen_experts_are_bit_identical_after_a_later_task(two_task_run):
    out, _, _ = two_task_run
    a = load_file(str(out / "checkpoints" / "task00" / "adapters.safetensors"))
    b = load_file(str(out / "checkpoints" / "task01" / "adapters.safetensors"))
    old = [k for k in a if ".experts.t0." in k or k.startswith("aes.t0.")]
    assert old and all(torch.equal(a[k], b[k]) for k in old)
    trained = [k for k in b if ".experts.t1." in k and k.endswith("1.weight")]
    assert trained and any(b[k].abs().sum() > 0 for k in trained)  # task 1's B moved off zero


def test_zero_cost_scores_come_from_the_pretrained_weights(tmp_path):
    cfg = compose_cfg(tmp_path, [*DMOLE, "method.rep_samples=32", "method.ae_epochs=5"])
    runner = build(cfg, tmp_path / "run")
    m, dm = runner.method, runner.dm
    dm.set_task(1)
    before = m.zc_scores(1, dm)
    base = {n: lay.base.weight.detach().clone() for n, lay in m.layers().items()}
    dm.set_task(0)
    m.on_task_start(0, dm)
    for lay in m.layers().values():  # as if task 0 had trained: experts far from zero
        for p in lay.expert_params(0):
            nn.init.normal_(p)
    m.set_masks(torch.ones(8, 2))
    m.on_task_end(0, dm)
    after = m.zc_scores(1, dm)
    assert after == before  # experts are off while scoring: the same pretrained model
    assert all(torch.equal(lay.base.weight, base[n]) for n, lay in m.layers().items())
    assert not any(lay.base.weight.requires_grad for lay in m.layers().values())
    assert all(lay.base.weight.grad is None for lay in m.layers().values())
    assert set(before) == set(m.modality) and all(s > 0 for s in before.values())


def test_routing_rules_and_the_curriculum_rescale(tmp_path):
    cfg = compose_cfg(tmp_path, [*DMOLE, "method.curriculum=rescale"])
    runner = build(cfg, tmp_path / "run")
    m = runner.method
    m.n_trained = 3
    for t, tau in enumerate((1.0, 1.0, 1e-9)):
        m.aes[f"t{t}"] = TaskAutoencoder(4, 2)
        m.aes[f"t{t}"].tau.fill_(tau)
    m.votes = lambda z, tasks: torch.tensor([0, 0, 1, -1, 0, 1, -1, 1])[: len(z)]
    z = torch.zeros(8, 4)
    m.route_granularity = "batch"
    mask = m.route(z)  # votes: 3 x task 0, 3 x task 1 (50% each) -> both, for every sample
    assert mask.shape == (8, 3) and mask[:, :2].eq(1).all() and mask[:, 2].eq(0).all()
    train = m.route(z, training_task=2)  # t always on, plus the most-voted earlier task
    assert train[:, 2].eq(1).all() and train[:, :2].sum(1).eq(1).all()
    m.route_granularity = "sample"
    mask = m.route(z)
    assert mask[3].sum() == 0 and mask[0, 0] == 1 and mask[2, 1] == 1  # no vote: no expert
    m.votes = lambda z, tasks: torch.full((len(z),), -1)
    assert m.route(z).sum() == 0  # nothing passed a threshold: the pretrained model
    # the paper's reading: each modality's update scaled by twice its gradient share
    m._share_v, m.current_task = 0.2, 0
    lay = next(iter(m.layers().values()))
    lay.add_expert(0)
    p = lay.expert_params(0)[0]
    cb = UpdateRatioCallback(m)
    group = m.modality[next(iter(m.layers()))]
    assert any(q is p for q in m.update_groups()[group])
    cb_scale = m.update_ratios()[group]
    cb.on_train_batch_start(None, None, None, 0)
    old = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    cb.on_train_batch_end(None, None, None, None, 0)
    assert torch.allclose(p - old, torch.full_like(p, cb_scale))
    assert cb_scale == pytest.approx(0.4 if group == "vision" else 1.6)


def test_the_second_task_needs_its_share_of_the_valid_votes(tmp_path):
    """Issue 26.9, the code's get_task_ids: at test the most-voted task, plus the second only at
    >= 0.3 of the *valid* votes; in training task t, plus the most-voted earlier task only at
    that share; the AEs consulted in training are those of tasks < t."""
    runner = build(compose_cfg(tmp_path, DMOLE), tmp_path / "run")
    m = runner.method
    assert m.route_granularity == "batch" and m.second_task_share == 0.3  # the defaults
    m.n_trained = 4
    asked, given = [], []
    m.votes = lambda z, tasks: asked.append(list(tasks)) or given[-1][: len(z)]
    z = torch.zeros(10, 4)

    def on(mask):
        assert bool((mask == mask[0]).all())  # one decision for the whole batch
        return {t for t, v in enumerate(mask[0].tolist()) if v}

    # 7 valid votes: task 1 has 5 (0.71), task 0 has 2 (0.29 < 0.3)
    given.append(torch.tensor([1, 1, 1, 1, 1, 0, 0, -1, -1, -1]))
    assert on(m.route(z)) == {1} and asked[-1] == [0, 1, 2, 3]
    assert on(m.route(z, training_task=2)) == {1, 2} and asked[-1] == [0, 1]
    # task 0 at 3 of 8 valid votes (0.375): joins at test
    given.append(torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, -1, -1]))
    assert on(m.route(z)) == {0, 1}
    # training task 4: four earlier tasks at 2 of 7 votes each (0.29): the most-voted (task 0,
    # the first of the ties, as numpy's argmax) stays out; at 3 of 8 (0.375) it joins
    given.append(torch.tensor([0, 0, 1, 1, 2, 2, 3, -1, -1, -1]))
    assert on(m.route(z, training_task=4)) == {4} and asked[-1] == [0, 1, 2, 3]
    given.append(torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, -1, -1]))
    assert on(m.route(z, training_task=4)) == {0, 4}
    given.append(torch.full((10,), -1))
    assert on(m.route(z)) == set() and on(m.route(z, training_task=1)) == {1}


@pytest.mark.slow
def test_autoencoders_route_held_out_samples_to_their_task(tmp_path):
    """Three twin tasks; each AE fit on the task's training samples; held-out test samples."""
    tasks = "[skvg,iconqa,kvqa]"
    cfg = compose_cfg(
        tmp_path,
        [
            *DMOLE,
            "bench=dmole",
            f"bench.tasks={tasks}",
            "bench.unseen=[]",
            "bench.synthetic.train=160",
            "method.rep_samples=160",
            "method.ae_epochs=1000",
        ],
    )
    runner = build(cfg, tmp_path / "run")
    m, dm = runner.method, runner.dm
    for t in range(3):
        dm.set_task(t)
        m.on_task_start(t, dm)
        m.on_task_end(t, dm)
    accs = []
    for t, name in enumerate(dm.bench.task_names):
        votes = m.votes(m.sample_representations(dm.test_samples(name)), [0, 1, 2])
        accs.append(float((votes == t).float().mean()))  # no vote counts as a miss
    print("task-id accuracy", accs)
    assert min(accs) >= 0.75 and sum(accs) / 3 >= 0.85, accs


@pytest.mark.slow
def test_resume_rebuilds_experts_and_autoencoders_from_the_checkpoint(two_task_run, tmp_path):
    out, full, _ = two_task_run
    cfg = compose_cfg(tmp_path, [*DMOLE, "++method.lr=1e-2"])
    runner = build(cfg, tmp_path / "run")
    state = load_file(str(out / "checkpoints" / "task01" / "adapters.safetensors"))
    runner.method.on_resume(1)
    runner.method.load_adapter_state(state)
    got = runner.method.adapter_state()
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    assert json.loads(json.dumps(full["matrix"]))  # the original run finished


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "method.budget_portion=0.01",
            "budget_portion=0.01 of 12 candidate units places no expert",
        ),
        ("method.budget_params=10", "budget_params=10 is below the cheapest expert"),
        ("method.lm_targets=[nope]", None),
    ],
)
def test_budgets_too_small_for_one_expert_are_one_line_errors(tmp_path, override, message):
    from mcl.config import ConfigError

    over = [*DMOLE, override]
    if message is None:  # no LM candidates left: still runs on the vision tower's modules
        over += ["method.vision_targets=[nope]"]
        message = "no candidate module matches"
    with pytest.raises(ConfigError, match=message) as e:
        build(compose_cfg(tmp_path, over), tmp_path / "run")
    assert str(e.value).startswith("method dmole: ") and "\n" not in str(e.value)
