"""`quantbench compare`: two runs side by side (or two databases: two machines, two library
versions), per matching cell, with the ratio of medians and whether it is significant."""

from __future__ import annotations

import json

from rich.table import Table

from quantbench.measure.stats import ratio_of_medians

METRICS = (("decode_tok_s", "decode tok/s"), ("prefill_tok_s", "prefill tok/s"), ("ttft_ms", "TTFT ms"))


def _key(r: dict) -> tuple:
    return (r["model"], r["scheme"], r["runtime"], json.dumps(r["workload"], sort_keys=True),
            r["device"].split(":")[0])


def pair(a: list[dict], b: list[dict]) -> list[dict]:
    index_b = {_key(r): r for r in b}
    rows = []
    for ra in a:
        rb = index_b.get(_key(ra))
        if rb is None:
            continue
        row = {"model": ra["model"], "scheme": ra["scheme"], "runtime": ra["runtime"],
               "device_a": ra["device"], "device_b": rb["device"], "status_a": ra["status"],
               "status_b": rb["status"], "metrics": {}}
        for metric, _ in METRICS:
            sa, sb = ra["metrics"].get(metric), rb["metrics"].get(metric)
            if sa and sb:
                row["metrics"][metric] = {"a": sa["median"], "b": sb["median"],
                                          **ratio_of_medians(sb["samples"], sa["samples"])}
        row["weights_a"] = ra["memory"].get("weights_bytes")
        row["weights_b"] = rb["memory"].get("weights_bytes")
        rows.append(row)
    return rows


def table(rows: list[dict], label_a: str, label_b: str) -> Table:
    t = Table(title=f"B / A   (A = {label_a}, B = {label_b}); ~ = not significant", title_justify="left")
    for col in ("model", "scheme", "runtime"):
        t.add_column(col, no_wrap=True)
    for _, name in METRICS:
        t.add_column(f"{name}\nA -> B", justify="right")
        t.add_column("B/A [95% CI]", justify="right", no_wrap=True)
    t.add_column("weights MB\nA -> B", justify="right")
    for row in rows:
        cells = [row["model"], row["scheme"], row["runtime"]]
        for metric, _ in METRICS:
            m = row["metrics"].get(metric)
            if m is None:
                cells += ["-", "failed" if "failed" in (row["status_a"], row["status_b"]) else "-"]
                continue
            mark = "" if m["significant"] else " ~"
            cells += [f"{m['a']:.1f} -> {m['b']:.1f}",
                      f"{m['ratio']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]{mark}"]
        wa, wb = row["weights_a"], row["weights_b"]
        cells.append(f"{wa / 1e6:,.1f} -> {wb / 1e6:,.1f}" if wa and wb else "-")
        t.add_row(*cells)
    return t
