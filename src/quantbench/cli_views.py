"""The `quantbench` commands that read the results database: export, report, compare,
generations and log (registered on the app of `quantbench.cli`)."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Optional

import typer

from quantbench.cli import app, err, out
from quantbench.errors import UsageError


@app.command()
def export(
    fmt: str = typer.Option(..., "--format", "-f", help="md, csv, json, jsonl or sql (statements "
                           "that load into sqlite3)."),
    db: str = typer.Option("quantbench.db", help="SQLite results database."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id (or a unique prefix); "
                                         "default: the latest run."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to this new file "
                                         "instead of standard output."),
):
    """Export one run from the database (statistics recomputed from the raw samples)."""
    from pathlib import Path

    from quantbench.analysis import build_records
    from quantbench.report.exports import FORMATS, write_new
    from quantbench.store import Store

    from quantbench import outputs

    if fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}' is not supported: choose one of {', '.join(FORMATS)}")
    if output is not None:
        outputs.check_file(output, "--output", must_be_new=True)
    with Store(db, create=False) as store:
        run = store.resolve_run(run_id)
        _say_state(store, run)
        records = build_records(store, run)
    text = FORMATS[fmt](records)
    if output:
        write_new(Path(output), text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _say_state(store, run_id: str) -> None:
    """On stderr, when the run did not finish: its figures are a part of what was planned."""
    state = store.run_state(run_id)
    if state["state"] != "finished":
        err.print(f"[yellow]note:[/yellow] run {run_id} is {state['how']}: {state['measured']}; "
                  "the same `quantbench run` command resumes it", highlight=False)


@app.command()
def report(
    db: str = typer.Option("quantbench.db", help="SQLite results database."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id (or a unique prefix); "
                                         "default: the latest run."),
    out_dir: str = typer.Option("quantbench-results", "--out", help="Folder for the dashboards."),
):
    """Dashboards of one run: a PNG of every panel and one self-contained interactive HTML file."""
    from quantbench import outputs
    from quantbench.report.build import write_report
    from quantbench.store import Store

    outputs.check_dir(out_dir, "--out")
    with Store(db, create=False) as store:
        run = store.resolve_run(run_id)
        _say_state(store, run)
        files = write_report(store, run, out_dir)
    for f in files:
        out.print(f)


@app.command()
def compare(
    run_a: str = typer.Argument(..., help="First run id (or unique prefix, or 'latest')."),
    run_b: str = typer.Argument(..., help="Second run id."),
    db: str = typer.Option("quantbench.db", help="Database of run A (and of B, unless --db-b)."),
    db_b: Optional[str] = typer.Option(None, "--db-b", help="Database of run B: another machine "
                                       "or library version."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
):
    """Two runs side by side: per matching cell (model, scheme, runtime, workload, device type),
    the ratio B/A of the medians with a bootstrap 95% CI and what it may claim. Cells measured
    in different environments are paired and said to differ; no difference between them is
    called significant."""
    from quantbench.analysis import build_records
    from quantbench.report.compare import pair, table
    from quantbench.store import Store

    with Store(db, create=False) as store_a, \
            (Store(db_b, create=False) if db_b else contextlib.nullcontext(store_a)) as store_b:
        id_a, id_b = store_a.resolve_run(run_a), store_b.resolve_run(run_b)
        rows = pair(build_records(store_a, id_a), build_records(store_b, id_b))
    if not rows:
        raise UsageError(f"runs {id_a} and {id_b} share no cell (same model, scheme, runtime, "
                         "workload and device type): nothing to compare")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    out.print(table(rows, f"{id_a}" + (f" in {db}" if db_b else ""),
                    f"{id_b}" + (f" in {db_b}" if db_b else "")))
    mixed = sorted({d for r in rows for d in r.get("environment_differences", [])})
    if mixed:
        out.print(f"[yellow]note:[/yellow] the runs were measured in different environments "
                  f"({', '.join(mixed)}): the ratios compare machines and versions as much as "
                  "schemes, and none is called significant")


@app.command()
def generations(
    db: str = typer.Option("quantbench.db", help="SQLite results database."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id (or a unique prefix); "
                                         "default: the latest run."),
):
    """Each scheme's greedy continuation of the fixed prompts beside the baseline's, the first
    differing token marked (runs measured with quality)."""
    from quantbench.analysis import build_records
    from quantbench.report.generations import MARK, rows
    from quantbench.store import Store

    with Store(db, create=False) as store:
        run = store.resolve_run(run_id)
        _say_state(store, run)
        entries = rows(build_records(store, run))
    if not entries:
        raise UsageError(f"run {run} has no generations: it was measured without quality "
                         "(random weights or --no-quality)")
    from rich.markup import escape

    for e in entries:
        out.print(f"[bold]{escape(e['prompt'])}[/bold]")
        out.print(f"  [cyan]{escape(e['baseline'])}[/cyan] (baseline): {escape(e['baseline_text'])}")
        for s in e["schemes"]:
            if s["diverges_at"] is None:
                out.print(f"  [cyan]{escape(s['scheme'])}[/cyan]: {escape(s['same'])} [green](identical)[/green]")
            else:
                out.print(f"  [cyan]{escape(s['scheme'])}[/cyan]: {escape(s['same'])}[red]{MARK}"
                          f"{escape(s['rest'])}[/red] [dim](differs from token "
                          f"{s['diverges_at'] + 1})[/dim]")
        out.print()


@app.command("log")
def log_command(
    db: str = typer.Option("quantbench.db", help="SQLite results database."),
    out_file: Optional[str] = typer.Option(None, "--out", help="Write the log here (an existing "
                                           "file is kept as FILE.bak-<time> first); default: "
                                           "standard output."),
):
    """Rebuild the whole Markdown experiment log from the database."""
    from pathlib import Path

    from quantbench import outputs
    from quantbench.report.exports import write_new
    from quantbench.report.log import full_log
    from quantbench.store import Store

    if out_file is not None:
        outputs.check_file(out_file, "--out")
    with Store(db, create=False) as store:
        text = full_log(store)
    if not out_file:
        sys.stdout.write(text)
        return
    path = Path(out_file)
    if path.exists():
        from datetime import datetime

        backup = path.with_name(f"{path.name}.bak-{datetime.now():%Y%m%d-%H%M%S}")
        path.rename(backup)
        err.print(f"kept the previous log as {backup}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_new(path, text)
    err.print(f"wrote {path}")
