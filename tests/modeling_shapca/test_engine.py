"""The inference engine tags the next batch of a list while the model runs on this one
(issue 35): a thread, one batch ahead, the same tags and records as one batch at a time."""

import threading

import pytest

from modeling_shapca.engine import InferenceEngine
from modeling_shapca.pipeline_shapca import ShapCAPipeline
from modeling_shapca.torch_runner import TorchRunner

from tests.helpers import tiny_model, tiny_processor

SENTENCES = [f"Kevin Durant number {i} met Stephen Curry in Paris" for i in range(7)]


class Recorder:
    """The runner's `tag_pos` and `run`, logged with their threads. The model's run on batch k
    waits (up to 20 s) until the tagging of batch k+1 has started: it starts only when batches
    are tagged ahead, in another thread; tagged in turn, it would not start until the run ends."""

    def __init__(self, runner, monkeypatch, batches: int):
        self.tags, self.runs, self.overlapped = [], [], []
        self.tagging = [threading.Event() for _ in range(batches)]
        tag, run = runner.tag_pos, runner.run

        def tag_pos(words):
            self.tagging[len(self.tags)].set()
            self.tags.append((threading.current_thread().name, len(words)))
            return tag(words)

        def run_rows(rows, **options):
            assert all(row["pos_tags"] is not None for row in rows)  # tagged ahead, none left to tag
            k = len(self.runs)
            self.runs.append((threading.current_thread().name, len(rows)))
            if k + 1 < batches:
                self.overlapped.append(self.tagging[k + 1].wait(20))
            return run(rows, **options)

        monkeypatch.setattr(runner, "tag_pos", tag_pos)
        monkeypatch.setattr(runner, "run", run_rows)

    def check(self):
        assert self.tags == [("shapca-pos_0", 3), ("shapca-pos_0", 3), ("shapca-pos_0", 1)]
        assert self.runs == [(threading.current_thread().name, n) for n in (3, 3, 1)]
        assert self.overlapped == [True, True]


@pytest.fixture(scope="module")
def ner():
    return tiny_model("ner").eval(), tiny_processor()


def test_the_engine_tags_one_batch_ahead_in_a_thread(ner, monkeypatch):
    model, processor = ner
    engine = InferenceEngine(TorchRunner(model, processor))
    expected = [engine.predict_batch([s])[0] for s in SENTENCES]  # one at a time, tagged in run
    recorder = Recorder(engine.runner, monkeypatch, 3)
    assert engine(SENTENCES, batch_size=3) == expected
    recorder.check()


VARIED = ["Go #Bears !", "Kevin Durant met Stephen Curry and Klay Thompson in Oakland tonight", "Paris",
          {"text": "RT @cnni : Paris floods", "context": "a flooded street with cars and people"},
          ["Warriors", "win"], "Oracle Arena"]


def test_length_order_counts_text_words_and_context_words():
    from modeling_shapca.engine import length_order, named_inputs

    _, items = named_inputs(VARIED + [{"bad": 1}])
    lengths = [3, 11, 1, 5 + 7, 2, 2, 0]
    assert length_order(items) == sorted(range(7), key=lambda i: lengths[i]) == [6, 2, 4, 5, 0, 1, 3]


@pytest.mark.parametrize("call", ["engine", "pipeline"])
def test_a_list_is_batched_by_length_and_comes_back_in_input_order(ner, monkeypatch, call):
    model, processor = ner
    if call == "engine":
        predictor = InferenceEngine(TorchRunner(model, processor))
        runner = predictor.runner
    else:
        predictor = ShapCAPipeline(model=model, processor=processor, task="multimodal-ner")
        runner = predictor.runner
    one_by_one = [predictor([item], batch_size=1)[0] for item in VARIED]
    seen = []
    run = runner.run

    def run_rows(rows, **options):
        seen.append([len(r["words"]) for r in rows])
        return run(rows, **options)

    monkeypatch.setattr(runner, "run", run_rows)
    assert predictor(VARIED, batch_size=2) == one_by_one
    assert seen == [[1, 2], [2, 3], [11, 5]]  # words per row: the context's words count in the order
    seen.clear()
    assert predictor(VARIED, batch_size=2, sort_by_length=False) == one_by_one
    assert seen == [[3, 11], [1, 5], [2, 2]]
