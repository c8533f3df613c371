"""Writes a tiny random-weight BERT folder in the Hugging Face layout, for fast encoder tests.

config.json + model.safetensors (checkpoint tensor names) + tokenizer.json (a WordPiece
vocabulary of letters, digits and a few words, built with the `tokenizers` package) +
sentence-transformers files (modules.json: Transformer, mean Pooling, Normalize).
Loaded by tests with importlib (the suite runs in importlib mode).
"""

import json
import string
from pathlib import Path

import numpy as np

WORDS = (
    "rose nail polish cream soap hair oil mask brush gel lip balm serum tea green argan "
    "musk clay cocoa body butter bamboo makeup ruby lacquer mint parfum face shade beauty "
    "novelty"
).split()
CONFIG = {
    "model_type": "bert",
    "vocab_size": None,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
}


def vocabulary():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    return specials + chars + [f"##{c}" for c in chars] + WORDS + [f"##{w}" for w in WORDS]


def tensors(cfg, rng):
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    normal = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
    out = {
        "embeddings.word_embeddings.weight": normal(cfg["vocab_size"], h),
        "embeddings.position_embeddings.weight": normal(cfg["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": normal(cfg["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": 1 + normal(h),
        "embeddings.LayerNorm.bias": normal(h),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for name, (d_out, d_in) in {
            "attention.self.query": (h, h),
            "attention.self.key": (h, h),
            "attention.self.value": (h, h),
            "attention.output.dense": (h, h),
            "intermediate.dense": (f, h),
            "output.dense": (h, f),
        }.items():
            out[p + name + ".weight"] = normal(d_out, d_in)
            out[p + name + ".bias"] = normal(d_out)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            out[p + name + ".weight"] = 1 + normal(h)
            out[p + name + ".bias"] = normal(h)
    out["pooler.dense.weight"] = normal(h, h)  # present in real checkpoints, unused
    return out


def write_tokenizer(path, vocab):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    tok.save(str(path))


def write_tiny_bert(
    folder,
    *,
    seed=0,
    prefix="",
    drop=None,
    reshape=None,
    max_seq_length=32,
    sentence_files=True,
    config_overrides=None,
):
    """Write the folder; `drop` leaves a tensor out, `reshape` = (name, shape) mis-shapes one."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    cfg = {**CONFIG, "vocab_size": len(vocab), **(config_overrides or {})}
    weights = tensors({**CONFIG, "vocab_size": len(vocab)}, np.random.default_rng(seed))
    if drop is not None:
        del weights[drop]
    if reshape is not None:
        name, shape = reshape
        weights[name] = np.zeros(shape, np.float32)
    save_file({prefix + k: v for k, v in weights.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    write_tokenizer(folder / "tokenizer.json", vocab)
    if sentence_files:
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
        )
        (folder / "modules.json").write_text(
            json.dumps(
                [
                    {
                        "idx": 0,
                        "name": "0",
                        "path": "",
                        "type": "sentence_transformers.models.Transformer",
                    },
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                    {
                        "idx": 2,
                        "name": "2",
                        "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize",
                    },
                ]
            )
        )
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": cfg["hidden_size"],
                    "pooling_mode_cls_token": False,
                    "pooling_mode_mean_tokens": True,
                    "pooling_mode_max_tokens": False,
                }
            )
        )
    return folder
