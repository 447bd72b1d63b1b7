# Sourced by the one-call device scripts (gpu_end_to_end.sh, gpu_round_two.sh, gpu_cuda_graphs.sh):
# OUT_DIR (their $1) resolved and created, $python ($2, default python3), $data (DATA, default
# .e2e/data, train_end_to_end prepare's folder), the environment, the GPU in $log, and
#
#     bench NAME LIMIT_S bench_model-args...
#
# which runs one bf16 train-only `bench_model` on the GPU within LIMIT_S, logs its exit status
# and time, and appends its JSON result, tagged "name", to $out/bench.jsonl.
set -u -o pipefail
: "${1:?usage: $(basename "$0") OUT_DIR [PYTHON]}"
out=$(realpath -m "$1")
python=${2:-python3}
data=${DATA:-.e2e/data}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
log="$out/log.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv >>"$log" 2>&1

bench() {
  local name=$1 limit=$2; shift 2
  local begin=$SECONDS
  timeout "$limit" "$python" -m benchmarks.bench_model --device cuda --bf16 --train_only --repeats 5 "$@" \
    >"$out/$name.out" 2>"$out/$name.err"
  echo "$(date -u +%T) $name rc=$? $((SECONDS - begin)) s" >>"$log"
  tail -n 1 "$out/$name.out" | grep '^{' | sed "s/^{/{\"name\": \"$name\", /" >>"$out/bench.jsonl"
}
