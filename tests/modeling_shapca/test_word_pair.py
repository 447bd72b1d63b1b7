import functools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from datasets_scripts.relations import build_mnre
from modeling_shapca import ShapCAForWordPairExtraction
from modeling_shapca.grids import decode_mjere, encode_mjere, encode_mre
from modeling_shapca.word_pair import PairFeatures, WordPairContrastiveLayer, grid_predictions, word_pair_loss
from tests.helpers import ROOT, TASK_GROUPS, tiny_config, tiny_model



@pytest.fixture(scope="module")
def mnre():
    return build_mnre(ROOT / "data" / "mnre")


@pytest.fixture(scope="module")
def mjere():
    return build_mnre(ROOT / "data" / "mnre", joint=True)


def test_pair_features_equal_linear_on_concatenation():
    torch.manual_seed(0)
    layer = PairFeatures(6, 5)
    words = torch.randn(2, 4, 6)
    m_i, m_j = words.unsqueeze(2).expand(2, 4, 4, 6), words.unsqueeze(1).expand(2, 4, 4, 6)
    explicit = torch.nn.functional.gelu(layer.linear(torch.cat([m_i, m_j, m_i - m_j], dim=-1)))
    assert torch.allclose(layer(words), explicit, atol=1e-5)


def test_broadcast_gelu_gradients_and_saved_memory():
    from benchmarks.memory import saved_activation_bytes
    from modeling_shapca.word_pair import broadcast_gelu

    rows, cols = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    torch.autograd.gradcheck(broadcast_gelu, (rows.requires_grad_(), cols.requires_grad_()))
    rows, cols = torch.randn(4, 32, 16, requires_grad=True), torch.randn(4, 32, 16, requires_grad=True)
    explicit = saved_activation_bytes(lambda: torch.nn.functional.gelu(rows.unsqueeze(2) + cols.unsqueeze(1)))
    ours = saved_activation_bytes(lambda: broadcast_gelu(rows, cols))
    assert explicit == 4 * 32 * 32 * 16 * 4  # the n x n pre-activation
    assert ours == 2 * 4 * 32 * 16 * 4  # only the two per-word projections


def test_gradient_checkpointing_gives_the_same_gradients_with_less_memory():
    from benchmarks.memory import saved_activation_bytes

    torch.manual_seed(0)
    layer = WordPairContrastiveLayer({"text": 6, "pos": 3, "position": 3}, 16, [3, 2], dropout=0.0)
    channels = {"text": torch.randn(2, 12, 6), "pos": torch.randn(2, 12, 3), "position": torch.randn(2, 12, 3)}
    channels = {k: v.requires_grad_() for k, v in channels.items()}
    full_memory = saved_activation_bytes(lambda: layer(channels), layer)
    layer(channels).sum().backward()
    expected = [v.grad.clone() for v in channels.values()] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad(), [v.grad.zero_() for v in channels.values()]
    layer.gradient_checkpointing = True
    layer._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    checkpointed_memory = saved_activation_bytes(lambda: layer(channels), layer)
    layer(channels).sum().backward()
    got = [v.grad for v in channels.values()] + [p.grad for p in layer.parameters()]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))
    assert checkpointed_memory < full_memory / 10


def test_layer_refinement_is_eq17_per_group():
    torch.manual_seed(0)
    layer = WordPairContrastiveLayer({"text": 6, "pos": 3, "position": 3}, 8, [3, 2], refinement_scale=0.7, dropout=0.0)
    channels = {"text": torch.randn(1, 3, 6), "pos": torch.randn(1, 3, 3), "position": torch.randn(1, 3, 3)}
    out = layer(channels)
    assert out.shape == (1, 3, 3, 5)
    for part in out.split([3, 2], dim=-1):
        assert torch.allclose(part.exp().sum(-1), torch.ones(1, 3, 3), atol=1e-5)
    pairs = {k: m(channels[k]) for k, m in layer.channels.items()}
    p_t = torch.softmax(layer.text_head(pairs["text"])[..., :3], -1)
    p_tsp = torch.softmax(layer.joint_head(torch.cat([pairs["text"], pairs["pos"], pairs["position"]], -1))[..., :3], -1)
    expected = torch.softmax(p_tsp + 0.7 * torch.log(p_tsp / p_t), -1)
    assert torch.allclose(out[..., :3].exp(), expected, atol=1e-5)


