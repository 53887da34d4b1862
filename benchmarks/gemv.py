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
  qb-<fmt>         quantbench.kernels, tuned for the shape (bf16, int8, fp8, int4 g128)
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


def copy_bandwidth(torch) -> float:
    from triton.testing import do_bench

    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), rep=200)
    return 2 * a.numel() / (ms * 1e-3)  # read + write


def bench(fn) -> float:
    import torch
    from triton.testing import do_bench_cudagraph

    with torch.cuda.stream(torch.cuda.Stream()):
        return do_bench_cudagraph(fn, rep=50) * 1e3  # us


def competitors(torch, k: int, n: int):
    """name -> (callable of x, weight bytes it reads)."""
    import torch._inductor.config as inductor

    from quantbench.kernels import formats
    from quantbench.kernels.layers import QbLinear

    inductor.coordinate_descent_tuning = True
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
    linear = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
    linear.weight.data.copy_(w)
    out = {"cublas-bf16": (lambda x: torch.nn.functional.linear(x, w), w.numel() * 2)}
    out["inductor-bf16"] = (torch.compile(lambda x: torch.nn.functional.linear(x, w)),
                            w.numel() * 2)
    int8 = formats.quantize(w, "int8")
    q, s = int8.data, int8.scale.to(torch.bfloat16)
    out["inductor-int8wo"] = (torch.compile(lambda x: (x @ q.to(torch.bfloat16).T) * s),
                              int8.nbytes)
    try:
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        tiny = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False, device="cuda",
                                                   dtype=torch.bfloat16))
        tiny[0].weight.data.copy_(w)
        quantize_(tiny, Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d",
                                             set_inductor_config=False))
        out["tinygemm-int4"] = (tiny, n * k // 2 + 2 * 2 * n * k // 128)
    except Exception as exc:  # torchao absent or changed: the row says so
        out["tinygemm-int4"] = (exc, 0)
    for fmt in ("bf16", "int8", "fp8", "int4"):
        layer = QbLinear.from_linear(linear, fmt, 128)
        out[f"qb-{fmt}"] = (layer, layer.packed().nbytes)
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gemv.json")
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--models", default="1b,8b")
    parser.add_argument("--kernels", default="",
                        help="comma list of competitor names to run (default: all)")
    args = parser.parse_args()
    wanted = set(filter(None, args.kernels.split(",")))
    torch.manual_seed(0)
    copy = copy_bandwidth(torch)
    rows = []
    for model in args.models.split(","):
        for name, (k, n) in SHAPES[model].items():
            for m in map(int, args.rows.split(",")):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                for who, (fn, nbytes) in competitors(torch, k, n).items():
                    if wanted and who not in wanted:
                        continue
                    row = {"model": model, "matmul": name, "k": k, "n": n, "rows": m, "kernel": who}
                    if isinstance(fn, Exception):
                        row["error"] = str(fn)[:200]
                    else:
                        try:
                            with torch.no_grad():
                                fn(x)  # compile / tune outside the timing
                                start = time.perf_counter()
                                row["us"] = bench(lambda: fn(x))
                            row.update(weight_bytes=nbytes,
                                       GBps=nbytes / (row["us"] * 1e-6) / 1e9,
                                       pct_copy_bw=100 * nbytes / (row["us"] * 1e-6) / copy,
                                       bench_s=time.perf_counter() - start)
                            if getattr(fn, "launches", None):  # a qb layer: the config it ran
                                row["launch"] = next(iter(fn.launches.values()))
                        except Exception as exc:
                            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {"gpu": torch.cuda.get_device_name(), "copy_bandwidth_Bps": copy,
              "torch": torch.__version__, "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
