"""Entry point: ``python -m mcl.train [group=option ...] [key=value ...]``.

Check the command line (:func:`mcl.validate.precheck`: a mistake is one line and exit code
2, before Hydra makes a run directory), compose the config, claim the run directory, build
benchmark -> model -> method -> data -> runner, run the sequence, print the accuracy matrix.
Everything else lives in the layers below. Exit codes: 0 done, 2 a mistake the user can fix
(config, data, disk), 75 preempted (SIGTERM/SIGUSR1/SIGUSR2; continue with ``resume=true``).

The heavy imports (torch, Lightning) wait until a run starts, so a bad value fails in a second.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mcl.config import CONF_DIR, ConfigError, check_overrides
from mcl.utils import preempt
from mcl.utils.io import CheckpointError
from mcl.utils.lock import RunDirError, RunLock
from mcl.validate import precheck, validate

EXIT_USER = 2
# errors of the data layer, by module: recognised once that module is loaded (a run loads it)
_DATA_ERRORS = (("mcl.data.bench", "BenchmarkError"), ("mcl.data.datamodule", "DataError"))


def _user_errors() -> tuple[type[BaseException], ...]:
    found = [
        getattr(sys.modules[mod], name)
        for mod, name in _DATA_ERRORS
        if mod in sys.modules and hasattr(sys.modules[mod], name)
    ]
    return (ConfigError, CheckpointError, RunDirError, FileNotFoundError, *found)


def user_error(e: BaseException) -> str | None:
    """The one-line message for an error the user can fix (bad config, data, a full or
    read-only disk, a damaged checkpoint, a busy run directory), or None for a bug (which keeps
    its traceback)."""
    if isinstance(e, _user_errors()):
        return " ".join(str(e).split())
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"{e.strerror or e}; finished tasks are kept, rerun with resume=true"
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
        where = f" {e.filename}" if e.filename else ""
        return (
            f"cannot write{where}: {e.strerror or e}; make the directory writable (finished "
            "tasks are kept; rerun with resume=true) or choose another (paths.log_dir=...)"
        )
    return None


def quiet_libraries() -> None:
    """Keep the console for mcl's own progress and results: Lightning's per-Trainer banners and
    tips repeat once per task and bury the accuracy matrix."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
    # Lightning's hint whenever SLURM is installed but the run is not inside a SLURM job
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
    # ContinualMethod moves batches itself (tensors only), on purpose
    warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")


def _loggers(cfg: DictConfig, data_source: str) -> list:
    """The configured loggers; each records the data source (a W&B tag, a hyperparameter), so
    a synthetic-twin run can never pass for a real-data one on a dashboard."""
    specs = [v for v in (cfg.get("logger") or {}).values() if v and "_target_" in v]
    loggers = []
    for spec in specs:
        kw = {}
        if "Wandb" in spec["_target_"]:
            if not _wandb_key():
                os.environ.setdefault("WANDB_MODE", "offline")
                print("[mcl] no W&B API key found: logging offline (upload with `wandb sync`)")
            kw["tags"] = [*(spec.get("tags") or []), f"data:{data_source}"]
            sweep = _sweep_name()
            if sweep and spec.get("group"):  # one group per benchmark and sweep
                kw["group"] = f"{spec['group']}/{sweep}"
        loggers.append(instantiate(spec, **kw))
    info = {"bench": cfg.bench.name, "method": cfg.method.name, "seed": cfg.seed}
    config = OmegaConf.to_container(cfg, resolve=True)  # the resolved config, for filtering runs
    for lg in loggers:
        lg.log_hyperparams({**info, "data_source": data_source, "config": config})
    return loggers


def _sweep_name() -> str | None:
    """The multirun's directory name (its start time), or None outside a Hydra multirun."""
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def _named_on_command_line(group: str) -> bool:
    """Whether the command line chose an option of ``group`` (False outside a Hydra app)."""
    if not HydraConfig.initialized():
        return False
    task = HydraConfig.get().overrides.task
    return any(o.lstrip("+~").split("=")[0].split("@")[0] == group for o in task)


def _wandb_key() -> bool:
    return bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").exists()


