"""Shap-CA demo: a Gradio app over the Shap-CA pipeline (NER, MRE, MJERE).

    shapca-app --model outputs/twitter2015-minilm                 # after `make demo`
    shapca-app --model outputs/twitter2015-minilm --model outputs/mnre-minilm --port 7860
    shapca-app --config demo/models.yaml                          # {models: [...], image_dir: ...}
    cd demo && python app.py                                      # as a Space starts it

With no `--model` and no `--config`, the models come from `$SHAPCA_MODELS` (comma-separated)
or else from `models.yaml` in the working directory (a Space's folder); paths in a YAML file
resolve against its folder. The host is `--host`, else `$GRADIO_SERVER_NAME`, else 0.0.0.0 on a
Space (`$SPACE_ID` set) and 127.0.0.1 anywhere else; the port `--port`, else
`$GRADIO_SERVER_PORT`, else 7860.

Each `--model` is a local folder or a Hub id (the task comes from its config). Models are loaded
with this package's classes (nothing from the model folder is executed) unless
`--trust-remote-code` is given, as for `transformers.pipeline`. `--backend onnx` serves the
models' exported `onnx/` graphs with ONNX Runtime instead (`shapca-export`; `--quantized` for
int8; no PyTorch needed), with the same records; the YAML file may say `backend: onnx` too.

The page takes a text, an optional image (an upload, or a URL / a path inside `--image-dir`), an
optional context (or one generated from the image when the model's processor has a context
generator) and, for relation extraction, the head and tail entities (their text as it appears
in the sentence, or word spans like `0:2`). It shows the entities highlighted with their labels
and scores and, for MRE / MJERE, a relations table. Bad input gets a message in the page, never
a stack trace. Uploads stay in a temporary folder that the app removes when it stops (Ctrl-C or
SIGTERM, as a Space is stopped).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

MODELS_FILE = "models.yaml"  # a Space's model list, beside app.py

MAX_WORDS = 200  # longer texts are refused with a message; each text's records are bounded by limits.MAX_RELATIONS / MAX_ENTITIES
RELATION_COLUMNS = ["head", "relation", "tail", "score"]


@dataclass
class LoadedModel:
    name: str
    task: str  # ner | mre | mjere
    pipe: object  # the inference engine (PyTorch or ONNX Runtime runner)
    has_context_generator: bool


def load_model(name: str, trust_remote_code: bool = False, backend: str = "torch", quantized: bool = False) -> LoadedModel:
    """A model folder or Hub id and its inference engine (`shapca_serving.loading.load_engine`,
    the loader every tool uses), with image URLs on private addresses refused (the app serves
    others)."""
    from shapca_serving.loading import load_engine

    shown = Path(name).name if Path(name).exists() else name  # no local path in the page
    engine = load_engine(name, backend, quantized, trust_remote_code=trust_remote_code, allow_private=False)
    return LoadedModel(shown, engine.task, engine, bool(engine.runner.context_generator))


def shipped_examples(task: str, count: int = 3) -> list[dict]:
    """Example inputs from the shipped data (test splits)."""
    from shapca_training.resources import resource

    try:
        if task == "ner":
            from datasets_scripts.readers import read_twitter_ner

            sentences, _ = read_twitter_ner(resource("data", "twitter2015", "test.txt"))
            picked = [s for s in sentences if 6 <= len(s.words) <= 20 and any(t != "O" for t in s.tags)][:count]
            return [{"text": " ".join(s.words)} for s in picked]
        from datasets_scripts.readers import read_mnre

        instances = [i for i in read_mnre(resource("data", "mnre", "mnre_test.txt")) if i.relation != "None"]
        picked = [i for i in instances if len(i.words) <= 25][:count]
        return [{"text": " ".join(i.words), "head": " ".join(i.words[i.head[0]:i.head[1]]),
                 "tail": " ".join(i.words[i.tail[0]:i.tail[1]])} for i in picked]
    except (OSError, ValueError):
        return []


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class InputError(ValueError):
    """Bad input, shown as a message in the page."""


def find_span(words: list[str], entity: str, role: str) -> list[int]:
    """The word span of an entity given as its text (`Kevin Durant`) or as `start:end`."""
    entity = (entity or "").strip()
    if not entity:
        raise InputError(f"Relation extraction needs the {role} entity: type it as it appears in the text.")
    match = re.fullmatch(r"(\d+)\s*[:\-]\s*(\d+)", entity)
    if match:
        return [int(match.group(1)), int(match.group(2))]
    target = entity.split()
    for start in range(len(words) - len(target) + 1):
        if [w.lower() for w in words[start:start + len(target)]] == [t.lower() for t in target]:
            return [start, start + len(target)]
    raise InputError(f"The {role} entity {entity!r} is not in the text (give its words as they appear, or a span like 0:2).")


class DemoApp:
    """The models and the prediction function behind the page."""

    def __init__(self, models: list[LoadedModel], image_dir: str | None = None):
        if not models:
            raise ValueError("the demo needs at least one model (--model)")
        self.models = {f"{m.task}: {m.name}": m for m in models}
        self.image_dir = Path(image_dir).resolve() if image_dir else None

    def _image(self, upload: str | None, location: str | None):
        if upload:
            return upload
        location = (location or "").strip()
        if not location:
            return None
        if location.startswith(("http://", "https://")):
            # fetched here, within the limits and never from this server's own network (SSRF)
            from modeling_shapca.inference import load_image

            try:
                return load_image(location, "the image URL", allow_private=False)
            except ValueError as error:
                raise InputError(str(error)) from None
        if self.image_dir is None:
            raise InputError("Image paths are not enabled here (the app was started without --image-dir): upload the image.")
        path = (self.image_dir / location).resolve()
        if not path.is_relative_to(self.image_dir) or not path.is_file():
            raise InputError(f"No image {location!r} inside the image folder.")
        return str(path)

    def predict(self, model_key: str, text: str, upload: str | None = None, location: str | None = None,
                context: str | None = None, head: str | None = None, tail: str | None = None,
                generate_context: bool = True):
        """(highlighted entities, relations table rows, message markdown)."""
        try:
            return self._predict(model_key, text, upload, location, context, head, tail, generate_context)
        except (InputError, ValueError, TypeError) as error:
            message = str(error).removeprefix("input 0: ")
            return [], [], f"**Cannot predict:** {message}"

    def _predict(self, model_key, text, upload, location, context, head, tail, generate_context):
        from modeling_shapca.inference import tokenize_with_offsets

        if model_key not in self.models:
            raise InputError(f"Unknown model {model_key!r}.")
        model = self.models[model_key]
        text = text or ""
        words, _ = tokenize_with_offsets(text)
        if not words:
            raise InputError("Type a sentence first.")
        if len(words) > MAX_WORDS:
            raise InputError(f"The text has {len(words)} words; this demo takes at most {MAX_WORDS}.")
        record = {"text": text, "image": self._image(upload, location), "context": (context or "").strip() or None}
        if model.task == "mre":
            record["pairs"] = [[find_span(words, head, "head"), find_span(words, tail, "tail")]]
        output = model.pipe({k: v for k, v in record.items() if v is not None},
                            generate_contexts=bool(generate_context))
        return self._render(model.task, text, output)

    @staticmethod
    def _render(task: str, text: str, output):
        if task == "mre":
            spans = []
            for relation in output:
                spans += [(relation["head"], "head"), (relation["tail"], "tail")]
            rows = [[r["head"]["word"], r["label"], r["tail"]["word"], round(r["score"], 3)] for r in output]
        elif task == "mjere":
            spans = [(e, f"{e['entity_group']} {e['score']:.2f}") for e in output["entities"]]
            rows = [[r["head"]["word"], r["label"], r["tail"]["word"], round(r["score"], 3)] for r in output["relations"]]
        else:
            spans = [(e, f"{e['entity_group']} {e['score']:.2f}") for e in output]
            rows = []
        highlighted, position = [], 0
        for span, label in sorted(spans, key=lambda item: item[0]["start"]):
            if span["start"] < position:
                continue  # nested or repeated spans: the first one shown
            if span["start"] > position:
                highlighted.append((text[position:span["start"]], None))
            highlighted.append((text[span["start"]:span["end"]], label))
            position = span["end"]
        if position < len(text):
            highlighted.append((text[position:], None))
        if task == "ner":
            found = _count(len(output), "entity", "entities")
        elif task == "mre":
            found = ", ".join(f"{r['head']['word']} -> {r['tail']['word']}: {r['label']}" for r in output)
        else:
            found = f"{_count(len(output['entities']), 'entity', 'entities')}, {_count(len(rows), 'relation', 'relations')}"
        return highlighted, rows, f"Done: {found}."

    def build(self, title: str = "Shap-CA: multimodal information extraction"):
        import gradio as gr

        keys = list(self.models)
        examples = []
        for key in keys:
            for example in shipped_examples(self.models[key].task):
                examples.append([key, example["text"], example.get("head", ""), example.get("tail", "")])

        def task_of(key):
            return self.models[key].task if key in self.models else "ner"

        with gr.Blocks(title=title) as app:
            gr.Markdown(f"# {title}\nShapley value-based contrastive alignment (Luo et al., ACM MM 2024): "
                        "entities and relations from a text, its image and a context describing the image.")
            with gr.Row():
                with gr.Column():
                    model_key = gr.Dropdown(keys, value=keys[0], label="Model", elem_id="model")
                    text = gr.Textbox(label="Text", lines=3, elem_id="text",
                                      placeholder="RT @nytimes: Kevin Durant signs with the Warriors")
                    with gr.Row(visible=task_of(keys[0]) == "mre") as pair_row:
                        head = gr.Textbox(label="Head entity (text or start:end)", elem_id="head")
                        tail = gr.Textbox(label="Tail entity (text or start:end)", elem_id="tail")
                    upload = gr.Image(type="filepath", label="Image (optional)", sources=["upload"], elem_id="image")
                    location = gr.Textbox(label="...or an image URL / a path inside the image folder", elem_id="location")
                    context = gr.Textbox(label="Context (optional: a description of the image)", lines=2, elem_id="context")
                    generate = gr.Checkbox(value=True, label="Generate the context from the image when empty",
                                           visible=any(m.has_context_generator for m in self.models.values()))
                    submit = gr.Button("Extract", variant="primary", elem_id="submit")
                with gr.Column():
                    message = gr.Markdown(elem_id="message")
                    entities = gr.HighlightedText(label="Entities", combine_adjacent=False, elem_id="entities")
                    relations = gr.Dataframe(headers=RELATION_COLUMNS, label="Relations", elem_id="relations",
                                             interactive=False)
            model_key.change(lambda key: gr.update(visible=task_of(key) == "mre"), model_key, pair_row)
            submit.click(self.predict, [model_key, text, upload, location, context, head, tail, generate],
                         [entities, relations, message], api_name="predict")
            if examples:
                gr.Examples(examples, [model_key, text, head, tail], label="Examples from the shipped test data")
        return app


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="model folder or Hub id (repeatable)")
    parser.add_argument("--config", help="YAML with `models: [...]` (and optionally `image_dir`, `trust_remote_code`)")
    parser.add_argument("--image-dir", help="image paths typed in the page resolve inside this folder only")
    parser.add_argument("--host", help="default: $GRADIO_SERVER_NAME, else 0.0.0.0 on a Space, else 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: $GRADIO_SERVER_PORT, else 7860")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="load the models' own code (for Hub models whose code differs from this package's)")
    parser.add_argument("--backend", choices=["torch", "onnx"], help="torch (default) or onnx: the exported graphs")
    parser.add_argument("--quantized", action="store_true", help="with --backend onnx: the int8 graphs")
    args = parser.parse_args(argv)
    if not args.config and not args.model:
        if os.environ.get("SHAPCA_MODELS"):
            args.model = [m.strip() for m in os.environ["SHAPCA_MODELS"].split(",") if m.strip()]
        elif Path(MODELS_FILE).is_file():
            args.config = MODELS_FILE
    if args.config:
        import yaml

        config = Path(args.config)
        settings = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        if not isinstance(settings, dict) or not isinstance(settings.get("models", []), list):
            parser.error(f"{config}: expected `models: [folder or Hub id, ...]`")

        def near(value):  # a folder beside the YAML file, else a Hub id as given
            local = config.parent / str(value)
            return str(local) if local.exists() else str(value)

        args.model = [near(m) for m in settings.get("models", [])] + args.model
        args.image_dir = args.image_dir or (near(settings["image_dir"]) if settings.get("image_dir") else None)
        args.trust_remote_code = args.trust_remote_code or bool(settings.get("trust_remote_code"))
        args.backend = args.backend or settings.get("backend")
        args.quantized = args.quantized or bool(settings.get("quantized"))
    args.backend = args.backend or "torch"
    if args.backend not in ("torch", "onnx"):
        parser.error(f"backend must be torch or onnx, got {args.backend!r}")
    if args.quantized and args.backend != "onnx":
        parser.error("quantized needs the onnx backend")
    if not args.model:
        parser.error(f"give at least one --model (e.g. outputs/twitter2015-minilm after `make demo`), a --config, "
                     f"$SHAPCA_MODELS or a {MODELS_FILE} in the working directory")
    if args.host is None:
        args.host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    if args.port is None:
        args.port = int(os.environ.get("GRADIO_SERVER_PORT", 7860))
    return args


def _stop_on_sigterm():
    """SIGTERM (how a Space or a service manager stops the app) ends it like Ctrl-C, so the
    upload folder is removed."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv=None):
    args = parse_args(argv)
    uploads = tempfile.mkdtemp(prefix="shapca-demo-")
    os.environ["GRADIO_TEMP_DIR"] = uploads  # uploads stay in this folder
    _stop_on_sigterm()
    try:
        models = [load_model(name, args.trust_remote_code, args.backend, args.quantized) for name in args.model]
        app = DemoApp(models, args.image_dir).build()
        app.launch(server_name=args.host, server_port=args.port, show_error=False)
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(uploads, ignore_errors=True)


if __name__ == "__main__":
    main()
