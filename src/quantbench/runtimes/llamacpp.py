"""The llama.cpp runtime (llama-cpp-python): GGUF files made once and cached, then the same
fixed-length greedy decode as the eager runtime, on the same prompt token ids.

quantbench hands llama.cpp token ids and reads back token ids: llama.cpp never tokenizes, so
every scheme sees identical input whatever vocabulary metadata the GGUF carries.
"""

from __future__ import annotations

import contextlib

import ctypes
import json
import os
import time
from pathlib import Path

from quantbench.runtimes.eager import GenerationTiming


def gguf_dir(model: dict, seed: int) -> Path:
    from quantbench.models import cache_dir

    key = model["fingerprint"].replace(":", "-").replace("/", "-")
    if model.get("random_weights"):
        key += f"-seed{seed}"  # random weights depend on the seed
    return cache_dir() / "gguf" / key


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_sidecar(path: Path) -> dict:
    try:
        return json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_sidecar(path: Path, data: dict) -> None:
    tmp = _sidecar(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, _sidecar(path))


def export_f32(cell, progress) -> tuple[Path, dict]:
    """The model as an F32 GGUF, written by quantbench (cached per model fingerprint)."""
    from quantbench import gguf_export, models
    import torch

    target = gguf_dir(cell.model, cell.seed) / "F32.gguf"
    if target.exists():
        return target, {**_read_sidecar(target), "cached": True}
    progress(phase="export")
    start = time.perf_counter()
    net = models.load(cell.model, torch.float32, "cpu", cell.seed)
    facts = gguf_export.export_f32(net, target, model_dir=cell.model.get("path"),
                                   source_gguf=cell.model.get("source_gguf"))
    del net
    info = {"export_s": time.perf_counter() - start, "file_bytes": facts["bytes"],
            "written_by": "quantbench.gguf_export (gguf GGUFWriter)"}
    _write_sidecar(target, info)
    return target, {**info, "cached": False}


def quantize(source: Path, ggml_type: str, threads: int, progress) -> tuple[Path, dict]:
    """llama.cpp's own quantizer, F32 -> `ggml_type` (cached beside the F32 file)."""
    import llama_cpp

    if ggml_type == "F32":
        return source, {}
    target = source.with_name(f"{ggml_type}.gguf")
    if target.exists():
        return target, {**_read_sidecar(target), "cached": True}
    progress(phase="quantize")
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ggml_type}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    start = time.perf_counter()
    try:
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(),
                                              ctypes.byref(params))
        if code != 0:
            raise RuntimeError(f"llama.cpp could not quantize to {ggml_type} (code {code})")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    info = {"llama_quantize_s": time.perf_counter() - start, "file_bytes": target.stat().st_size}
    _write_sidecar(target, info)
    return target, {**info, "cached": False}


def file_facts(path: Path) -> dict:
    """Exact tensor bytes, parameter count and type mix of a GGUF file, cached per file (path,
    size, modification time): gguf's reader parses every metadata field in Python, and a
    vocabulary's ~150k parts cost a cell ~4.5 s on a 2-core machine, each time."""
    from quantbench.config import stable_hash
    from quantbench.models import cache_dir

    stat = path.stat()
    key = stable_hash({"path": str(path.resolve()), "size": stat.st_size,
                       "mtime_ns": stat.st_mtime_ns, "version": 2})[:16]
    cached = cache_dir() / "gguf-facts" / f"{key}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    facts = _read_file_facts(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(facts))
    os.replace(tmp, cached)
    return facts


