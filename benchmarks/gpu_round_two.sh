#!/usr/bin/env bash
# GPU round two (issue #27) in one call: the captured alignment against eager at paper shapes
# (train ratio, alignment ms, compile time, inductor's kernel count), MiniLM's train ratio, and
# train.py end to end with and without the captured alignment against the plain backbone Trainer.
#
#     bash benchmarks/gpu_round_two.sh OUT_DIR [PYTHON]      # DATA (default .e2e/data): train_end_to_end prepare's folder
#
# Writes OUT_DIR/log.txt, OUT_DIR/bench.jsonl (one bench_model result per line), OUT_DIR/e2e.log,
# OUT_DIR/end_to_end.jsonl. Every step has its own time limit; a step that fails is logged and
# the next one runs.
set -u -o pipefail
out=$(realpath -m "${1:?usage: gpu_round_two.sh OUT_DIR [PYTHON]}")
python=${2:-python3}
data=${DATA:-.e2e/data}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
log="$out/log.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv >>"$log" 2>&1
"$python" -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" >>"$log" 2>&1
bench() {  # name, limit, bench_model arguments
  local name=$1 limit=$2; shift 2
  local begin=$SECONDS
  timeout "$limit" "$python" -m benchmarks.bench_model --device cuda --bf16 --train_only --repeats 5 "$@" \
    >"$out/$name.out" 2>"$out/$name.err"
  echo "$(date -u +%T) $name rc=$? $((SECONDS - begin)) s" >>"$log"
  tail -n 1 "$out/$name.out" | grep '^{' | sed "s/^{/{\"name\": \"$name\", /" >>"$out/bench.jsonl"
}
bench paper128-eager 90 --setting paper-128
bench paper128-captured 120 --setting paper-128 --capture_alignment default
bench paper128-captured-cudagraphs 110 --setting paper-128 --capture_alignment reduce-overhead
bench minilm-captured 70 --setting minilm --capture_alignment default
begin=$SECONDS
work=$(mktemp -d)
timeout "${E2E_LIMIT:-170}" "$python" -m benchmarks.train_end_to_end run "$data" "$work" \
  --steps "${E2E_STEPS:-150}" --workers 8 --runs backbone shapca shapca-captured-default >"$out/e2e.log" 2>&1
echo "$(date -u +%T) end-to-end rc=$? $((SECONDS - begin)) s" >>"$log"
cp "$work/end_to_end.jsonl" "$out/" 2>>"$log"
rm -rf "$work"
echo "$(date -u +%T) done" >>"$log"