def trainer_kwargs(cfg: DictConfig) -> dict:
    """The hardware group's Trainer arguments, plus the gradient accumulation that a
    ``train.global_batch`` asks for (anchors quote global batches: MCITlib's 64)."""
    kw = OmegaConf.to_container(cfg.hardware, resolve=True)
    precision = str(kw.get("precision", ""))
    if precision.endswith("-true") and precision != "32-true" and precision != "64-true":
        raise ConfigError(
            f"hardware.precision={precision} casts the method's fp32 parameters to half "
            "precision, where small updates round to nothing; use bf16-mixed (or 16-mixed) and "
            "model.dtype=bfloat16 for a half-precision base"
        )
    want = cfg.train.get("global_batch")
    if want:
        devices = kw.get("devices", 1)
        n = len(devices) if isinstance(devices, list) else devices
        if not isinstance(n, int) or n < 1:
            raise ConfigError(
                f"train.global_batch needs a device count, got hardware.devices={devices!r}; "
                "set hardware.devices to a number"
            )
        per_step = cfg.train.batch_size * n * kw.get("num_nodes", 1)
        if want % per_step:
            raise ConfigError(
                f"train.global_batch={want} is not a multiple of batch_size x devices = "
                f"{per_step}; change train.batch_size or train.global_batch"
            )
        kw["accumulate_grad_batches"] = want // per_step
    return kw


def _instantiate_method(spec: DictConfig):
    """The method, with a bad option value reported in one line (Hydra wraps the cause)."""
    try:
        return instantiate(spec)
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = f"method {spec.get('name')}: {cause}; fix conf/method or the override"
        raise ConfigError(msg) from cause


def _instantiate_model(spec: DictConfig):
    """The model; a missing checkpoint or a bad option is one line (Hydra wraps the cause)."""
    try:
        return instantiate(spec)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, FileNotFoundError):
            raise ConfigError(f"model {spec.get('name')}: {cause}") from None
        if isinstance(cause, ValueError):
            raise ConfigError(f"model {spec.get('name')}: {cause}; fix conf/model") from None
        raise


