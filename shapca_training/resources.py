"""Files the jobs read besides code: the shipped offline data (`data/`), the configs
(`configs/`), the local `evaluate` metric modules (`metrics/`) and the model-card template
(`model_card.md`).

From a checkout they are the repository's own folders. An installed wheel carries them as the
package `shapca_resources` (setup.py copies them in at build time), found with
`importlib.resources`, never by a path relative to a checkout, so `pip install shapca` from
anywhere can train on the shipped data, score and write cards.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
RESOURCES = ("data", "configs", "metrics", "model_card.md")  # what the wheel carries


def _base() -> Path:
    if (CHECKOUT / "setup.py").is_file() and (CHECKOUT / "model_card.md").is_file():  # a checkout
        return CHECKOUT
    try:
        return Path(str(importlib.resources.files("shapca_resources")))
    except ModuleNotFoundError as error:  # pragma: no cover - a broken install
        raise FileNotFoundError("shapca's resources (data, configs, metrics, card template) are not installed: "
                                "reinstall the package (pip install shapca)") from error


def resource(*parts: str) -> Path:
    """The path of a shipped file or folder, e.g. `resource("metrics", "mner_f1")`."""
    return _base().joinpath(*parts)


def config_path(name: str) -> Path:
    """A config by path, or a shipped one by name (`twitter2015-minilm` or its file name)."""
    given = Path(name)
    if given.suffix in (".yaml", ".yml") and given.is_file():
        return given
    shipped = resource("configs", name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    names = sorted(p.stem for p in resource("configs").glob("*.yaml"))
    raise FileNotFoundError(f"no config {name!r}: give a YAML file or a shipped config name ({', '.join(names)})")

