"""One cell, in its own process: load -> apply scheme -> warm up -> measure -> result file.

Run as `python -m quantbench.worker CELL.json RESULT.json`. Progress goes to stdout as lines
starting with PROGRESS_PREFIX; the parent alone writes to the store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import traceback

from quantbench.errors import error_text

PROGRESS_PREFIX = "@@quantbench "
_STARTED = time.perf_counter()
# How this process was started, and by which process (the run, or a Ray worker): the fork
# server's processes stand between them.
LAUNCH = {"how": "fresh interpreter", "started_by": os.getppid(),
          "torch_preloaded": "torch" in sys.modules}


def _failure(exc: BaseException) -> dict:
    """What a quality or lm-eval step records when it fails (speed and memory still stand)."""
    return {"error": error_text(exc), "traceback": traceback.format_exc()[-2000:]}


def progress(**event) -> None:
    print(PROGRESS_PREFIX + json.dumps(event), flush=True)


def _engine(cell, scheme, device: str):
    from quantbench import runtimes

    return runtimes.for_scheme(scheme, cell.runtime).engine(cell, scheme, device, progress)


def _ensure_baseline_logits(cell, scheme, device: str) -> None:
    """A scheme cell needs the baseline's log-probabilities; when no cache holds them (the
    baseline cell was reused from an earlier run, or the cache was cleared), load the baseline
    here, write them, and free it before this cell's own model is loaded."""
    from quantbench.measure import memory
    from quantbench.quality import cache
    from quantbench.quality.evaluate import compute_baseline
    from quantbench.schemes import get

    quality = cell.quality
    if scheme.name == quality["baseline"] or cache.load(quality["cache_key"]) is not None:
        return
    progress(phase="baseline_logits")
    base = _engine(cell, get(quality["baseline"]), device)
    logits, _, close = base.for_quality(quality["plan"])
    compute_baseline(quality, logits, progress)
    close()
    base.close()
    del base, logits
    import gc

    gc.collect()
    memory.release_freed_memory()


def _lm_eval(cell, engine) -> dict:
    model = engine.torch_model
    if model is None:
        return {"error": "lm-eval runs on torch schemes; llama.cpp cells are scored by "
                         "perplexity and KL only"}
    try:
        from quantbench.quality import lm_eval_tasks

        progress(phase="lm_eval")
        return lm_eval_tasks.evaluate(cell.lm_eval, model, _tokenizer(cell.model["path"]),
                                      cell.device)
    except Exception as exc:
        return _failure(exc)


