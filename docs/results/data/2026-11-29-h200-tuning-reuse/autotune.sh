#!/bin/bash
# usage: bash .seedrun/autotune.sh SECONDS  — same compiled cell 3x per GPU; GPU0 torch's default
# (static CUDA launcher), GPU1 with TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER=0. Own inductor caches.
secs=$1; t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .carry-a/torchao*.whl 2>&1 | grep -v WARN
export PYTHONPATH=/tmp/site:$PWD/src
A=$OUT/autotune; mkdir -p $A
lane() {  # gpu variant static
  local gpu=$1 v=$2 static=$3
  export TORCHINDUCTOR_CACHE_DIR=/tmp/ind-$v QUANTBENCH_CACHE=/tmp/qbc-$v
  [ -n "$static" ] && export TORCHINDUCTOR_USE_STATIC_CUDA_LAUNCHER=$static
  for model in llama-3.2-1b llama-3.2-1b; do
    left=$(( secs - ($(date +%s) - t0) )); [ $left -lt 60 ] && break
    timeout -s INT $left python3 -m quantbench run --model random:$model --device cuda:$gpu --runtime compiled \
      --schemes bf16 --new-tokens 128 --runs 5 --warmup 1 --no-repeat-baseline --force \
      --db $A/$v.db --out $A/res-$v > $A/$v-$model-$(date +%s).txt 2>&1
    echo "$v $model rc=$? best_configs=$(find /tmp/ind-$v -name '*.best_config' | wc -l) coordesc=$(grep -l found_by_coordesc\"\:\ true $(find /tmp/ind-$v -name '*.best_config') 2>/dev/null | wc -l)" >> $A/lanes.txt
  done
  find /tmp/ind-$v -name '*.best_config' | head -3 | xargs -r cat > $A/$v-sample-best-configs.txt
}
lane 1 static ""
lane 1 nostatic 0
cat $A/lanes.txt
for v in static nostatic; do
python3 - $A/$v.db <<'PY'
import sqlite3, json, sys
c = sqlite3.connect(sys.argv[1])
for row_id, model, info in c.execute("select cell_row, model, info from cells order by cell_row"):
    i = json.loads(info or "{}"); comp = i.get("compiled", {}).get("compile", {})
    print(sys.argv[1].rsplit('/',1)[1], row_id, model, comp.get("fx_graph_cache"), round(comp.get("seconds", 0), 1),
          round(comp.get("phases_s", {}).get("CachingAutotuner.coordinate_descent_tuning", 0), 1),
          i.get("compiled", {}).get("profile", {}).get("kernel_us_per_token"),
          sorted(v for (v,) in c.execute("select value from samples where cell_row=? and metric='decode_tok_s'", (row_id,)))[2:3])
PY
done
