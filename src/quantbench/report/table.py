"""The terminal comparison table: what did each scheme gain and what did it cost."""

from __future__ import annotations

from rich.table import Table

from quantbench.config import repetitions_text
from quantbench.report.markdown import (LEGEND, graph_note, kl_text, median_ci_text, roofline_text,
                                        runs_text, scheme_label, speedup_text)


def _mb(value) -> str:
    return f"{value / 1e6:,.1f}" if value else "-"


def comparison_table(records: list[dict], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("scheme", no_wrap=True)
    table.add_column("decode tok/s median [CI]", justify="right", no_wrap=True)
    table.add_column("speedup [95% CI]", justify="right", no_wrap=True)
    table.add_column("TTFT ms", justify="right")
    table.add_column("weights MB", justify="right")
    table.add_column("peak MB", justify="right")
    table.add_column("weights -%", justify="right")
    has_quality = any(r.get("quality") for r in records)
    if has_quality:
        table.add_column("PPL", justify="right")
        table.add_column("KL ± SE", justify="right", no_wrap=True)
    table.add_column("% roofline", justify="right", no_wrap=True)
    has_note = any(r["status"] != "ok" or r["reused"] or graph_note(r)
                   or (r.get("quality") or {}).get("error") for r in records)
    if has_note:
        table.add_column("note")
    for r in records:
        name = scheme_label(r)
        if r["status"] != "ok":
            table.add_row(name, *["-"] * (len(table.columns) - 2), f"[red]failed: {r['error']}[/red]")
            continue
        m = r["metrics"]
        versus = r.get("vs_baseline") or {}
        reduction = versus.get("weights_reduction_pct")
        note = " ".join(filter(None, [f"reused from {r['measured_in_run']}" if r["reused"] else "",
                                      graph_note(r)]))
        quality = []
        if has_quality:
            q = r.get("quality") or {}
            quality = [f"{q['ppl']:.2f}" if "ppl" in q else "-", kl_text(r)]
            if q.get("error"):
                note = (note + " " if note else "") + f"[red]quality failed: {q['error']}[/red]"
        table.add_row(
            name,
            median_ci_text(m.get("decode_tok_s")),
            speedup_text(r),
            f"{m['ttft_ms']['median']:.1f}" if "ttft_ms" in m else "-",
            _mb(r["memory"].get("weights_bytes")),
            _mb(r["memory"].get("peak_bytes")),
            f"{reduction:.1f}%" if reduction is not None and not r["baseline"] else "-",
            *quality,
            roofline_text(r),
            *([note] if has_note else []),
        )
    return table


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
    lines = [f"model: {r['model']} ({r['model_label']})" if r["model_label"] else f"model: {r['model']}",
             f"device: {r['device']}   runtime: {runtimes(records)}   batch {w['batch_size']}, "
             f"{w['prompt_tokens']} prompt + {w['new_tokens']} new tokens (EOS ignored)   "
             f"{repetitions_text(r['repetitions'])} per scheme",
             f"decode CI: order-statistic interval for the median (coverage {', '.join(levels)}); "
             f"speedup CI: bootstrap of the ratio of medians; {LEGEND}",
             "peak MB: " + "; ".join(sorted({x["memory"].get("peak_scope") or _old_scope(x)
                                             for x in records if x["status"] == "ok"}))]
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
