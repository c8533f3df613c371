"""Import a public pretrained checkpoint as a recsys_jax checkpoint.

    python -m recsys_jax.convert --from glm --checkpoint PATH --out DIR [--tokenizer FILE]
        [--special-token NAME=ID ...]

PATH is a GLM checkpoint in its Hugging Face layout (config.json + safetensors or a PyTorch
state dict; see `recsys_jax.model.glm_import`). DIR becomes a run directory with one checkpoint
(step 0) that `python -m recsys_jax.train ... train.init_from=DIR` starts from: every
parameter of the model, the model config, and the pretrained text vocabulary (tokenizer.json,
GPT-2 vocab.json + merges.txt, or a SentencePiece .model; see `recsys_jax.text_vocab`) with the
ids the checkpoint trained for GLM's [MASK], [sMASK], [gMASK], <|startofpiece|>,
<|endofpiece|> and <|endoftext|> (read from its added-token files, or given with
--special-token). It holds no item index (that is fit on a dataset's training split), so the
first run from it fits the index, appends the item tokens and any special token the checkpoint
lacks after the pretrained vocabulary and grows the word embedding by as many rows; only then
is it a full checkpoint for `recommend` / `evaluate`.
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
from recsys_jax.example import SPECIAL_TOKENS
from recsys_jax.model.glm_import import GLMImportError, load_glm_checkpoint
from recsys_jax.run.checkpoints import RunCheckpoints
from recsys_jax.text_vocab import (
    TextVocabError,
    find_pretrained_text,
    pretrained_special_ids,
    text_to_json,
)
from recsys_jax.tokenizer import Tokenizer, TokenizerError

SOURCES = ("glm",)


def convert_glm(
    checkpoint: str | Path,
    out: str | Path,
    tokenizer: str | Path | None = None,
    dtype: str = "float32",
    special_tokens: dict[str, int] | None = None,
    log=print,
) -> Path:
    """Writes `out`/checkpoints/0 (+ config.yaml, import.json) from a GLM checkpoint."""
    checkpoint, out = Path(checkpoint), Path(out)
    if (out / "checkpoints").exists():
        raise FileExistsError(f"{out}/checkpoints exists; choose a new --out directory")
    model_cfg, params = load_glm_checkpoint(checkpoint, dtype)
    log(
        f"[convert] {checkpoint}: {model_cfg.num_layers} layers x {model_cfg.hidden_size}, "
        f"{model_cfg.num_heads} heads, vocab {model_cfg.vocab_size}, "
        f"{model_cfg.max_positions} positions"
    )

    found = find_pretrained_text(Path(tokenizer) if tokenizer else checkpoint)
    assets: dict = {}
    if found is not None:
        text, source = found
        rows = model_cfg.vocab_size
        special_ids = pretrained_special_ids(checkpoint, text, rows, special_tokens)
        # Checks the vocabulary fits inside the pretrained embedding.
        Tokenizer.wrap_pretrained(text, rows, special_ids=special_ids)
        assets["pretrained_tokenizer"] = {
            "text": text_to_json(text),
            "vocab_size": rows,
            "special_ids": special_ids,
            "source": source,
        }
        missing = [t for t in SPECIAL_TOKENS if t not in special_ids]
        log(
            f"[convert] tokenizer {source} ({text.kind}, {text.size} tokens); reusing the "
            f"checkpoint's {', '.join(f'{t}={i}' for t, i in special_ids.items()) or 'no'} "
            f"special tokens; {', '.join(missing) or 'none'} and the item tokens get new ids "
            f"from {rows} on at fine-tuning time"
        )
    else:
        log(
            "[convert] no tokenizer given or found (--tokenizer tokenizer.json | vocab.json | "
            "FILE.model): the checkpoint's parameters are written, but training from it needs one"
        )

    cfg = dataclasses.replace(Config(), model=model_cfg)
    cfg.data.seq_len = min(cfg.data.seq_len, model_cfg.max_positions)
    config = configlib.to_dict(cfg)
    config["model"] = configlib.to_dict(model_cfg)
    meta = {
        "step": 0,
        "imported_from": str(checkpoint.resolve()),
        "source": "glm",
        "tokenizer": found[1] if found else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    ckpt = RunCheckpoints(out, async_save=False)
    # The layout `read_params` reads: trained params + frozen (empty: nothing is frozen yet).
    ckpt.save(0, {"train": {"params": params}, "frozen": {}}, {}, config, assets, meta)
    ckpt.close()
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    (out / "import.json").write_text(json.dumps(meta, indent=2))
    log(
        f"[convert] wrote {out}/checkpoints/0; fine-tune with "
        f"`python -m recsys_jax.train CONFIG train.init_from={out}`"
    )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recsys_jax.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from", dest="source", required=True, choices=SOURCES, help="checkpoint family"
    )
    parser.add_argument(
        "--checkpoint", required=True, help="directory with config.json and the weights"
    )
    parser.add_argument("--out", required=True, help="new run directory to write")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="the checkpoint's tokenizer: a tokenizer.json or a SentencePiece "
        ".model (default: found in --checkpoint: tokenizer.json, then "
        "vocab.json + merges.txt, then the one *.model file)",
    )
    parser.add_argument(
        "--special-token",
        action="append",
        default=[],
        metavar="NAME=ID",
        help="the checkpoint's id for a GLM special token (e.g. "
        "'<|startofpiece|>=50006'), where its files do not list it",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="compute dtype recorded in the model config (parameters are always stored in float32)",
    )
    args = parser.parse_args(argv)
    try:
        special = {}
        for item in args.special_token:
            name, sep, value = item.rpartition("=")
            if not sep or not value.strip().isdigit():
                raise TextVocabError(
                    f"--special-token {item!r}: expected NAME=ID, e.g. '[MASK]=50260'"
                )
            special[name] = int(value)
        convert_glm(args.checkpoint, args.out, args.tokenizer, args.dtype, special)
    except (
        GLMImportError,
        TokenizerError,
        TextVocabError,
        FileExistsError,
        FileNotFoundError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
