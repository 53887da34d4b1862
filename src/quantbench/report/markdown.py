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


# How a ratio's verdict is marked after its figure (measure.stats.verdict says what each means).
VERDICT_MARKS = {"faster": "", "slower": "", "equivalent": " ~", "inconclusive": " ?",
                 "no claim": " n<5"}
LEGEND = ("~ = equivalent (within the margin or the baseline's own drift), ? = inconclusive, "
          "n<5 = too few runs for a claim, n/c = not compared (measured in another environment)")


def ratio_text(ratio: dict) -> str:
    if ratio.get("verdict") == "not comparable":
        return "n/c: other env"
    mark = VERDICT_MARKS.get(ratio.get("verdict"), "" if ratio.get("significant") else " ~")
    return f"{ratio['ratio']:.2f} [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}]{mark}"


def speedup_text(record: dict) -> str:
    """Decode speedup vs the baseline with its CI and what it may claim."""
    versus = record.get("vs_baseline") or {}
    if record.get("role") == "baseline-repeat":
        drift = versus.get("baseline_drift")
        return ratio_text(drift) if drift else "-"
    if record["baseline"]:
        return "1.00"
    ref = versus.get("speed_reference")
    if ref == record["scheme"]:
        return f"1.00 ({record['runtime']} ref)"
    speed = versus.get("decode_speedup")
    if not speed:
        return "n/c: other env" if versus.get("not_comparable") else "-"
    versus_ref = f" vs {ref}" if ref else ""
    return ratio_text(speed) + versus_ref


def scheme_label(record: dict) -> str:
    if record.get("role") == "baseline-repeat":
        return record["scheme"] + " (baseline, again)"
    return record["scheme"] + (" (baseline)" if record["baseline"] else "")


def tables_text(record: dict) -> str:
    """The output head's storage (and whether the input embedding shares it)."""
    tables = (record.get("info") or {}).get("tables") or {}
    head = tables.get("lm_head")
    if not head:
        return "-"
    dtype = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(head["dtype"], head["dtype"])
    return f"{dtype} {head['bytes'] / 1e6:,.1f} MB" + (" tied" if head.get("tied") else "")


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
    """The run as a Markdown table: every column of the spec (report/columns.py)."""
    from quantbench.report.columns import cell_text, shown

    columns = shown(records)
    lines = ["| scheme | " + " | ".join(c.header for c in columns) + " |",
             "|" + " --- |" * (len(columns) + 1)]
    for r in records:
        lines.append(f"| {_cell(scheme_label(r))} | "
                     + " | ".join(_cell(cell_text(c, r)) for c in columns) + " |")
    return "\n".join(lines)


def runs_text(record: dict) -> str:
    """Timed runs, and warm-ups, as done: '12 (+3 w)'; a mark where either did not settle."""
    info = record.get("info") or {}
    stop, warm = info.get("timed_runs") or {}, info.get("warmup") or {}
    n = (record["metrics"].get("decode_tok_s") or record["metrics"].get("e2e_tok_s") or {}).get("n")
    if not stop:
        return str(n) if n else "-"
    text = f"{stop['runs']}+{warm.get('done', 0)}w"
    if warm and not warm.get("steady"):
        text += " unsteady"  # warm-ups ran out before the rate settled
    if (stop.get("trend") or {}).get("drifting"):
        text += " trend"  # the timed samples drift with their index (Kendall p < 0.01)
    return text


