"""Markdown views of records: the results table and the automatic summary."""

from __future__ import annotations

import html


def _cell(text) -> str:
    """User-supplied text in Markdown: no HTML, pipes or newlines leak through."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _code(text) -> str:
    """User-supplied text inside a `code span` (shown literally, so only backticks matter)."""
    return str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ")


def median_ci_text(summary: dict | None, digits: int = 1) -> str:
    if not summary:
        return "-"
    lo, hi = summary["median_ci"]
    return f"{summary['median']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def speedup_text(record: dict) -> str:
    """Decode speedup vs the baseline with its CI; `~` marks a non-significant difference."""
    if record["baseline"]:
        return "1.00"
    versus = record.get("vs_baseline") or {}
    ref = versus.get("speed_reference")
    if ref == record["scheme"]:
        return f"1.00 ({record['runtime']} ref)"
    speed = versus.get("decode_speedup")
    if not speed:
        return "-"
    mark = "" if speed["significant"] else " ~"
    versus_ref = f" vs {ref}" if ref else ""
    return f"{speed['ratio']:.2f} [{speed['ci95'][0]:.2f}, {speed['ci95'][1]:.2f}]{mark}{versus_ref}"


def ppl_text(record: dict) -> str:
    q = record.get("quality") or {}
    if "ppl" not in q:
        return "-"
    return f"{q['ppl']:.2f} [{q['ppl_ci95'][0]:.2f}, {q['ppl_ci95'][1]:.2f}]"


def kl_text(record: dict) -> str:
    """Mean KL(baseline || scheme) in nats ± its standard error."""
    q = record.get("quality") or {}
    if "kl_mean" not in q:
        return "failed" if q.get("error") else "-"
    return f"{q['kl_mean']:.4f} ± {q['kl_se']:.1g}"


def top1_text(record: dict) -> str:
    q = record.get("quality") or {}
    return f"{q['top1_agreement_pct']:.1f}" if "top1_agreement_pct" in q else "-"


def results_table(records: list[dict]) -> str:
    lines = ["| scheme | status | decode tok/s median [CI] | speedup [95% CI] | TTFT ms | "
             "prefill tok/s | weights MB | peak MB | weights -% | PPL [95% CI] | KL ± SE | top-1 % "
             "| roofline: % of ceiling tok/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        name = _cell(r["scheme"]) + (" (baseline)" if r["baseline"] else "")
        if r["status"] != "ok":
            lines.append(f"| {name} | failed: {_cell(r['error'])} |" + " - |" * 11)
            continue
        m = r["metrics"]
        versus = r.get("vs_baseline") or {}
        speed_text = speedup_text(r)
        reduction = versus.get("weights_reduction_pct")
        lines.append(
            f"| {name} | ok{' (reused)' if r['reused'] else ''} | {median_ci_text(m.get('decode_tok_s'))} "
            f"| {speed_text} | {m['ttft_ms']['median']:.1f} | {m['prefill_tok_s']['median']:.0f} "
            f"| {r['memory'].get('weights_bytes', 0) / 1e6:,.1f} "
            f"| {r['memory'].get('peak_bytes', 0) / 1e6:,.1f} "
            f"| {'-' if r['baseline'] or reduction is None else f'{reduction:.1f}%'} "
            f"| {ppl_text(r)} | {kl_text(r)} | {top1_text(r)} | {roofline_text(r)} |")
    return "\n".join(lines)


def summary(records: list[dict]) -> list[str]:
    """Plain-language findings, each backed by a figure of the table."""
    base = next((r for r in records if r["baseline"]), None)
    if base is None:
        return ["No baseline cell: nothing to compare."]
    if base["status"] != "ok":
        return [f"The baseline {base['scheme']} failed ({base['error']}): no comparison possible."]
    out = []
    groups: dict[str, tuple[list, list, list]] = {}
    for r in records:
        versus = r.get("vs_baseline") or {}
        speed = versus.get("decode_speedup")
        ref = versus.get("speed_reference") or base["scheme"]
        if r["baseline"] or not speed or ref == r["scheme"]:
            continue
        faster, slower, same = groups.setdefault(ref, ([], [], []))
        text = f"{r['scheme']} ({speed['ratio']:.2f}x, 95% CI {speed['ci95'][0]:.2f}-{speed['ci95'][1]:.2f})"
        (same if not speed["significant"] else faster if speed["ratio"] > 1 else slower).append(text)
    for ref, (faster, slower, same) in groups.items():
        if faster:
            out.append(f"Faster than {ref} in decode, significantly: " + "; ".join(faster) + ".")
        if slower:
            out.append(f"Slower than {ref} in decode, significantly: " + "; ".join(slower) + ".")
        if same:
            out.append(f"No significant decode difference from {ref}: " + "; ".join(same) + ".")
    shrink = [(r["scheme"], r["vs_baseline"]["weights_reduction_pct"]) for r in records
              if not r["baseline"] and r.get("vs_baseline") and "weights_reduction_pct" in r["vs_baseline"]]
    if shrink:
        best = max(shrink, key=lambda x: x[1])
        out.append(f"Weight memory vs {base['scheme']}: " + ", ".join(f"{n} {p:.0f}% smaller" for n, p in shrink)
                   + f" (most: {best[0]}).")
    out.extend(quality_summary(records, base))
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        out.append("Failed: " + "; ".join(f"{r['scheme']} ({r['error']})" for r in failed) + ".")
    if base.get("random_weights"):
        out.append("Random weights: these figures are valid for speed and memory only.")
    out.extend(roofline_summary(records))
    return out


def graph_note(record: dict) -> str:
    """For a compiled cell on a GPU that did not replay one CUDA graph per token: why."""
    compiled = record.get("info", {}).get("compiled") or {}
    graph = compiled.get("cuda_graph") or {}
    if not compiled or graph.get("captured") or not record["device"].startswith("cuda"):
        return ""
    return f"no CUDA graph ({graph.get('reason', 'not recorded')})"


def roofline_text(record: dict) -> str:
    roof = record.get("roofline") or {}
    if "ceiling_tok_s" not in roof:
        return "-"
    pct = roof["achieved_pct"]
    return f"{pct:.{1 if pct < 10 else 0}f}% of {roof['ceiling_tok_s']:,.0f}"


def roofline_summary(records: list[dict]) -> list[str]:
    placed = [r for r in records if "ceiling_tok_s" in (r.get("roofline") or {})]
    if not placed:
        reason = next(((r.get("roofline") or {}).get("reason") for r in records
                       if (r.get("roofline") or {}).get("reason")), "no hardware profile")
        return [f"No roofline for this run ({reason}): figures are not placed against the "
                "hardware's limit."]
    bw = placed[0]["roofline"]["bandwidth_Bps"]
    parts = [f"{r['scheme']} {r['roofline']['achieved_pct']:.1f}% of {r['roofline']['ceiling_tok_s']:,.0f} tok/s"
             for r in placed]
    return [f"Roofline (decode against the measured copy bandwidth, {bw / 1e9:,.1f} GB/s, over "
            "weight + KV-cache bytes per token): " + "; ".join(parts) + "."]


def quality_summary(records: list[dict], base: dict) -> list[str]:
    scored = [r for r in records if "kl_mean" in (r.get("quality") or {})]
    failed = [r for r in records if (r.get("quality") or {}).get("error")]
    out = []
    if not scored and not failed:
        return ["Quality was not measured in this run: speed and memory only."]
    if scored:
        q = scored[0]["quality"]
        out.append(f"Quality vs {q['baseline']} on the same {q['tokens_scored']} tokens of "
                   f"{q['source']} (token-level perplexity, context {q['context']}, stride "
                   f"{q['stride']}): baseline PPL {q['baseline_ppl']:.2f} "
                   f"[{q['baseline_ppl_ci95'][0]:.2f}, {q['baseline_ppl_ci95'][1]:.2f}].")
        others = sorted((r for r in scored if r["scheme"] != q["baseline"]),
                        key=lambda r: r["quality"]["kl_mean"])
        if others:
            out.append("Drift from the baseline, least first: " + "; ".join(
                f"{r['scheme']} KL {r['quality']['kl_mean']:.4f} "
                f"(95% CI {r['quality']['kl_ci95'][0]:.4f}-{r['quality']['kl_ci95'][1]:.4f}), "
                f"PPL x{r['quality']['ppl_ratio']:.3f}, same top token "
                f"{r['quality']['top1_agreement_pct']:.1f}%" for r in others) + ".")
    if failed:
        out.append("Quality failed for: " + "; ".join(
            f"{r['scheme']} ({r['quality']['error']})" for r in failed) + ".")
    if base.get("model_label") and "dequantized" in base["model_label"]:
        out.append("The baseline's weights are themselves dequantized from a Q4_1 GGUF: quality is "
                   "relative to that baseline, not to the original checkpoint.")
    return out


def lm_eval_markdown(records: list[dict]) -> str:
    """lm-evaluation-harness results per scheme and task (metric ± its stderr)."""
    scored = [r for r in records if r.get("lm_eval")]
    if not scored:
        return ""
    lines = ["### lm-evaluation-harness", "", "| scheme | task | metric | value | stderr |",
             "| --- | --- | --- | --- | --- |"]
    for r in scored:
        if r["lm_eval"].get("error"):
            lines.append(f"| {_cell(r['scheme'])} | - | - | not run: {_cell(r['lm_eval']['error'])} | - |")
            continue
        for task, values in r["lm_eval"]["results"].items():
            for key, value in values.items():
                if "_stderr" in key or not isinstance(value, (int, float)) or key == "sample_len":
                    continue
                metric = key.split(",")[0]
                err = values.get(key.replace(",", "_stderr,", 1))
                err_text = f"{err:.4f}" if isinstance(err, (int, float)) else "-"
                lines.append(f"| {_cell(r['scheme'])} | {_cell(task)} | {_cell(metric)} | "
                             f"{value:.4f} | {err_text} |")
    return "\n".join(lines) + "\n"
