"""Text vocabularies under the item-aware tokenizer: our own SentencePiece model, or a
pretrained checkpoint's (SentencePiece, GPT-2 byte-level BPE, any Hugging Face `tokenizer.json`).

A text vocabulary maps plain text (never our `<...>` atomic tokens) to ids in [0, size) and
back. `recsys_jax.tokenizer.Tokenizer` puts the GLM special tokens and the item tokens around it.

Where a pretrained checkpoint's files are found (`find_pretrained_text`), in this order:
`tokenizer.json` (a Hugging Face fast tokenizer), `vocab.json` + `merges.txt` (GPT-2 byte-level
BPE: the English GLM-2B/10B), one `*.model` (SentencePiece: the Chinese GLMs'
`cog-pretrain.model`). `pretrained_special_ids` reads the ids that checkpoint trained for GLM's
own special tokens, so a fine-tune reuses them instead of appending untrained rows.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import sentencepiece as spm

from recsys_jax.example import EOP, GMASK, MASK, PAD, SMASK, SOP


class TextVocabError(ValueError):
    pass


class SentencePieceText:
    kind = "sentencepiece"

    def __init__(self, model: bytes):
        self._model = bytes(model)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self._model)
        except RuntimeError as e:
            raise TextVocabError(f"not a SentencePiece model ({e})") from None
        self.size = self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def to_bytes(self) -> bytes:
        return self._model


class HuggingFaceText:
    """A `tokenizers.Tokenizer` (its JSON form). Encoding adds no special tokens (no [CLS] /
    [SEP] post-processing): prompts place GLM's specials themselves."""

    kind = "tokenizers"

    def __init__(self, tokenizer_json: bytes | str):
        from tokenizers import Tokenizer

        self._json = (
            tokenizer_json.decode() if isinstance(tokenizer_json, bytes) else tokenizer_json
        )
        try:
            self._tok = Tokenizer.from_str(self._json)
        except Exception as e:  # the Rust side raises its own exception type
            raise TextVocabError(f"not a Hugging Face tokenizer.json ({e})") from None
        self._tok.no_padding()
        self._tok.no_truncation()
        self.size = self._tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_gpt2_files(cls, vocab_json: Path, merges_txt: Path) -> HuggingFaceText:
        """GPT-2 byte-level BPE (vocab.json + merges.txt), no prefix space: the layout of the
        English GLM checkpoints. Byte-level, so decode(encode(text)) == text."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        try:
            bpe = models.BPE.from_file(str(vocab_json), str(merges_txt))
        except Exception as e:
            raise TextVocabError(
                f"{vocab_json} / {merges_txt}: not a BPE vocabulary ({e})"
            ) from None
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return cls(tok.to_str())

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def to_bytes(self) -> bytes:
        return self._json.encode()


TEXT_KINDS = {SentencePieceText.kind: SentencePieceText, HuggingFaceText.kind: HuggingFaceText}


def text_to_json(text) -> dict:
    return {"kind": text.kind, "model": base64.b64encode(text.to_bytes()).decode("ascii")}


def text_from_json(data: dict):
    """Inverse of `text_to_json`; a bare {"spm_model": b64} (checkpoints before text kinds
    existed) is a SentencePiece model."""
    if "spm_model" in data and "kind" not in data:
        return SentencePieceText(base64.b64decode(data["spm_model"]))
    kind = data.get("kind")
    if kind not in TEXT_KINDS:
        raise TextVocabError(f"unknown text vocabulary kind {kind!r}; known: {sorted(TEXT_KINDS)}")
    return TEXT_KINDS[kind](base64.b64decode(data["model"]))


def find_pretrained_text(path: Path) -> tuple[object, str] | None:
    """(text vocabulary, what was read) for a checkpoint folder or a tokenizer file; None if
    the folder holds none of the known layouts."""
    path = Path(path)
    if path.is_file():
        kind = HuggingFaceText if path.name.endswith(".json") else SentencePieceText
        return _read(path, lambda: kind(path.read_bytes())), path.name
    if (path / "tokenizer.json").is_file():
        file = path / "tokenizer.json"
        return _read(file, lambda: HuggingFaceText(file.read_bytes())), "tokenizer.json"
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return (
            HuggingFaceText.from_gpt2_files(path / "vocab.json", path / "merges.txt"),
            "vocab.json + merges.txt (GPT-2 BPE)",
        )
    models = sorted(path.glob("*.model"))
    if len(models) == 1:
        return _read(models[0], lambda: SentencePieceText(models[0].read_bytes())), models[0].name
    return None


def _read(path: Path, load):
    try:
        return load()
    except TextVocabError as e:
        raise TextVocabError(f"{path}: {e}") from None


# GLM's names for the special tokens our prompts use (`recsys_jax.example`), most specific first.
GLM_SPECIAL_NAMES = {
    MASK: ("[MASK]",),
    SMASK: ("[sMASK]",),
    GMASK: ("[gMASK]",),
    SOP: ("<|startofpiece|>", "<sop>"),
    EOP: ("<|endofpiece|>", "<eop>"),
    PAD: ("<|endoftext|>", "[PAD]", "<pad>"),
}


def _checkpoint_token_ids(folder: Path, text) -> dict[str, int]:
    """Token -> id from the checkpoint's added-token tables and its text vocabulary."""
    ids: dict[str, int] = {}

    def read(name):
        try:
            return json.loads((folder / name).read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TextVocabError(f"{folder / name}: not valid JSON ({e})") from None

    config = read("tokenizer_config.json") or {}
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and "content" in entry:
            ids.setdefault(entry["content"], int(key))
    ids.update({k: int(v) for k, v in (read("added_tokens.json") or {}).items()})
    for entry in (read("tokenizer.json") or {}).get("added_tokens", []):
        ids.setdefault(entry["content"], int(entry["id"]))
    if isinstance(text, HuggingFaceText):
        for names in GLM_SPECIAL_NAMES.values():
            for name in names:
                found = text.token_id(name)
                if found is not None:
                    ids.setdefault(name, found)
    return ids


def pretrained_special_ids(
    folder: Path, text, rows: int, explicit: dict[str, int] | None = None
) -> dict[str, int]:
    """Our special token -> the checkpoint's trained id for it, for those the checkpoint has.

    `explicit` ({our token or GLM name: id}) wins over what the files say (checkpoints whose
    tokenizer code, not files, assigns the ids). Ids must fall inside the `rows` pretrained
    embedding rows; two of our specials may not share an id."""
    known = _checkpoint_token_ids(Path(folder), text) if Path(folder).is_dir() else {}
    found: dict[str, int] = {}
    for ours, names in GLM_SPECIAL_NAMES.items():
        for name in names:
            if name in known:
                found[ours] = known[name]
                break
    for name, value in (explicit or {}).items():
        ours = next(
            (o for o, names in GLM_SPECIAL_NAMES.items() if name == o or name in names), None
        )
        if ours is None:
            raise TextVocabError(
                f"--special-token {name}: not a GLM special token; known: "
                f"{sorted(GLM_SPECIAL_NAMES)}"
            )
        found[ours] = int(value)
    check_special_ids(found, rows)
    return found


def check_special_ids(special_ids: dict[str, int], rows: int) -> None:
    bad = {t: i for t, i in special_ids.items() if not 0 <= i < rows}
    if bad:
        raise TextVocabError(
            f"special token ids {bad} fall outside the {rows} pretrained embedding rows"
        )
    if len(set(special_ids.values())) != len(special_ids):
        raise TextVocabError(f"two special tokens share an id: {special_ids}")
