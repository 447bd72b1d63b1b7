"""Bounded fetching and bounded images (`limits.py`): a local HTTP server on 127.0.0.1 (the only
address these tests connect to), a bounded number of requests, each bounded in time."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from modeling_shapca import limits
from modeling_shapca.inference import load_image
from tests.helpers import ROOT, random_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """Paths: /img.png, /slow (answers after 3 s), /endless (a body of up to 8 MiB, sent until
    the client leaves), /redirect (-> /img.png), /loop (-> /loop), /to-private (-> 10.1.2.3)."""

    def __init__(self):
        self.requests: list[str] = []
        image = png_bytes(random_image(0))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                if self.path == "/img.png":
                    self._send(200, image)
                elif self.path == "/slow":
                    time.sleep(3)
                    self._send(200, image)
                elif self.path == "/endless":
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(128):  # bounded: 8 MiB at most
                            self.wfile.write(b"\0" * 65536)
                    except OSError:
                        pass
                elif self.path in ("/redirect", "/loop", "/to-private"):
                    target = {"/redirect": "/img.png", "/loop": "/loop", "/to-private": "http://10.1.2.3/x.png"}
                    self.send_response(302)
                    self.send_header("Location", target[self.path])
                    self.end_headers()
                else:
                    self._send(404, b"")

            def _send(self, status, body):
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (the timeout case)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_fetch_within_the_limits(server):
    assert load_image(f"{server.url}/img.png", "input 0").size == (56, 40)
    assert load_image(f"{server.url}/redirect", "input 0").size == (56, 40)
    start = time.monotonic()
    with pytest.raises(ValueError, match="did not answer within FETCH_TIMEOUT_S=0.5 s"):
        limits.fetch_url(f"{server.url}/slow", timeout=0.5)
    assert time.monotonic() - start < 2.5
    with pytest.raises(ValueError, match="more than FETCH_MAX_BYTES=1048576 bytes"):
        limits.fetch_url(f"{server.url}/endless", max_bytes=2**20)
    with pytest.raises(ValueError, match="redirects more than FETCH_MAX_REDIRECTS=3 times"):
        limits.fetch_url(f"{server.url}/loop")
    with pytest.raises(ValueError, match="input 3: image .* HTTP 404"):
        load_image(f"{server.url}/missing.png", "input 3")
    assert server.requests.count("/loop") == 4 and len(server.requests) == 10


@pytest.mark.parametrize("url", ["ftp://example.org/x.png", "file:///etc/passwd", "data:image/png;base64,AAAA",
                                 "gopher://127.0.0.1:70/"])
def test_only_http_urls_and_files(url):
    with pytest.raises(ValueError, match="only http\\(s\\) URLs"):
        load_image(url, "input 0")


def test_missing_paths_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="input 2: image 'nope.png' cannot be read: no such file \\(relative to "):
        load_image("nope.png", "input 2")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.png", "http://localhost:9/x.png", "http://10.1.2.3/x.png",
                                 "http://192.168.0.7/x.png", "http://169.254.169.254/latest/meta-data/",
                                 "http://[::1]:9/x.png", "http://[fe80::1]/x.png", "http://0.0.0.0/x.png"])
def test_private_addresses_are_refused_before_any_connection(url, monkeypatch):
    def no_connection(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    with pytest.raises(ValueError, match="loopback, private, link-local or reserved address"):
        limits.fetch_url(url, allow_private=False)


def test_a_redirect_to_a_private_address_is_checked_again(server, monkeypatch):
    """The first hop is allowed (a stand-in for a public host: loopback allowed for it), the
    redirect's target is checked again and refused before any connection to it."""
    checked = []
    real = limits.check_address

    def check(address, allow_private):
        checked.append(address)
        return real(address, allow_private or address == "127.0.0.1")

    monkeypatch.setattr(limits, "check_address", check)
    with pytest.raises(ValueError, match="10.1.2.3, a loopback, private"):
        limits.fetch_url(f"{server.url}/to-private", allow_private=False)
    assert checked == ["127.0.0.1", "10.1.2.3"] and server.requests == ["/to-private"]


def test_the_demo_app_does_not_fetch_from_its_own_network(server):
    from shapca_app.app import DemoApp, InputError

    app = DemoApp.__new__(DemoApp)
    app.image_dir = None
    with pytest.raises(InputError, match="127.0.0.1, a loopback"):
        app._image(None, f"{server.url}/internal/admin?x=1")
    assert server.requests == []  # the request was never sent (no server-side request forgery)


def test_thin_and_huge_images_are_refused_before_decoding(tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (40000, 10)).save(thin)
    assert thin.stat().st_size < 5000
    with pytest.raises(ValueError, match="40000x10, an aspect ratio of 4000, more than MAX_ASPECT_RATIO=20"):
        load_image(str(thin), "input 0")
    with pytest.raises(ValueError, match="more than MAX_IMAGE_PIXELS=40,000,000"):
        limits.check_image_size(8000, 8000)
    code = ("import resource, sys; from modeling_shapca.inference import load_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try: load_image(sys.argv[1], 'x')\nexcept ValueError: pass\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    grown_kib = int(subprocess.run([sys.executable, "-c", code, str(thin)], cwd=ROOT, capture_output=True, text=True,
                                   check=True).stdout)
    assert grown_kib < 20_000  # under 20 MB (the unbounded path took 3.1 GB)


