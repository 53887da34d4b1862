"""`quantbench compare`: two runs side by side (or two databases: two machines, two library
versions), per matching cell, with the ratio of medians and what it may claim. Cells of
different environments are still paired (that is often the point: another card, another
library version), but every output says so and no difference between them is called
significant: the environment, not the scheme, may be what moved."""

from __future__ import annotations

from rich.table import Table

from quantbench.identity import comparison_key, environment_differences
from quantbench.measure.stats import DEFAULT_MARGIN, ratio_of_medians, verdict
from quantbench.report.columns import timed_metrics
from quantbench.report.markdown import LEGEND, VERDICT_MARKS


def pair(a: list[dict], b: list[dict], margin: float = DEFAULT_MARGIN) -> list[dict]:
    index_b = {comparison_key(r): r for r in b if r.get("role", "measure") == "measure"}
    rows = []
    for ra in a:
        if ra.get("role", "measure") != "measure":
            continue
        rb = index_b.get(comparison_key(ra))
        if rb is None:
            continue
        same_env = ra.get("env_key") == rb.get("env_key")
        row = {"model": ra["model"], "scheme": ra["scheme"], "runtime": ra["runtime"],
               "device_a": ra["device"], "device_b": rb["device"], "status_a": ra["status"],
               "status_b": rb["status"], "same_environment": same_env, "metrics": {}}
        if not same_env:
            row["environment_differences"] = environment_differences(
                ra.get("env") or {}, rb.get("env") or {}, ra["device"]) or ["machine or run"]
        for metric, _ in timed_metrics():
            sa, sb = ra["metrics"].get(metric), rb["metrics"].get(metric)
            if sa and sb:
                ratio = ratio_of_medians(sb["samples"], sa["samples"])
                row["metrics"][metric] = {"a": sa["median"], "b": sb["median"],
                                          **verdict(ratio, sa["n"], sb["n"], margin,
                                                    comparable=True)}
                if not same_env:  # the ratio stands, the claim does not
                    row["metrics"][metric].update(
                        verdict="different environments", significant=False,
                        reason="measured in different environments: "
                               + ", ".join(row["environment_differences"]))
        row["weights_a"] = ra["memory"].get("weights_bytes")
        row["weights_b"] = rb["memory"].get("weights_bytes")
        rows.append(row)
    return rows


def table(rows: list[dict], label_a: str, label_b: str) -> Table:
    mixed = any(not r["same_environment"] for r in rows)
    note = ("; ≠ = different environments: ratios shown, no difference called significant"
            if mixed else "")
    t = Table(title=f"B / A   (A = {label_a}, B = {label_b}); {LEGEND}{note}", title_justify="left")
    for col in ("model", "scheme", "runtime"):
        t.add_column(col, no_wrap=True)
    for _, name in timed_metrics():
        t.add_column(f"{name}\nA -> B", justify="right")
        t.add_column("B/A [95% CI]", justify="right", no_wrap=True)
    t.add_column("weights MB\nA -> B", justify="right")
    t.add_column("environment")
    for row in rows:
        cells = [row["model"], row["scheme"], row["runtime"]]
        for metric, _ in timed_metrics():
            m = row["metrics"].get(metric)
            if m is None:
                cells += ["-", "failed" if "failed" in (row["status_a"], row["status_b"]) else "-"]
                continue
            mark = " ≠" if m["verdict"] == "different environments" else \
                VERDICT_MARKS.get(m["verdict"], "")
            cells += [f"{m['a']:.1f} -> {m['b']:.1f}",
                      f"{m['ratio']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]{mark}"]
        wa, wb = row["weights_a"], row["weights_b"]
        cells.append(f"{wa / 1e6:,.1f} -> {wb / 1e6:,.1f}" if wa and wb else "-")
        cells.append("same" if row["same_environment"] else
                     "differs: " + ", ".join(row["environment_differences"]))
        t.add_row(*cells)
    return t
