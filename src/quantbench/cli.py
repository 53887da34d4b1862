"""The `quantbench` command line."""

from __future__ import annotations

import json
import shlex
import signal
import sys
from typing import Optional

import typer
from rich.console import Console

from quantbench.errors import UsageError

# typer >= 0.29 vendors its own click; take its exception classes from typer itself.
ClickUsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
# click raises its Abort on Ctrl-C; typer >= 0.29 turns it into exit status 130 itself.
ClickAbort = getattr(sys.modules[ClickUsageError.__module__], "Abort", typer.Abort)

app = typer.Typer(
    add_completion=False, no_args_is_help=False, rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Measure what quantizing an LLM really buys: speed, memory and quality of each scheme, "
         "like with like, against one baseline. Results go to a SQLite database; every report "
         "and export is read from it.")
# Tables are wide: when piped (CI logs, files) use a width that keeps each row on one line.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


RUN_EXAMPLES = """Examples:

  quantbench run   (the bundled model on this machine's default device and schemes)

  quantbench run --model random:llama-3.2-1b --schemes bf16,torchao-int8wo,bnb-nf4 --runs 20

  quantbench run --model ./my-hf-model --device cuda:1 --purpose "after driver update"

  quantbench export --format csv > results.csv"""


@app.command(epilog=RUN_EXAMPLES)
def run(
    ctx: typer.Context,
    model: str = typer.Option("default", "--model", "-m", help="default (the bundled SmolLM2-135M), "
                              "random:<preset>, a local HF directory, a .gguf file or a hub id."),
    schemes: Optional[str] = typer.Option(None, "--schemes", "-s", help="Comma-separated schemes "
                                          "(see `quantbench schemes`). Default: the baseline, bf16 "
                                          "or fp16, an int8 and a 4-bit scheme available here."),
    baseline: Optional[str] = typer.Option(None, help="Scheme every other is compared with; "
                                           "it must be one of --schemes. Default: the first of "
                                           "--schemes; without --schemes, fp32 on a CPU and bf16 "
                                           "on a GPU."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    runtime: str = typer.Option("eager", help="eager: a plain decode loop (what most people run). "
                                "compiled: static KV cache, each decode step torch.compile'd and "
                                "replayed as one CUDA graph, so the hardware rather than Python "
                                "sets the pace; compile time is recorded apart (minutes for a "
                                "1B model). GGUF schemes always run on llama.cpp."),
    batch_size: int = typer.Option(1, help="Sequences decoded together."),
    prompt_tokens: int = typer.Option(128, help="Prompt length in tokens (real corpus text; "
                                      "random ids for random-weight models)."),
    new_tokens: int = typer.Option(64, help="Tokens generated per sequence; EOS is ignored so "
                                   "every scheme generates exactly this many."),
    warmup: int = typer.Option(2, help="The least number of untimed generations; more follow "
                               "until the decode rate is steady (no trend over the last 3), up "
                               "to --max-warmup. The record says how many it took.",
                               rich_help_panel="Repetitions and statistics"),
    runs: str = typer.Option("auto", help="Timed generations per scheme: a number, or auto: at "
                             "least 5 runs and 1 s, then stop once the 95% interval of the "
                             "median decode rate is within --target-ci, or at --max-runs / "
                             "--max-seconds (the record says which).",
                             rich_help_panel="Repetitions and statistics"),
    max_warmup: int = typer.Option(10, help="Most warm-ups before timing starts anyway (the "
                                   "cell is then marked unsteady).",
                                   rich_help_panel="Repetitions and statistics"),
    target_ci: float = typer.Option(0.01, help="--runs auto stops when the median's 95% "
                                    "interval is within ± this fraction of it.",
                                    rich_help_panel="Repetitions and statistics"),
    max_runs: int = typer.Option(100, help="--runs auto: at most this many timed runs.",
                                 rich_help_panel="Repetitions and statistics"),
    max_seconds: float = typer.Option(30.0, help="--runs auto: stop after this many timed "
                                      "seconds per cell.", rich_help_panel="Repetitions and statistics"),
    margin: float = typer.Option(0.02, help="Practical-equivalence margin: a speedup whose "
                                 "ratio lies within ± this fraction (or within the baseline's own "
                                 "drift, when larger) is reported as equivalent (~), not faster "
                                 "or slower.", rich_help_panel="Repetitions and statistics"),
    repeat_baseline: bool = typer.Option(True, "--repeat-baseline/--no-repeat-baseline",
                                         help="Measure the baseline again after the other cells: "
                                         "its drift is the noise floor comparisons are held to.",
                                         rich_help_panel="Repetitions and statistics"),
    reuse_baseline: bool = typer.Option(False, "--reuse-baseline", help="Take the baseline from "
                                        "an earlier identical measurement (same environment) "
                                        "instead of measuring it in this run.",
                                        rich_help_panel="Repetitions and statistics"),
    db: str = typer.Option("quantbench.db", help="SQLite results database (appended to)."),
    out_dir: str = typer.Option("quantbench-results", "--out", help="Folder for this run's JSON "
                                "and CSV (named by run id, never overwritten)."),
    purpose: Optional[str] = typer.Option(None, help="Why this run was made; kept with it."),
    cell_timeout: Optional[float] = typer.Option(None, help="Seconds before a cell is killed and "
                                                 "recorded as failed."),
    prompt_file: Optional[str] = typer.Option(None, help="Text to take prompts from (default: the "
                                              "Jargon File from Debian's jargon-text)."),
    force: bool = typer.Option(False, "--force", help="Measure cells again even if this database "
                               "already holds an identical measurement (same configuration and "
                               "environment: host, device model, driver, library versions, "
                               "quantbench commit)."),
    seed: int = typer.Option(0, help="Seed for random weights and random prompt ids."),
    log: str = typer.Option("experiments/LOG.md", "--log", help="Markdown experiment log this "
                            "run appends an entry to ('' for none)."),
    quality: Optional[bool] = typer.Option(None, "--quality/--no-quality", help="Measure quality "
                                           "against the baseline on the same tokens: perplexity, "
                                           "KL, top-1 agreement, generations. Default: on for real "
                                           "models, off for random weights.",
                                           rich_help_panel="Quality"),
    eval_text: Optional[str] = typer.Option(None, help="Text for perplexity (default: the Jargon "
                                            "File, from character 200,000).",
                                            rich_help_panel="Quality"),
    eval_tokens: int = typer.Option(2048, help="Tokens of evaluation text (token-level "
                                    "perplexity over all but the first).", rich_help_panel="Quality"),
    eval_context: int = typer.Option(512, help="Window length for perplexity.",
                                     rich_help_panel="Quality"),
    eval_stride: int = typer.Option(256, help="Windows start every this many tokens; each token "
                                    "is scored once, with at least context - stride tokens before "
                                    "it.", rich_help_panel="Quality"),
    lm_eval_tasks: Optional[str] = typer.Option(None, help="Comma-separated lm-evaluation-harness "
                                                "tasks run on each torch cell's model (needs "
                                                "quantbench\\[lm-eval]; offline: tasks of "
                                                "--lm-eval-include).", rich_help_panel="Quality"),
    lm_eval_include: Optional[str] = typer.Option(None, help="Folder of lm-eval task YAMLs; their "
                                                  "data_files paths are relative to it.",
                                                  rich_help_panel="Quality"),
    lm_eval_limit: Optional[int] = typer.Option(None, help="At most this many documents per "
                                                "lm-eval task.", rich_help_panel="Quality"),
    allow_shared: bool = typer.Option(False, "--allow-shared", help="Measure even while another "
                                      "quantbench run holds this device; every cell of this run "
                                      "is flagged as shared and never reused as clean.",
                                      rich_help_panel="Safety"),
    wait: bool = typer.Option(False, "--wait", help="If another run holds this device, wait "
                              "for it to end instead of refusing.", rich_help_panel="Safety"),
    cell_memory_limit: str = typer.Option("auto", help="Most memory one cell's process may use "
                                          "(e.g. 8G, 800M; none for no limit); a cell over it "
                                          "fails with 'out of memory' and the run goes on. auto: "
                                          "90% of the memory available at the start.",
                                          rich_help_panel="Safety"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run the Python "
                                           "code a model folder ships (HF auto_map). Off: such "
                                           "models are refused. Recorded with the run.",
                                           rich_help_panel="Safety"),
):
    """Benchmark schemes of one model, each cell in its own process, and print the comparison."""
    from quantbench.api import LLMBenchmark, RunInterrupted
    from quantbench.report.progress import RunProgress
    from quantbench.report.table import caption, print_comparison

    _check_conflicts(ctx, runs, quality)
    bench = LLMBenchmark(
        model=model, schemes=schemes, baseline=baseline, device=device,
        runtime=runtime, batch_size=batch_size, prompt_tokens=prompt_tokens,
        new_tokens=new_tokens, warmup=warmup, runs=runs, max_warmup=max_warmup,
        target_ci=target_ci, max_runs=max_runs, max_seconds=max_seconds, margin=margin,
        repeat_baseline=repeat_baseline, reuse_baseline=reuse_baseline, db=db, out=out_dir,
        purpose=purpose,
        cell_timeout=cell_timeout, prompt_file=prompt_file, force=force, seed=seed,
        progress=RunProgress(err), command=shlex.join(["quantbench"] + sys.argv[1:]),
        log=log or None, quality=quality, eval_text=eval_text, eval_tokens=eval_tokens,
        eval_context=eval_context, eval_stride=eval_stride,
        lm_eval_tasks=lm_eval_tasks, lm_eval_include=lm_eval_include, lm_eval_limit=lm_eval_limit,
        allow_shared=allow_shared, wait=wait, cell_memory_limit=cell_memory_limit,
        trust_remote_code=trust_remote_code)
    try:
        result = bench.run()
    except RunInterrupted as exc:
        err.print(f"interrupted: run {exc.run_id} keeps the {exc.done} of {exc.planned} cells "
                  f"measured in {db}; the same command resumes it", highlight=False)
        raise typer.Exit(130)
    except KeyboardInterrupt:
        err.print("interrupted before any cell started: nothing was measured")
        raise typer.Exit(130)
    print_comparison(out, result.records, title=f"quantbench run {result.run_id}")
    for line in caption(result.records):
        out.print(f"[dim]{line}[/dim]", highlight=False)
    for note in result.notes:
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    out.print(f"database: {result.db}   files: {', '.join(result.files) or '-'}   "
              f"wall time: {result.wall_s:.0f} s", highlight=False)
    if result.failed:
        err.print(f"{result.failed} cell(s) failed; their errors are recorded in {result.db}")
        raise typer.Exit(1)
    partial = result.optional_failures
    if partial:
        for line in partial:
            err.print(f"[red]not measured:[/red] {line}", highlight=False)
        raise typer.Exit(3)


def _check_conflicts(ctx, runs: str, quality: Optional[bool]) -> None:
    """Options that would be silently ignored given the others: one line, exit 2."""
    def given(name: str) -> bool:  # typer vendors its own click: compare by the enum's name
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    if runs.strip().lower() != "auto":
        ignored = [f"--{n.replace('_', '-')}" for n in ("target_ci", "max_runs", "max_seconds")
                   if given(n)]
        if ignored:
            raise UsageError(f"{', '.join(ignored)}: for --runs auto only, and --runs {runs} is "
                             "a fixed count: drop one of them")
    if quality is False:
        ignored = [f"--{n.replace('_', '-')}" for n in ("eval_text", "eval_tokens", "eval_context",
                                                       "eval_stride") if given(n)]
        if ignored:
            raise UsageError(f"{', '.join(ignored)}: for quality, which --no-quality turns off: "
                             "drop one of them")


@app.command()
def schemes(as_json: bool = typer.Option(False, "--json", help="A JSON list instead of a table.")):
    """List every scheme: backend, bits, devices, and whether it can run here (and if not, why)."""
    from quantbench.schemes import all_schemes

    device_type, capability = _here()
    rows = []
    for s in all_schemes():
        ok, why = s.availability(device_type, capability)
        versions = s.versions()
        if len(versions) > 1:  # name each library when a scheme needs several
            versions = {k: f"{k} {v}" for k, v in versions.items()}
        rows.append({"name": s.name, "backend": s.backend,
                     "backend_version": ", ".join(versions.values()) or None, "bits": s.bits,
                     "devices": list(s.devices), "available": ok, "reason": why,
                     "extra": s.extra, "description": s.description,
                     "tunable": list(s.tunable),
                     "settings": s.settings(device_type)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"schemes (availability on this machine's {device_type})", title_justify="left")
    for col in ("name", "backend", "bits", "devices", "here", "description / reason"):
        table.add_column(col, no_wrap=col in ("name", "here"))
    for r in rows:
        backend = r["backend"] + (f" {r['backend_version']}" if r["backend_version"] else "")
        table.add_row(r["name"], backend, f"{r['bits']:g}" if r["bits"] else "as file",
                      ",".join(r["devices"]),
                      "[green]yes[/green]" if r["available"] else "[red]no[/red]",
                      r["description"] if r["available"] else r["reason"])
    out.print(table)


def _here():
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_capability(0)
    return "cpu", None


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
        markdown: bool = typer.Option(False, "--markdown", help="A Markdown table.")):
    """The hardware and software measurements would be recorded with."""
    from quantbench import environment

    data = environment.collect()
    if as_json:
        print(json.dumps(data, indent=2))
    elif markdown:
        print(environment.to_markdown(data))
    else:
        from rich.table import Table

        table = Table(title="environment", title_justify="left", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        for key, value in environment.rows(data):
            table.add_row(key, value)
        out.print(table)


@app.command()
def hardware(device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
             refresh: bool = typer.Option(False, "--refresh", help="Measure again instead of "
                                          "reading the cache."),
             as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")):
    """The device's measured ceilings (copy bandwidth, matmul rate; measured once and cached)
    beside its datasheet figures: what every run's roofline is drawn against."""
    from quantbench import environment
    from quantbench.api import resolve_device
    from quantbench.hardware import cache

    from quantbench import devicelock

    device, _ = resolve_device(device)
    env = environment.collect()
    if refresh or not cache.path_for(device, env).exists():
        # A ceiling measured beside a run would be low, and cached for every later roofline.
        with devicelock.acquire(device, "quantbench hardware"):
            profile = cache.get(device, env, refresh=refresh,
                                on_measure=lambda: err.status(f"measuring {device}"))
    else:
        profile = cache.get(device, env)
    if as_json:
        print(json.dumps(profile, indent=2))
        return
    from rich.table import Table

    sheet = profile.get("datasheet") or {}
    table = Table(title=f"{profile['name']} ({device})", title_justify="left")
    for col in ("", "measured", "datasheet"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("copy bandwidth (read + write)", f"{profile['copy_bandwidth_Bps'] / 1e9:,.1f} GB/s",
                  f"{sheet['memory_bandwidth_Bps'] / 1e9:,.0f} GB/s" if sheet else "-")
    flops = sheet.get("bf16_flops")
    table.add_row(f"{profile['matmul_dtype']} matmul ({profile['matmul_n']}^2)",
                  f"{profile['matmul_flops'] / 1e12:,.2f} TFLOP/s",
                  f"{flops / 1e12:,.0f} TFLOP/s (dense bf16)" if flops else "-")
    out.print(table)
    out.print(f"[dim]cached in {profile['cached_at']} ({profile['measured_at']}); "
              "--refresh measures again[/dim]")


# The commands that read the results database: export, report, compare, generations, log.
from quantbench import cli_views  # noqa: E402,F401  (registers them here, in this order)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # same clean-up as Ctrl-C: the running cell's process is killed


def _version(value: bool) -> None:
    if value:
        from quantbench import environment

        info = environment.quantbench_version()
        print(f"quantbench {info}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print quantbench's version (and git commit) and exit.")):
    pass


def main() -> None:
    from quantbench.devicelock import DeviceBusy
    from quantbench.errors import FROM_CLI

    FROM_CLI.set(True)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(standalone_mode=False)
    except DeviceBusy as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(4)
    except UsageError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except ClickUsageError as exc:
        hint = f" (see `quantbench {exc.ctx.info_name} --help`)" if exc.ctx and exc.ctx.parent else \
            " (see `quantbench --help`)"
        err.print(f"error: {exc.format_message()}{hint}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except (ClickAbort, typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input: one line, the traceback on request
        import os

        if os.environ.get("QUANTBENCH_DEBUG"):
            raise
        from quantbench.errors import error_text

        err.print(f"internal error: {error_text(exc)} (a quantbench bug: please report it, with "
                  "the traceback QUANTBENCH_DEBUG=1 prints)", highlight=False, markup=False,
                  soft_wrap=True)
        sys.exit(70)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
