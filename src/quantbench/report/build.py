"""`quantbench report`: the PNG and HTML dashboards of one run, read from the store."""

from __future__ import annotations

from pathlib import Path

from quantbench.analysis import build_records
from quantbench.config import repetitions_text
from quantbench.report import dashboard, html, panels
from quantbench.report.exports import write_new
from quantbench.report.markdown import summary
from quantbench.report.sweep import by_comparison, crossover_lines
from quantbench.report.table import runtimes


def history(store) -> list[dict]:
    """Every successful measurement in the database, each once (reused cells appear in several runs)."""
    seen, out = set(), []
    for run_id in store.run_ids():
        for r in build_records(store, run_id):
            key = (r["cell_id"], r["measured_in_run"])
            if r["status"] == "ok" and "decode_tok_s" in r["metrics"] and key not in seen:
                seen.add(key)
                out.append(r)
    return out


def _new_path(folder: Path, stem: str, suffix: str) -> Path:
    path = folder / f"{stem}{suffix}"
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


def write_report(store, run_id: str, out: str) -> list[str]:
    records = build_records(store, run_id)
    built = panels.build(records, history(store))
    head = records[0] if records else None
    models = sorted({r["model"] for r in records})
    title = f"quantbench run {run_id}" + (f": {', '.join(models)} on {head['device']}" if head else "")
    lines = []
    if head:
        w = head["workload"]
        lines.append(f"{head['model_label']}" if head["model_label"] else "")
        lines.append(f"batch {w['batch_size']}, {w['prompt_tokens']} prompt + {w['new_tokens']} new "
                     f"tokens, {repetitions_text(head['repetitions'])}, runtime {runtimes(records)}")
        progress = store.run_state(run_id)
        if progress["state"] != "finished":
            lines.append(f"This run is {progress['how']}: {progress['measured']}, shown here; the "
                         "same command resumes it.")
        purpose = store.run(run_id)["purpose"]
        if purpose:
            lines.append(f"purpose: {purpose}")
        comparisons = by_comparison(records)
        if len(comparisons) > 1:
            lines[1] = (f"a sweep of {len(comparisons)} comparisons, each against the baseline of "
                        f"its own model, runtime, workload and device; "
                        f"{repetitions_text(head['repetitions'])}")
            lines += crossover_lines(records) or ["no axis varies between comparisons of the "
                                                  "same scheme: no crossover to show"]
            for label, members in comparisons:
                lines += [f"{label}: {line}" for line in summary(members)]
        else:
            lines += summary(records)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    png = _new_path(folder, f"{run_id}-dashboard", ".png")
    dashboard.render_png(built, title.replace("$", r"\$"), png)
    page = _new_path(folder, f"{run_id}-dashboard", ".html")
    write_new(page, html.render_html(built, records, title, [x for x in lines if x]))
    return [str(png), str(page)]
