"""`--dry-run`: the cells a run or sweep would measure, and how long they took before."""

from __future__ import annotations

import contextlib
from pathlib import Path

from rich.table import Table


def print_plan(console, bench) -> None:
    from quantbench.store import Store

    known = Path(bench.db).is_file()  # a dry run creates no database
    with Store(bench.db, create=False) if known else contextlib.nullcontext() as store:
        _print_plan(console, bench, store)


def _print_plan(console, bench, store) -> None:
    comparisons = bench.plan()
    repeat = bench.config.comparing.repeat_baseline
    table = Table(title="cells this run would measure (--dry-run: nothing is measured)",
                  title_justify="left")
    for name in ("#", "comparison", "scheme", "runtime", "devices", "estimate", "from"):
        table.add_column(name, justify="right" if name in ("#", "estimate") else "left")
    total, known, unknown, position = 0.0, 0, 0, 0
    for comparison in comparisons:
        cells = list(comparison.cells)
        roles = ["measure"] * len(cells) + (["baseline-repeat"] if repeat else [])
        for cell, role in zip(cells + cells[:1], roles):
            position += 1
            data = cell.to_dict()
            estimate = store.wall_estimate(data) if store else None
            if estimate:
                total += estimate[0]
                known += 1
            else:
                unknown += 1
            table.add_row(str(position), comparison.label,
                          cell.scheme + (" (baseline, again)" if role != "measure" else ""),
                          cell.runtime, ",".join(comparison.lanes),
                          f"{estimate[0]:.0f} s" if estimate else "?",
                          estimate[1] if estimate else "never measured here")
    console.print(table)
    lanes = {lane for c in comparisons for lane in c.lanes}
    spread = f", spread over {len(lanes)} devices" if len(lanes) > 1 else ""
    text = f"{position} cells in {len(comparisons)} comparison(s){spread}; "
    if known:
        text += f"{total / 60:.1f} min for the {known} measured before"
        if len(lanes) > 1:
            text += f" (about {total / 60 / len(lanes):.1f} min of wall time on {len(lanes)} devices)"
        text += f", {unknown} never measured here (no estimate)" if unknown else ""
    else:
        text += "no estimate: none of them was measured in this database before"
    console.print(text, highlight=False)
    for note in bench.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
