#!/usr/bin/env bash
# The captured alignment under CUDA graphs (`--capture_alignment reduce-overhead`) at paper
# shapes and MiniLM's, after the fix that marks each step's start (issue #27, second call).
#
#     bash benchmarks/gpu_cuda_graphs.sh OUT_DIR [PYTHON]
set -u -o pipefail
out=$(realpath -m "${1:?usage: gpu_cuda_graphs.sh OUT_DIR [PYTHON]}")
python=${2:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="$out/log.txt"
for spec in "paper128-captured-cudagraphs 110 paper-128" "minilm-captured-cudagraphs 80 minilm"; do
  set -- $spec
  begin=$SECONDS
  timeout "$2" "$python" -m benchmarks.bench_model --device cuda --bf16 --train_only --repeats 5 --setting "$3" \
    --capture_alignment reduce-overhead >"$out/$1.out" 2>"$out/$1.err"
  echo "$(date -u +%T) $1 rc=$? $((SECONDS - begin)) s" >>"$log"
  tail -n 1 "$out/$1.out" | grep '^{' | sed "s/^{/{\"name\": \"$1\", /" >>"$out/bench.jsonl"
done
