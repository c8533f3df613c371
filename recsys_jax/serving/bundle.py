"""A serving bundle on disk: its layout, its manifest of checksums, and loading it.

One folder, written by `python -m recsys_jax.export`:
  manifest.json        format version, library versions, creation time, sha256 + size per file
  config.yaml          the run's resolved config (model dtype and LoRA as exported)
  tokenizer.json       the tokenizer (`Tokenizer.to_json`: text vocabulary, added tokens)
  catalog.json         dataset item ids, titles and original ids (e.g. ASINs; null when the
                       dataset ids are the originals), in internal item order
  index.json           the item index kind, each item's spelling and token sequence
  trie.npz             the catalog trie arrays (`decoding/trie.py` layout)
  weights.npz          parameters by name (bfloat16 stored as its uint16 bits; no pickle)
  recommend.stablehlo  the beam search serialized by `jax.export` (symbolic batch dimension)
  recommend.json       its signature: input/output names, shapes, dtypes; decoding constants

`load_bundle` checks every file's size and sha256 before it reads any of them, and imports
none of the model or training code (no flax, optax or orbax): jax, numpy, the tokenizer and
the prompt builders are all a bundle needs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import yaml

from recsys_jax.run.checksums import sha256_file
from recsys_jax.tokenizer import Tokenizer

FORMAT_VERSION = 2  # 2: tokenizer.json holds the whole tokenizer (no tokenizer.model)
MANIFEST = "manifest.json"
FILES = (
    "config.yaml",
    "tokenizer.json",
    "catalog.json",
    "index.json",
    "trie.npz",
    "weights.npz",
    "recommend.stablehlo",
    "recommend.json",
)
# dtypes numpy cannot store in .npz without pickle: saved as same-width unsigned bits.
_BIT_VIEWS = {"bfloat16": (ml_dtypes.bfloat16, np.uint16)}


class BundleError(RuntimeError):
    """The bundle is missing, corrupted, truncated or from an incompatible version."""


def write_manifest(folder: Path, info: dict) -> dict:
    """Checksum every bundle file into `folder/manifest.json` (plus `info`)."""
    files = {}
    for name in FILES:
        path = folder / name
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {
        "format": "recsys_jax.bundle",
        "format_version": FORMAT_VERSION,
        **info,
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def verify_bundle(folder: str | Path) -> dict:
    """-> the manifest, after checking every file's size and sha256; raises BundleError
    naming the first file that is missing or differs."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise BundleError(
            f"{folder}: not a recsys_jax bundle (no {MANIFEST}); write one with "
            "`python -m recsys_jax.export --checkpoint RUN --out BUNDLE`"
        )
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(
            f"{folder / MANIFEST} is corrupted ({e}); export the bundle again"
        ) from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{folder}: bundle format version {manifest.get('format_version')} "
            f"is not supported by this recsys_jax (reads {FORMAT_VERSION}); "
            "export it again with this version"
        )
    for name in FILES:
        path = folder / name
        if name not in listed:
            raise BundleError(f"{folder / MANIFEST} does not list {name}; export again")
        if not path.is_file():
            raise BundleError(f"{path} is missing from the bundle; copy the whole folder")
        size, want = path.stat().st_size, listed[name]["bytes"]
        if size != want:
            raise BundleError(
                f"{path} is truncated or altered: {size} bytes, the manifest "
                f"says {want}; copy or export the bundle again"
            )
        if sha256_file(path) != listed[name]["sha256"]:
            raise BundleError(
                f"{path} is corrupted: its sha256 differs from the manifest's; "
                "copy or export the bundle again"
            )
    return manifest


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    stored = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        view = _BIT_VIEWS.get(a.dtype.name)
        stored[name] = a.view(view[1]) if view else a
    with open(path, "wb") as f:
        np.savez(f, **stored)


def load_arrays(path: Path, dtypes: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of an .npz (never unpickling); `dtypes` restores bit-stored ones by name."""
    dtypes = dtypes or {}
    with np.load(path, allow_pickle=False) as z:
        out = {name: z[name] for name in z.files}
    for name, dtype in dtypes.items():
        if dtype in _BIT_VIEWS:
            out[name] = out[name].view(_BIT_VIEWS[dtype][0])
    return out


@dataclasses.dataclass
class Bundle:
    path: Path
    manifest: dict
    config: dict  # the resolved run config, as plain data
    spec: dict  # recommend.json
    tokenizer: Tokenizer
    item_ids: list[str]
    titles: list[str]
    spellings: list[str]
    trie: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    exported: jax.export.Exported
    source_ids: list[str] | None = None


def load_bundle(path: str | Path) -> Bundle:
    """Verify and read a bundle (see the module doc); raises BundleError with what to do."""
    folder = Path(path)
    manifest = verify_bundle(folder)
    try:
        spec = json.loads((folder / "recommend.json").read_text())
        config = yaml.safe_load((folder / "config.yaml").read_text())
        catalog = json.loads((folder / "catalog.json").read_text())
        index = json.loads((folder / "index.json").read_text())
        tokenizer = Tokenizer.from_json(json.loads((folder / "tokenizer.json").read_text()))
        weight_specs = spec["inputs"]["weights"]
        weights = load_arrays(folder / "weights.npz", {w["name"]: w["dtype"] for w in weight_specs})
        trie = load_arrays(folder / "trie.npz")
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise BundleError(
            f"{folder}: unreadable bundle content ({type(e).__name__}: {e}); export it again"
        ) from None
    for w in weight_specs:
        got = weights.get(w["name"])
        if got is None or list(got.shape) != w["shape"] or got.dtype.name != w["dtype"]:
            raise BundleError(
                f"{folder / 'weights.npz'}: weight {w['name']!r} does not match "
                f"recommend.json ({w['shape']} {w['dtype']})"
            )
    try:
        exported = jax.export.deserialize(bytearray((folder / "recommend.stablehlo").read_bytes()))
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing to the user
        raise BundleError(
            f"{folder / 'recommend.stablehlo'} cannot be loaded by jax {jax.__version__} "
            f"(exported with jax {manifest.get('jax_version')}): {e}"
        ) from None
    platform = jax.default_backend()
    platforms = [p.lower() for p in exported.platforms]
    gpu_ok = platform == "gpu" and {"cuda", "rocm"} & set(platforms)
    if platform not in platforms and not gpu_ok:
        raise BundleError(
            f"{folder}: the recommend function was exported for {platforms}, "
            f"not this {platform} backend; export again with "
            f"--platforms {platform}"
        )
    return Bundle(
        folder,
        manifest,
        config,
        spec,
        tokenizer,
        catalog["item_ids"],
        catalog["titles"],
        index["spellings"],
        trie,
        weights,
        exported,
        catalog.get("source_ids"),
    )
