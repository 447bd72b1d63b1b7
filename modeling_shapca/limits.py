"""Bounds on what an input can cost: image URLs fetched with a scheme rule, timeouts, a byte
cap and an address rule; images measured before they are decoded; high-depth images converted
to 8 bits by their value range. Every limit is a named setting (module constant, documented in
the README's "Trust and data safety"), and every refusal is a `ValueError` saying which limit.

* `FETCH_TIMEOUT_S` (10 s): connect timeout and the longest wait for any read.
* `FETCH_MAX_BYTES` (20 MiB): the most bytes read from one URL; a longer body is refused.
* `FETCH_MAX_REDIRECTS` (3): redirects followed, each checked like the first URL.
* Schemes: `http` and `https` only.
* Addresses: `allow_private=False` (the demo app) refuses loopback, private, link-local
  (cloud metadata 169.254.169.254 included), multicast, reserved and unspecified addresses,
  checked on every address the host name resolves to, before any connection, and again after
  each redirect; the connection goes to the checked address (no second resolution). The
  pipeline and the CLI run on the user's own machine and allow them (`allow_private=True`).
* `MAX_IMAGE_PIXELS` (40 M pixels: 114 MB as 8-bit RGB) and `MAX_ASPECT_RATIO` (20): checked on the
  image header before decoding; the resize to the processor's shortest edge multiplies a thin
  image's size by its aspect ratio, so the ratio bounds the resized size too. Measured cost of one
  image inside the limits (`benchmarks/image_memory.py`, a 117 KB 6000 x 6000 PNG = 36 M
  pixels): +137 MB peak RSS to decode it, +137 MB on the ONNX predictor, +481 MB on the PyTorch
  pipeline (transformers' image processor converts the full-size image to float32 before it
  resizes: 4 bytes a channel). At the 40 M pixel limit, scale by 40/36.
* `MAX_RELATIONS` (10,000) and `MAX_ENTITIES` (2,000): the most relations and entities one
  input's records hold (MJERE): the word-pair heads mark cells, and an untrained or noisy model
  marks most of them (a 150-word text has 11,325 spans and ~128 M span pairs); the
  highest-scoring are kept, with a warning naming the input. The entity bound applies per
  window before relations are decoded, so their cost is bounded too. MRE reads one relation per
  given pair: at most `MAX_RELATIONS` pairs per input.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

FETCH_TIMEOUT_S = 10.0
FETCH_MAX_BYTES = 20 * 2**20
FETCH_MAX_REDIRECTS = 3
MAX_IMAGE_PIXELS = 40_000_000
MAX_ASPECT_RATIO = 20.0
SCHEMES = ("http", "https")
MAX_RELATIONS = 10_000
MAX_ENTITIES = 2_000


def check_address(address: str, allow_private: bool) -> None:
    """Refuse an address the caller may not reach (see the module docstring)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if not allow_private and (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                              or ip.is_reserved or ip.is_unspecified or not ip.is_global):
        raise ValueError(f"the URL's host resolves to {ip}, a loopback, private, link-local or reserved address, "
                         "which this service does not fetch")


def _resolve(host: str, port: int, allow_private: bool) -> str:
    """The first address of `host`, after every address it resolves to was checked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"the URL's host {host!r} does not resolve ({error})") from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        check_address(address, allow_private)
    return addresses[0]


class _Connection(http.client.HTTPSConnection):
    """A connection to an address checked beforehand, with the host name kept for the Host
    header and TLS (SNI and certificate check)."""

    def __init__(self, host: str, address: str, port: int, timeout: float, tls: bool):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address, self._tls = address, tls

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        if self._tls:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def fetch_url(url: str, *, allow_private: bool = True, timeout: float = FETCH_TIMEOUT_S,
              max_bytes: int = FETCH_MAX_BYTES, max_redirects: int = FETCH_MAX_REDIRECTS) -> bytes:
    """The body of an http(s) URL within the limits; a `ValueError` naming the limit otherwise."""
    deadline = time.monotonic() + timeout * 3  # connect + headers + body, however slowly they trickle
    for _ in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ValueError(f"only http(s) URLs are fetched, got {url[:200]!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        address = _resolve(parts.hostname, port, allow_private)
        connection = _Connection(parts.hostname, address, port, timeout, tls)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", path, headers={"User-Agent": "shapca", "Accept": "image/*"})
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise ValueError(f"the URL answered HTTP {response.status}")
            length = response.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise ValueError(f"the URL's body is {int(length)} bytes, more than FETCH_MAX_BYTES={max_bytes}")
            body = bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise ValueError(f"the URL took longer than {timeout * 3:g} s (FETCH_TIMEOUT_S={timeout:g})")
                chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > max_bytes:
                    raise ValueError(f"the URL's body is more than FETCH_MAX_BYTES={max_bytes} bytes")
        except (OSError, http.client.HTTPException) as error:
            if isinstance(error, (socket.timeout, TimeoutError)):
                raise ValueError(f"the URL did not answer within FETCH_TIMEOUT_S={timeout:g} s") from None
            raise ValueError(f"the URL cannot be fetched: {type(error).__name__}: {error}") from None
        finally:
            connection.close()
    raise ValueError(f"the URL redirects more than FETCH_MAX_REDIRECTS={max_redirects} times")


def check_image_size(width: int, height: int) -> None:
    """Refuse, before decoding, an image whose decode or resize would cost more than the limits."""
    if width < 1 or height < 1:
        raise ValueError(f"the image is {width}x{height} pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"the image is {width}x{height} = {width * height:,} pixels, more than "
                         f"MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS:,}")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"the image is {width}x{height}, an aspect ratio of {ratio:.0f}, more than "
                         f"MAX_ASPECT_RATIO={MAX_ASPECT_RATIO:g} (resizing it would cost far more memory than its file)")


def to_rgb(image):
    """An RGB image; 16- and 32-bit integer and float modes are scaled to 8 bits by their value
    range (a plain `convert("RGB")` clips them, turning most 16-bit images white)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np
        from PIL import Image

        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            low, high = 0.0, 65535.0
        else:
            low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        image = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")
