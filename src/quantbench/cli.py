"""The `quantbench` command line."""

from __future__ import annotations

import faulthandler
import inspect
import json
import shlex
import signal
import sys
from typing import Optional

import typer
from rich.console import Console

from quantbench.cli_options import config_command, names_of
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


def _run(ctx: typer.Context, given: set, values: dict):
    """Benchmark schemes against a baseline, each cell in its own process, and print the
    comparison. Every axis (--model, --runtime, --batch-size, --prompt-tokens, --new-tokens,
    --device) takes a comma list: the run measures their product, each point a comparison of
    its own."""
    from quantbench.api import LLMBenchmark
    from quantbench.runconfig import RunConfig

    _check_conflicts(given, values)
    config = RunConfig.from_flat(values)
    _execute(LLMBenchmark(config, progress=_progress(), command=_command()), config)


def _progress():
    from quantbench.report.progress import RunProgress

    return RunProgress(err)


def _command() -> str:
    return shlex.join(["quantbench"] + sys.argv[1:])


def _execute(bench, config) -> None:
    """Plan (or only print the plan, --dry-run), run, print each comparison, exit by outcome."""
    from quantbench.api import RunInterrupted
    from quantbench.report.table import caption, print_comparison

    if config.execution.dry_run:
        from quantbench.report.dry_run import print_plan

        print_plan(out, bench)
        return
    db = config.outputs.db
    try:
        result = bench.run()
    except RunInterrupted as exc:
        err.print(f"interrupted: run {exc.run_id} keeps the {exc.done} of {exc.planned} cells "
                  f"measured in {db}; the same command resumes it", highlight=False)
        raise typer.Exit(130)
    except KeyboardInterrupt:
        err.print("interrupted before any cell started: nothing was measured")
        raise typer.Exit(130)
    from quantbench.report.sweep import by_comparison

    groups = by_comparison(result.records)
    for title, records in groups:
        name = f"quantbench run {result.run_id}" + (f": {title}" if len(groups) > 1 else "")
        print_comparison(out, records, title=name)
        for line in caption(records):
            out.print(f"[dim]{line}[/dim]", highlight=False)
        base = next((r for r in records if r["baseline"] and r["status"] == "ok"), None)
        if base is not None:  # what to pick, for each thing one may be choosing for
            from quantbench.report.markdown import objectives

            for line in objectives(records, base):
                out.print(line, highlight=False)
    if len(groups) > 1:
        from quantbench.report.sweep import crossover_lines

        for line in crossover_lines(result.records):
            out.print(line, highlight=False)
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


def _check_conflicts(given: set, values: dict) -> None:
    """Options that would be silently ignored given the others: one line, exit 2."""
    runs = str(values.get("runs", "auto"))
    if runs.strip().lower() != "auto":
        ignored = [f"--{n.replace('_', '-')}" for n in ("target_ci", "max_runs", "max_seconds")
                   if n in given]
        if ignored:
            raise UsageError(f"{', '.join(ignored)}: for --runs auto only, and --runs {runs} is "
                             "a fixed count: drop one of them")
    if values.get("quality") is False:
        ignored = [f"--{n.replace('_', '-')}" for n in ("eval_text", "eval_tokens", "eval_context",
                                                       "eval_stride") if n in given]
        if ignored:
            raise UsageError(f"{', '.join(ignored)}: for quality, which --no-quality turns off: "
                             "drop one of them")


run = app.command(name="run", epilog=RUN_EXAMPLES)(
    config_command(_run, names_of(("axes", "comparing", "repetitions", "quality", "outputs",
                                   "safety", "execution"))))


def _sweep(ctx: typer.Context, given: set, values: dict, file: str):
    """Run a sweep file: the same keys as `quantbench run`'s options (batch_size: [1, 8, 32]),
    plus `exclude:` rules and named `groups:`. Options given here override the file's.

    Each finished cell is in the database at once; the same command after a kill resumes the
    sweep (finished cells kept, none measured twice). `quantbench report` and `log` read a
    sweep while it runs."""
    from quantbench.api import LLMBenchmark
    from quantbench.sweep import load_sweep

    sweep = load_sweep(file)
    settings = {**sweep.settings, **{k: v for k, v in values.items() if k in given}}
    _check_conflicts(given | set(sweep.settings), settings)
    from quantbench.runconfig import RunConfig

    config = RunConfig.from_flat(settings)
    bench = LLMBenchmark(config, progress=_progress(), command=_command(), groups=sweep.groups,
                         exclude=sweep.exclude)
    _execute(bench, config)


SWEEP_EXAMPLES = """Example file (benchmarks/seed_table.yaml is a larger one):

  model: \\[random:gpt2-124m, random:llama-3.2-1b]
  schemes: \\[bf16, torchao-int8wo, torchao-int4wo]
  runtime: \\[eager, compiled]
  batch_size: \\[1, 8]
  device: cuda
  exclude:
    - {runtime: eager, batch_size: 8}
  groups:                      # optional: each group its own product, merged
    small: {model: random:gpt2-124m}
    batch-scaling: {runtime: compiled, batch_size: \\[1, 8, 32]}

  quantbench sweep sweep.yaml --dry-run     (the cells and an estimate of their time)"""

sweep = app.command(name="sweep", epilog=SWEEP_EXAMPLES)(
    config_command(_sweep, names_of(("axes", "comparing", "repetitions", "quality", "outputs",
                                     "safety", "execution")),
                   leading=[inspect.Parameter(
                       "file", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                       default=typer.Argument(..., help="The sweep's YAML file."))]))


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
                     "tunable": list(s.tunable), "calibrated": s.calibrated,
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


@app.command()
def quantize(model: str = typer.Option("default", "--model", "-m", help="default, random:<preset> "
                                       "or a local Hugging Face directory."),
             scheme: str = typer.Option(..., "--scheme", "-s", help="A torchao-family scheme: "
                                        "torchao-int8wo, torchao-int4wo[:group=N], "
                                        "gptq-int4[:samples=N:length=N], awq-int4, ..."),
             out_dir: str = typer.Option(..., "--out", help="A new (or empty) folder for the "
                                         "checkpoint; never overwritten."),
             device: str = typer.Option("cpu", help="cpu, cuda or cuda:N: where to quantize, "
                                        "and so which layout (int4: CPU intx, GPU tile-packed).")):
    """Apply a scheme once and write the result as a Hugging Face checkpoint (safetensors,
    config.json with a quantization_config, the tokenizer, and quantbench.json saying how it was
    made). transformers loads it quantized; `quantbench run --model DIR --baseline-model SPEC`
    measures it as shipped against its float model."""
    from quantbench import checkpoint
    from quantbench.api import resolve_device

    device, _ = resolve_device(device)
    made = checkpoint.quantize(model, scheme, out_dir, device,
                               progress=lambda text: err.print(f"[dim]{text}[/dim]"))
    calibration = made.get("calibration") or {}
    extra = (f", calibrated in {calibration['seconds']:.1f} s on {calibration['samples']} x "
             f"{calibration['length']} tokens" if calibration.get("seconds") else "")
    out.print(f"wrote {out_dir}: {made['scheme']} of {made['source_model']['name']}, "
              f"{made['weights_bytes'] / 1e6:,.1f} MB of weights, quantized in "
              f"{made['quantize_s']:.1f} s{extra}")
    out.print(f"measure it as shipped: quantbench run --model {out_dir} --baseline-model "
              f"{made['source_model']['spec']}")


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
    # `kill -USR1 PID` prints every thread's stack to stderr: where a run that seems stuck is.
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (AttributeError, ValueError, OSError):  # stderr without a file descriptor (in-process)
        pass
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