def build(cfg: DictConfig, out_dir: Path):
    """Everything the run needs (a :class:`~mcl.runner.ContinualRunner`), from a composed
    config."""
    import lightning as L

    from mcl.data.bench import prepare
    from mcl.data.datamodule import ContinualDataModule
    from mcl.eval.scorers import column_modes
    from mcl.runner import ContinualRunner

    quiet_libraries()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    bench = prepare(cfg.bench, cfg.paths.data_dir, progress=cfg.progress)
    if cfg.bench.get("model_note") and not _named_on_command_line("model"):
        print(f"[mcl] bench={cfg.bench.name}: {cfg.bench.model_note}")
    scorer_mode = _container(cfg.bench.get("scorer_mode", "strict"))
    presets = _container(cfg.bench.get("scorer_presets")) or {}
    try:  # fail on a bad scorer mode before the model is built
        column_modes(
            scorer_mode,
            {
                c["name"]: (c["task"], bench.task(c["name"])["scorer"])
                for c in bench.columns + bench.unseen_columns
            },
            presets,
        )
    except ValueError as e:
        raise ConfigError(f"bench.scorer_mode: {e}") from None
    mllm = _instantiate_model(cfg.model)
    if bench.source == "real" and str(cfg.model.get("_target_")).startswith("mcl.models.tiny."):
        from mcl.models.tiny_coverage import notice  # the tiny base reads its own words only

        print(notice(mllm.tokenizer.get_vocab(), bench, cfg.model.name))
    attach_modalities(mllm, bench)
    method = _instantiate_method(cfg.method)
    if mllm.xmodal is not None and getattr(method, "image_only", False):
        raise ConfigError(
            f"method {cfg.method.name} reads images only, but bench {cfg.bench.name} has "
            f"{', '.join(sorted(mllm.xmodal.inputs))} inputs; set model.xmodal.enabled=false "
            "(every payload rendered as an image) or pick another method"
        )
    # the method's own initialisation (adapters, routers, prompts) depends on the seed alone.
    # Model loaders reseed or consume the global RNG (the tiny base seeds its construction; a
    # cold cache also trains it), so without this every seed would draw the same adapters.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    try:  # a method that cannot fit this model (targets, budgets) says so in one line
        method.check_bench(bench)
        method.setup_model(mllm)
        method.keep_fp32_masters()
    except ValueError as e:
        raise ConfigError(f"method {cfg.method.name}: {e}") from None
    dm = ContinualDataModule(
        bench,
        mllm.collator,
        batch_size=cfg.train.batch_size,
        num_workers=cfg.train.num_workers,
        seed=cfg.seed,
        eval_batch_size=cfg.eval.batch_size,
        max_bad_share=cfg.data.max_bad_share,
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    return ContinualRunner(
        method,
        dm,
        out_dir,
        trainer_kwargs=trainer_kwargs(cfg),
        steps_per_task=cfg.train.steps,
        epochs_per_task=cfg.train.epochs,
        seed=cfg.seed,
        loggers=_loggers(cfg, bench.source),
        resume=cfg.resume,
        progress=cfg.progress,
        meta={"config": config, "model_info": mllm.info, "host": host_info()},
        scorer_mode=scorer_mode,
        scorer_presets=presets,
        checkpoint_every=cfg.train.get("checkpoint_every"),
    )


def host_info() -> dict:
    """Where the run ran: the host and, under SLURM, the job (to find its logs from a result)."""
    import socket

    slurm = {k[6:].lower(): v for k, v in os.environ.items() if k in SLURM_KEYS}
    return {"hostname": socket.gethostname(), **({"slurm": slurm} if slurm else {})}


SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION")


def attach_modalities(mllm, bench) -> None:
    """Give the model input modules for the benchmark's non-image modalities
    (``model.xmodal``; without it every payload reaches the model as its rendered image)."""
    wanted = {t.get("modality", "image") for t in bench.tasks + bench.unseen} - {"image"}
    xcfg = _container(getattr(mllm, "xmodal_cfg", None)) or {}
    if wanted and xcfg.get("enabled", False):
        from mcl.data.schema import MODALITIES
        from mcl.models.xmodal import attach_xmodal

        try:
            attach_xmodal(mllm, [m for m in MODALITIES if m in wanted], xcfg)
        except ValueError as e:
            raise ConfigError(f"bench {bench.name}: {e}") from None


def _container(value):
    """A plain dict/list for an OmegaConf node, the value itself otherwise."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


_THREADS_TOLD = False


def set_threads(threads: int | None) -> int:
    """torch's intra-op threads: ``train.threads`` if set, else ``OMP_NUM_THREADS`` if set,
    else the CPUs this job may use (SLURM's ``SLURM_CPUS_PER_TASK``, else the process's CPU
    affinity) halved and at most 8: small models gain nothing from more, and a full share of a
    machine that other jobs also load runs many times slower. Said once per process."""
    global _THREADS_TOLD
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    env = os.environ.get("OMP_NUM_THREADS", "")
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if threads:
        n, why = int(threads), "train.threads"
    elif env.isdigit() and int(env) > 0:
        n, why = int(env), "OMP_NUM_THREADS"
    elif slurm.isdigit() and int(slurm) > 0:
        n, why = max(1, min(8, int(slurm))), "SLURM_CPUS_PER_TASK"
    else:
        n, why = max(1, min(8, cpus // 2)), f"half of the {cpus} CPUs this process may use"
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if not _THREADS_TOLD and _is_rank_zero():
        _THREADS_TOLD = True
        print(f"[mcl] torch threads: {n} ({why}; set train.threads=N to change)")
    return n


def _is_rank_zero() -> bool:
    from mcl.utils import dist

    return dist.is_main()


def choose_run_dir(cfg: DictConfig, out_dir: Path) -> Path:
    """The directory this run writes to: with ``resume=true`` the unfinished run to continue
    (``out_dir`` or an earlier sibling; a changed config refuses, naming the keys), else
    ``out_dir``. Loggers follow it (``paths.output_dir``)."""
    if not cfg.resume or not _is_rank_zero():
        return out_dir
    from mcl.runner import derived_keys, find_resumable

    config = OmegaConf.to_container(cfg, resolve=True)
    found = find_resumable(out_dir, config, ignore=derived_keys(cfg))
    if found is None:
        print(f"[mcl] resume=true: no unfinished run to continue in {out_dir.parent}; starting one")
        return out_dir
    if found != out_dir:
        print(f"[mcl] resume=true: continuing the run in {found}")
        OmegaConf.update(cfg, "paths.output_dir", str(found), force_add=True)
    return found


def _hydra_dir() -> Path | None:
    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def _drop_if_empty(d: Path | None) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote at start (a run that
    stopped on a config error, or one that continued elsewhere)."""
    if d is None or not d.is_dir() or not _is_rank_zero():
        return
    names = {p.name for p in d.iterdir()}
    log = d / f"{HydraConfig.get().job.name}.log" if HydraConfig.initialized() else None
    hydra_only = names <= {".hydra", log.name if log else ""}
    if hydra_only and (log is None or not log.exists() or log.stat().st_size < 4096):
        shutil.rmtree(d, ignore_errors=True)


def _claim(out_dir: Path, resume: bool) -> RunLock | None:
    """Own ``out_dir`` (rank 0; other ranks follow it), refusing a directory that holds
    another run unless continuing it."""
    if not _is_rank_zero():
        return None
    lock = RunLock(out_dir)
    lock.acquire()
    from mcl.runner import holds_a_run

    what = holds_a_run(out_dir)
    if what and not resume:
        lock.release()
        raise RunDirError(
            f"run directory {out_dir} already holds a run ({what}); continue it with "
            "resume=true, or choose another directory (hydra.run.dir=... or paths.log_dir=...)"
        )
    return lock


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """One run of the sequence in ``out_dir``: validated, threads set, the directory claimed
    (a lock file; see mcl/utils/lock.py), preemption signals handled (mcl/utils/preempt.py)."""
    validate(cfg)
    set_threads(cfg.train.get("threads"))
    out_dir = choose_run_dir(cfg, Path(out_dir))
    lock = _claim(out_dir, bool(cfg.resume))
    from mcl.console import tee_console

    untee = tee_console(out_dir / "train.log")  # the console, progress bars at their last state
    try:
        from mcl.runner import run_record

        done = run_record(out_dir) if cfg.resume else None
        if done and done.get("complete"):
            print(f"[mcl] resume=true: the run in {out_dir} is already complete; nothing to do")
            return done
        with preempt.handling():
            runner = build(cfg, out_dir)
            try:
                results = runner.run()
            finally:
                if "wandb" in sys.modules:  # one W&B run per job, also in multirun sweeps
                    sys.modules["wandb"].finish()
            from mcl.utils import dist

            dist.leave()  # ranks that outlive fit (popen, srun) exit together
        print(runner.summary(results))
        print(f"[mcl] results in {runner.out}")
    finally:
        untee()
        if lock is not None:
            lock.release()
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_dir = _hydra_dir()
    out_dir = Path(cfg.paths.output_dir or hydra_dir)
    if os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0") and not cfg.resume:
        # a requeued SLURM job reruns the same command: it continues the run it began
        print("[mcl] requeued SLURM job (SLURM_RESTART_COUNT set): resume=true")
        OmegaConf.update(cfg, "resume", True)
    try:
        results = run(cfg, out_dir)
    except preempt.Preempted as e:
        print(f"[mcl] {e}", file=sys.stderr)
        _drop_if_empty(hydra_dir)
        preempt.hand_on()  # submitit's handler requeues the job (and exits)
        sys.exit(preempt.EXIT_CODE)
    except Exception as e:
        msg = user_error(e)
        if msg is None:
            raise
        _drop_if_empty(hydra_dir)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(EXIT_USER)
    if hydra_dir is not None and Path(cfg.paths.output_dir or hydra_dir) != hydra_dir:
        _drop_if_empty(hydra_dir)  # resumed elsewhere: the fresh directory stays unused
    return results["metrics"]["last"]  # what a Hydra sweeper would optimise


def cli(argv: list[str]) -> None:
    """``python -m mcl.train``: the command line checked before Hydra creates anything."""
    if {"--help", "-h"} & set(argv):  # mcl's own help, not Hydra's generic text
        from mcl.help import help_text

        print(help_text())
        sys.exit(0)
    try:
        check_overrides(argv)
        precheck(argv)
    except ConfigError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(EXIT_USER)
    main()


if __name__ == "__main__":
    cli(sys.argv[1:])