def _read_file_facts(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(path)
    types: dict[str, int] = {}
    weights = params = 0
    sizes = {}
    tables = {}
    for tensor in reader.tensors:
        sizes[tensor.name] = int(tensor.n_bytes)
        part = {"token_embd.weight": "embedding", "output.weight": "lm_head"}.get(tensor.name)
        if part:
            tables[part] = {"dtype": tensor.tensor_type.name, "type": "GGUF tensor",
                            "bytes": int(tensor.n_bytes), "parameters": int(tensor.n_elements)}
        weights += int(tensor.n_bytes)
        params += int(tensor.n_elements)
        kind = tensor.tensor_type.name
        types[kind] = types.get(kind, 0) + 1
    # With an output.weight of its own the token table is only looked up, one row a token.
    unread = sizes.get("token_embd.weight", 0) if "output.weight" in sizes else 0
    if "embedding" in tables and "lm_head" not in tables:  # a tied head reads the token table
        tables["lm_head"] = dict(tables["embedding"], tied=True)
    elif "lm_head" in tables:
        tables["lm_head"]["tied"] = False
    return {"weights_bytes": weights, "parameters": params, "tensor_types": types,
            "file_bytes": path.stat().st_size, "unread_weight_bytes": unread, "tables": tables,
            "kv_shape": _kv_shape(reader)}


def _kv_shape(reader) -> dict | None:
    """Layers, KV heads and head size from the file's own metadata: the cache llama.cpp
    allocates (and no transformers import in the cell just to read a config: ~3 s)."""
    def field(key):
        f = reader.fields.get(key)
        return f.parts[f.data[0]] if f is not None and f.data else None

    arch = field("general.architecture")
    if arch is None:
        return None
    arch = bytes(arch).decode()

    def number(key):
        part = field(f"{arch}.{key}")
        return int(part[0]) if part is not None and len(part) else None

    layers, heads, width = (number("block_count"), number("attention.head_count"),
                            number("embedding_length"))
    if not (layers and heads and width):
        return None
    return {"layers": layers, "kv_heads": number("attention.head_count_kv") or heads,
            "head_dim": number("attention.key_length") or width // heads}


def extra_buffers_off_reason(gpu: bool) -> str | None:
    """Why llama.cpp's extra CPU buffer types (weight repacking, AMX) are turned off here, or
    None. On CPUs with AMX, llama.cpp repacks quantized weights into an AMX buffer and the first
    matmul on it segfaults (ggml_backend_amx_mul_mat; seen here with Q8_0 on a 2-core AMX Xeon,
    llama-cpp-python 0.3.36), so those cells crashed instead of being measured."""
    if gpu:
        return None
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return ("this CPU has AMX, whose llama.cpp weight-repacking path segfaults on its first "
            "matmul: weights stay in llama.cpp's plain CPU layout") if "amx_int8" in flags else None


@contextlib.contextmanager
def _default_model_params(**fields):
    """Llama() takes no argument for some model params: set them on the defaults it reads."""
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def patched():
        params = original()
        for key, value in fields.items():
            setattr(params, key, value)
        return params

    native.llama_model_default_params = patched
    try:
        yield
    finally:
        native.llama_model_default_params = original


class LlamaCppModel:
    """One llama.cpp context sized for the workload; `generate` mirrors eager.generate."""

    def __init__(self, path: Path, n_ctx: int, threads: int, gpu: bool, logits_all: bool = False,
                 kv_type: str | None = None):
        import llama_cpp
        from llama_cpp import Llama

        self.extra_buffers_off = extra_buffers_off_reason(gpu)
        fields = {"use_extra_bufts": False} if self.extra_buffers_off else {}
        kv = {}
        if kv_type:  # a quantized V cache runs only on llama.cpp's flash-attention path
            ggml = getattr(llama_cpp, f"GGML_TYPE_{kv_type}")
            kv = {"type_k": ggml, "type_v": ggml, "flash_attn": True}
        with _default_model_params(**fields):
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(512, n_ctx),
                             n_ubatch=min(512, n_ctx), n_threads=threads, n_threads_batch=threads,
                             n_gpu_layers=-1 if gpu else 0, use_mmap=False,
                             logits_all=logits_all, verbose=False, **kv)
        self.n_vocab = self.llm.n_vocab()

    def _last_logits(self):
        import numpy as np

        return np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))

    def generate(self, ids: list[int], new_tokens: int) -> GenerationTiming:
        llm = self.llm
        llm.reset()
        marks = [time.perf_counter()]
        llm.eval(ids)
        token = int(self._last_logits().argmax())
        marks.append(time.perf_counter())
        generated = [token]
        for _ in range(new_tokens - 1):
            llm.eval([token])
            token = int(self._last_logits().argmax())
            generated.append(token)
            marks.append(time.perf_counter())
        intervals = [b - a for a, b in zip(marks, marks[1:])]
        return GenerationTiming(ttft_s=intervals[0], decode_s=sum(intervals[1:]),
                                token_s=intervals[1:], tokens=[generated])

    def logits(self, ids: list[int]):
        """fp32 logits of every position of `ids` (needs logits_all=True)."""
        self.llm.reset()
        self.llm.eval(ids)
        return self.llm.scores[: len(ids)].copy()

    def close(self):
        if self.llm is not None:
            self.llm.close()
            self.llm = None


def prepare(cell, scheme, progress) -> tuple[Path, dict]:
    """The GGUF file this cell runs, built if needed; info says how and how long it took."""
    threads = threads_for(scheme)
    if scheme.ggml_type == "file":
        path = Path(cell.model["source_gguf"])
        return path, {"gguf_source": "the --model file as it is", "quantize_s": 0.0}
    start = time.perf_counter()
    f32, exported = export_f32(cell, progress)
    path, quantized = quantize(f32, scheme.ggml_type, threads, progress)
    cached = exported.get("cached") and quantized.get("cached", True)
    # What making this file cost (export + llama.cpp quantizer), also when it came from the cache.
    made_s = exported.get("export_s", 0.0) + quantized.get("llama_quantize_s", 0.0)
    return path, {"gguf_export": exported, "gguf_quantize": quantized, "gguf_cached": bool(cached),
                  "quantize_s": made_s, "prepare_wall_s": time.perf_counter() - start}


