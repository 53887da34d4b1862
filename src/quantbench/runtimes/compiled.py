"""The compiled runtime: a static KV cache, the prefill on its own, and every one-token decode
step replayed as one CUDA graph, so no Python runs per token but `graph.replay()`.

The step (model forward + greedy choice + feeding the token back) is compiled by torch.compile
(inductor, fullgraph, no cudagraphs of its own) and then captured directly with
`torch.cuda.graph`. Capturing ourselves, rather than trusting mode="reduce-overhead", is what
lets a cell prove its graph covers the step: torch.compile can skip CUDA graphs silently, a
direct capture either holds the whole step or raises. After capture the graph is replayed
against the same step run without it; identical tokens show nothing was frozen into the graph
that should have moved (a position computed on the host, say). Every way this falls short is
recorded in the cell: compile failed (the eager kernels are captured instead), capture failed
(the static-cache loop runs without a graph), or the check failed (likewise).
"""

from __future__ import annotations

import time

from quantbench.errors import error_text
from quantbench.runtimes.eager import GenerationTiming, _cache_arg, _Clock

# Steps the compile call, the side-stream warm-up and the capture itself add beyond new_tokens.
_SLACK = 8
_CHECK_STEPS = 16
_PROFILE_STEPS = 4


def _error_text(exc: BaseException) -> str:
    """The first error of a chain, then the last: a capture that fails inside the step ends in
    `torch.cuda.graph`'s exit raising "operation failed due to a previous error during
    capture", which hides the operation that broke it."""
    first = exc
    seen = {id(exc)}
    while (earlier := first.__cause__ or first.__context__) is not None and id(earlier) not in seen:
        seen.add(id(earlier))
        first = earlier
    text = error_text(first) if first is exc else f"{error_text(first)} (then {error_text(exc)})"
    return text[:500]  # compile errors can carry a whole graph in their first line


def _kernel_kind(name: str) -> str:
    """A coarse family per kernel, for where a step's time goes."""
    low = name.lower()
    if low.startswith("triton"):  # inductor's fusions, named after every op they hold
        return "fused (triton)"
    if any(k in low for k in ("flash", "fmha", "sdpa", "attention")):
        return "attention"
    if any(k in low for k in ("dequant", "unpack", "int4pack", "int8pack", "_weight_int")):
        return "dequant/quantized matmul"
    if any(k in low for k in ("gemm", "gemv", "matmul", "cutlass", "xmma", "nvjet", "splitk",
                              "cublas", "mm_kernel", "kgemm")):
        return "matmul"
    if "memcpy" in low or "memset" in low:
        return "copy"
    return "other"


def _compile_phases() -> dict:
    """Where the compile's seconds went, by dynamo's own timers (tracing, AOT, inductor's
    lowering and code generation, Triton's kernel compilation), the largest first."""
    try:
        from torch._dynamo.utils import compile_times

        names, values = compile_times(repr="csv", aggregate=True)
        phases = {n: float(v) for n, v in zip(names, values)}
    except Exception:  # a private API: its absence costs the breakdown, not the cell
        return {}
    return dict(sorted(phases.items(), key=lambda kv: -kv[1])[:12])


# The compiler's settings, the same for every scheme of a comparison (torchao would otherwise
# turn on its own for its cells only). With coordinate-descent tuning inductor writes a batch-1
# matmul as its own Triton reduction and tunes its block sizes by timing them (its comment: "our
# matrix vector multiplies only achieve peak bandwidth with coordinate descent tuning"); without
# it the step calls cuBLAS. The runtimes differ only in this: compiled-plain (no tuning: the
# shortest compile), compiled (tuning, one direction at a time: gpt-fast's setting) and
# compiled-tuned (every direction: torchao's recommended setting, the longest compile).
#
# Tuning picks launch configs by timing, so two processes compiling the same graph can pick
# differently (the same 1B bf16 cell read 779.6-882.4 tok/s across four processes on one H200).
# Inductor stores each pick next to its kernel (`.best_config`) for later processes to reuse,
# but torch up to at least 2.11 drops the pick when it loads a graph from the FX cache through
# its static CUDA launcher, and tunes again (13-17 s on a 1B graph, and a new draw). Without
# the static launcher the pick is reused: measured on an H200 with torch 2.11, tuning on a
# cache hit fell from 15.8 to 1.6 s and the second process decoded within 0.4% of the first
# (docs/results/2026-11-29-h200-tuning-reuse.md). The launcher only saves host time per
# launch, which a CUDA graph's replay does not spend.
INDUCTOR = {"fx_graph_cache": True, "triton.unique_kernel_names": True,
            "force_fuse_int_mm_with_mul": True, "use_static_cuda_launcher": False}
