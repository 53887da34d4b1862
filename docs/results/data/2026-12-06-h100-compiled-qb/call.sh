#!/usr/bin/env bash
# usage: call.sh STEP... ; each step bounded so the whole command ends before ${LIMIT:-570} s
set -u
pip install -q --no-deps --target /tmp/site .whl-gpu/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
mkdir -p /root/qb
left() { echo $(( ${LIMIT:-570} - SECONDS )); }
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee -a $OUT/log.txt
for step in "$@"; do
  echo "== $step at ${SECONDS}s $(date -u +%H:%M:%S)" | tee -a $OUT/log.txt
  case $step in
  tests) timeout 150 python -m pytest -m gpu -n 0 -o addopts="" -q -s -p no:cacheprovider \
      tests/test_gpu_kernels.py -k "${TESTS:-decode_attention_kernel}" > $OUT/pytest.txt 2>&1
    tail -25 $OUT/pytest.txt ;;
  diag) for v in old new; do timeout 90 python .whl-gpu/diag.py $v > $OUT/diag-$v.txt 2>&1; grep -v "^W1206" $OUT/diag-$v.txt | tail -30; done ;;
  attn) timeout 130 python benchmarks/decode_attention.py --out $OUT/attention.json --models 1b,8b \
      --batch 1,8 --cache 264,4096,32768 > $OUT/attention.txt 2>&1; tail -40 $OUT/attention.txt ;;
  1b|8b|8b8)
    case $step in 1b) m=llama-3.2-1b; b=1; s=${S1B:-bf16,torchao-int4wo} ;;
                  8b) m=llama-3.1-8b; b=1; s=bf16,torchao-int4wo ;;
                  8b8) m=llama-3.1-8b; b=8; s=bf16,torchao-int4wo ;; esac
    timeout -s INT -k 15 $(left) python -m quantbench run --model random:$m --device cuda \
      --runtime compiled-qb,compiled-fused --schemes $s --batch-size $b --new-tokens 128 --runs 5 \
      --warmup 1 --no-repeat-baseline --cell-timeout 200 --db /root/qb/sol-$step.db --out /root/qb/r \
      --log "" > $OUT/run-$step.txt 2>&1
    tail -30 $OUT/run-$step.txt; cp /root/qb/sol-$step.db $OUT/ ;;
  esac
done
echo "== end at ${SECONDS}s" | tee -a $OUT/log.txt