def test_16_bit_images_keep_their_values():
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    rgb = np.asarray(load_image(image, "input 0"))
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()
    floats = np.asarray(limits.to_rgb(Image.fromarray(np.array([[0.5, 1.0, 2.5]], dtype=np.float32))))
    assert floats[0, :, 1].tolist() == [0, 64, 255]


def test_invisible_format_characters_are_not_words():
    from modeling_shapca.inference import tokenize_with_offsets

    words, offsets = tokenize_with_offsets("Kevin\u200b Durant \u202e \u200f ok \U0001F468\u200d\U0001F469")
    assert words == ["Kevin", "Durant", "ok", "\U0001F468\u200d\U0001F469"]  # a ZWJ emoji sequence stays one
    assert offsets[:3] == [(0, 5), (7, 13), (18, 20)]


def test_a_model_folder_without_config_is_a_clear_error(trained_model_dir, tmp_path):
    import shutil

    from modeling_shapca import ShapCAForTokenClassification
    from shapca_serving.loading import load_trained

    shutil.copy(trained_model_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(OSError, match="has no config.json: it is not a saved Shap-CA model"):
        ShapCAForTokenClassification.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="has no config.json"):
        load_trained(str(tmp_path))


# ---------------------------------------------------------------- bounded word-pair outputs
def test_mjere_decode_keeps_the_highest_scoring_entities_and_relations():
    """With every cell marked, the bounded decode returns exactly the top-k of the unbounded
    one (by score), in the unbounded order, and counts what it found."""
    from modeling_shapca.grids import decode_mjere

    rng = np.random.default_rng(0)
    n, sizes = 12, [3, 2, 2]
    grid = np.stack([np.triu(rng.integers(1, 3, (n, n))), rng.integers(1, 2, (n, n)), rng.integers(1, 2, (n, n))])
    probs = rng.random((n, n, sum(sizes))).astype(np.float32)
    all_entities, all_triples = decode_mjere(grid, n, probs, sizes)
    assert len(all_entities) == n * (n + 1) // 2 and len(all_triples) > 2000
    counts = {}
    entities, triples = decode_mjere(grid, n, probs, sizes, max_entities=40, max_relations=100, counts=counts)
    assert counts == {"entities": len(all_entities), "relations": 40 * 39}
    top = sorted(sorted(range(len(all_entities)), key=lambda j: -all_entities[j]["score"])[:40])
    assert entities == [all_entities[j] for j in top]
    kept = {(e["start"], e["end"]) for e in entities}
    among = [t for t in all_triples if {(t["head_start"], t["head_end"]), (t["tail_start"], t["tail_end"])} <= kept]
    best = sorted(sorted(range(len(among)), key=lambda j: -among[j]["score"])[:100])
    assert triples == [among[j] for j in best]
    assert min(t["score"] for t in triples) >= max(t["score"] for j, t in enumerate(among) if j not in best)


def test_an_untrained_mjere_model_on_150_words_returns_bounded_records_quickly():
    """The issue's case: 944,149 relations (823 MB of JSON) before the bound."""
    from modeling_shapca.engine import InferenceEngine
    from modeling_shapca.limits import MAX_ENTITIES, MAX_RELATIONS
    from modeling_shapca.torch_runner import TorchRunner
    from tests.helpers import tiny_model, tiny_processor

    engine = InferenceEngine(TorchRunner(tiny_model("mjere").eval(), tiny_processor()))
    words = [f"Word{i}" for i in range(150)]
    started = time.perf_counter()
    with pytest.warns(UserWarning, match=r"input 0: relations: the model marked [\d,]+ .*more than "
                                         r"MAX_RELATIONS=10,000") as caught:
        records = engine({"words": words})
    assert time.perf_counter() - started < 120
    assert len(records["relations"]) == MAX_RELATIONS
    assert MAX_ENTITIES - 100 < len(records["entities"]) <= MAX_ENTITIES  # each window's own bound comes first
    assert any("MAX_ENTITIES=2,000" in str(w.message) for w in caught)
    scores = [r["score"] for r in records["relations"]]
    assert scores != sorted(scores, reverse=True)  # kept in the decode's order, not re-sorted


def test_mre_pairs_per_input_are_bounded():
    from modeling_shapca.inference import check_pairs
    from modeling_shapca.limits import MAX_RELATIONS

    pairs = [[[0, 1], [1, 2]]] * (MAX_RELATIONS + 1)
    with pytest.raises(ValueError, match=r"^input 2: 10,001 pairs, more than MAX_RELATIONS=10,000 per input"):
        check_pairs(pairs, 3, "input 2")
    assert len(check_pairs(pairs[:MAX_RELATIONS], 3, "input 2")) == MAX_RELATIONS
