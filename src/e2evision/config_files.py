"""The configs shipped inside the package, usable by name: ``e2evision train egamma_resnet15``.

They live in ``e2evision/configs/`` so that a wheel installed on a cluster without a checkout
has them; in a checkout that folder is a link to the top-level ``configs/`` (one set of files).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from e2evision.errors import ConfigNotFoundError


def configs_dir() -> Path:
    """The folder of packaged configs (inside the installed package)."""
    return Path(str(resources.files("e2evision") / "configs"))


def packaged_configs() -> dict[str, Path]:
    """Config name (file stem) → path, sorted by name."""
    folder = configs_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def resolve_config(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a file, else the packaged config of that name (``.yaml`` optional)."""
    p = Path(path)
    if p.is_file() or len(p.parts) != 1:
        return p
    found = packaged_configs().get(p.name.removesuffix(".yaml").removesuffix(".yml"))
    if found is None:
        raise ConfigNotFoundError(
            f"config file not found: {path} (neither a file nor a packaged config name; `e2evision configs` lists them)"
        )
    return found


def describe(path: Path) -> dict[str, Any]:
    """Name, dataset format, model and the first comment line of a config (what `configs` lists)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    comment = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    return {
        "name": path.stem,
        "run_name": data.get("name"),
        "format": (data.get("data") or {}).get("format"),
        "model": (data.get("model") or {}).get("name"),
        "about": comment,
        "path": str(path),
    }
