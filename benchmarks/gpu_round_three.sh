#!/usr/bin/env bash
# GPU round three (issue #46) in one call of at most 8 minutes, the most important figures first:
# the round-two measurements after this round's changes (the NER head captured too) and before
# them (the tree at BEFORE_REV, default bbbadb8, checked out with `git worktree` when .git is
# there), then the multimodal
# serving cost job (benchmarks/image_cost.py --device cuda: text-only, image encoders, context
# generators at real sizes with random weights built on the device), then train.py end to end.
#
#     bash benchmarks/gpu_round_three.sh OUT_DIR [PYTHON]     # DATA (default .e2e/data) for the end-to-end step
#
# Every step has its own limit and all of them share a deadline (DEADLINE_S, default 470 s from
# the start): a step gets the smaller of the two, a step with under 20 s left is skipped (logged).
# Writes OUT_DIR/log.txt, OUT_DIR/bench.jsonl (bench_model results tagged "name"; "-before" for
# the old tree), OUT_DIR/image_cost.json and OUT_DIR/end_to_end.jsonl. The CUDA-graphs variant of
# round two is not run (issue #46 drops it).
source "$(dirname "$0")/gpu_common.sh"  # out, python, data, log, the environment, bench()
start=$SECONDS
deadline=${DEADLINE_S:-470}
before_rev=${BEFORE_REV:-bbbadb8}

left() { echo $((deadline - (SECONDS - start))); }
limit() {  # the smaller of a step's own limit and what the deadline leaves; empty when under 20 s
  local rest; rest=$(left)
  if [ "$rest" -lt 20 ]; then echo ""; elif [ "$1" -lt "$rest" ]; then echo "$1"; else echo "$rest"; fi
}
step() {  # step NAME LIMIT bench_model-args...
  local name=$1 own=$2 cap; shift 2
  cap=$(limit "$own")
  if [ -z "$cap" ]; then echo "$(date -u +%T) $name skipped: deadline" >>"$log"; return; fi
  bench "$name" "$cap" "$@"
}

"$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" >>"$log" 2>&1

# after: this tree, the alignment and the NER head captured (each bench_model run also times the
# alignment alone: alignment_ms)
step paper128-captured-head 120 --setting paper-128 --capture_alignment default --capture_head default
step paper128-eager 60 --setting paper-128
step minilm-captured-head 80 --setting minilm --capture_alignment default --capture_head default

# before: the round-two tree, when git can check it out
before=""
if git rev-parse --verify -q "$before_rev^{commit}" >/dev/null 2>&1; then
  before=$(mktemp -d)/before
  git worktree add -q --detach "$before" "$before_rev" >>"$log" 2>&1 || before=""
fi
if [ -n "$before" ]; then
  cap=$(limit 110)
  if [ -n "$cap" ]; then
    begin=$SECONDS
    (cd "$before" && timeout "$cap" "$python" -m benchmarks.bench_model --device cuda --bf16 --train_only --repeats 5 \
      --setting paper-128 --capture_alignment default >"$out/paper128-captured-before.out" 2>"$out/paper128-captured-before.err")
    echo "$(date -u +%T) paper128-captured-before rc=$? $((SECONDS - begin)) s" >>"$log"
    tail -n 1 "$out/paper128-captured-before.out" | grep '^{' \
      | sed 's/^{/{"name": "paper128-captured-before", /' >>"$out/bench.jsonl"
  else
    echo "$(date -u +%T) paper128-captured-before skipped: deadline" >>"$log"
  fi
  git worktree remove --force "$before" >>"$log" 2>&1
else
  echo "$(date -u +%T) before: no git checkout of $before_rev here; the before figures are round two's (docs)" >>"$log"
fi

# the multimodal serving cost on the GPU
cap=$(limit 150)
if [ -n "$cap" ]; then
  begin=$SECONDS
  timeout "$cap" "$python" -m benchmarks.image_cost --device cuda --output "$out/image_cost.json" \
    >"$out/image_cost.out" 2>"$out/image_cost.err"
  echo "$(date -u +%T) image-cost rc=$? $((SECONDS - begin)) s" >>"$log"
else
  echo "$(date -u +%T) image-cost skipped: deadline" >>"$log"
fi

# train.py end to end against the plain backbone Trainer, with what is left
cap=$(limit 170)
if [ -n "$cap" ] && [ -d "$data" ]; then
  begin=$SECONDS
  work=$(mktemp -d)
  timeout "$cap" "$python" -m benchmarks.train_end_to_end run "$data" "$work" \
    --steps "${E2E_STEPS:-100}" --workers 8 --runs backbone shapca-captured-default >"$out/e2e.log" 2>&1
  echo "$(date -u +%T) end-to-end rc=$? $((SECONDS - begin)) s" >>"$log"
  cp "$work/end_to_end.jsonl" "$out/" 2>>"$log"
  rm -rf "$work"
else
  echo "$(date -u +%T) end-to-end skipped: $( [ -d "$data" ] && echo deadline || echo "no $data")" >>"$log"
fi
echo "$(date -u +%T) done in $((SECONDS - start)) s" >>"$log"
