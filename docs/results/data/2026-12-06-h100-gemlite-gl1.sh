#!/usr/bin/env bash
# call 1: gemlite schemes (GPU tests + 1B end to end) and bd3352c's tuning reuse test
set -u
pip install -q --no-deps --target /tmp/site .whl-gpu/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader
date -u
timeout 330 python -m pytest -m gpu -n 0 -o addopts="" -q -p no:cacheprovider tests/test_gpu.py \
  -k "gemlite or repeat_cell_reuses" 2>&1 | tail -60 > $OUT/pytest.txt
tail -5 $OUT/pytest.txt
date -u
timeout $((${1:-560} - SECONDS)) python -m quantbench run --model random:llama-3.2-1b --device cuda \
  --runtime compiled-fused --schemes bf16,gemlite-int4,torchao-int4wo,gemlite-int8 --new-tokens 128 \
  --runs 5 --warmup 1 --no-repeat-baseline --cell-timeout 150 --db $OUT/gl-1b.db --out $OUT/r --log "" \
  > $OUT/run-1b.txt 2>&1
tail -40 $OUT/run-1b.txt
date -u
cp ~/.cache/quantbench/kernels/gemlite*.json $OUT/ 2>/dev/null