def threads_for(scheme) -> int:
    import torch

    return scheme.threads or torch.get_num_threads()


def _check_kv_blocks(cell, kv_type: str) -> None:
    """llama.cpp quantizes K and V in blocks of 32 along a head; other head sizes make it refuse
    the context with no reason given."""
    from quantbench import models

    config = models.config_of(cell.model)
    head_dim = (getattr(config, "head_dim", None)
                or config.hidden_size // config.num_attention_heads)
    if head_dim % 32:
        raise RuntimeError(f"llama.cpp's {kv_type} KV cache stores blocks of 32 values along each "
                           f"head, and this model's heads hold {head_dim}: measure it with "
                           "--kv-cache auto, or on a model with heads of a multiple of 32")


# ---- the runtime plug-in ------------------------------------------------------------------
from quantbench.runtimes.base import Engine, Runtime, register  # noqa: E402


class LlamaCppRuntime(Runtime):
    name = "llama.cpp"
    description = "llama.cpp through llama-cpp-python: GGUF schemes bring it with them"
    selectable = False
    max_batch = 1  # one sequence at a time, as llama-cpp-python's generate runs
    own_allocator = True  # torch's allocator sees none of llama.cpp's buffers

    kv_formats = ("auto", "int8", "int4")

    def kv_element_bytes(self, scheme, device_type: str) -> float:
        from quantbench import kvcache

        fmt = kvcache.get(scheme.kv)  # auto: llama.cpp's default f16 cache
        return kvcache.GGML_ELEMENT_BYTES["F16" if fmt.native else fmt.ggml_type]

    def reference_scheme(self, device_type: str) -> str:
        return "gguf-f16" if device_type == "cuda" else "gguf-f32"

    def engine(self, cell, scheme, device: str, progress) -> Engine:
        from quantbench.measure import memory

        path, info = prepare(cell, scheme, progress)
        memory.release_freed_memory()  # the torch model an export held
        facts = file_facts(path)
        progress(phase="load")
        start = time.perf_counter()
        w = cell.workload
        threads = threads_for(scheme)
        gpu = device.startswith("cuda")
        from quantbench import kvcache

        kv = kvcache.get(scheme.kv)
        kv_type = None if kv.native else kv.ggml_type
        if kv_type:
            _check_kv_blocks(cell, kv_type)
        engine = LlamaCppModel(path, w.prompt_tokens + w.new_tokens, threads, gpu=gpu,
                               kv_type=kv_type)
        load_s = time.perf_counter() - start

        def generate(ids, new_tokens):
            return engine.generate(ids[0], new_tokens)

        def for_quality(plan):
            """A second context that keeps every position's logits (the timed one keeps only
            the last, as generation needs), sized for the windows and the generation prompts."""
            engine.close()
            longest = max(len(p["ids"]) for p in plan["generation"]["prompts"])
            n_ctx = max(plan["context"], longest + plan["generation"]["new_tokens"])
            scorer = LlamaCppModel(path, n_ctx, threads, gpu=gpu, logits_all=True,
                                   kv_type=kv_type)
            return (scorer.logits, lambda ids, n: scorer.generate(ids, n).tokens[0], scorer.close)

        info.update({"load_s": load_s, "gguf_file": str(path),
                     "gguf_file_bytes": facts["file_bytes"],
                     "gguf_tensor_types": facts["tensor_types"], "llama_threads": threads,
                     "llama_extra_buffers": engine.extra_buffers_off or "on (llama.cpp's default)",
                     "unread_weight_bytes": facts["unread_weight_bytes"], "tables": facts["tables"],
                     "dtype": "as stored in the GGUF",
                     "kv_cache": ({"format": "auto", "implementation": "llama.cpp f16 cache"}
                                  if kv.native else
                                  {"format": kv.name, "implementation": f"llama.cpp type_k/type_v "
                                   f"{kv_type}, flash attention on (a quantized V needs it; the "
                                   "f16 cells run without)",
                                   "quality": "scored in one pass per window: llama.cpp stores "
                                              "each batch's keys and values in the cache before "
                                              "attending to them"})})
        if facts.get("kv_shape"):
            info["kv_cache"]["shape"] = facts["kv_shape"]
        return Engine(generate, facts["weights_bytes"], facts["parameters"], info, engine.close,
                      for_quality)


register(LlamaCppRuntime())