def summary(records: list[dict]) -> list[str]:
    """Plain-language findings, each backed by a figure of the table."""
    base = next((r for r in records if r["baseline"]), None)
    if base is None:
        return ["No baseline cell: nothing to compare."]
    if base["status"] != "ok":
        return [f"The baseline {base['scheme']} failed ({base['error']}): no comparison possible."]
    out = []
    groups: dict[str, dict[str, list]] = {}
    for r in records:
        versus = r.get("vs_baseline") or {}
        speed = versus.get("decode_speedup")
        ref = versus.get("speed_reference") or base["scheme"]
        if r["baseline"] or r.get("role") != "measure" or ref == r["scheme"]:
            continue
        if not speed:
            if versus.get("not_comparable"):
                groups.setdefault(ref, {}).setdefault("not comparable", []).append(
                    f"{r['scheme']} ({versus['not_comparable']})")
            continue
        text = f"{r['scheme']} ({speed['ratio']:.2f}x, 95% CI {speed['ci95'][0]:.2f}-{speed['ci95'][1]:.2f})"
        groups.setdefault(ref, {}).setdefault(speed.get("verdict") or
                                              ("faster" if speed["significant"] and speed["ratio"] > 1
                                               else "slower" if speed["significant"] else "equivalent"),
                                              []).append(text)
    out.extend(drift_summary(records))
    for ref, found in groups.items():
        threshold = next((r["vs_baseline"]["decode_speedup"]["threshold"] for r in records
                          if (r.get("vs_baseline") or {}).get("decode_speedup", {}).get("threshold")),
                         None)
        within = f"within ±{threshold:.1%}" if threshold else "within the margin"
        phrases = {"faster": f"Faster than {ref} in decode, beyond the ±{(threshold or 0):.1%} threshold: ",
                   "slower": f"Slower than {ref} in decode, beyond the ±{(threshold or 0):.1%} threshold: ",
                   "equivalent": f"Equivalent to {ref} in decode ({within}): ",
                   "inconclusive": f"Inconclusive against {ref} (the interval reaches into the "
                                   "equivalence threshold; more runs would tell): ",
                   "no claim": f"No claim against {ref} (fewer than 5 timed runs): ",
                   "not comparable": f"Not compared with {ref} (different environments): "}
        for key, phrase in phrases.items():
            if found.get(key):
                out.append(phrase + "; ".join(found[key]) + ".")
        if not found.get("faster") and any(found.get(k) for k in ("slower", "equivalent", "inconclusive")):
            out.append(f"None significantly faster than {ref} in decode.")
    shrink = [(r["scheme"], r["vs_baseline"]["weights_reduction_pct"]) for r in records
              if not r["baseline"] and r.get("vs_baseline") and "weights_reduction_pct" in r["vs_baseline"]]
    if shrink:
        best = max(shrink, key=lambda x: x[1])
        out.append(f"Weight memory vs {base['scheme']}: " + ", ".join(f"{n} {p:.0f}% smaller" for n, p in shrink)
                   + f" (most: {best[0]}).")
    out.extend(bits_summary(records))
    out.extend(quality_summary(records, base))
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        out.append("Failed: " + "; ".join(f"{r['scheme']} ({r['error']})" for r in failed) + ".")
    if base.get("random_weights"):
        out.append("Random weights: these figures are valid for speed and memory only.")
    out.extend(roofline_summary(records))
    over = over_ceiling_note(records)
    if over:
        out.append(over[0].upper() + over[1:] + ".")
    contended = [f"{r['scheme']} ({contention_note(r)})" for r in records if contention_note(r)]
    if contended:
        out.append("Measured under contention, so slower than the device allows and never reused "
                   "as clean: " + "; ".join(contended) + ".")
    out.extend(objectives(records, base))
    return out


