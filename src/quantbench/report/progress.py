"""Live progress of a run on the terminal (rich), fed by the workers' progress events."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

PHASES = {"load": "loading model", "quantize": "applying scheme",
          "export": "exporting to GGUF (once per model)"}


class RunProgress:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                            transient=False)
        self.cells = None
        self.current = None
        self.scheme = ""

    def converting(self, message: str):
        """A spinner with elapsed time around a one-time model conversion."""
        self.console.print(message)
        return self.console.status(f"{message}: seconds to a minute")

    def start(self, n_cells: int, model, device: str) -> None:
        label = f" [yellow]({model.label})[/yellow]" if model.random_weights else ""
        self.console.print(f"Benchmarking [bold]{model.name}[/bold]{label} on {device}: "
                           f"{n_cells} scheme(s), each in its own process")
        self.bar.start()
        self.cells = self.bar.add_task("cells", total=n_cells)

    def cell_started(self, scheme: str) -> None:
        self.scheme = scheme
        self.current = self.bar.add_task(f"{scheme}: starting", total=None)

    def event(self, event: dict) -> None:
        if self.current is None:
            return
        phase = event.get("phase")
        if phase in PHASES:
            self.bar.update(self.current, description=f"{self.scheme}: {PHASES[phase]}")
        elif phase in ("warmup", "run"):
            self.bar.update(self.current, description=f"{self.scheme}: {phase}",
                            total=event["n"], completed=event["i"] - 1)

    def cell_finished(self, scheme: str, result: dict, wall: float) -> None:
        if self.current is not None:
            self.bar.remove_task(self.current)
            self.current = None
        if result["status"] == "ok":
            from rich.markup import escape

            from quantbench.measure.contention import contention_flag

            median = sorted(result["metrics"].get("decode_tok_s", [0]))
            flag = contention_flag(result.get("info") or {})
            self.bar.console.print(f"  [green]ok[/green] {escape(scheme)}: {median[len(median) // 2]:.1f} "
                                   f"decode tok/s ({wall:.0f} s)"
                                   + (f" [yellow]contended: {escape(flag)}[/yellow]" if flag else ""))
        else:
            from rich.markup import escape

            self.bar.console.print(f"  [red]failed[/red] {escape(scheme)}: {escape(str(result['error']))}",
                                   highlight=False)
        self.bar.advance(self.cells)

    def note(self, text: str) -> None:
        from rich.markup import escape

        self.console.print(f"[yellow]{escape(text)}[/yellow]")

    def reused(self, scheme: str, run_id: str) -> None:
        self.bar.console.print(f"  [cyan]reused[/cyan] {scheme}: measured in run {run_id} "
                               "(--force measures again)")
        self.bar.advance(self.cells)

    def stop(self) -> None:
        self.bar.stop()
