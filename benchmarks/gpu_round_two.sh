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
source "$(dirname "$0")/gpu_common.sh"  # out, python, data, log, the environment, bench()
"$python" -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" >>"$log" 2>&1
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
