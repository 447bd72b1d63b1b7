#!/usr/bin/env bash
# The GPU checks of `train.py` end to end (issue #27) in one call, each step with its own time
# limit: the CUDA sync test of every head, each in a fresh process (so each head is measured
# first in its process), then `train_end_to_end.py` (Shap-CA through train.py against the plain
# backbone Trainer on the same data).
#
#     bash benchmarks/gpu_end_to_end.sh OUT_DIR [PYTHON]      # DATA (default .e2e/data): train_end_to_end prepare's folder
#
# Writes OUT_DIR/log.txt, OUT_DIR/pytest-sync-<head>.txt, OUT_DIR/e2e.log, OUT_DIR/end_to_end.jsonl.
source "$(dirname "$0")/gpu_common.sh"  # out, python, data, log, the environment
"$python" -c "import torch, transformers, datasets, pyarrow; print('torch', torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__)" >>"$log" 2>&1
for head in ner mre mjere; do
  begin=$SECONDS
  timeout 120 "$python" -m pytest --noconftest -q -p no:cacheprovider \
    "tests/benchmarks/test_benchmarks.py::test_no_cuda_sync_added_in_a_train_step_or_inference[$head]" \
    >"$out/pytest-sync-$head.txt" 2>&1
  echo "$(date -u +%T) sync-$head rc=$? $((SECONDS - begin)) s" >>"$log"
done
begin=$SECONDS
work=$(mktemp -d)
timeout "${E2E_LIMIT:-420}" "$python" -m benchmarks.train_end_to_end run "$data" "$work" ${E2E_ARGS:---steps 300 --workers 8} \
  >"$out/e2e.log" 2>&1
echo "$(date -u +%T) end-to-end rc=$? $((SECONDS - begin)) s" >>"$log"
cp "$work/end_to_end.jsonl" "$out/" 2>>"$log"
rm -rf "$work"
echo "$(date -u +%T) done" >>"$log"