@functools.lru_cache(maxsize=1)
def _tokenizer(path: str):
    """Loaded once per cell, for the generations' text and for lm-eval."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _quality(cell, engine) -> dict:
    from quantbench.quality.evaluate import evaluate

    try:
        logits, greedy, close = engine.for_quality(cell.quality["plan"])
        result = evaluate(cell.quality, logits, greedy, _tokenizer(cell.model["path"]), progress)
        close()
        return result
    except Exception as exc:  # speed and memory stand; quality records why it is missing
        return _failure(exc)


def _kv_bytes_per_position(cell, scheme, device_type: str, measured: dict | None = None
                           ) -> float | None:
    """K and V bytes one sequence position adds to the cache, all layers: what a decode step
    reads per position of context, beside the weights (the roofline's bytes per token). As the
    runtime measured its cache where it could (scales, packing and a full-precision residual
    included), else from the format and the cache's shape: the runtime's own (a GGUF file's
    metadata), else the model's config."""
    from quantbench import models

    if measured and measured.get("bytes_per_position"):
        return measured["bytes_per_position"]
    shape = (measured or {}).get("shape")
    if shape is None:
        try:
            config = models.config_of(cell.model)
        except Exception:
            return None
        heads = config.num_attention_heads
        shape = {"layers": config.num_hidden_layers,
                 "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
                 "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads}
    from quantbench import runtimes

    element = runtimes.for_scheme(scheme, cell.runtime).kv_element_bytes(scheme, device_type)
    return 2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * element


def measure_cell(cell) -> dict:
    import torch

    from quantbench import runtimes
    from quantbench.measure import loop, memory, telemetry
    from quantbench.measure.contention import LoadSampler
    from quantbench.schemes import get

    device = cell.device
    device_type = device.split(":")[0]
    scheme = get(cell.scheme)
    startup_s = time.perf_counter() - _STARTED  # interpreter + imports
    start = time.perf_counter()
    own_gpu_pids: set[int] = set()
    if device_type == "cuda":
        from quantbench.measure.contention import gpu_pids

        before = gpu_pids(device)
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)  # creates the CUDA context outside the load timing
        after = gpu_pids(device)
        if before is not None and after is not None and len(after - before) == 1:
            own_gpu_pids = after - before  # this process, as NVML numbers it
    device_init_s = time.perf_counter() - start
    torch.manual_seed(cell.seed)

    if cell.quality:
        _ensure_baseline_logits(cell, scheme, device)
    engine = _engine(cell, scheme, device)
    rss_after_load = memory.rss_parts()
    reset: dict = {}
    sampler = (telemetry.GPUSampler(torch.device(device).index or 0) if device_type == "cuda"
               else None)
    load = LoadSampler(device, own_gpu_pids, run_pid=LAUNCH["started_by"])
    w = cell.workload
    with contextlib.ExitStack() as during_timed_runs:
        def before_timed():
            """Peaks from here on describe the timed runs alone; the reset is checked."""
            if device_type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            reset.update(memory.reset_peak_rss_checked())
            if sampler is not None:
                during_timed_runs.enter_context(sampler)
            during_timed_runs.enter_context(load)  # entered last: closed first, at the last run

        timed = loop.run(engine.generate, cell.prompt["ids"], w, cell.repetitions, before_timed,
                         progress)
    samples = timed.samples
    if timed.token_ms:
        samples["token_latency_ms"] = timed.token_ms
    if sampler is not None:
        samples.update(sampler.metrics())

    runs_done = timed.stop["runs"]
    mem = {"weights_bytes": engine.weights, "rss_after_load_bytes": rss_after_load["rss"],
           "rss_anon_after_load_bytes": rss_after_load["anon"],
           "rss_file_after_load_bytes": rss_after_load["file"],
           "rss_data_file_after_load_bytes": rss_after_load["data_file"],
           "peak_rss_bytes": memory.peak_rss_bytes(),
           "peak_rss_scope": "timed runs" if reset.get("reliable") else "whole process",
           "peak_reset": reset}
    after = memory.rss_parts()
    mem.update({"rss_anon_after_runs_bytes": after["anon"], "rss_file_after_runs_bytes": after["file"],
                "rss_data_file_after_runs_bytes": after["data_file"]})
    if device_type == "cuda":
        mem["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        mem["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
        mem["peak_bytes"] = mem["peak_allocated_bytes"]
        mem["peak_scope"] = "torch peak allocated during the timed runs"
        index = torch.device(device).index or 0
        used = memory.nvml_used_bytes(index)
        if used is not None:
            mem["nvml_used_bytes"] = used
        if runtimes.for_scheme(scheme, cell.runtime).own_allocator:  # torch sees none of it
            own = memory.nvml_process_bytes(index, os.getpid())
            mem["peak_bytes"] = own
            mem["peak_scope"] = ("this process's device memory (NVML), the runtime's buffers and "
                                 "CUDA context, at the end of the timed runs" if own is not None
                                 else "unknown: NVML reports no per-process memory here")
    else:
        mem["peak_bytes"] = mem["peak_rss_bytes"]
        mem["peak_scope"] = ("process peak RSS during the timed runs" if reset.get("reliable") else
                             "process peak RSS since start (the reset after warm-up did not take)")
    quality = _quality(cell, engine) if cell.quality else None
    lm_eval = _lm_eval(cell, engine) if cell.lm_eval else None
    engine.close()

    kv_per_position = _kv_bytes_per_position(cell, scheme, device_type, engine.info.get("kv_cache"))
    kv = engine.info.get("kv_cache")
    if kv is not None and "stored_bytes" not in kv and kv_per_position:
        # llama.cpp's cache is not visible from here: its size at the decode's end, from the format
        positions = w.prompt_tokens + w.new_tokens - 1
        kv.update({"stored_bytes": round(kv_per_position * w.batch_size * positions),
                   "positions": positions, "sequences": w.batch_size,
                   "bytes_per_position": kv_per_position,
                   "stored_bytes_source": "computed from the format and the model's shape"})
    info = {"startup_s": startup_s, "launch": dict(LAUNCH), "device_init_s": device_init_s,
            **engine.info,
            "warmup_s": timed.warmup["seconds"], "warmup": timed.warmup, "timed_runs": timed.stop,
            "parameters": engine.params,
            "torch_threads": torch.get_num_threads(), "versions": scheme.versions(),
            "torch": torch.__version__, "pid": os.getpid(), "output_ids": timed.output_ids,
            "energy": (sampler.energy(w.batch_size * w.new_tokens * runs_done) if sampler
                       else {"reason": "CPU run: no NVML energy counter"}),
            "kv_bytes_per_position": kv_per_position,
            "contention": load.result()}
    if quality is not None:
        info["quality"] = quality
    if lm_eval is not None:
        info["lm_eval"] = lm_eval
    return {"status": "ok", "metrics": samples, "memory": mem, "info": info}


def main(argv: list[str]) -> int:
    cell_path, result_path = argv
    from quantbench.config import CellConfig

    with open(cell_path) as fh:
        cell = CellConfig.from_dict(json.load(fh))
    try:
        result = measure_cell(cell)
        code = 0
    except BaseException as exc:  # everything ends as a recorded failure, not a lost cell
        result = {"status": "failed", "error": error_text(exc),
                  "info": {"traceback": traceback.format_exc()[-4000:]}}
        code = 1
    tmp = result_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh)
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        from quantbench import forkserver

        sys.exit(forkserver.serve(sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
