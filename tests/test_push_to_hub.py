import json
import os
import re
import subprocess
import sys
import textwrap

import push_to_hub


def test_training_writes_card_with_real_numbers_and_plot(trained_model_dir):
    card = (trained_model_dir / "README.md").read_text()
    results = json.loads((trained_model_dir / "results.json").read_text())
    assert (trained_model_dir / "training_curves.png").stat().st_size > 1000
    assert "![Training curves](training_curves.png)" in card
    assert f"value: {results['test']['test_f1']:.4f}" in card  # model-index metadata
    row = re.search(r"\| test \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", card)
    assert float(row.group(3)) == round(results["test"]["test_f1"] * 100, 2)
    assert "trained without images" in card and "{{" not in card
    assert "larger than 7 x 7 are average-pooled" in card  # the config's image_region_grid


def test_dry_run_reloads_offline_with_remote_code(trained_model_dir, tmp_path):
    out = tmp_path / "staged"
    files = push_to_hub.main([str(trained_model_dir), "--repo-id", "someone/shapca-test", "--dry-run", str(out)])
    for name in ("model.safetensors", "config.json", "modeling_shapca.py", "processing_shapca.py", "inference.py",
                 "processor_config.json", "README.md", "training_curves.png", "results.json"):
        assert name in files
    assert 'AutoModel.from_pretrained("someone/shapca-test"' in (out / "README.md").read_text()
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys

        class HideRepository(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("modeling_shapca", "datasets_scripts", "model_card", "train"):
                    raise ImportError(name + " is hidden")
                return None

        sys.meta_path.insert(0, HideRepository())
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)
        print(json.dumps(model.predict(["Kevin Durant scores", ""])))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(predictions) == 2 and predictions[1] == []
