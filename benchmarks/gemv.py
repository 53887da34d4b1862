"""quantbench's weight-only kernel against the library kernels the compiled runtime otherwise
runs, on the decode shapes of the 1B and 8B presets (q/k/v and gate/up fused): time per call
in a CUDA graph (triton.testing.do_bench_cudagraph), bytes of weight read per second, and that
as a share of this GPU's measured copy bandwidth.

    PYTHONPATH=src python benchmarks/gemv.py --out gemv.json [--rows 1,8] [--models 1b,8b]

Competitors, each on the same bf16 activations:
  cublas-bf16      F.linear on the bf16 weight (what compiled-plain runs)
  inductor-bf16    the same, torch.compile'd with coordinate-descent tuning (what compiled runs)
  inductor-int8wo  torch.compile'd `(x @ w_int8.to(bf16).T) * scale` (torchao-int8wo's graph)
  tinygemm-int4    torchao's Int4WeightOnlyConfig (tile-packed, g128) Linear
  qb-<fmt>         quantbench.kernels, tuned for the shape (bf16, int8, fp8, int4 g128); the
                   kernel alone, as the compiled step runs it (qb_kernels_alone)
  gemlite-<fmt>    gemlite's kernels on the same formats (int8, fp8, int4 g128), as the gemlite-*
                   schemes hold them; its own tuning on the first call (or its shipped table)
"""

from __future__ import annotations

import argparse
import json
import time

SHAPES = {  # name -> (in, out) of each matmul a decode step runs, fused
    "1b": {"qkv": (2048, 3072), "o": (2048, 2048), "gate_up": (2048, 16384),
           "down": (8192, 2048), "lm_head": (2048, 128256)},
    "8b": {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672),
           "down": (14336, 4096), "lm_head": (4096, 128256)},
}


def bench(fn) -> float:
    import torch
    from triton.testing import do_bench_cudagraph

    with torch.cuda.stream(torch.cuda.Stream()):
        return do_bench_cudagraph(fn, rep=50) * 1e3  # us


