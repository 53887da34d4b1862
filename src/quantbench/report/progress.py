"""Live progress of a run on the terminal (rich), fed by the workers' progress events."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

PHASES = {"load": "loading model", "quantize": "applying scheme",
          "compile": "compiling and capturing the decode step",
          "export": "exporting to GGUF (once per model)"}


class RunProgress:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                            transient=False)
        self.cells = None
        self.many = False
        self.lanes: list[str] = []
        self._names: dict = {}

    def converting(self, message: str):
        """A spinner with elapsed time around a one-time model conversion."""
        self.console.print(message)
        return self.console.status(f"{message}: seconds to a minute")

    def start(self, n_cells: int, comparisons, lanes: list[str]) -> None:
        self.many = len(comparisons) > 1
        self.lanes = lanes
        first = comparisons[0].cells[0].model
        models = {c.cells[0].model["fingerprint"] for c in comparisons}
        if len(models) == 1:
            from quantbench.models import RANDOM_LABEL

            label = (f" [yellow]({RANDOM_LABEL})[/yellow]"
                     if first.get("random_weights") else "")
            what = f"[bold]{first['name']}[/bold]{label}"
        else:
            what = f"{len(models)} models"
        if any(lane.startswith("ray") for lane in lanes):
            where = "a Ray cluster"
        else:
            where = lanes[0] if len(lanes) == 1 else f"{len(lanes)} devices ({', '.join(lanes)})"
        self.console.print(f"Benchmarking {what} on {where}: {len(comparisons)} comparison(s), "
                           f"{n_cells} cell(s), each in its own process")
        self.bar.start()
        self.cells = self.bar.add_task("cells", total=n_cells)

    def _name(self, scheme: str, comparison, lane: str | None = None) -> str:
        prefix = f"[{comparison.label}] " if self.many else ""
        suffix = f" on {lane}" if lane and len(self.lanes) > 1 else ""
        return f"{prefix}{scheme}{suffix}"

    def cell_started(self, scheme: str, comparison, lane: str | None = None):
        name = self._name(scheme, comparison, lane)
        task = self.bar.add_task(f"{name}: starting", total=None)
        self._names[task] = name
        return task

    def event(self, event: dict, task=None) -> None:
        if task is None:
            return
        name = self._names.get(task, "")
        phase = event.get("phase")
        if phase in PHASES:
            self.bar.update(task, description=f"{name}: {PHASES[phase]}")
        elif phase in ("warmup", "run", "calibrate"):
            what = "calibrating, layer" if phase == "calibrate" else phase
            self.bar.update(task, description=f"{name}: {what}",
                            total=event["n"], completed=event["i"] - 1)

    def cell_finished(self, scheme: str, result: dict, wall: float, task=None, comparison=None,
                      where: str | None = None) -> None:
        """A finished cell's line; without a task (a cell measured elsewhere, as on a Ray
        node) the comparison and where it ran name it."""
        from rich.markup import escape

        if task is None and comparison is not None:
            name = self._name(scheme, comparison) + (f" on {where}" if where else "")
        else:
            name = self._names.pop(task, scheme)
        if task is not None:
            self.bar.remove_task(task)
        if result["status"] == "ok":
            from quantbench.measure.contention import contention_flag

            median = sorted(result["metrics"].get("decode_tok_s", [0]))
            flag = contention_flag(result.get("info") or {})
            self.bar.console.print(f"  [green]ok[/green] {escape(name)}: {median[len(median) // 2]:.1f} "
                                   f"decode tok/s ({wall:.0f} s)"
                                   + (f" [yellow]contended: {escape(flag)}[/yellow]" if flag else ""))
        else:
            self.bar.console.print(f"  [red]failed[/red] {escape(name)}: {escape(str(result['error']))}",
                                   highlight=False)
        self.bar.advance(self.cells)

    def note(self, text: str) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]{escape(text)}[/yellow]")

    def reused(self, scheme: str, run_id: str, comparison=None) -> None:
        from rich.markup import escape

        name = escape(self._name(scheme, comparison) if comparison is not None else scheme)
        self.bar.console.print(f"  [cyan]reused[/cyan] {name}: measured in run {run_id} "
                               "(--force measures again)")
        self.bar.advance(self.cells)

    def stop(self) -> None:
        self.bar.stop()