def objectives(records: list[dict], base: dict) -> list[str]:
    """One line per thing a reader may be choosing for, each with its figure and interval."""
    from quantbench.analysis import quantized_bits

    measured = [r for r in records if r["status"] == "ok" and r.get("role", "measure") == "measure"
                and "decode_tok_s" in r["metrics"]]
    if len(measured) < 2:
        return []
    out = []
    fastest = max(measured, key=lambda r: r["metrics"]["decode_tok_s"]["median"])
    speed = fastest["metrics"]["decode_tok_s"]
    ratio = ((fastest.get("vs_baseline") or {}).get("decode_speedup")) or {}
    ref = (fastest.get("vs_baseline") or {}).get("speed_reference") or base["scheme"]
    faster = [r for r in measured if ((r.get("vs_baseline") or {}).get("decode_speedup") or {})
              .get("verdict") == "faster"]
    text = f"Fastest: {fastest['scheme']}, {median_ci_text(speed)} decode tok/s"
    if fastest is base or fastest["scheme"] == ref:
        text += f" (the {'baseline' if fastest is base else 'reference'} itself)"
    elif ratio:
        text += (f", {ratio['ratio']:.2f}x {ref} [{ratio['ci95'][0]:.2f}, {ratio['ci95'][1]:.2f}] "
                 f"({ratio.get('verdict') or 'no verdict'})")
    if not faster:
        text += f"; none significantly faster than {base['scheme']}"
    out.append(text + ".")
    sized = [r for r in measured if r["memory"].get("weights_bytes")]
    if sized:
        small = min(sized, key=lambda r: r["memory"]["weights_bytes"])
        bits = (small.get("bits_per_weight") or {}).get("model")
        cut = (small.get("vs_baseline") or {}).get("weights_reduction_pct")
        out.append(f"Smallest: {small['scheme']}, {small['memory']['weights_bytes'] / 1e6:,.1f} MB "
                   "of weights" + (f" ({bits:.2f} bits per weight)" if bits else "")
                   + (f", {cut:.0f}% under {base['scheme']}" if cut and small is not base else "")
                   + ".")
    out.extend(_smallest_kv(measured, base))
    # Another runtime's full-precision reference (gguf-f32) is the baseline's twin, not a
    # candidate: it would always be "closest".
    scored = [r for r in measured if "kl_mean" in (r.get("quality") or {}) and r is not base
              and r["scheme"] != base["scheme"] and r.get("speed_reference") != r["scheme"]]
    if scored:
        close = min(scored, key=lambda r: r["quality"]["kl_mean"])
        q = close["quality"]
        out.append(f"Closest to {base['scheme']}: {close['scheme']}, KL {q['kl_mean']:.4f} "
                   f"(95% CI {q['kl_ci95'][0]:.4f}-{q['kl_ci95'][1]:.4f}), PPL x{q['ppl_ratio']:.3f}.")
        weighed = [r for r in scored if quantized_bits(r)]
        if weighed:
            from quantbench.report.panels import pareto

            # Fewer bits and less drift both win: the front of (-bits, KL).
            front = [weighed[i] for _, _, i in pareto(
                [(-quantized_bits(r), r["quality"]["kl_mean"], i) for i, r in enumerate(weighed)])]
            out.append("Quality per bit (none has both fewer bits and less drift): " + "; ".join(
                f"{r['scheme']} {quantized_bits(r):.2f} bits, KL {r['quality']['kl_mean']:.4f}"
                for r in sorted(front, key=quantized_bits)) + ".")
    return out


def _smallest_kv(measured: list[dict], base: dict) -> list[str]:
    """Where KV-cache formats were compared: the smallest cache, against the baseline's."""
    held = [r for r in measured if (r["info"].get("kv_cache") or {}).get("stored_bytes")]
    if not any(r["info"]["kv_cache"].get("format") != "auto" for r in held):
        return []
    small = min(held, key=lambda r: r["info"]["kv_cache"]["stored_bytes"])
    kv = small["info"]["kv_cache"]
    base_kv = (base["info"].get("kv_cache") or {}).get("stored_bytes")
    return [f"Smallest KV cache: {small['scheme']}, {kv['stored_bytes'] / 1e6:,.1f} MB at "
            f"{kv['positions']:,} positions x {kv['sequences']}"
            + (f" ({base_kv / kv['stored_bytes']:.1f}x under {base['scheme']}'s)"
               if base_kv and small is not base else "") + "."]


def bits_summary(records: list[dict]) -> list[str]:
    """Bits per weight as stored, and the schemes whose name promises fewer than they store."""
    measured = [r for r in records if (r.get("bits_per_weight") or {}).get("model")
                and r.get("role", "measure") == "measure"]
    if not measured:
        return []
    out = ["Bits per weight as stored, scales and packing included (whole model; layers between "
           "the embedding and the head): " + "; ".join(
               f"{r['scheme']} {r['bits_per_weight']['model']:.2f}"
               + (f" ({r['bits_per_weight']['layers']:.2f})" if "layers" in r["bits_per_weight"] else "")
               for r in measured) + "."]
    wide = [f"{r['scheme']} ({r['bits_per_weight']['container_note']})" for r in measured
            if r["bits_per_weight"].get("container_note")]
    if wide:
        out.append("! Not the bits the name says: " + "; ".join(wide) + ".")
    return out


