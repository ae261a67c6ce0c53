"""What a run has measured so far, as one object: the accuracy matrices, the per-cell
instruction-following and extra scores, the method's reports, timings, devices, data faults and
the optimizer step count.

Evaluation fills it (:meth:`RunState.record`), a task checkpoint saves and restores it
(:meth:`RunState.state_dict` / :meth:`RunState.load_state_dict`), results.json is built from it
(:meth:`RunState.results`), and re-scoring a finished run rebuilds it from that file
(:meth:`RunState.from_results`) and fills it through the same :meth:`~RunState.record`, so a
re-scored run and a fresh one cannot disagree on where a score goes.

The matrices have one column per eval set (``columns``; a task has one set, named after it,
unless its benchmark declares several); ``stage_matrix`` averages each task's sets into one
column per task, and the continual metrics are computed on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcl.eval.metrics import (
    EVAL_SETS_CONVENTION,
    continual_metrics,
    instruction_metrics,
    per_set_metrics,
    stage_means,
    stage_metrics,
)


def declared_extras(config: dict | None) -> tuple[str, ...]:
    """The extra scores a run's config declares for its benchmark (``bench.extra_scores``,
    none when unset): what the runner and re-scoring compute per cell beside the score."""
    bench = (config or {}).get("bench") or {}
    return tuple(bench.get("extra_scores") or ())


def _rows(n: int) -> list[dict]:
    return [{} for _ in range(n)]


def one_set_each(tasks: list[str]) -> list[dict]:
    """The columns of tasks evaluated on one set each (what results.json without ``columns``
    records)."""
    return [{"name": t, "task": t, "set": t} for t in tasks]


@dataclass
class RunState:
    tasks: list[str]
    unseen_tasks: list[str]
    # one per matrix column: {"name": "<task>" or "<task>/<set>", "task", "set"}
    columns: list[dict]
    unseen_columns: list[dict]
    # row i (0: before training, i: after task i) x column; None where not evaluated
    matrix: list[list[float | None]]
    unseen_matrix: list[list[float | None]]
    # per row, {column: score}: accuracy on the held-out instruction templates
    if_scores: list[dict]
    # per row, {column: % of answers in the required form (letter, box, number, ...)}
    format_scores: list[dict]
    # per row, {column: {name: value}}: the scores the benchmark declares (bench.extra_scores)
    extra_scores: list[dict]
    # per row, {column: {name: value}}: the method's own evaluation numbers (eval_metrics)
    method_eval: list[dict]
    params: list[dict] = field(default_factory=list)  # per task: parameter counts
    method_info: list[dict] = field(default_factory=list)  # per task: the method's task_info
    # per task: training, evaluation rows, task-boundary work (on_task_start + on_task_end)
    timings: dict = field(default_factory=lambda: {"train_s": [], "eval_s": [], "boundary_s": []})
    global_step: int = 0
    devices: dict = field(default_factory=dict)  # per phase: the devices it ran on
    skipped: dict = field(default_factory=dict)  # per task: the data faults (the data module's)

    @classmethod
    def fresh(
        cls,
        tasks: list[str],
        unseen_tasks: list[str],
        columns: list[dict] | None = None,
        unseen_columns: list[dict] | None = None,
    ) -> RunState:
        """A run that has measured nothing yet (``columns``: one set per task unless given)."""
        n = len(tasks) + 1
        columns = [dict(c) for c in columns or one_set_each(tasks)]
        unseen_columns = [dict(c) for c in unseen_columns or one_set_each(unseen_tasks)]
        return cls(
            tasks=list(tasks),
            unseen_tasks=list(unseen_tasks),
            columns=columns,
            unseen_columns=unseen_columns,
            matrix=[[None] * len(columns) for _ in range(n)],
            unseen_matrix=[[None] * len(unseen_columns) for _ in range(n)],
            if_scores=_rows(n),
            format_scores=_rows(n),
            extra_scores=_rows(n),
            method_eval=_rows(n),
        )

    def record(
        self,
        row: int,
        name: str,
        scores: dict,
        format_share: float | None = None,
    ) -> None:
        """One evaluated cell (``name``: a column's); ``scores`` as ``score_records`` returns
        them (``score``, ``held``, ``extras``); ``format_share`` the % of well-formed answers,
        when known."""
        unseen = [c["name"] for c in self.unseen_columns]
        if name in unseen:
            self.unseen_matrix[row][unseen.index(name)] = scores["score"]
        else:
            self.matrix[row][self.column_names.index(name)] = scores["score"]
        if scores.get("held") is not None:
            self.if_scores[row][name] = scores["held"]
        if scores.get("extras"):
            self.extra_scores[row][name] = dict(scores["extras"])
        if format_share is not None:
            self.format_scores[row][name] = format_share

    def clear_scores(self) -> None:
        """Forget what ``score_records`` gave (matrix, held-out IF, extra scores), keeping the
        rest: re-scoring fills them again from the saved answers."""
        fresh = RunState.fresh(self.tasks, self.unseen_tasks, self.columns, self.unseen_columns)
        self.matrix, self.unseen_matrix = fresh.matrix, fresh.unseen_matrix
        self.if_scores, self.extra_scores = fresh.if_scores, fresh.extra_scores

    @property
    def column_names(self) -> list[str]:
        return [c["name"] for c in self.columns]

    @property
    def unseen_column_names(self) -> list[str]:
        return [c["name"] for c in self.unseen_columns]

    @property
    def one_set_each(self) -> bool:
        """Every task evaluated on one set: the matrices are their own stage summary."""
        return self.column_names == self.tasks and self.unseen_column_names == self.unseen_tasks

    @property
    def stage_matrix(self) -> list[list[float | None]]:
        """Per row, per trained task the mean of its sets' cells (T+1 x T)."""
        return stage_means(self.matrix, self.columns, self.tasks)

    @property
    def unseen_stage_matrix(self) -> list[list[float | None]]:
        """Per row, per unseen task the mean of its sets' cells."""
        return stage_means(self.unseen_matrix, self.unseen_columns, self.unseen_tasks)

    # ------------------------------------------------------------------ checkpoints
    _CHECKPOINTED = (
        "matrix",
        "unseen_matrix",
        "if_scores",
        "format_scores",
        "extra_scores",
        "params",
        "method_info",
        "method_eval",
        "timings",
        "global_step",
        "skipped",
        "devices",
    )

    def state_dict(self) -> dict:
        """What a task checkpoint's state.json holds of the run (JSON-ready)."""
        return {k: getattr(self, k) for k in self._CHECKPOINTED}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's state; fields it lacks keep their fresh values."""
        for k in self._CHECKPOINTED:
            if k in state:
                setattr(self, k, state[k])

    # ------------------------------------------------------------------ results.json
    _RESULTS = (
        "matrix",
        "unseen_matrix",
        "if_scores",
        "format_scores",
        "extra_scores",
        "skipped",
        "params",
        "method_info",
        "method_eval",
        "timings",
        "devices",
    )

    @classmethod
    def from_results(cls, results: dict) -> RunState:
        """The state a results.json records (a finished or partial run)."""
        tasks, unseen = results["tasks"], results.get("unseen_tasks") or []
        state = cls.fresh(tasks, unseen, results.get("columns"), results.get("unseen_columns"))
        for k in cls._RESULTS:
            if results.get(k) is not None:
                setattr(state, k, results[k])
        return state

    def metrics(self) -> dict:
        """The continual and instruction-following metrics of what was measured so far."""
        out = continual_metrics(self.stage_matrix, unseen=self.unseen_stage_matrix)
        out |= instruction_metrics(
            self.column_names,
            self.unseen_column_names,
            self.if_scores,
            self.format_scores,
            self.extra_scores,
        )
        if not self.one_set_each:
            out["per_set"] = per_set_metrics(self.matrix, self.columns, self.tasks)
            out["conventions"]["eval_sets"] = EVAL_SETS_CONVENTION
        return out

    def results(self) -> dict:
        """The measured part of results.json: the state's fields, metrics and per-stage rows
        (the run's description, e.g. method and config, is the caller's)."""
        stage = self.stage_matrix
        stages = [{"task": t, **s} for t, s in zip(self.tasks, stage_metrics(stage))]
        out = {"columns": self.columns, "unseen_columns": self.unseen_columns}
        out |= {k: getattr(self, k) for k in self._RESULTS}
        out |= {"stage_matrix": stage, "unseen_stage_matrix": self.unseen_stage_matrix}
        return out | {"metrics": self.metrics(), "per_stage": stages}
