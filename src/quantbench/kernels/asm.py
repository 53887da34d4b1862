"""The kernel as a GPU would run it, compiled on any machine: Triton lowers it for a CUDA target
without a GPU (its wheel carries ptxas), so what made the first kernels slow can be checked on
a CPU. Two things decided their speed on the H200 (docs/results/2026-11-29-h200-kernels-2.md):
a `convert_layout` inside the K loop moves a whole tile through shared memory every step, and a
load that is not 16 bytes wide issues 8-16 times the instructions.

    python -m quantbench.kernels.asm int4 1,32,128,1,4,2 [--group 128] [--arch 90]
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

# Argument positions of wo_matmul_kernel that a real launch specializes as multiples of 16
# (pointers from torch, N, K and the strides of contiguous tensors); M is left general.
_DIVISIBLE = ("x_ptr", "w_ptr", "s_ptr", "b_ptr", "xs_ptr", "out_ptr", "N", "K", "stride_xm",
              "stride_wn", "stride_sn", "stride_xsm", "stride_os", "stride_om")


@dataclass
class Lowered:
    ttgir: str
    ptx: str
    cubin: bytes = b""

    def loop_sass(self) -> dict[str, int]:
        """Machine instructions (SASS, by opcode) in the longest loop: the K loop's cost per
        tile, which decides the speed of a kernel that is bound by its arithmetic (the int4
        decode path was: docs/results/2026-12-06-h200-speed-of-light.md)."""
        import os
        import subprocess
        import tempfile

        import triton

        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                            "nvdisasm")
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(self.cubin)
            f.flush()
            sass = subprocess.run([tool, "-c", f.name], capture_output=True, text=True,
                                  check=True).stdout
        labels, code = {}, []
        for line in sass.splitlines():
            label = re.match(r"\s*(\.L_x_\d+):", line)
            if label:
                labels[label.group(1)] = len(code)
                continue
            ins = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
            if ins:
                code.append(ins.group(1))
        loops = []
        for end, ins in enumerate(code):
            target = re.search(r"BRA\s+(?:`\()?(\.L_x_\d+)", ins)
            if target and labels.get(target.group(1), end + 1) <= end:
                loops.append((labels[target.group(1)], end))
        if not loops:
            return {}
        begin, end = max(loops, key=lambda span: span[1] - span[0])
        found: dict[str, int] = {}
        for ins in code[begin:end + 1]:
            op = ins.split()[1 if ins.startswith("@") else 0].split(".")[0]
            found[op] = found.get(op, 0) + 1
        return found

    def loop_conversions(self) -> int:
        """Layout changes inside the K loop(s): each moves a tile through shared memory."""
        count, depth = 0, 0
        for line in self.ttgir.splitlines():
            if "scf.for" in line:
                depth += 1
            if depth and "ttg.convert_layout" in line:
                count += 1
            if depth and "scf.yield" in line:
                depth -= 1
        return count

    def global_loads(self) -> dict[str, int]:
        """PTX global loads by width: {'v4.b32': n, 'b16': m, ...} (v4.b32 is 16 bytes)."""
        found: dict[str, int] = {}
        for match in re.finditer(r"ld\.global(?:\.[a-z_]+)*?\.((?:v[248]\.)?[bfus]\d+)", self.ptx):
            found[match.group(1)] = found.get(match.group(1), 0) + 1
        return found

    def async_copies(self) -> dict[int, int]:
        """PTX asynchronous global-to-shared copies (a pipelined loop's loads) by bytes each."""
        found: dict[int, int] = {}
        for match in re.finditer(r"cp\.async\.c[ag]\.shared\.global[^,]*,[^,]*,\s*(0x[0-9a-f]+|\d+)",
                                 self.ptx):
            size = int(match.group(1), 0)
            found[size] = found.get(size, 0) + 1
        return found


def per_product(sass: dict[str, int], block_m: int, block_n: int, block_k: int,
                num_warps: int) -> float:
    """A K loop's instructions (`Lowered.loop_sass`) per row-weight product: a tile's products
    are spread over 32 x num_warps threads."""
    return sum(sass.values()) / (block_m * block_n * block_k / (32 * num_warps))


def lower(fmt: str, block_m: int, block_n: int, block_k: int, split_k: int, num_warps: int,
          num_stages: int, group: int = 128, arch: int = 90, x_dtype: str = "bf16") -> Lowered:
    from quantbench.kernels.gemv import FORMATS, wo_matmul_kernel

    weight = {"bf16": "*bf16", "int8": "*i8"}.get(fmt, "*u8")
    # int4 and int8 on CUDA cores read fp32 activations and their weight as words (ops.prepare)
    on_cores = fmt in ("int4", "int8") and block_m < 16
    x_in = "fp32" if on_cores else x_dtype
    if on_cores:
        weight = "*i32"
    sig = {"x_ptr": f"*{x_in}", "w_ptr": weight, "s_ptr": f"*{x_dtype}",
           "b_ptr": f"*{x_dtype}", "xs_ptr": "*fp32",
           "out_ptr": f"*{x_dtype}" if split_k == 1 else "*fp32",
           "M": "i32", "N": "i32", "K": "i32", "stride_xm": "i32", "stride_wn": "i32",
           "stride_sn": "i32", "stride_xsm": "i32", "stride_os": "i32", "stride_om": "i32"}
    consts = {"FORMAT": FORMATS[fmt], "GROUP": group, "BLOCK_M": block_m, "BLOCK_N": block_n,
              "BLOCK_K": block_k, "SPLIT_K": split_k, "USE_DOT": block_m >= 16}
    return compile_for(wo_matmul_kernel, sig, consts, _DIVISIBLE, arch, num_warps, num_stages)


def compile_for(fn, sig: dict, consts: dict, divisible, arch: int = 90, num_warps: int = 4,
                num_stages: int = 2) -> Lowered:
    """Lower a @triton.jit function for a CUDA target: `sig` its runtime arguments' types in
    order, `consts` its constexprs, `divisible` the arguments a real launch specializes as
    multiples of 16."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {**sig, **{name: "constexpr" for name in consts}}
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in divisible}
    source = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": num_warps, "num_stages": num_stages})
    return Lowered(kernel.asm["ttgir"], kernel.asm["ptx"], kernel.asm["cubin"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fmt", choices=["bf16", "int8", "fp8", "int4"])
    parser.add_argument("config", help="block_m,block_n,block_k,split_k,num_warps,num_stages")
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10")
    args = parser.parse_args()
    lowered = lower(args.fmt, *map(int, args.config.split(",")), group=args.group, arch=args.arch)
    print(f"layout changes in the K loop: {lowered.loop_conversions()}")
    print(f"global loads (PTX, by width): {lowered.global_loads()}")
    sass = lowered.loop_sass()
    bm, bn, bk, _, warps, _ = map(int, args.config.split(","))
    print(f"K loop: {sum(sass.values())} machine instructions a tile "
          f"({per_product(sass, bm, bn, bk, warps):.2f} a row-weight product): "
          + ", ".join(f"{op} {n}" for op, n in sorted(sass.items(), key=lambda kv: -kv[1])[:10]))


if __name__ == "__main__":
    main()