TUNING = {"plain": {"coordinate_descent_tuning": False,
                    "coordinate_descent_check_all_directions": False},
          "one-direction": {"coordinate_descent_tuning": True,
                            "coordinate_descent_check_all_directions": False},
          "all-directions": {"coordinate_descent_tuning": True,
                             "coordinate_descent_check_all_directions": True}}


def inductor_settings(tuning: str) -> dict:
    return {**INDUCTOR, **TUNING[tuning]}


def _apply_inductor(settings: dict) -> dict:
    """Set inductor's options; return those this torch knows, as set (the record keeps them)."""
    import torch._inductor.config as config

    applied = {}
    for name, value in settings.items():
        owner, _, leaf = name.rpartition(".")
        target = getattr(config, owner) if owner else config
        if hasattr(target, leaf):
            setattr(target, leaf, value)
            applied[name] = value
    return applied


class CompiledDecoder:
    """Generates greedily with a static cache; `prepare` compiles and captures (timed apart),
    `generate` then replays."""

    def __init__(self, model, device: str, batch: int, prompt_tokens: int, new_tokens: int,
                 inductor: bool = True, tuning: str = "one-direction", kv=None):
        import torch

        from quantbench import kvcache
        from quantbench.kvcache.layers import static_cache

        self.torch = torch
        self.model = model
        self.device = device
        self.cuda = device.startswith("cuda")
        self.prompt_tokens = prompt_tokens
        self.new_tokens = new_tokens
        self.inductor = inductor
        self.tuning = tuning
        self.max_cache_len = prompt_tokens + new_tokens + _SLACK
        self.kv = kv or kvcache.get("auto")
        self.cache = static_cache(self.kv, model.config, self.max_cache_len)
        self.cache_arg = _cache_arg(model)
        # Fixed addresses: the graph reads and writes these and nothing else per step.
        self.ids = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.pos = torch.zeros((1, 1), dtype=torch.long, device=device)
        self.slot = torch.zeros((1,), dtype=torch.long, device=device)
        self.out = torch.zeros((batch, new_tokens + _SLACK), dtype=torch.long, device=device)
        self.step = self._forward_step
        self.graph = None
        self.info: dict = {"kv_cache": "static" + ("" if self.kv.native else f" {self.kv.name}"),
                           "max_cache_len": self.max_cache_len,
                           "prefill": "eager forward into the static cache (not compiled)"}

    # -- the step ---------------------------------------------------------------------------
    def _forward_step(self, ids, pos):
        out = self.model(input_ids=ids, position_ids=pos, use_cache=True,
                         **{self.cache_arg: self.cache})
        return out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def _body(self):
        """One decode step and its bookkeeping, all on the device."""
        nxt = self.step(self.ids, self.pos)
        self.ids.copy_(nxt)
        self.out.index_copy_(1, self.slot, nxt)
        self.slot.add_(1)
        self.pos.add_(1)

    def _prefill(self, prompt):
        torch = self.torch
        input_ids = torch.as_tensor(prompt, dtype=torch.long, device=self.device)
        length = input_ids.shape[1]
        if length > self.prompt_tokens:
            raise ValueError(f"prompt of {length} tokens is longer than the {self.prompt_tokens} "
                             "the static cache was sized for")
        self.cache.reset()
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1,
                         position_ids=torch.arange(length, device=self.device).unsqueeze(0),
                         **{self.cache_arg: self.cache})
        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        self.ids.copy_(token)
        self.out[:, :1].copy_(token)
        self.pos.fill_(length)
        self.slot.fill_(1)
        return token

    def _steps(self, n: int, graph: bool):
        step = self.graph.replay if graph else self._body
        for _ in range(n):
            step()

    # -- compile, capture, prove ---------------------------------------------------------------
    def prepare(self, prompt) -> dict:
        torch = self.torch
        with torch.no_grad():
            self._prefill(prompt)
            if self.cuda:
                # One eager step first: kernels that choose launch configs by timing them
                # (quantbench's own) must see real tensors of the decode's shape, not a trace.
                self._body()
                self._sync()
            if self.inductor:
                self._compile()
            else:
                self.info["compile"] = {"skipped": "inductor off: the step's eager kernels"}
            if self.cuda:
                self._capture(prompt)
            else:
                self.info["cuda_graph"] = {
                    "captured": False,
                    "reason": "CUDA graphs need a CUDA device: on the CPU each step is one "
                              "call of the compiled step, Python included"}
        return self.info

    def _compile(self):
        torch = self.torch
        from torch._dynamo.utils import counters

        counters.clear()
        settings = _apply_inductor(inductor_settings(self.tuning))
        compiled = torch.compile(self._forward_step, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        try:
            self.step = compiled
            self._body()  # the first call compiles
            self._sync()
        except Exception as exc:
            self.step = self._forward_step
            self.info["compile"] = {"backend": "inductor", "error": _error_text(exc),
                                    "seconds": time.perf_counter() - start,
                                    "inductor": settings, "tuning": self.tuning,
                                    "consequence": "the step's eager kernels are used instead"}
            torch._dynamo.reset()
            return
        first = time.perf_counter() - start
        start = time.perf_counter()
        self._body()  # a second call must not compile again
        self._sync()
        phases = _compile_phases()
        self.info["compile"] = {
            "backend": "inductor", "fullgraph": True, "dynamic": False, "seconds": first,
            "second_call_s": time.perf_counter() - start,
            "graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "recompiles": max(0, int(counters["stats"].get("unique_graphs", 0)) - 1),
            "inductor": settings, "tuning": self.tuning,
            # Inductor's on-disk caches outlive the cell's process: a cell compiled before on
            # this machine (the baseline's repeat, a resumed sweep) loads its graph.
            "fx_graph_cache": {"hits": int(counters["inductor"].get("fxgraph_cache_hit", 0)),
                               "misses": int(counters["inductor"].get("fxgraph_cache_miss", 0))},
            "phases_s": phases,
            # Seconds spent timing launch configs: near zero when an earlier process's picks
            # were reused, so a repeat cell runs the kernels its first measurement ran.
            "tuning_s": phases.get("CachingAutotuner.coordinate_descent_tuning", 0.0)}

    def _sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def _capture(self, prompt):
        torch = self.torch
        start = time.perf_counter()
        try:
            self._prefill(prompt)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
                self._steps(3, graph=False)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._body()
            self._sync()
        except Exception as exc:
            self.graph = None
            self.info["cuda_graph"] = {"captured": False, "reason": _error_text(exc),
                                       "consequence": "each step runs as Python calls of the "
                                                      "(compiled) step, without a graph"}
            return
        self.graph = graph
        capture_s = time.perf_counter() - start
        check = self._check(prompt)
        self.info["cuda_graph"] = {"captured": True, "capture_s": capture_s,
                                   "replays_per_token": 1, "check": check}
        if not check["identical"] and not check.get("within_tolerance"):
            self.graph = None
            self.info["cuda_graph"].update(
                captured=False, reason="the graph's tokens differ from the step's run without "
                "it, beyond rounding of the logits: something the step computes on the host was "
                "frozen into the graph",
                consequence="each step runs without a graph")
            return
        self.info["profile"] = self._profile(prompt)

    def _check(self, prompt) -> dict:
        """The graph against the step it captured, token for token."""
        steps = min(_CHECK_STEPS, self.new_tokens - 1)
        runs = []
        for graph in (True, False):
            self._prefill(prompt)
            self._steps(steps, graph)
            runs.append(self.out[:, :steps + 1].clone())
        same = bool(self.torch.equal(runs[0], runs[1]))
        first = None
        out = {"steps": steps, "identical": same, "first_difference": None}
        if not same:
            diff = (runs[0] != runs[1]).any(dim=0).nonzero()
            first = int(diff[0]) if len(diff) else None
            out["first_difference"] = first
            # Near-tied logits (random weights, a batch of many rows) can flip an argmax
            # between two kernels that reduce in another order: the graph's tokens are then
            # still right. Held to the logits, token for token, not to the ids.
            out.update(self.agreement(prompt, runs[0], steps))
        return out

    def _forward_logits(self, ids, pos):
        out = self.model(input_ids=ids, position_ids=pos, use_cache=True,
                         **{self.cache_arg: self.cache})
        return out.logits[:, -1, :].float()

    def agreement(self, prompt, tokens, steps: int) -> dict:
        """Whether each token the graph chose is, in the uncompiled step's logits fed the same
        tokens, within rounding of the best one: (best - chosen) <= rtol * |best| + atol.
        rtol is a few units of the compute dtype's rounding, so a value frozen on the host
        (wrong tokens, logits far from the top) still fails."""
        torch = self.torch
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()),
                     torch.float32)
        # 8 units of rounding: a 32-layer 8B step in bf16 differs from its compiled twin by
        # ~5 units at the logits (H200, batch 32); a frozen host value by hundreds.
        rtol = 8 * torch.finfo(dtype if dtype in (torch.float16, torch.bfloat16)
                               else torch.float32).eps
        rtol = max(rtol, 1e-4)
        with torch.no_grad():
            return self._agreement(prompt, tokens, steps, rtol, 1e-3)

    def _agreement(self, prompt, tokens, steps, rtol, atol) -> dict:
        self._prefill(prompt)
        worst = 0.0
        bad = None
        pos = self.pos.clone()
        tokens = self.torch.as_tensor(tokens, device=self.device)
        for i in range(steps):
            logits = self._forward_logits(tokens[:, i:i + 1], pos)
            best = logits.max(dim=-1).values
            chosen = logits.gather(1, tokens[:, i + 1:i + 2]).squeeze(1)
            gap = best - chosen
            allowed = rtol * best.abs() + atol
            worst = max(worst, float((gap / allowed).max()))
            if bad is None and bool((gap > allowed).any()):
                bad = i + 1
            pos = pos + 1
        return {"within_tolerance": bad is None, "tolerance": {"rtol": rtol, "atol": atol},
                "worst_gap_over_allowed": worst, "first_out_of_tolerance": bad,
                "method": "each graph token's logit in the uncompiled step fed the graph's "
                          "tokens, against that step's best"}

    def _profile(self, prompt) -> dict:
        """Kernels of a few replays: how many per token, how long, of which kind."""
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        try:
            self._prefill(prompt)
            self._sync()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                self._steps(_PROFILE_STEPS, graph=True)
                self._sync()
            kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        except Exception as exc:
            return {"error": _error_text(exc)}
        if not kernels:
            return {"error": "the profiler saw no kernels inside the graph replays"}

        def us(event):
            return float(getattr(event, "device_time_total", 0.0) or 0.0)

        by_name: dict[str, list[float]] = {}
        for event in kernels:
            by_name.setdefault(event.name, []).append(us(event))
        by_kind: dict[str, dict] = {}
        for name, times in by_name.items():
            kind = by_kind.setdefault(_kernel_kind(name), {"kernels_per_token": 0.0, "us_per_token": 0.0})
            kind["kernels_per_token"] += len(times) / _PROFILE_STEPS
            kind["us_per_token"] += sum(times) / _PROFILE_STEPS
        top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:10]
        return {
            "steps": _PROFILE_STEPS,
            "kernels_per_token": len(kernels) / _PROFILE_STEPS,
            "kernel_us_per_token": sum(us(e) for e in kernels) / _PROFILE_STEPS,
            "by_kind": by_kind,
            "top": [{"name": name[:160], "kind": _kernel_kind(name),
                     "per_token": len(t) / _PROFILE_STEPS, "us_per_token": sum(t) / _PROFILE_STEPS}
                    for name, t in top]}

    # -- timed generation ----------------------------------------------------------------------
    def generate(self, prompt, new_tokens: int) -> GenerationTiming:
        torch = self.torch
        if new_tokens > self.new_tokens:
            raise ValueError(f"{new_tokens} new tokens asked of a decoder built for {self.new_tokens}")
        step = self.graph.replay if self.graph is not None else self._body
        with torch.no_grad():
            self._sync()
            clock = _Clock(self.device)
            clock.mark()
            token = self._prefill(prompt)
            if not clock.cuda:
                token = token.clone()
            clock.mark()
            for _ in range(new_tokens - 1):
                step()
                clock.mark()
            intervals = clock.intervals()
        ids = self.out[:, :new_tokens].tolist()
        return GenerationTiming(ttft_s=intervals[0], decode_s=sum(intervals[1:]),
                                token_s=intervals[1:], tokens=ids)