def drift_summary(records: list[dict]) -> list[str]:
    """The A/A check: the baseline measured again at the end of the run."""
    repeat = next((r for r in records if r.get("role") == "baseline-repeat"), None)
    if repeat is None:
        return ["The baseline was measured once: no drift check, so only the margin guards "
                "against calling noise a difference."]
    drift = (repeat.get("vs_baseline") or {}).get("baseline_drift")
    floor = (repeat.get("vs_baseline") or {}).get("noise_floor")
    if repeat["status"] != "ok" or not drift:
        return ["The baseline's second measurement failed: no drift check for this run."]
    return [f"Baseline drift: {repeat['scheme']} measured again after the other cells ran at "
            f"{drift['ratio']:.3f}x its first measurement (95% CI {drift['ci95'][0]:.3f}-"
            f"{drift['ci95'][1]:.3f}); differences within "
            f"±{max(drift['margin'], floor or 0):.1%} (the larger of the {drift['margin']:.0%} "
            "margin and this drift's farther interval end) are not called faster or slower."]


def graph_note(record: dict) -> str:
    """For a compiled cell that did not compile, or did not replay one CUDA graph per token:
    why. A compile that failed leaves the step's eager kernels measured under the compiled
    runtime's name, which only this note tells apart."""
    compiled = record.get("info", {}).get("compiled") or {}
    failed = (compiled.get("compile") or {}).get("error")
    notes = [f"not compiled ({failed}): eager kernels measured"] if failed else []
    graph = compiled.get("cuda_graph") or {}
    if compiled and not graph.get("captured"):
        notes.append("compiled, no CUDA graph on a CPU" if not record["device"].startswith("cuda")
                     else f"no CUDA graph ({graph.get('reason', 'not recorded')})")
    return "; ".join(notes)


def contention_note(record: dict) -> str:
    from quantbench.measure.contention import contention_flag

    flag = contention_flag(record.get("info") or {})
    return f"contended: {flag}" if flag else ""


# Above the measured ceiling: the bytes per token were read from a faster level than the one
# the ceiling measured (caches hold a small model's weights), or the ceiling was measured low.
OVER_CEILING = "!"


def roofline_text(record: dict) -> str:
    roof = record.get("roofline") or {}
    if "ceiling_tok_s" not in roof:
        return "-"
    pct = roof["achieved_pct"]
    mark = OVER_CEILING if pct > 100 else ""
    return f"{pct:.{1 if pct < 10 else 0}f}%{mark} of {roof['ceiling_tok_s']:,.0f}"


def over_ceiling_note(records: list[dict]) -> str:
    over = [r for r in records if ((r.get("roofline") or {}).get("achieved_pct") or 0) > 100]
    if not over:
        return ""
    return (f"{OVER_CEILING} above 100% of the roofline ({', '.join(scheme_label(r) for r in over)}): "
            "faster than the measured memory ceiling allows, so the bytes per token were partly "
            "served from caches (the weights fit in them) or the ceiling was measured low; such "
            "a figure bounds nothing")


def roofline_summary(records: list[dict]) -> list[str]:
    placed = [r for r in records if "ceiling_tok_s" in (r.get("roofline") or {})]
    if not placed:
        reason = next(((r.get("roofline") or {}).get("reason") for r in records
                       if (r.get("roofline") or {}).get("reason")), "no hardware profile")
        return [f"No roofline for this run ({reason}): figures are not placed against the "
                "hardware's limit."]
    roof = placed[0]["roofline"]
    bw = roof["bandwidth_Bps"]
    source = roof.get("bandwidth_source", "measured copy (read + write)")
    beside = (f"; copy {roof['copy_bandwidth_Bps'] / 1e9:,.1f} GB/s beside it"
              if roof.get("copy_bandwidth_Bps") and roof["copy_bandwidth_Bps"] != bw else "")
    parts = [f"{scheme_label(r)} {r['roofline']['achieved_pct']:.1f}% of "
             f"{r['roofline']['ceiling_tok_s']:,.0f} tok/s" for r in placed]
    return [f"Roofline (decode against the {source} bandwidth, {bw / 1e9:,.1f} GB/s{beside}, over "
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
