"""Import a public pretrained checkpoint as a recsys_jax checkpoint.

    python -m recsys_jax.convert --from glm --checkpoint PATH --out DIR [--tokenizer FILE.model]

PATH is a GLM checkpoint in its Hugging Face layout (config.json + safetensors or a PyTorch
state dict; see `recsys_jax.model.glm_import`). DIR becomes a run directory with one checkpoint
(step 0) that `python -m recsys_jax.train ... train.init_from=DIR` starts from: every
parameter of the model, the model config, and the pretrained SentencePiece vocabulary. It holds
no item index (that is fit on a dataset's training split), so the first run from it fits the
index, appends our special and item tokens after the pretrained vocabulary and grows the word
embedding by as many rows; only then is it a full checkpoint for `recommend` / `evaluate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from recsys_jax import configlib
from recsys_jax.config import Config
from recsys_jax.model.glm_import import GLMImportError, load_glm_checkpoint
from recsys_jax.tokenizer import Tokenizer, TokenizerError
from recsys_jax.training.checkpointing import RunCheckpoints, encode_bytes

SOURCES = ("glm",)


def find_tokenizer(checkpoint: Path) -> Path | None:
    """The checkpoint's SentencePiece model (GLM ships e.g. `cog-pretrain.model`), if exactly
    one `*.model` file is there."""
    found = sorted(checkpoint.glob("*.model"))
    return found[0] if len(found) == 1 else None


def convert_glm(checkpoint: str | Path, out: str | Path, tokenizer: str | Path | None = None,
                dtype: str = "float32", log=print) -> Path:
    """Writes `out`/checkpoints/0 (+ config.yaml, import.json) from a GLM checkpoint."""
    checkpoint, out = Path(checkpoint), Path(out)
    if (out / "checkpoints").exists():
        raise FileExistsError(f"{out}/checkpoints exists; choose a new --out directory")
    model_cfg, params = load_glm_checkpoint(checkpoint, dtype)
    log(f"[convert] {checkpoint}: {model_cfg.num_layers} layers x {model_cfg.hidden_size}, "
        f"{model_cfg.num_heads} heads, vocab {model_cfg.vocab_size}, "
        f"{model_cfg.max_positions} positions")

    tokenizer = Path(tokenizer) if tokenizer else find_tokenizer(checkpoint)
    assets: dict = {}
    if tokenizer is not None:
        spm_model = tokenizer.read_bytes()
        # Checks the model parses and fits inside the pretrained embedding.
        Tokenizer.wrap_pretrained(spm_model, model_cfg.vocab_size)
        assets["pretrained_tokenizer"] = {"spm_model": encode_bytes(spm_model),
                                          "vocab_size": model_cfg.vocab_size,
                                          "source": tokenizer.name}
        log(f"[convert] tokenizer {tokenizer}: wrapped at fine-tuning time (our special and item "
            f"tokens get ids from {model_cfg.vocab_size} on)")
    else:
        log("[convert] no SentencePiece tokenizer given or found (--tokenizer FILE.model): the "
            "checkpoint's parameters are written, but training from it needs one")

    cfg = dataclasses.replace(Config(), model=model_cfg)
    cfg.data.seq_len = min(cfg.data.seq_len, model_cfg.max_positions)
    config = configlib.to_dict(cfg)
    config["model"] = configlib.to_dict(model_cfg)
    meta = {"step": 0, "imported_from": str(checkpoint.resolve()), "source": "glm",
            "tokenizer": str(tokenizer) if tokenizer else None}
    out.mkdir(parents=True, exist_ok=True)
    ckpt = RunCheckpoints(out, async_save=False)
    # The layout `read_params` reads: trained params + frozen (empty: nothing is frozen yet).
    ckpt.save(0, {"train": {"params": params}, "frozen": {}}, {}, config, assets, meta)
    ckpt.close()
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    (out / "import.json").write_text(json.dumps(meta, indent=2))
    log(f"[convert] wrote {out}/checkpoints/0; fine-tune with "
        f"`python -m recsys_jax.train CONFIG train.init_from={out}`")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="checkpoint family")
    parser.add_argument("--checkpoint", required=True,
                        help="directory with config.json and the weights")
    parser.add_argument("--out", required=True, help="new run directory to write")
    parser.add_argument("--tokenizer", default=None,
                        help="SentencePiece model of the checkpoint (default: the one *.model "
                             "file in --checkpoint, if any)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="compute dtype recorded in the model config (parameters are "
                             "always stored in float32)")
    args = parser.parse_args(argv)
    try:
        convert_glm(args.checkpoint, args.out, args.tokenizer, args.dtype)
    except (GLMImportError, TokenizerError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
