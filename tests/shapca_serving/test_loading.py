"""The one loader (issue 42): one rule for "local folder or Hub id", every serving option checked
once before anything loads, both backends wrapped the same way behind the `Runner` contract."""


import pytest

from modeling_shapca.engine import RUNNER_MEMBERS, InferenceEngine, Runner
from modeling_shapca.torch_runner import TorchRunner
from shapca_serving.hub import model_location
from shapca_serving.loading import check_serving_options, load_engine
from shapca_serving.onnx_export import export_onnx
from shapca_serving.onnx_predictor import OnnxRunner, ShapCAOnnxPredictor
from tests.helpers import tiny_model, tiny_processor


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    model, processor = tiny_model("ner").eval(), tiny_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    export_onnx(model, folder, processor=processor)
    return folder


def test_local_folder_or_hub_id_one_rule(tmp_path):
    assert model_location(tmp_path) == tmp_path
    assert model_location("user/shapca-ner") == "user/shapca-ner"
    (tmp_path / "file.json").write_text("{}")
    for name, message in ((str(tmp_path / "missing"), "no such model folder$"), ("./run", "no such model folder$"),
                          ("~/run", "no such model folder$"), ("a/b/c", "no such model folder$"),
                          (str(tmp_path / "file.json"), r"no such model folder \(it is a file\)$")):
        with pytest.raises(OSError, match=f"^{name}: {message}"):
            model_location(name)
    with pytest.raises(OSError, match="no such dataset folder"):
        model_location("./no-such-data", "dataset folder")


@pytest.mark.parametrize("options, error, message", [
    ({"backend": "jax"}, ValueError, r"^backend must be one of \('torch', 'onnx'\), got 'jax'$"),
    ({"backend": "onnx", "trust_remote_code": True}, ValueError, "options of backend 'torch'"),
    ({"backend": "onnx", "device": "cpu"}, ValueError, "options of backend 'torch'"),
    ({"quantized": True}, ValueError, r"^quantized needs backend 'onnx'$"),
    ({"quantized": "yes", "backend": "onnx"}, TypeError, r"^quantized must be True or False, got 'yes'$"),
    ({"device": "banana"}, ValueError, r"^device 'banana' is not a device torch knows"),
    ({"device": "cuda:7"}, ValueError, r"^device 'cuda:7': this machine has \d+ CUDA device"),
    ({"backend": "onnx", "quantized": True}, OSError, r"has no onnx/model_int8.onnx: export the model with "
                                                      r"`shapca-export` --quantize int8 first"),
])
def test_options_are_checked_before_anything_loads(folder, options, error, message):
    with pytest.raises(error, match=message):
        load_engine(str(folder), **options)


def test_both_backends_are_the_engine_with_a_runner(folder):
    torch_engine = load_engine(str(folder))
    onnx_engine = load_engine(str(folder), backend="onnx")
    assert type(torch_engine) is InferenceEngine and isinstance(torch_engine.runner, TorchRunner)
    assert isinstance(onnx_engine, ShapCAOnnxPredictor) and isinstance(onnx_engine.runner, OnnxRunner)
    for engine in (torch_engine, onnx_engine):
        assert isinstance(engine.runner, Runner) and all(hasattr(engine.runner, m) for m in RUNNER_MEMBERS)
    assert not hasattr(onnx_engine, "session")  # no forwarding of the runner's attributes
    text = "Kevin Durant enters Oracle Arena tonight with Stephen Curry"
    ours, theirs = torch_engine(text), onnx_engine(text)
    assert [(r["entity_group"], r["start"], r["end"]) for r in ours] == \
        [(r["entity_group"], r["start"], r["end"]) for r in theirs]
    assert load_engine(str(folder), allow_private=False).runner.allow_private is False
    check_serving_options(str(folder), backend="onnx")  # a folder with onnx/model.onnx passes


def test_the_engine_states_its_contract_and_checks_once():
    class Partial:
        task = "ner"

    with pytest.raises(TypeError, match=r"Partial is not an inference runner: it lacks \['add_contexts', "):
        InferenceEngine(Partial())
    runner = TorchRunner(tiny_model("ner").eval(), tiny_processor())
    calls = []
    runner.check = lambda: calls.append(1)
    engine = InferenceEngine(runner)
    engine("Kevin Durant")
    engine(["Kevin Durant", "Paris"])
    assert calls == [1]  # once, when the engine is built


def test_a_model_whose_labels_do_not_fit_is_refused_when_the_engine_is_built():
    model = tiny_model("ner").eval()
    model.config.id2label = {0: "O"}
    with pytest.raises(ValueError, match=r"config.id2label has no label for tag ids \[1, 2, 3, 4, 5, 6, 7, 8\]"):
        InferenceEngine(TorchRunner(model, tiny_processor()))
