"""The experiment log: one Markdown entry per run, always generated from the database."""

from __future__ import annotations

from pathlib import Path

from quantbench.analysis import build_records
from quantbench.report.generations import to_markdown as generations_markdown
from quantbench.config import repetitions_text
from quantbench.report.markdown import LEGEND, _cell, _code, lm_eval_markdown, results_table, summary
from quantbench.report.sweep import by_comparison, crossover_lines
from quantbench.report.table import _old_scope, runtimes

LOG_HEADER = ("# quantbench experiment log\n\nOne entry per `quantbench run`, generated from the "
              "results database (`quantbench log` rebuilds it). Every figure comes from the "
              "stored raw samples.\n")


def _hardware(env: dict) -> str:
    cpu = f"{env.get('cpu', '?')} ({env.get('cpu_cores_logical', '?')} logical cores, " \
          f"{(env.get('ram_bytes') or 0) / 2**30:.0f} GiB RAM)"
    gpus = "; ".join(f"{g['name']} ({g['memory_bytes'] / 2**30:.0f} GiB, capability "
                     f"{g['capability']}, driver {g.get('driver') or '?'})" for g in env.get("gpus", []))
    libs = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())
    return f"{cpu}; GPU: {gpus or 'none'}; {env.get('os', '?')}, Python {env.get('python', '?')}; {libs}"


def entry(store, run_id: str, number: int) -> str:
    run = store.run(run_id)
    records = build_records(store, run_id)
    config = run["config"]
    model = config["model"]
    params = next((r["info"].get("parameters") for r in records if r["info"].get("parameters")), None)
    env = store.env(run["env_id"]) if run["env_id"] else {}
    workload, reps = config["workload"], config["repetitions"]
    when = run["created_at"].replace("T", " ").replace("+00:00", " UTC")
    progress = store.run_state(run_id)
    resumed = (f", resumed after {len(progress['interruptions'])} interruption(s)"
               if progress["interruptions"] else "")
    if run["finished_at"]:
        state = (f"finished {run['finished_at'].replace('T', ' ').replace('+00:00', ' UTC')} after "
                 f"{run['wall_s']:.0f} s{resumed}")
    else:
        state = f"{progress['how']}: {progress['measured']}, shown below; the same command resumes it"
    lines = [
        f"## Experiment {number}: run {run_id}", "",
        f"- **Date:** {when} ({state})",
        f"- **Purpose:** {_cell(run['purpose'] or 'not given (--purpose)')}",
        f"- **Model:** {_cell(model['name'])} (`{_code(model['spec'])}`)"
        + (f", {params / 1e6:.1f} M parameters" if params else "")
        + (f"; {_cell(model.get('note'))}" if model.get("note") else ""),
        f"- **Hardware:** {_cell(_hardware(env))}",
        f"- **Configuration:** schemes {', '.join(config['schemes'])} (baseline {config['baseline']}); "
        f"device {config['device']}, runtime {runtimes(records) if records else config['runtime']}; "
        f"batch {workload['batch_size']}, "
        f"{workload['prompt_tokens']} prompt + {workload['new_tokens']} new tokens (EOS ignored); "
        f"{repetitions_text(reps)} per scheme; equivalence margin "
        f"{config.get('margin', 0.02):.0%}; prompts from "
        f"`{_code(config['prompt']['source'])}`",
        f"- **Command:** `{_code(run['command'] or 'Python API')}`", ""]
    comparisons = by_comparison(records)
    if len(comparisons) > 1:
        lines[4] = f"- **Models:** " + ", ".join(sorted({f"`{_code(r['model_spec'])}`"
                                                          for r in records}))
        lines[6] = (f"- **Configuration:** a sweep of {len(comparisons)} comparisons, each "
                    "scheme against the baseline of its own model, runtime, workload and device; "
                    f"{repetitions_text(reps)} per scheme; equivalence margin "
                    f"{config.get('margin', 0.02):.0%}")
        lines += ["### Results", ""]
        for label, members in comparisons:
            lines += [f"#### {_cell(label)}", "", results_table(members), ""]
            lines += [f"- {_cell(line)}" for line in summary(members)] + [""]
        lines += ["### Crossovers", ""]
        lines += [f"- {_cell(line)}" for line in crossover_lines(records)] or [
            "- none: no axis varies between comparisons of the same scheme"]
        lines += ["", "Decode CI: distribution-free interval for the median; speedup CI: "
                  f"bootstrap of the ratio of medians ({LEGEND})."]
        return _tail(lines, records, store, run, config)
    lines += [
        "### Results", "", results_table(records), "",
        "Decode CI: distribution-free interval for the median; speedup CI: bootstrap of the ratio "
        f"of medians ({LEGEND}). Peak MB: "
        + "; ".join(sorted({r["memory"].get("peak_scope") or _old_scope(r) for r in records
                            if r["status"] == "ok"})) + ".",
        "", "### Summary", ""]
    lines += [f"- {_cell(line)}" for line in summary(records)]
    return _tail(lines, records, store, run, config)


def _tail(lines: list[str], records, store, run, config) -> str:
    for section in (lm_eval_markdown(records), generations_markdown(records)):
        if section:
            lines += ["", section.rstrip("\n")]
    # Files are written when a run ends: an unfinished run has none to list.
    files = (config.get("files") or []) if run["finished_at"] else []
    lines += ["", "### Files", "", f"- database: `{_code(store.path)}`"]
    if not run["finished_at"]:
        lines.append("- no JSON, CSV or log entry: they are written when the run ends")
    lines += [f"- `{_code(f)}`" for f in files]
    return "\n".join(lines) + "\n"


def full_log(store) -> str:
    runs = store.run_ids()
    return LOG_HEADER + "".join("\n" + entry(store, run_id, i + 1) for i, run_id in enumerate(runs))


def append_entry(store, run_id: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    number = store.run_ids().index(run_id) + 1
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a") as fh:
        fh.write((LOG_HEADER if new else "") + "\n" + entry(store, run_id, number))
