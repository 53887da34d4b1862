"""Greedy continuations of the fixed prompts, each scheme beside the baseline's, with the first
token where they part marked."""

from __future__ import annotations

from quantbench.quality.metrics import first_divergence
from quantbench.report.markdown import _cell

MARK = "⟦"  # where a continuation leaves the baseline's


def _text(pieces: list[str]) -> str:
    return "".join(pieces)


def rows(records: list[dict]) -> list[dict]:
    """Per prompt: the baseline's continuation and each scheme's, with its divergence index."""
    base = next((r for r in records if r["baseline"]), None)
    base_gens = ((base or {}).get("quality") or {}).get("generations") or []
    out = []
    for i, gen in enumerate(base_gens):
        entry = {"prompt": gen["prompt"], "baseline": base["scheme"], "baseline_text": _text(gen["pieces"]),
                 "schemes": []}
        for r in records:
            gens = (r.get("quality") or {}).get("generations") or []
            if r is base or i >= len(gens):
                continue
            other = gens[i]
            at = first_divergence(gen["ids"], other["ids"])
            entry["schemes"].append({"scheme": r["scheme"], "diverges_at": at,
                                     "same": _text(other["pieces"][:at]) if at is not None else _text(other["pieces"]),
                                     "rest": _text(other["pieces"][at:]) if at is not None else ""})
        out.append(entry)
    return out


def to_markdown(records: list[dict]) -> str:
    entries = rows(records)
    if not entries:
        return ""
    lines = ["### Generations", "",
             f"Greedy, {len(entries)} fixed prompts; `{MARK}` marks the first token that differs "
             "from the baseline's continuation.", ""]
    for e in entries:
        lines += [f"**Prompt:** {_cell(e['prompt'])}", "",
                  "| scheme | continuation | first difference |", "| --- | --- | --- |",
                  f"| {_cell(e['baseline'])} (baseline) | {_cell(e['baseline_text'])} | - |"]
        for s in e["schemes"]:
            where = "identical" if s["diverges_at"] is None else f"token {s['diverges_at'] + 1}"
            text = _cell(s["same"]) + (f" {MARK}" + _cell(s["rest"]) if s["diverges_at"] is not None else "")
            lines.append(f"| {_cell(s['scheme'])} | {text} | {where} |")
        lines.append("")
    return "\n".join(lines)