def test_loss_counts_labelled_cells_only():
    log_probs = torch.log_softmax(torch.randn(1, 3, 3, 4), -1)
    labels = torch.full((1, 1, 3, 3), -100)
    labels[0, 0, 2, 0] = 3
    loss = word_pair_loss(log_probs, labels, [4])
    assert torch.allclose(loss, -log_probs[0, 2, 0, 3])
    changed = log_probs.clone()
    changed[0, 0, 1] = torch.log_softmax(torch.randn(4), -1)  # an unlabelled cell
    assert torch.allclose(word_pair_loss(changed, labels, [4]), loss)


def test_grid_predictions_mask_padding():
    log_probs = torch.log_softmax(torch.randn(1, 3, 3, 5), -1)
    preds = grid_predictions(log_probs, [2, 3], torch.tensor([[1, 1, 0]]))
    assert preds.shape == (1, 2, 3, 3)
    assert (preds[0, :, 2, :] == -100).all() and (preds[0, :, :, 2] == -100).all()
    assert preds[0, 1, :2, :2].max() < 3


def test_mre_codec_on_every_shipped_sample(mnre):
    stats = {}
    for split, data in mnre.items():
        after = overlap = same_first = 0
        for row in data:
            head, tail = (row["head"]["start"], row["head"]["end"]), (row["tail"]["start"], row["tail"]["end"])
            grid = encode_mre(len(row["words"]), head, tail, row["relation"])
            assert grid[0][head[0]][tail[0]] == row["relation"]  # the one labelled cell
            assert sum(v != -100 for r in grid[0] for v in r) == 1
            after += head[0] > tail[0]
            overlap += head[0] < tail[1] and tail[0] < head[1]
            same_first += head[0] == tail[0]
        stats[split] = (after, overlap, same_first)
    assert stats == {"train": (1397, 59, 30), "validation": (197, 3, 3), "test": (214, 5, 3)}


def _keys(entities, triples):
    return (sorted((e["start"], e["end"], e["type"]) for e in entities),
            sorted((t["head_start"], t["head_end"], t["tail_start"], t["tail_end"], t["relation"]) for t in triples))


@pytest.mark.parametrize("cells", ["all", "entity_pairs"])
def test_mjere_codec_on_every_shipped_sample(mjere, cells):
    for split, data in mjere.items():
        for row in data:
            n = len(row["words"])
            grid = np.array(encode_mjere(n, row["entities"], row["triples"], relation_cells=cells))
            decoded = decode_mjere(np.where(grid < 0, 0, grid), n)  # untrained cells read as None
            assert _keys(*decoded) == _keys(row["entities"], row["triples"]), (split, row["id"])


def test_entity_pair_cells_train_only_what_the_decoder_reads():
    entities = [{"start": 0, "end": 2, "type": 0}, {"start": 4, "end": 5, "type": 1}]
    triples = [{"head_start": 0, "head_end": 2, "tail_start": 4, "tail_end": 5, "relation": 1}]
    _, start, end = encode_mjere(5, entities, triples, relation_cells="entity_pairs")
    labelled = {(i, j) for i in range(5) for j in range(5) if start[i][j] != -100}
    assert labelled == {(0, 0), (0, 4), (4, 0), (4, 4)} and start[0][4] == 2
    assert {(i, j) for i in range(5) for j in range(5) if end[i][j] != -100} == {(1, 1), (1, 4), (4, 1), (4, 4)}
    assert end[1][4] == 2
    with pytest.raises(ValueError, match="relation_cells"):
        encode_mjere(5, entities, triples, relation_cells="some")


