"""What a run returns to Python: its cells' records, files and notes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CellResult:
    record: dict

    def __getattr__(self, name):
        try:
            return self.record[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class RunResult:
    run_id: str
    db: str
    records: list[dict]
    files: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cells(self) -> list[CellResult]:
        return [CellResult(r) for r in self.records]

    @property
    def failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.records)

    @property
    def optional_failures(self) -> list[str]:
        """Parts asked for that did not come out (quality, lm-eval tasks), one line
        each: the run's speed and memory stand, but it is not the whole answer."""
        out = []
        for r in self.records:
            if r["status"] != "ok":
                continue
            for part in ("quality", "lm_eval"):
                error = (r.get(part) or {}).get("error")
                if error:
                    name = "quality" if part == "quality" else "lm-eval tasks"
                    out.append(f"{name} of {r['scheme']}: {error}")
        return out

    def to_dataframe(self):
        from quantbench.report.exports import flat_rows
        import pandas as pd

        return pd.DataFrame(flat_rows(self.records))


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: what it kept, and how to resume it."""

    def __init__(self, run_id: str, done: int, planned: int):
        super().__init__(f"run {run_id} interrupted with {done} of {planned} cells measured")
        self.run_id, self.done, self.planned = run_id, done, planned
