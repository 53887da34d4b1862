"""Every launch config quantbench's tuner may choose for a shape, run once on the GPU against
the dequantized reference: the GPU test (`pytest -m gpu`) checks only the configs the tuner
picked, this checks all of them, in seconds.

    PYTHONPATH=src python benchmarks/kernel_check.py [--formats int4,int8] [--rows 1,2,8,16]
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    import torch

    from quantbench.kernels import formats, ops, tuning

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="bf16,int8,fp8,int4")
    parser.add_argument("--rows", default="1,2,8,16")
    parser.add_argument("--shape", default="2560x2048", help="N x K")
    args = parser.parse_args()
    n, k = map(int, args.shape.split("x"))
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    torch.manual_seed(0)
    worst = {}
    for fmt in args.formats.split(","):
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        packed = formats.quantize(w, fmt, 128)
        ref_w = formats.dequantize(packed, torch.float32)
        for m in map(int, args.rows.split(",")):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            ref = x.float() @ ref_w.T
            for config in tuning.candidates(fmt, m, n, k, 128, sms):
                y = ops.matmul(x, packed, config)
                err = float((y.float() - ref).abs().max() / ref.abs().max())
                key = f"{fmt} rows={m}"
                worst[key] = max(worst.get(key, 0.0), err)
                if err > 1e-2:  # more than the bf16 rounding of the output
                    print(json.dumps({"fmt": fmt, "rows": m, "config": config.short(),
                                      "error": err}))
    print(json.dumps({"worst_relative_error": worst}))
    bad = {key: e for key, e in worst.items() if e > 1e-2}
    print("ok" if not bad else f"FAILED: {bad}")


if __name__ == "__main__":
    main()
