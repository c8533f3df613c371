"""Export a checkpoint as a self-contained serving bundle: `python -m recsys_jax.export`.

    python -m recsys_jax.export --checkpoint runs/default --out bundles/default [--dtype bf16]
        [--merge-lora] [--beam 20] [--platforms cpu,cuda,tpu]

The bundle (layout in `serving/bundle.py`) holds the weights, resolved config, tokenizer,
catalog, item spellings, trie arrays and the sequential recommender as a `jax.export` program:
trie-constrained beam search from prompt token arrays to the top-`beam` items and scores, with
a symbolic batch dimension. `recsys_jax.serving` loads it without the model's Python classes.

Weights and trie arrays are *arguments* of the exported program, not constants baked into it:
the StableHLO stays small whatever the model size (a 60 M-parameter model would otherwise put
240 MB of constants into the program, and large ones hit the 2 GB protobuf limit), weights
are stored and checksummed as plain arrays, and they are placed on the device once at load.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx

from recsys_jax import configlib
from recsys_jax.cli import positive_int, report_error
from recsys_jax.data.schema import DataError
from recsys_jax.decoding.decoder import Decoder
from recsys_jax.decoding.inputs import PROMPT_KEYS, START_KEYS
from recsys_jax.model import GLM, merge_lora
from recsys_jax.run.restore import load_checkpoint
from recsys_jax.serving.bundle import MANIFEST, save_arrays, write_manifest

DTYPES = {"f32": "float32", "bf16": "bfloat16"}
ALL_PLATFORMS = ("cpu", "cuda", "tpu")
EXPORT_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # the platforms jax.export lowers for


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def prepare_model(model: GLM, dtype: str, merge: bool, log=print) -> GLM:
    """The model as exported: adapters folded in when asked, compute dtype set."""
    if merge:
        if model.cfg.lora_rank:
            log(f"[export] merging LoRA adapters (rank {model.cfg.lora_rank}) into the weights")
            model = merge_lora(model)
        else:
            log("[export] --merge-lora: the checkpoint has no LoRA adapters, nothing to merge")
    compute = "bfloat16" if dtype == "bfloat16" else model.cfg.dtype
    if compute != model.cfg.dtype:
        # The compute dtype is static module data: rebuild, then copy the parameters over.
        rebuilt = GLM(dataclasses.replace(model.cfg, dtype=compute), rngs=nnx.Rngs(0))
        nnx.update(rebuilt, nnx.state(model))
        model = rebuilt
    return model


def _spec_list(tree: dict) -> list[dict]:
    return [
        {
            "name": k,
            "shape": [d if isinstance(d, int) else str(d) for d in v.shape],
            "dtype": np.dtype(v.dtype).name,
        }
        for k, v in tree.items()
    ]


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    dtype: str = "f32",
    merge: bool = False,
    beam: int = 20,
    length_penalty: float = 0.0,
    platforms: Sequence[str] | None = ALL_PLATFORMS,
    data_dir: str | None = None,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Write the bundle folder `out` from a run dir or checkpoint step dir; -> `out`."""
    out = Path(out)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and not (out / MANIFEST).is_file():
        raise FileExistsError(f"{out} exists and is not a bundle; refusing to replace it")
    start = time.time()
    cfg, model, assets, step = load_checkpoint(checkpoint, data_dir)
    log(
        f"[export] {checkpoint}: step {step}, {assets.index.kind} index, "
        f"{len(assets.prepared.catalog)} items"
    )
    decoder = Decoder(cfg, model, assets, beam=beam, length_penalty=length_penalty)
    model = prepare_model(model, DTYPES[dtype], merge, log)
    tokenizer, special, trie = assets.tokenizer, assets.tokenizer.special, decoder.trie
    template, continues = decoder.templates["sequential"], decoder.continues_sequence
    fn, names, values = decoder.beam_program(model, beam)
    store = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    weights = {n: np.asarray(jnp.asarray(v).astype(store)) for n, v in zip(names, values)}
    trie_arrays = trie.arrays()

    b, h = jax.export.symbolic_shape("b, h")
    length = cfg.data.seq_len
    inputs = {k: jax.ShapeDtypeStruct((b, length), jnp.int32) for k in PROMPT_KEYS}
    inputs["mask_pos"] = jax.ShapeDtypeStruct((b,), jnp.int32)
    inputs["exclude"] = jax.ShapeDtypeStruct((b, h), jnp.int32)
    if continues:
        inputs.update({k: jax.ShapeDtypeStruct((b,), jnp.int32) for k in START_KEYS})
    shapes = lambda tree: {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in tree.items()}
    log(f"[export] lowering beam search (beam {beam}) for {', '.join(platforms or ['default'])}")
    try:
        exported = jax.export.export(jax.jit(fn), platforms=platforms)(
            shapes(weights), shapes(trie_arrays), inputs
        )
    except Exception as e:
        raise RuntimeError(
            f"exporting for platforms {platforms} failed ({e}); try "
            f"--platforms {jax.default_backend()}"
        ) from e

    model_cfg = model.cfg
    saved_cfg = configlib.to_dict(dataclasses.replace(cfg, model=model_cfg))
    spec = {
        "function": "recommend(weights, trie, inputs) -> (items, scores)",
        "platforms": list(exported.platforms),
        "calling_convention_version": exported.calling_convention_version,
        "inputs": {
            "weights": _spec_list(weights),
            "trie": _spec_list(trie_arrays),
            "inputs": _spec_list(inputs),
        },
        "outputs": [
            {
                "name": "items",
                "shape": ["b", beam],
                "dtype": "int32",
                "doc": "internal item index per rank, -1 where fewer items exist",
            },
            {
                "name": "scores",
                "shape": ["b", beam],
                "dtype": "float32",
                "doc": "summed log-probability of the item tokens and <eop>",
            },
        ],
        "decoding": {
            "beam": beam,
            "length_penalty": length_penalty,
            "eop": special.eop,
            "sop": special.sop,
            "template": template,
            "seq_len": length,
            "fanout": trie.fanout,
            "max_depth": trie.max_depth,
        },
    }
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    catalog = assets.prepared.catalog
    (tmp / "config.yaml").write_text(yaml.safe_dump(saved_cfg, sort_keys=False))
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer.to_json()))
    (tmp / "catalog.json").write_text(
        json.dumps(
            {
                "item_ids": list(catalog.item_ids),
                "titles": list(catalog.titles),
                "source_ids": catalog.source_ids,
            }
        )
    )
    (tmp / "index.json").write_text(
        json.dumps(
            {
                "kind": assets.index.kind,
                "spellings": assets.index.spell_all(),
                "tokens": [list(p) for p in decoder.pool],
            }
        )
    )
    save_arrays(tmp / "trie.npz", trie_arrays)
    save_arrays(tmp / "weights.npz", weights)
    (tmp / "recommend.stablehlo").write_bytes(exported.serialize())
    (tmp / "recommend.json").write_text(json.dumps(spec, indent=2))
    write_manifest(
        tmp,
        {
            "recsys_jax_version": _version("recsys_jax"),
            "jax_version": jax.__version__,
            "jaxlib_version": _version("jaxlib"),
            "flax_version": _version("flax"),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "checkpoint": {"path": str(checkpoint), "step": step},
            "dtype": DTYPES[dtype],
            "lora_merged": bool(merge and cfg.model.lora_rank),
            "lora_rank": model_cfg.lora_rank,
            "num_items": len(catalog),
            "num_parameters": int(sum(v.size for v in weights.values())),
        },
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(p.stat().st_size for p in out.iterdir())
    log(f"[export] wrote {out} ({size / 1e6:.1f} MB) in {time.time() - start:.1f} s")
    return out


def _platforms(text: str) -> list[str]:
    """argparse type of --platforms: checked before the checkpoint is loaded."""
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in names if p not in EXPORT_PLATFORMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown platform(s) {unknown or [text]}; choose from "
            f"{', '.join(EXPORT_PLATFORMS)} (comma-separated)"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_jax.export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="run dir or checkpoint step dir")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        default="f32",
        help="weight storage and (bf16) compute dtype",
    )
    parser.add_argument(
        "--merge-lora", action="store_true", help="fold LoRA adapters into the base weights"
    )
    parser.add_argument(
        "--beam", type=positive_int, default=20, help="beam width = largest k served"
    )
    parser.add_argument("--length-penalty", type=float, default=0.0)
    parser.add_argument(
        "--platforms",
        type=_platforms,
        default=",".join(ALL_PLATFORMS),
        help=f"comma-separated jax.export platforms to lower for ({', '.join(EXPORT_PLATFORMS)})",
    )
    parser.add_argument("--data-dir", help="where the prepared dataset lives (default: as trained)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    args = parser.parse_args(argv)
    try:
        export_bundle(
            args.checkpoint,
            args.out,
            dtype=args.dtype,
            merge=args.merge_lora,
            beam=args.beam,
            length_penalty=args.length_penalty,
            platforms=args.platforms,
            data_dir=args.data_dir,
            overwrite=args.overwrite,
        )
    except (DataError, ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        return report_error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