# ---- the runtime plug-in ------------------------------------------------------------------
from quantbench.runtimes.base import register  # noqa: E402
from quantbench.runtimes.eager import EagerRuntime  # noqa: E402


class CompiledRuntime(EagerRuntime):
    name = "compiled"
    kv_formats = ("auto", "fp8")
    description = ("static KV cache, prefill apart, each decode step torch.compile'd and "
                   "replayed as one CUDA graph (checked per cell; on the CPU: compiled, no graph)")

    tuning = "one-direction"
    # Sibling projections fused at load (quantbench.fusion): compiled-fused only, until a
    # same-machine comparison shows it does not slow the bf16 baseline (docs/results,
    # 2026-11-29-h200-speed-of-light.md: on the 1B preset inductor already ran q/k/v as one
    # kernel, and the 8B bf16 figure fused was below an earlier unfused one on another machine).
    fuse = False
    # "sdpa": transformers' attention at every step; "quantbench": its decode attention kernel
    # at decode steps (runtimes/attention.py), SDPA for the prefill.
    attention = "sdpa"

    def prepare_model(self, model, scheme):
        if not self.fuse:
            return {"fused": {}, "reason": f"the {self.name} runtime keeps the model's layers apart"}
        if not scheme.fusable:
            return {"fused": {}, "reason": f"{scheme.name} quantizes each layer as the model "
                                           "names it (calibrated or as shipped)"}
        from quantbench.fusion import fuse_projections

        return fuse_projections(model).as_info()

    def decoder(self, model, cell, device, info, eager_generate, progress):
        w = cell.workload
        progress(phase="compile")
        from quantbench import kvcache
        from quantbench.kvcache.layers import stored_bytes
        from quantbench.schemes import get as get_scheme

        if self.attention == "quantbench":
            from quantbench.runtimes.attention import install

            info["attention"] = install(model, device)
        decoder = CompiledDecoder(model, device, w.batch_size, w.prompt_tokens, w.new_tokens,
                                  tuning=self.tuning, kv=kvcache.get(get_scheme(cell.scheme).kv))
        start = time.perf_counter()
        info["compiled"] = decoder.prepare(cell.prompt["ids"])
        info["compiled"]["prepare_s"] = time.perf_counter() - start  # never inside the timings
        if self.attention == "sdpa":  # SDPA reads the whole static cache, masked
            info["kv_positions_read"] = decoder.max_cache_len
        held = stored_bytes(decoder.cache)
        if held:  # the static buffers, whole: what each step reads
            info["kv_cache"].update({
                "static": True, "implementation": "transformers StaticCache" if decoder.kv.native
                else "quantbench Fp8StaticLayer", "stored_bytes": held,
                "positions": decoder.max_cache_len, "sequences": w.batch_size,
                "bytes_per_position": held / (w.batch_size * decoder.max_cache_len)})
        return decoder.generate


class FusedRuntime(CompiledRuntime):
    name = "compiled-fused"
    description = ("as compiled, with q/k/v and gate/up fused into one layer each at load "
                   "(one matmul each per step, for every scheme that quantizes per row or group)")
    fuse = True


class QbRuntime(FusedRuntime):
    name = "compiled-qb"
    description = ("as compiled-fused, with quantbench's Triton decode attention at each step "
                   "(reads only the positions written so far, no mask, no K/V copies for "
                   "grouped-query heads); SDPA for the prefill")
    attention = "quantbench"


class PlainRuntime(CompiledRuntime):
    name = "compiled-plain"
    description = ("as compiled, without coordinate-descent tuning: batch-1 matmuls on cuBLAS, "
                   "the shortest compile")
    tuning = "plain"


class TunedRuntime(CompiledRuntime):
    name = "compiled-tuned"
    description = ("as compiled, tuning every kernel in every direction (torchao's recommended "
                   "setting): the longest compile")
    tuning = "all-directions"


register(CompiledRuntime())
register(FusedRuntime())
register(QbRuntime())
register(PlainRuntime())
register(TunedRuntime())
