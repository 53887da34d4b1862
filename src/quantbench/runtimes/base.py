"""What a runtime is to quantbench: a way to turn a cell's model and scheme into an engine that
generates with timing, scores quality and says what it holds. `worker.py` and `api.py` ask the
registry; a new runtime (vLLM, ...) is one module that registers itself here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from quantbench.errors import UsageError


@dataclass
class Engine:
    """A loaded model ready to generate, and what it took to get there."""

    generate: Callable  # (input_ids as lists, new_tokens) -> GenerationTiming
    weights: int  # bytes of the weights as stored
    params: int
    info: dict
    close: Callable = field(default=lambda: None)
    # quality plan -> (logits(ids) -> fp32 [len, vocab], generate(ids, n) -> ids, close)
    for_quality: Callable | None = None
    torch_model: object = None  # None for engines of their own (llama.cpp): no lm-eval there


class Runtime:
    """The protocol. Subclasses set the class attributes and implement `engine`."""

    name: str = ""
    description: str = ""
    # Chosen with --runtime; False for runtimes that come with their schemes (llama.cpp: GGUF).
    selectable: bool = True
    max_batch: int | None = None  # sequences one engine decodes together; None: any
    # True when torch's allocator sees none of the runtime's device memory (read it from NVML).
    own_allocator: bool = False
    # KV-cache formats it can decode with (quantbench.kvcache); "auto" is its own cache.
    kv_formats: tuple[str, ...] = ("auto",)

    def engine(self, cell, scheme, device: str, progress) -> Engine:
        raise NotImplementedError

    def kv_element_bytes(self, scheme, device_type: str) -> float:
        """Bytes of one K or V element in this runtime's cache, as far as its format says
        (runtimes that can measure their cache record the measured bytes instead)."""
        from quantbench import kvcache

        native = {"float32": 4}.get(scheme.compute_dtype(device_type), 2)
        fmt = kvcache.get(scheme.kv)
        if fmt.native:
            return native
        if fmt.eager_backend in ("quanto", "hqq"):  # a scale and a zero point per group
            return fmt.bits / 8 + 2 * native / fmt.group
        return fmt.bits / 8

    def reference_scheme(self, device_type: str) -> str | None:
        """The full-precision scheme this runtime's own schemes are timed against, when they
        cannot be timed against torch (like with like); None: the run's baseline."""
        return None

    def check_kv(self, scheme) -> None:
        from quantbench import kvcache

        kvcache.check_runtime(kvcache.get(scheme.kv), self, scheme.name)

    def check_workload(self, workload, scheme_name: str) -> None:
        if self.max_batch is not None and workload.batch_size > self.max_batch:
            raise UsageError(f"scheme '{scheme_name}' runs in {self.name}, which decodes "
                             f"{self.max_batch} sequence(s) at a time: use --batch-size "
                             f"{self.max_batch} for it (or exclude it at larger batches)")


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    RUNTIMES[runtime.name] = runtime
    return runtime


def get(name: str) -> Runtime:
    _load_builtin()
    try:
        return RUNTIMES[name]
    except KeyError:
        raise UsageError(f"--runtime '{name}' is not available: choose one of "
                         f"{', '.join(selectable())}") from None


def selectable() -> dict[str, str]:
    """Runtimes a user picks with --runtime, and what each does."""
    _load_builtin()
    return {name: r.description for name, r in RUNTIMES.items() if r.selectable}


def for_scheme(scheme, runtime: str) -> Runtime:
    """The runtime a scheme runs under in a run that asked for `runtime`: its own engine when
    it has one (GGUF: llama.cpp), else the run's; a torch scheme measured beside a llama.cpp
    cell (the quality baseline) runs eager."""
    if scheme.runtime:
        return get(scheme.runtime)
    found = get(runtime)
    return found if found.selectable else get("eager")


def _load_builtin() -> None:
    # Always: one of them imported on its own (eager, by a test or the worker) registers only
    # itself. Imports are cached, so this costs nothing after the first call.
    from quantbench.runtimes import compiled, eager, llamacpp  # noqa: F401  (they register)
