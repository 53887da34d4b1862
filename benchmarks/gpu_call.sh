#!/usr/bin/env bash
# One call to a lent GPU machine (the device tool), from the repository root, with the wheels the
# image lacks in .whl-gpu/ (git-ignored: gemlite, torchao) carried along:
#   LIMIT=560 bash benchmarks/gpu_call.sh tests attn 1b 8b
# Each step is bounded so the whole command ends before ${LIMIT:-570} s; the run steps keep their
# database under /root/qb, so the same command on a still-warm machine resumes them. Outputs and
# databases go to $OUT.
#   tests  pytest -m gpu on tests/test_gpu_kernels.py, -k "${TESTS}" (default: the attention tests;
#          the compiled one measures six 1B cells: ${TESTS_LIMIT:-420} s)
#   check  benchmarks/kernel_check.py: every launch config of the qb kernel against its reference
#   gemv   benchmarks/gemv.py on ${GEMV_MODELS:-8b}'s shapes, rows 1 and 8, ${GEMV_KERNELS}
#   attn   benchmarks/decode_attention.py, 1B and 8B head layouts, batch 1 and 8
#   1b 8b 8b8  quantbench run, 128 + 128 tokens, runtimes ${RT}, schemes ${SCHEMES_<step>} or
#          else ${SCHEMES} (SCHEMES_8b8=bf16,qb-int4 ...)
set -u
pip install -q --no-deps --target /tmp/site .whl-gpu/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
RT=${RT:-compiled-qb-fold,compiled-qb,compiled-fused}
SCHEMES=${SCHEMES:-bf16,torchao-int4wo}
mkdir -p /root/qb
left() { echo $(( ${LIMIT:-570} - SECONDS )); }
nvidia-smi --query-gpu=name,uuid,driver_version --format=csv,noheader | tee -a $OUT/log.txt
for step in "$@"; do
  echo "== $step at ${SECONDS}s $(date -u +%H:%M:%S)" | tee -a $OUT/log.txt
  case $step in
  tests) timeout ${TESTS_LIMIT:-420} python -m pytest -m gpu -n 0 -o addopts="" -q -s -p no:cacheprovider \
      tests/test_gpu_kernels.py -k "${TESTS:-decode_attention or folded or compiled_qb}" \
      > $OUT/pytest.txt 2>&1
    tail -25 $OUT/pytest.txt ;;
  check) timeout 90 python benchmarks/kernel_check.py > $OUT/check.txt 2>&1; tail -8 $OUT/check.txt ;;
  gemv) timeout ${GEMV_LIMIT:-200} python benchmarks/gemv.py --out $OUT/gemv.json --models ${GEMV_MODELS:-8b} \
      --rows 1,8 --kernels ${GEMV_KERNELS:-cublas-bf16,tinygemm-int4,qb-int4,qb-int8} > $OUT/gemv.txt 2>&1
    tail -20 $OUT/gemv.txt ;;
  attn) timeout 150 python benchmarks/decode_attention.py --out $OUT/attention.json \
      --models 1b,8b --batch 1,8 --cache 264,4096,32768 > $OUT/attention.txt 2>&1
    tail -40 $OUT/attention.txt ;;
  1b|8b|8b8)
    case $step in 1b) m=llama-3.2-1b; b=1 ;; 8b) m=llama-3.1-8b; b=1 ;;
                  8b8) m=llama-3.1-8b; b=8 ;; esac
    timeout -s INT -k 15 $(left) python -m quantbench run --model random:$m --device cuda \
      --runtime $RT --schemes $(eval echo \${SCHEMES_$step:-$SCHEMES}) --batch-size $b --new-tokens 128 --runs 5 --warmup 1 \
      --no-repeat-baseline --cell-timeout 200 --db /root/qb/run-$step.db --out /root/qb/r \
      --log "" > $OUT/run-$step.txt 2>&1
    tail -30 $OUT/run-$step.txt; cp /root/qb/run-$step.db $OUT/ ;;
  *) echo "unknown step $step: tests, check, gemv, attn, 1b, 8b or 8b8" ;;
  esac
done
echo "== end at ${SECONDS}s" | tee -a $OUT/log.txt