@st.composite
def layouts(draw):
    n = draw(st.integers(1, 12))
    spans = draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(1, n)).filter(lambda s: s[0] < s[1]), max_size=6))
    entities = [{"start": s, "end": e, "type": draw(st.integers(0, 3))} for s, e in sorted(spans)]
    triples = []
    if len(entities) > 1:
        for _ in range(draw(st.integers(0, 4))):
            a, b = draw(st.sampled_from([(a, b) for a in entities for b in entities if a is not b]))
            triples.append({"head_start": a["start"], "head_end": a["end"], "tail_start": b["start"],
                            "tail_end": b["end"], "relation": draw(st.integers(0, 2))})
    return n, entities, triples


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_mjere_codec_on_random_layouts(layout):
    n, entities, triples = layout
    pairs = {(t["head_start"], t["head_end"], t["tail_start"], t["tail_end"]) for t in triples}
    assume(len(pairs) == len(triples))  # one relation per entity pair
    # a layout the grid can hold: no two triples share a start cell or an end cell ...
    assume(len({(t["head_start"], t["tail_start"]) for t in triples}) == len(triples))
    assume(len({(t["head_end"], t["tail_end"]) for t in triples}) == len(triples))
    # ... and no other entity pair sits on one triple's start cell and another's end cell
    starts = {(t["head_start"], t["tail_start"]): t["relation"] for t in triples}
    ends = {(t["head_end"], t["tail_end"]): t["relation"] for t in triples}
    for a in entities:
        for b in entities:
            if a is not b and (a["start"], a["end"], b["start"], b["end"]) not in pairs:
                s, e = starts.get((a["start"], b["start"])), ends.get((a["end"], b["end"]))
                assume(s is None or s != e)
    decoded = decode_mjere(np.array(encode_mjere(n, entities, triples)), n)
    assert _keys(*decoded) == _keys(entities, triples)


@settings(max_examples=200, deadline=None)
@given(layouts())
def test_entities_alone_always_round_trip(layout):
    n, entities, _ = layout  # nested, adjacent and length-1 spans: one boundary cell each
    assert _keys(*decode_mjere(np.array(encode_mjere(n, entities, [])), n))[0] == _keys(entities, [])[0]


def wp_batch(processor):
    words = [["Kevin", "Durant", "joins", "the", "Warriors"], ["Obama", "meets", "Merkel"], ["Hi"]]
    grids = [
        encode_mjere(5, [{"start": 0, "end": 2, "type": 0}, {"start": 4, "end": 5, "type": 1}],
                     [{"head_start": 0, "head_end": 2, "tail_start": 4, "tail_end": 5, "relation": 0}]),
        encode_mjere(3, [{"start": 0, "end": 1, "type": 0}, {"start": 2, "end": 3, "type": 0}],
                     [{"head_start": 2, "head_end": 3, "tail_start": 0, "tail_end": 1, "relation": 0}]),
        encode_mjere(1, [], []),
    ]
    return processor(words=words, contexts=["a player", "", "x"], pair_labels=grids,
                     pos_tags=[["PROPN"] * len(w) for w in words])


def test_word_pair_model_trains_and_is_batch_invariant(processor):
    model = tiny_model("mjere")
    batch = wp_batch(processor)
    assert batch["labels"].shape == (3, 3, 5, 5)
    model.train()
    out = model(**batch)
    assert torch.isfinite(out.loss) and out.semantic_loss is not None
    out.loss.backward()
    model.eval()
    with torch.no_grad():
        full = model(**batch)
        for i, n in enumerate([5, 3, 1]):
            single = model(**processor(words=[batch_words(i)], contexts=[["a player", "", "x"][i]],
                                       pos_tags=[["PROPN"] * n]))
            assert torch.allclose(single.logits[0], full.logits[i, :n, :n], atol=1e-5)
            assert torch.equal(single.predictions[0], full.predictions[i, :, :n, :n])


