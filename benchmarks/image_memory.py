"""Peak memory that one large image costs on each serving path (issue 34, item 12): a
6000 x 6000 PNG (about 100 KB, far under FETCH_MAX_BYTES, inside MAX_IMAGE_PIXELS) through
the PyTorch pipeline and the ONNX predictor, each in a fresh process, against the same input
with a 224 x 224 image: the increase of the process's peak RSS (`VmHWM`).

    python -m benchmarks.image_memory [--side 6000]

The model is a tiny random NER model with the shipped configs' image processor (ConvNeXt,
shortest edge 224); what the image costs does not depend on the backbone's size beyond its
input (224 x 224 after the resize).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
from PIL import Image
backend, folder, big, small = sys.argv[1:5]
def peak():  # VmHWM: this process's own peak (ru_maxrss carries the parent's over fork + exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
if backend == "decode":
    from modeling_shapca.inference import load_image
    before = peak(); load_image(small, "small"); base = peak(); load_image(big, "big")
    print(json.dumps({"base_mb": base, "delta_mb": peak() - base})); sys.exit()
if backend == "torch":
    from modeling_shapca.pipeline_shapca import ShapCAPipeline
    from shapca_serving.loading import load_trained
    model, processor = load_trained(folder)
    run = ShapCAPipeline(model=model.eval(), processor=processor)
else:
    from shapca_serving.onnx_predictor import ShapCAOnnxPredictor
    run = ShapCAOnnxPredictor.from_pretrained(folder)
text = "Kevin Durant enters Oracle Arena"
for _ in range(3):
    run({"text": text, "image": small})
base = peak()
run({"text": text, "image": big})
print(json.dumps({"base_mb": base, "delta_mb": peak() - base}))
"""


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=6000)
    args = parser.parse_args(argv)
    import numpy as np
    import transformers
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from modeling_shapca import ShapCAForTokenClassification, ShapCAProcessor
    from shapca_serving.onnx_export import export_onnx
    from tests.helpers import MINILM_PATH, tiny_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = ShapCAForTokenClassification(tiny_config()).eval()
        processor = ShapCAProcessor(transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}),
                                    transformers.AutoTokenizer.from_pretrained(MINILM_PATH), max_length=64,
                                    max_words=64)
        model.save_pretrained(work / "model")
        processor.save_pretrained(work / "model")
        export_onnx(model, work / "model", processor=processor, with_vision=True)
        big, small = work / "big.png", work / "small.png"
        y, x = np.mgrid[0:args.side, 0:args.side]
        pixels = np.stack([(x // 500 * 20) % 256, (y // 500 * 20) % 256, np.full_like(x, 128)], -1).astype(np.uint8)
        Image.fromarray(pixels).save(big, optimize=True)
        Image.fromarray(pixels[:224, :224]).save(small)
        del pixels, x, y
        results = {"image": f"{args.side}x{args.side} PNG, {big.stat().st_size / 1024:.0f} KB",
                   "rgb_mb": round(args.side * args.side * 3 / 2**20, 1)}
        for backend in ("decode", "torch", "onnx"):
            out = subprocess.run([sys.executable, "-c", CHILD, backend, str(work / "model"), str(big), str(small)],
                                 capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
            results[backend] = {k: round(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
