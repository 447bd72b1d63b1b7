import pytest
import torch

from modeling_shapca import ShapCAProcessor
from modeling_shapca.configuration_shapca import POS_TAGS


def test_word_index_points_at_first_subwords(processor, tokenizer):
    words = ["Unbelievable", "Durant", "!"]
    batch = processor(words=[words], contexts=["some context"], pos_tags=[["ADJ", "PROPN", "PUNCT"]])
    ids = batch["input_ids"][0]
    for j, word in enumerate(words):
        first = tokenizer(word, add_special_tokens=False)["input_ids"][0]
        assert ids[batch["word_index"][0, j]] == first
    n_text = sum(len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words)
    assert batch["text_mask"][0].sum() == n_text
    assert batch["context_mask"][0].sum() == len(tokenizer("some context", add_special_tokens=False)["input_ids"])
    assert ids[0] == tokenizer.cls_token_id
    assert batch["token_type_ids"][0, batch["context_mask"][0].bool()].eq(1).all()


def test_word_without_subwords_becomes_unknown_token(processor, tokenizer):
    words = ["hi", "\u00a0", "#\u200edarmageddon", "Paris"]
    batch = processor(words=[words], word_labels=[["O", "O", "B-MISC", "B-LOC"]],
                      label2id={"O": 0, "B-MISC": 1, "B-LOC": 2}, pos_tags=[["X"] * 4])
    assert batch["word_mask"][0].sum() == 4
    assert batch["input_ids"][0, batch["word_index"][0, 1]] == tokenizer.unk_token_id
    assert batch["labels"][0].tolist() == [0, 0, 1, 2]
    paris = tokenizer("Paris", add_special_tokens=False)["input_ids"][0]
    assert batch["input_ids"][0, batch["word_index"][0, 3]] == paris


def test_context_is_truncated_first(processor):
    words = ["word"] * 10
    batch = processor(words=[words], contexts=["long " * 200], pos_tags=[["NOUN"] * 10])
    assert batch["input_ids"].shape[1] == processor.max_length
    assert batch["text_mask"].sum() == 10
    assert batch["context_mask"].sum() == processor.max_length - 13


def test_over_long_text_is_an_error(processor):
    with pytest.raises(ValueError, match="example 1: the text alone is"):
        processor(words=[["ok"], ["supercalifragilistic"] * 40], pos_tags=[["X"], ["X"] * 40])
    with pytest.raises(ValueError, match="more than max_words"):
        processor(words=[["a"] * 65])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(words=[[]]), ValueError, "example 0 has no words"),
        (dict(words=[["a", ""]]), ValueError, "empty string"),
        (dict(words="a b"), TypeError, "got a string"),
        (dict(words=[["a"], "b"]), TypeError, "list of strings"),
        (dict(words=[["a", 3]]), TypeError, "expected a string"),
        (dict(words=[["a"]], word_labels=[["B-FOO"]], label2id={"O": 0}), ValueError, "unknown label 'B-FOO'"),
        (dict(words=[["a", "b"]], word_labels=[["O"]], label2id={"O": 0}), ValueError, "1 labels for 2 words"),
        (dict(words=[["a"]], contexts=["x", "y"]), ValueError, "2 contexts for 1 examples"),
        (dict(words=[["a"]], images=[None, None]), ValueError, "2 images for 1 examples"),
        (dict(words=[["a"]], pos_tags=[["X", "X"]]), ValueError, "one tag per word"),
    ],
)
def test_bad_input_errors(processor, kwargs, error, message):
    words = kwargs["words"]
    if isinstance(words, list) and all(isinstance(w, list) for w in words):
        kwargs.setdefault("pos_tags", [["X"] * len(w) for w in words])
    with pytest.raises(error, match=message):
        processor(**kwargs)


def test_images(processor, ner_batch):
    no_images = processor(words=ner_batch["words"], pos_tags=[["X"] * len(w) for w in ner_batch["words"]])
    assert "pixel_values" not in no_images and not no_images["has_image"].any()
    batch = processor(words=ner_batch["words"], images=ner_batch["images"], pos_tags=[["X"] * len(w) for w in ner_batch["words"]])
    assert batch["has_image"].tolist() == [True, False, True]
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert torch.all(batch["pixel_values"][1] == 0)