def copies_for(torch, weight_bytes: int, asked: str) -> int:
    """How many distinct weights a timing cycles through: enough that together they are twice
    the GPU's L2, so no call finds its weight still cached from the last (one weight repeated
    reads a 32 MB matrix from L2 and reports more than the memory can deliver)."""
    if asked != "auto":
        return max(1, int(asked))
    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return max(1, min(16, -(-2 * l2 // weight_bytes)))


def competitors(torch, k: int, n: int, copies: int, wanted: set):
    """name -> (one callable of x per weight copy, weight bytes each reads)."""
    import torch._inductor.config as inductor

    from quantbench.kernels import formats
    from quantbench.kernels.layers import QbLinear

    def want(name):
        return not wanted or name in wanted

    inductor.coordinate_descent_tuning = True
    weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
               for _ in range(copies)]
    out = {}
    if want("cublas-bf16"):
        out["cublas-bf16"] = ([lambda x, w=w: torch.nn.functional.linear(x, w) for w in weights],
                              n * k * 2)
    if want("inductor-bf16"):  # one compile: the weight is an input, the same shape each time
        linear = torch.compile(lambda x, w: torch.nn.functional.linear(x, w))
        out["inductor-bf16"] = ([lambda x, w=w: linear(x, w) for w in weights], n * k * 2)
    if want("inductor-int8wo"):
        dequant_mm = torch.compile(lambda x, q, s: (x @ q.to(torch.bfloat16).T) * s)
        packed = [formats.quantize(w, "int8") for w in weights]
        # scales in bf16 once, here: a conversion in the callable would be timed with the matmul
        pairs = [(p.data, p.scale.to(torch.bfloat16)) for p in packed]
        out["inductor-int8wo"] = ([lambda x, q=q, s=s: dequant_mm(x, q, s) for q, s in pairs],
                                  packed[0].nbytes)
    if want("tinygemm-int4"):
        try:
            from torchao.quantization import Int4WeightOnlyConfig, quantize_

            mods = []
            for w in weights:
                mod = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False, device="cuda",
                                                          dtype=torch.bfloat16))
                mod[0].weight.data.copy_(w)
                quantize_(mod, Int4WeightOnlyConfig(group_size=128,
                                                    int4_packing_format="tile_packed_to_4d",
                                                    set_inductor_config=False))
                mods.append(mod)
            out["tinygemm-int4"] = (mods, n * k // 2 + 2 * 2 * n * k // 128)
        except Exception as exc:  # torchao absent or changed: the row says so
            out["tinygemm-int4"] = (exc, 0)
    for fmt in ("bf16", "int8", "fp8", "int4"):
        if want(f"qb-{fmt}"):
            layers = []
            for w in weights:
                linear = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
                linear.weight.data.copy_(w)
                layers.append(QbLinear.from_linear(linear, fmt, 128))
            out[f"qb-{fmt}"] = (layers, layers[0].packed().nbytes)
    for fmt in ("int8", "fp8", "int4"):
        if want(f"gemlite-{fmt}"):
            try:
                from quantbench.kernels import gemlite_layers

                layers = []
                for w in weights:
                    linear = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
                    linear.weight.data.copy_(w)
                    layers.append(gemlite_layers.from_linear(linear, fmt, 128))
                # the format's bytes (gemlite's few bytes of metadata a layer left out)
                out[f"gemlite-{fmt}"] = (layers, formats.quantize(weights[0], fmt, 128).nbytes)
            except Exception as exc:  # gemlite absent or changed: the row says so
                out[f"gemlite-{fmt}"] = (exc, 0)
    return out


def qb_kernels_alone(layers, x):
    """quantbench's layers as the compiled step runs them: the kernel alone, with the config
    the layer tuned. Its activation preparation (fp32 planes and sums for the int4/int8
    CUDA-core paths, kernels.ops.prepare) is fused into the previous kernel there; timed as
    eager launches it would add a few microseconds a call."""
    from quantbench.kernels import ops, tuning

    out = []
    for layer in layers:
        config = tuning.Config(*layer._chosen[x.shape[0]])
        run = ops.kernel_alone(x, layer.packed(), config)
        out.append(lambda _x, run=run: run())
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gemv.json")
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--kernels", default="",
                        help="comma list of competitor names to run (default: all)")
    parser.add_argument("--copies", default="auto",
                        help="distinct weights a timing cycles through (auto: twice the L2 in "
                             "all; 1: one weight repeated, as the 2026-11-29 runs did)")
    args = parser.parse_args()
    wanted = set(filter(None, args.kernels.split(",")))
    torch.manual_seed(0)
    # The ceiling quantbench's roofline uses (`quantbench hardware`), measured the same way here.
    from quantbench.hardware.profile import measure

    copy = measure(f"cuda:{torch.cuda.current_device()}")["copy_bandwidth_Bps"]
    rows = []
    for model in args.models.split(","):
        for name, (k, n) in SHAPES[model].items():
            copies = copies_for(torch, n * k * 2, args.copies)
            for m in map(int, args.rows.split(",")):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                for who, (fns, nbytes) in competitors(torch, k, n, copies, wanted).items():
                    row = {"model": model, "matmul": name, "k": k, "n": n, "rows": m,
                           "kernel": who, "copies": copies}
                    if isinstance(fns, Exception):
                        row["error"] = str(fns)[:200]
                    else:
                        try:
                            with torch.no_grad():
                                for fn in fns:
                                    fn(x)  # compile / tune outside the timing
                                launches = getattr(fns[0], "launches", None)
                                if who.startswith("qb-"):
                                    fns = qb_kernels_alone(fns, x)
                                start = time.perf_counter()
                                row["us"] = bench(lambda: [fn(x) for fn in fns]) / copies
                            row.update(weight_bytes=nbytes,
                                       GBps=nbytes / (row["us"] * 1e-6) / 1e9,
                                       pct_copy_bw=100 * nbytes / (row["us"] * 1e-6) / copy,
                                       bench_s=time.perf_counter() - start)
                            if launches:  # a qb layer: its config
                                row["launch"] = next(iter(launches.values()))
                        except Exception as exc:
                            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    result = {"gpu": torch.cuda.get_device_name(), "copy_bandwidth_Bps": copy,
              "l2_bytes": props.L2_cache_size, "torch": torch.__version__, "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
