"""The terminal comparison table: what did each scheme gain and what did it cost."""

from __future__ import annotations

from rich.table import Table

from quantbench.config import repetitions_text
from quantbench.report.columns import cell_text, shown
from quantbench.report.markdown import (LEGEND, contention_note, graph_note, over_ceiling_note,
                                        runs_text, scheme_label)


def note_text(r: dict) -> str:
    """Why a row reads as it does: failed, reused, contended, no CUDA graph, quality failed."""
    if r["status"] != "ok":
        return f"failed: {r['error']}"
    parts = [f"reused from {r['measured_in_run']}" if r["reused"] else "", contention_note(r),
             graph_note(r), (r.get("bits_per_weight") or {}).get("container_note", "")]
    for part, name in (("quality", "quality"), ("lm_eval", "lm-eval")):
        error = (r.get(part) or {}).get("error")
        if error:
            parts.append(f"{name} failed: {error}")
    return "; ".join(p for p in parts if p)


_SCHEME = "scheme"
_NOTE = "note"


def _texts(records, columns):
    rows = []
    for r in records:
        rows.append([scheme_label(r)] + [cell_text(c, r) for c in columns])
    return rows


def _width(header: str, cells: list[str]) -> int:
    """Room a column needs: its widest cell, and its header's longest word (headers wrap)."""
    return max([len(w) for w in header.split()] + [len(c) for c in cells] + [1])


def _build(title, headers, widths, rows, styles=None) -> Table:
    table = Table(title=title, title_justify="left")
    for i, (header, width) in enumerate(zip(headers, widths)):
        # A fixed width, wide enough for every cell: cells never wrap or shrink, headers
        # wrap at their spaces, and the table is exactly as wide as comparison_tables planned.
        table.add_column(header, justify="left" if i == 0 or header == _NOTE else "right",
                         width=width, overflow="fold")
    for k, row in enumerate(rows):
        style = (styles or {}).get(k)
        table.add_row(*row, style=style)
    return table


def comparison_tables(records: list[dict], title: str | None = None, width: int = 160
                      ) -> tuple[list[Table], list[str]]:
    """The run table laid out for a terminal `width` columns wide: one table when it fits,
    else the columns stacked into several tables (the scheme repeated in each), never a
    column squeezed out. Returns (tables, note lines printed below when no note column fits)."""
    columns = shown(records, brief=True)
    rows = _texts(records, columns)
    headers = [_SCHEME] + [c.header for c in columns]
    widths = [_width(h, [row[i] for row in rows]) for i, h in enumerate(headers)]
    notes = [note_text(r) for r in records]
    styles = {k: "red" for k, r in enumerate(records) if r["status"] != "ok"}

    def span(ws):  # box borders and one space of padding either side of each cell
        return sum(ws) + 3 * len(ws) + 1

    if any(notes):
        note_width = _width(_NOTE, notes)
        if span(widths + [note_width]) <= width:
            return [_build(title, headers + [_NOTE], widths + [note_width],
                           [row + [n] for row, n in zip(rows, notes)], styles)], []
    groups, current = [], [0]
    for i in range(1, len(headers)):
        if span([widths[j] for j in current + [i]]) > width and len(current) > 1:
            groups.append(current)
            current = [0]
        current.append(i)
    groups.append(current)
    tables = []
    for n, group in enumerate(groups):
        part = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        tables.append(_build((title or "") + part if title or part else None,
                             [headers[i] for i in group], [widths[i] for i in group],
                             [[row[i] for i in group] for row in rows], styles))
    below = [f"{scheme_label(r)}: {n}" for r, n in zip(records, notes) if n]
    return tables, below


def comparison_table(records: list[dict], title: str | None = None) -> Table:
    """One table, as wide as it needs (Markdown-like renderers, wide terminals)."""
    tables, _ = comparison_tables(records, title, width=10_000)
    return tables[0]


def print_comparison(console, records: list[dict], title: str | None = None) -> None:
    from rich.markup import escape

    tables, below = comparison_tables(records, title, width=console.width)
    for table in tables:
        console.print(table)
    for line in below:
        console.print(f"[yellow]note:[/yellow] {escape(line)}", highlight=False)


def runtimes(records: list[dict]) -> str:
    """'eager', or 'eager; llama.cpp for gguf-*' when schemes bring their own engine."""
    first = records[0]["runtime"]
    others = {}
    for r in records:
        if r["runtime"] != first:
            others.setdefault(r["runtime"], []).append(r["scheme"])
    return first + "".join(f"; {rt} for {', '.join(names)}" for rt, names in others.items())


def caption(records: list[dict]) -> list[str]:
    if not records:
        return []
    r = records[0]
    w = r["workload"]
    levels = sorted({f"{x['metrics']['decode_tok_s']['median_ci_level']:.1%}"
                     for x in records if 'decode_tok_s' in x['metrics']})
    coverage = f" (coverage {', '.join(levels)})" if levels else ""
    lines = [f"model: {r['model']} ({r['model_label']})" if r["model_label"] else f"model: {r['model']}",
             f"device: {r['device']}   runtime: {runtimes(records)}   batch {w['batch_size']}, "
             f"{w['prompt_tokens']} prompt + {w['new_tokens']} new tokens (EOS ignored)   "
             f"{repetitions_text(r['repetitions'])} per scheme",
             f"decode CI: order-statistic interval for the median{coverage}; "
             f"speedup CI: bootstrap of the ratio of medians; {LEGEND}",
             ]
    scopes = sorted({x["memory"].get("peak_scope") or _old_scope(x)
                     for x in records if x["status"] == "ok"})
    if scopes:
        lines.append("peak MB: " + "; ".join(scopes))
    over = over_ceiling_note(records)
    if over:
        lines.append(over)
    runs = [f"{scheme_label(x)} {runs_text(x)}" for x in records if x["status"] == "ok"]
    if runs:
        lines.append("timed runs + warm-ups: " + ", ".join(runs) + " (unsteady: warm-ups ran out "
                     "before the rate settled; trend: the timed samples drift with their order)")
    return lines


def _old_scope(record: dict) -> str:
    """Cells recorded before memory named its own peak window (reset before the warm-ups)."""
    if record["device"] == "cpu":
        return "process peak RSS during warm-up and timed runs"
    return "torch peak allocated during warm-up and timed runs"