def test_spacy_pos_tags(processor):
    batch = processor(words=[["Kevin", "Durant", "runs", "."]])
    tags = [POS_TAGS[i] for i in batch["pos_ids"][0].tolist()]
    assert tags[0] == "PROPN" and tags[-1] == "PUNCT"
    assert processor.pos_to_ids(["NOUN", "NOT-A-TAG"]) == [POS_TAGS.index("NOUN"), POS_TAGS.index("X")]


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = ShapCAProcessor.from_pretrained(tmp_path)
    assert (loaded.max_length, loaded.max_words, loaded.pos_model) == (64, 64, processor.pos_model)
    words = [["Kevin", "Durant"]]
    a = processor(words=words, contexts=["ctx"], pos_tags=[["PROPN"] * 2])
    b = loaded(words=words, contexts=["ctx"], pos_tags=[["PROPN"] * 2])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_decode_tags(processor):
    preds = torch.tensor([[0, 1, 2], [1, -100, -100]])
    assert processor.decode_tags(preds, {0: "O", 1: "B-PER", 2: "I-PER"}) == [["O", "B-PER", "I-PER"], ["B-PER"]]


@pytest.fixture(scope="module")
def roberta_style_tokenizer(tokenizer, tmp_path_factory):
    """MiniLM's vocabulary with RoBERTa's pair template: `<s> A </s></s> B </s>` (here with
    [CLS]/[SEP] as <s>/</s>), no token type ids."""
    from tokenizers import processors

    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    cls, sep = tok.cls_token, tok.sep_token
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} {sep} $B {sep}",
        special_tokens=[(cls, tok.cls_token_id), (sep, tok.sep_token_id)])
    tok.model_input_names = ["input_ids", "attention_mask"]
    return tok


def test_pair_encoding_follows_the_tokenizer_template(roberta_style_tokenizer):
    import transformers

    tok = roberta_style_tokenizer
    processor = ShapCAProcessor(transformers.ConvNextImageProcessorPil(size={"shortest_edge": 32}), tok,
                                max_length=64, max_words=64)
    words = ["Kevin", "Durant", "scores"]
    batch = processor(words=[words, ["Paris"]], contexts=["a basketball player", ""], pos_tags=[["X"] * 3, ["X"]])
    ids = batch["input_ids"][0].tolist()
    n_text = int(batch["text_mask"][0].sum())
    n_context = int(batch["context_mask"][0].sum())
    # <s> text </s> </s> context </s>
    assert ids[0] == tok.cls_token_id and ids[n_text + 1] == ids[n_text + 2] == tok.sep_token_id
    assert ids[n_text + 3 + n_context] == tok.sep_token_id
    assert batch["context_mask"][0, n_text + 3:n_text + 3 + n_context].all()
    assert "token_type_ids" not in batch
    assert tok.decode(ids[n_text + 3:n_text + 3 + n_context]) == "a basketball player"
    # the second example has no context: a single sequence
    assert int(batch["attention_mask"][1].sum()) == 3 and not batch["context_mask"][1].any()
    for j, word in enumerate(words):
        assert ids[batch["word_index"][0, j]] == tok(word, add_special_tokens=False)["input_ids"][0]


def test_roberta_text_and_clip_vision_train_and_predict(roberta_style_tokenizer):
    """Any encoder: a tiny RoBERTa-style text model (pair template `</s></s>`, no token types)
    with a tiny CLIP vision tower trains (the loss falls) and predicts through the pipeline."""
    import transformers

    from modeling_shapca import ShapCAForTokenClassification
    from tests.helpers import NER_LABELS, random_image, tiny_config

    text = dict(model_type="roberta", vocab_size=roberta_style_tokenizer.vocab_size, hidden_size=32,
                num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=80,
                pad_token_id=roberta_style_tokenizer.pad_token_id, type_vocab_size=1)
    vision = dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=16)
    torch.manual_seed(0)
    model = ShapCAForTokenClassification(tiny_config(text_config=text, vision_config=vision))
    image_processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = ShapCAProcessor(image_processor, roberta_style_tokenizer, max_length=48, max_words=64)
    label2id = {label: i for i, label in enumerate(NER_LABELS)}
    batch = processor(words=[["Kevin", "Durant", "scores"], ["Paris", "floods"]], contexts=["a player", ""],
                      images=[random_image(0), None], word_labels=[["B-PER", "I-PER", "O"], ["B-LOC", "O"]],
                      label2id=label2id, pos_tags=[["PROPN", "PROPN", "VERB"], ["PROPN", "NOUN"]])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(25):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4
    model.eval()
    out = model.predict(["Kevin Durant scores", "Paris floods"], images=[random_image(0), None],
                        contexts=["a player", None], processor=processor)
    assert [[(e["entity_group"], e["word"]) for e in row] for row in out] == [[("PER", "Kevin Durant")], [("LOC", "Paris")]]
