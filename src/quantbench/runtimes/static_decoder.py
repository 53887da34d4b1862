"""The decoder of the compiled runtimes: a static KV cache, the prefill on its own, and every
one-token decode step replayed as one CUDA graph, so no Python runs per token but `graph.replay()`.

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

from quantbench.runtimes.eager import GenerationTiming, _cache_arg, _Clock
from quantbench.runtimes.inductor_setup import apply_inductor, compile_phases, inductor_settings
from quantbench.runtimes.step_profile import first_and_last_error, profile_replays

# Steps the compile call, the side-stream warm-up and the capture itself add beyond new_tokens.
_SLACK = 8
_CHECK_STEPS = 16
_PROFILE_STEPS = 4


def refusal_reason(check: dict) -> str:
    """Why a captured graph is not used, from its check (CompiledDecoder._check): the graph's
    tokens beyond rounding of the step's logits, and whether the step without a graph agreed
    with itself (a value frozen on the host) or not (kernels whose sums change order run to
    run, which the check cannot tell from a frozen value)."""
    graph = check.get("worst_gap_over_allowed", float("nan"))
    head = (f"the graph's tokens differ from the step's run without it beyond rounding of the "
            f"logits (worst {graph:.2f}x the tolerance)")
    own = check.get("step_against_itself")
    if own is None or own["worst_gap_over_allowed"] == 0:
        agrees = " while the step run again without a graph agrees with itself" if own else ""
        return f"{head}{agrees}: something the step computes on the host was frozen into the graph"
    mine = own["worst_gap_over_allowed"]
    if not own["within_tolerance"]:
        return (f"{head}, and the step without a graph does not agree with itself either (its "
                f"own tokens rescored by a second run: worst {mine:.2f}x the tolerance): its "
                f"kernels sum in another order each run (split-K atomics) beyond the check's "
                f"tolerance, so a value frozen into the graph cannot be told from that noise")
    return (f"{head}; the step without a graph varies between runs too, but less (worst "
            f"{mine:.2f}x the tolerance): something the step computes on the host was likely "
            f"frozen into the graph")


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
        settings = apply_inductor(inductor_settings(self.tuning))
        compiled = torch.compile(self._forward_step, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        try:
            self.step = compiled
            self._body()  # the first call compiles
            self._sync()
        except Exception as exc:
            self.step = self._forward_step
            self.info["compile"] = {"backend": "inductor", "error": first_and_last_error(exc),
                                    "seconds": time.perf_counter() - start,
                                    "inductor": settings, "tuning": self.tuning,
                                    "consequence": "the step's eager kernels are used instead"}
            torch._dynamo.reset()
            return
        first = time.perf_counter() - start
        start = time.perf_counter()
        self._body()  # a second call must not compile again
        self._sync()
        phases = compile_phases()
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
            self.info["cuda_graph"] = {"captured": False, "reason": first_and_last_error(exc),
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
                captured=False, reason=refusal_reason(check),
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
            if not out["within_tolerance"]:
                # Before blaming the graph: the step without it, its own tokens rescored by a
                # second run of it. A step whose kernels sum in a different order each run
                # (split-K atomics) disagrees with itself too.
                own = self.agreement(prompt, runs[1], steps)
                out["step_against_itself"] = {k: own[k] for k in (
                    "within_tolerance", "worst_gap_over_allowed", "first_out_of_tolerance")}
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
        self._prefill(prompt)
        return profile_replays(self.graph.replay, _PROFILE_STEPS, self._sync)

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
