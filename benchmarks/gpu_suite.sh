#!/usr/bin/env bash
# Every GPU measurement of docs/benchmarks.md ("Cost of Shap-CA over its backbones") in one go,
# for a GPU session that has little time: each step has its own time limit, so one that hangs
# (a torch.compile, say) does not take the others with it.
#
#     bash benchmarks/gpu_suite.sh OUT_DIR [PYTHON] [BEFORE_DIR]
#
# BEFORE_DIR: a folder holding an older modeling_shapca/ beside a copy of this benchmarks/
# (e.g. `git archive COMMIT modeling_shapca | tar -x -C DIR; cp -r benchmarks DIR`): the main
# settings are measured there too, as "before-*" runs, with the same benchmark code.
#
# Writes OUT_DIR/results.jsonl (one bench_model JSON line per setting, tagged with "run"),
# OUT_DIR/profile.txt (torch.profiler tables, paper-128 NER), OUT_DIR/pytest.txt (the CUDA sync
# tests) and OUT_DIR/log.txt. Needs torch with CUDA and transformers (see docs/benchmarks.md).
set -u -o pipefail
out=$(realpath -m "${1:?usage: gpu_suite.sh OUT_DIR [PYTHON] [BEFORE_DIR]}")
python=${2:-python3}
before=${3:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="$out/log.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,memory.total --format=csv >>"$log" 2>&1
"$python" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)" >>"$log" 2>&1

bench() {  # bench LIMIT_S RUN_NAME bench_model-args...  (in $here)
  local limit=$1 name=$2; shift 2
  local begin=$SECONDS line
  line=$(cd "${here:-.}" && timeout "$limit" "$python" -m benchmarks.bench_model --device cuda "$@" 2>>"$log" | tail -n 1)
  local rc=$?
  echo "$(date -u +%T) $name rc=$rc $((SECONDS - begin)) s" >>"$log"
  if [ -n "$line" ]; then
    echo "{\"run\": \"$name\", \"wall_s\": $((SECONDS - begin)), ${line#\{}" >>"$out/results.jsonl"
  else
    local why="exit status $rc (see log.txt)"
    [ "$rc" = 124 ] && why="no result within ${limit} s"
    echo "{\"run\": \"$name\", \"wall_s\": $((SECONDS - begin)), \"failed\": \"$why\"}" >>"$out/results.jsonl"
  fi
}

begin=$SECONDS
timeout 60 "$python" -m pytest --noconftest -q -p no:cacheprovider tests/benchmarks/test_benchmarks.py -k cuda \
  >"$out/pytest.txt" 2>&1
echo "$(date -u +%T) pytest-cuda-syncs rc=$? $((SECONDS - begin)) s" >>"$log"

timing=(--repeats 7 --iterations 5)
common=(--bf16 "${timing[@]}")
bench 75 paper-128-ner --setting paper-128 "${common[@]}" --profile "$out/profile.txt"
bench 45 paper-128-ner-again --setting paper-128 "${common[@]}"   # back-to-back agreement
bench 45 minilm-ner --setting minilm "${common[@]}"
bench 45 minilm-ner-again --setting minilm "${common[@]}"
if [ -n "$before" ]; then
  here=$before bench 45 before-paper-128-ner --setting paper-128 "${common[@]}"
  here=$before bench 45 before-minilm-ner --setting minilm "${common[@]}"
fi
bench 45 paper-128-mre --setting paper-128 --head mre "${common[@]}"
bench 45 paper-128-mjere-64 --setting paper-128 --head mjere --words 64 "${common[@]}"
bench 45 paper-256-ner --setting paper-256 "${common[@]}"
bench 45 paper-128-ner-b256-infer --setting paper-128 --batch 256 --inference_only "${common[@]}"
bench 45 minilm-ner-b256-infer --setting minilm --batch 256 --inference_only "${common[@]}"
bench 45 paper-128-ner-fp32 --setting paper-128 "${timing[@]}"
if [ -n "$before" ]; then
  here=$before bench 45 before-paper-128-ner-b256-infer --setting paper-128 --batch 256 --inference_only "${common[@]}"
fi

# the captured inference path (CUDA graphs), then compile time at paper shapes
bench 120 minilm-ner-captured-infer --setting minilm --inference_only --compile --compile_mode reduce-overhead "${common[@]}"
bench 120 paper-128-ner-compiled --setting paper-128 --compile "${common[@]}"
echo "$(date -u +%T) done" >>"$log"
