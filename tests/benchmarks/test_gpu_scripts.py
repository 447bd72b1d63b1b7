"""The one-call GPU script of round three (benchmarks/gpu_round_three.sh) on a stand-in Python:
its steps in order, the before tree checked out and removed, the shared deadline."""

import json
import os
import subprocess

from tests.helpers import ROOT

STUB = """#!/bin/bash
sleep 0.2
if [ "$1" = "-m" ]; then echo "{\\"module\\": \\"$2\\"}"; fi
"""


def _run(tmp_path, deadline: int) -> tuple[list[str], list[dict]]:
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    out = tmp_path / f"out-{deadline}"
    env = {**os.environ, "DEADLINE_S": str(deadline), "DATA": str(tmp_path / "no-data")}
    subprocess.run(["bash", "benchmarks/gpu_round_three.sh", str(out), str(stub)], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    log = [line.split(" ", 1)[1] for line in (out / "log.txt").read_text().splitlines() if line[:2].isdigit()]
    bench = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()] \
        if (out / "bench.jsonl").exists() else []
    return log, bench


def _worktrees() -> list[str]:
    return subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout.splitlines()


def test_round_three_runs_its_steps_most_important_first_within_one_deadline(tmp_path):
    worktrees = _worktrees()
    log, bench = _run(tmp_path, 200)
    names = [line.split(" ")[0] for line in log]
    assert names == ["paper128-captured-head", "paper128-eager", "minilm-captured-head",
                     "paper128-captured-before", "image-cost", "end-to-end", "done"]
    assert all(" rc=0 " in line for line in log[:5]) and "skipped: no " in log[5]
    assert [b["name"] for b in bench] == names[:4] and all(b["module"] == "benchmarks.bench_model" for b in bench)
    assert _worktrees() == worktrees  # the before tree is removed again


def test_steps_past_the_deadline_are_skipped_and_logged(tmp_path):
    log, bench = _run(tmp_path, 10)
    assert bench == []
    assert [line for line in log if not line.startswith("done")] == [
        "paper128-captured-head skipped: deadline", "paper128-eager skipped: deadline", "minilm-captured-head skipped: deadline", "paper128-captured-before skipped: deadline",
        "image-cost skipped: deadline", "end-to-end skipped: no " +
        str(tmp_path / "no-data")]