def batch_words(i):
    return [["Kevin", "Durant", "joins", "the", "Warriors"], ["Obama", "meets", "Merkel"], ["Hi"]][i]


def test_word_pair_config_requires_groups():
    with pytest.raises(ValueError, match="needs label_groups"):
        tiny_config(task="mjere", label_groups={"relation": ["None"]})
    # configs saved before the task registry name the task through word_pair_scheme
    legacy = tiny_config(task="word_pair", word_pair_scheme="mre", label_groups=TASK_GROUPS["mre"])
    assert legacy.task == "mre" and legacy.is_word_pair and not hasattr(legacy, "word_pair_scheme")


@pytest.mark.slow
def test_word_pair_remote_code_round_trip(processor, tmp_path):
    model = tiny_model("mre").eval()
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_shapca.ShapCAForWordPairExtraction"
    with torch.no_grad():
        expected = model.predict("Kevin Durant joins the Warriors", pairs=[((0, 2), (4, 5))], processor=processor)
    assert expected[0]["head"] == {"word": "Kevin Durant", "start": 0, "end": 12}
    assert 0.0 <= expected[0]["score"] <= 1.0
    assert expected[0]["label"] in TASK_GROUPS["mre"]["relation"]
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("modeling_shapca", "datasets_scripts"):
                    raise ImportError(name)
                return None

        sys.meta_path.insert(0, Hide())
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / 'm')!r}, trust_remote_code=True)
        print(json.dumps(model.predict("Kevin Durant joins the Warriors", pairs=[((0, 2), (4, 5))])))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_mjere_predict_output_shape(processor):
    model = tiny_model("mjere").eval()
    out = model.predict(["Kevin Durant joins the Warriors", ""], processor=processor)
    assert out[1] == {"entities": [], "relations": []}
    assert set(out[0]) == {"entities", "relations"}
    for entity in out[0]["entities"]:
        assert "Kevin Durant joins the Warriors"[entity["start"]:entity["end"]] == entity["word"]
    with pytest.raises(ValueError, match="not inside the 2 words"):
        tiny_model("mre").eval().predict("Kevin Durant", pairs=[((0, 1), (1, 3))], processor=processor)


def test_pipeline_scores_are_the_model_cell_probabilities(processor):
    """MRE: a relation's score is the softmax probability of its label in the pair's cell;
    MJERE: an entity's is its type's probability on its boundary cell."""
    words = ["Kevin", "Durant", "joins", "the", "Warriors"]
    mre = tiny_model("mre").eval()
    out = mre.predict(words, pairs=[[[0, 2], [4, 5]]], processor=processor)[0]
    with torch.no_grad():
        probs = mre(**processor(words=[words])).logits[0].exp()  # (n, n, labels)
    label = TASK_GROUPS["mre"]["relation"].index(out["label"])
    assert out["score"] == pytest.approx(float(probs[0, 4, label]), abs=1e-6)
    assert out["score"] == pytest.approx(float(probs[0, 4].max()), abs=1e-6)  # the argmax label
    mjere = tiny_model("mjere").eval()
    with torch.no_grad():
        mjere.pair_layer.joint_head.bias[1] += 30.0  # every boundary cell says entity type 1
    result = mjere.predict(words, processor=processor)
    with torch.no_grad():
        probs = mjere(**processor(words=[words])).logits[0].exp()
    starts = {(e["start"], e["end"]): e for e in result["entities"]}
    assert starts and all(e["entity_group"] == TASK_GROUPS["mjere"]["entity"][1] for e in starts.values())
    offsets = [0, 6, 13, 19, 23]
    for entity in result["entities"]:
        first = offsets.index(entity["start"])
        last = max(i for i, o in enumerate(offsets) if o < entity["end"])
        assert entity["score"] == pytest.approx(float(probs[first, last, 1]), abs=1e-6)
