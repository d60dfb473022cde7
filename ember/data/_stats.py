"""What ``Dataset.stats()`` reports: per-operator work measured inside the tasks, and the
executor's own view of memory (bytes of blocks in flight against the budget)."""

from __future__ import annotations

from dataclasses import dataclass, field


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


@dataclass
class OperatorStats:
    name: str
    tasks: int = 0
    rows: int = 0
    bytes: int = 0
    wall_s: float = 0.0  # summed over tasks, measured inside them
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0  # largest peak RSS of a worker that ran this operator
    peak_bytes_in_flight: int = 0  # largest bytes of this operator's blocks held at once
    actors_peak: int = 0
    actors_died: int = 0  # pool actors that died and were replaced

    def record_task(self, meta: dict[str, float]) -> None:
        self.tasks += 1
        self.rows += int(meta["rows"])
        self.bytes += int(meta["bytes"])
        self.wall_s += float(meta["wall_s"])
        self.cpu_s += float(meta["cpu_s"])
        self.peak_rss_bytes = max(self.peak_rss_bytes, int(meta.get("peak_rss", 0)))


@dataclass
class DatasetStats:
    """Stats of a dataset's last execution; ``print(ds.stats())`` shows a summary."""

    operators: list[OperatorStats] = field(default_factory=list)
    wall_s: float = 0.0
    memory_budget_bytes: int = 0
    peak_bytes_in_flight: int = 0
    over_budget_launches: int = 0  # tasks started over budget only to keep the pipeline moving
    executed: bool = False

    def __str__(self) -> str:
        if not self.executed:
            return "Dataset has not been executed yet: stats appear after take/iter/count/write."
        lines = []
        for i, op in enumerate(self.operators):
            rate = op.rows / op.wall_s if op.wall_s > 0 else 0.0
            actors = f", {op.actors_peak} actors at peak" if op.actors_peak else ""
            if op.actors_died:
                actors += f" ({op.actors_died} died and were replaced)"
            lines.append(
                f"Operator {i} {op.name}: {op.tasks} tasks, {op.rows} rows, "
                f"{_fmt_bytes(op.bytes)} output{actors}\n"
                f"  * task wall time {op.wall_s:.3f}s total, CPU time {op.cpu_s:.3f}s, "
                f"{rate:,.0f} rows/s per task\n"
                f"  * peak worker RSS {_fmt_bytes(op.peak_rss_bytes)}, peak blocks in flight "
                f"{_fmt_bytes(op.peak_bytes_in_flight)}"
            )
        lines.append(
            f"Execution: {self.wall_s:.3f}s wall; peak blocks in flight "
            f"{_fmt_bytes(self.peak_bytes_in_flight)} of a {_fmt_bytes(self.memory_budget_bytes)}"
            f" budget ({self.over_budget_launches} launches over budget to keep moving)"
        )
        return "\n".join(lines)
