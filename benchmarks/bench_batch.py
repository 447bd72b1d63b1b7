"""Rows per second of `shapca-predict` over a corpus with 1 and 2 processes (issue 37).

    python -m benchmarks.bench_batch [--rows 1000] [--hash-rows 100000]

A MiniLM Shap-CA model (the shipped weights, fresh heads: speed does not depend on training)
predicts, in chunks of 100 rows, the first `--rows` sentences of the shipped Twitter-2015 test split, read from a
Parquet file and written to Parquet: once by one process with 2 threads, once by one process
with 1 thread, and once under `torchrun --nproc_per_node 2` with 1 thread each (this machine
has 2 cores). Each run in fresh processes; wall time includes starting the processes and
loading the model (what a user waits for). Then the content keys' cost (issue 47): on a
JSON-lines input of `--hash-rows` rows (the test split repeated), the sha256 of its bytes and of
the model folder's files, against the time predicting that many rows takes at the rate of the
1-process run. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--hash-rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    import datasets

    sys.path.insert(0, str(ROOT))
    from datasets_scripts.readers import read_conll_ner
    from tests.helpers import save_minilm_shapca

    sentences, _ = read_conll_ner(ROOT / "data" / "twitter2015" / "test.txt")
    rows = [{"id": f"test-{i}", "words": s.words} for i, s in enumerate(sentences[: args.rows])]
    results = {"rows": len(rows), "words": sum(len(r["words"]) for r in rows)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_minilm_shapca(work / "model")
        datasets.Dataset.from_list(rows).to_parquet(str(work / "in.parquet"))
        common = [str(work / "model"), "--input", str(work / "in.parquet"), "--batch-size", "32", "--chunk-size", "100", "--no-progress"]
        runs = {"1 process, 2 threads": ([sys.executable, "-m", "shapca_serving.predict"], "2"),
                "1 process, 1 thread": ([sys.executable, "-m", "shapca_serving.predict"], "1"),
                "2 processes (torchrun), 1 thread each": (
                    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                     "shapca_serving.predict"], "1")}
        outputs = {}
        for name, (launcher, threads) in runs.items():
            out = work / f"{len(outputs)}.parquet"
            env = {**os.environ, "OMP_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}
            began = time.perf_counter()
            done = subprocess.run([*launcher, *common, "--output", str(out)], cwd=ROOT, env=env, capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - began
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            line = next(l for l in done.stdout.splitlines() if "rows per process" in l)
            results[name] = {"wall_seconds": round(seconds, 1), "rows_per_second": round(len(rows) / seconds, 1),
                             "summary": line}
            outputs[name] = datasets.Dataset.from_parquet(str(out))["entities"]
        from shapca_serving.loading import model_fingerprint
        from shapca_serving.runner import file_digest

        big = work / "big.jsonl"
        lines = [json.dumps({"id": f"row-{i}", "words": sentences[i % len(sentences)].words}) + "\n"
                 for i in range(args.hash_rows)]
        big.write_text("".join(lines), encoding="utf-8")
        began = time.perf_counter()
        file_digest(big)
        input_seconds = time.perf_counter() - began
        began = time.perf_counter()
        model_fingerprint(str(work / "model"))
        model_seconds = time.perf_counter() - began
        rate = results["1 process, 2 threads"]["rows_per_second"]
        predict_seconds = args.hash_rows / rate
        results["content_keys"] = {
            "rows": args.hash_rows, "input_mb": round(big.stat().st_size / 2 ** 20, 1),
            "input_sha256_seconds": round(input_seconds, 3), "model_sha256_seconds": round(model_seconds, 3),
            "predict_seconds_at_1_process_rate": round(predict_seconds, 1),
            "share_of_predicting": round((input_seconds + model_seconds) / predict_seconds, 5)}
        first = next(iter(outputs.values()))
        results["same_records"] = all(
            [[(e["entity_group"], e["start"], e["end"]) for e in r] for r in o] ==
            [[(e["entity_group"], e["start"], e["end"]) for e in r] for r in first] for o in outputs.values())
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
