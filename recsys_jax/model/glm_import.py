"""Public GLM checkpoints (Hugging Face layout, model type "glm") -> our GLM parameter tree.

A checkpoint directory holds `config.json` and the weights as `model.safetensors`,
`pytorch_model.bin`, or shards listed by `model.safetensors.index.json` /
`pytorch_model.bin.index.json`. Tensor names (optionally under a `glm.` prefix, as saved by
`GLMForConditionalGeneration`):

    word_embeddings.weight                              [vocab, hidden]
    transformer.position_embeddings.weight              [max_sequence_length + 1, hidden]
    transformer.block_position_embeddings.weight        [max_sequence_length + 1, hidden]
    transformer.layers.<i>.input_layernorm.{weight,bias}            [hidden]
    transformer.layers.<i>.attention.query_key_value.{weight,bias}  [3 hidden, hidden], [3 hidden]
    transformer.layers.<i>.attention.dense.{weight,bias}            [hidden, hidden], [hidden]
    transformer.layers.<i>.post_attention_layernorm.{weight,bias}   [hidden]
    transformer.layers.<i>.mlp.dense_h_to_4h.{weight,bias}          [4 hidden, hidden], [4 hidden]
    transformer.layers.<i>.mlp.dense_4h_to_h.{weight,bias}          [hidden, 4 hidden], [hidden]
    transformer.final_layernorm.{weight,bias}                       [hidden]

Linear weights are PyTorch's [out, in]; ours are [in, out] with heads split out, so each maps by
a transpose and a reshape. GLM builds both position tables with max_sequence_length + 1 rows
when block position encoding is on (the public checkpoints), and the output layer is the word
embedding (tied), as in our model. Everything is checked before anything is returned: a missing,
unexpected, mis-shaped or non-floating tensor is an error that names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsys_jax.model.config import ModelConfig

CONFIG_FILE = "config.json"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
TORCH_BIN, TORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
_REQUIRED_KEYS = (
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "vocab_size",
    "max_sequence_length",
)


class GLMImportError(ValueError):
    pass


# -- config --------------------------------------------------------------------------------


def read_glm_config(checkpoint: str | Path) -> dict:
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        raise GLMImportError(
            f"{path}: not found (a GLM checkpoint directory holds config.json and its weights)"
        )
    config = json.loads(path.read_text())
    config.setdefault("num_layers", config.get("num_hidden_layers"))
    missing = [k for k in _REQUIRED_KEYS if config.get(k) is None]
    if missing:
        raise GLMImportError(f"{path}: missing keys {missing}")
    if config.get("model_type", "glm") != "glm":
        raise GLMImportError(
            f"{path}: model_type {config['model_type']!r}; only 'glm' (GLM, "
            "Du et al. 2022) checkpoints can be imported"
        )
    # Variants whose extra tensors or position scheme our model does not have.
    if not config.get("block_position_encoding", True):
        raise GLMImportError(
            f"{path}: block_position_encoding is false; the import needs GLM's "
            "2D positions (both position tables)"
        )
    if config.get("relative_encoding"):
        raise GLMImportError(
            f"{path}: relative_encoding (Transformer-XL positions) is not supported"
        )
    if config.get("spell_length"):
        raise GLMImportError(
            f"{path}: spell_length={config['spell_length']} (P-tuning prompt "
            "encoder) is not supported"
        )
    return config


def model_config(glm_config: dict, dtype: str = "float32") -> ModelConfig:
    """Our ModelConfig for a GLM config.json (dropouts as GLM trained with them)."""
    hidden = int(glm_config["hidden_size"])
    positions = int(glm_config["max_sequence_length"]) + 1
    return ModelConfig(
        vocab_size=int(glm_config["vocab_size"]),
        num_layers=int(glm_config["num_layers"]),
        num_heads=int(glm_config["num_attention_heads"]),
        hidden_size=hidden,
        mlp_dim=4 * hidden,
        max_positions=positions,
        max_block_positions=positions,
        # Our one residual/embedding dropout rate: GLM's output dropout (GLM-10B uses 0.1 for
        # both its embedding and output dropouts).
        dropout_rate=float(glm_config.get("output_dropout_prob", 0.1)),
        attention_dropout_rate=float(glm_config.get("attention_dropout_prob", 0.1)),
        dtype=dtype,
    ).validate()


# -- the name map ----------------------------------------------------------------------------


def tensor_map(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...], Callable]]:
    """GLM name (no prefix) -> (its shape, our parameter path, GLM array -> our array)."""
    e, h, d, f = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.ffn_dim
    same = lambda w: w
    table = {
        "word_embeddings.weight": ((cfg.vocab_size, e), ("word_embeddings", "embedding"), same),
        "transformer.position_embeddings.weight": (
            (cfg.max_positions, e),
            ("position_embeddings", "embedding"),
            same,
        ),
        "transformer.block_position_embeddings.weight": (
            (cfg.max_block_positions, e),
            ("block_position_embeddings", "embedding"),
            same,
        ),
        "transformer.final_layernorm.weight": ((e,), ("final_layernorm", "scale"), same),
        "transformer.final_layernorm.bias": ((e,), ("final_layernorm", "bias"), same),
    }
    for i in range(cfg.num_layers):
        src, dst = f"transformer.layers.{i}.", ("layers", str(i))
        for norm in ("input_layernorm", "post_attention_layernorm"):
            table[f"{src}{norm}.weight"] = ((e,), dst + (norm, "scale"), same)
            table[f"{src}{norm}.bias"] = ((e,), dst + (norm, "bias"), same)
        # query_key_value: the output rows are [q; k; v] (GLM splits the 3*hidden outputs into
        # three equal chunks), and within each chunk head-major: head n owns rows n*d..(n+1)*d.
        # So out index = which * hidden + head * d + j, i.e. a reshape to (3, heads, head_dim).
        qkv = dst + ("attention", "query_key_value")
        table[f"{src}attention.query_key_value.weight"] = (
            (3 * e, e),
            qkv + ("kernel",),
            lambda w: w.T.reshape(e, 3, h, d),
        )
        table[f"{src}attention.query_key_value.bias"] = (
            (3 * e,),
            qkv + ("bias",),
            lambda b: b.reshape(3, h, d),
        )
        # dense reads the heads concatenated (head-major) back to hidden.
        out = dst + ("attention", "dense")
        table[f"{src}attention.dense.weight"] = (
            (e, e),
            out + ("kernel",),
            lambda w: w.T.reshape(h, d, e),
        )
        table[f"{src}attention.dense.bias"] = ((e,), out + ("bias",), same)
        for name, shape in (("dense_h_to_4h", (f, e)), ("dense_4h_to_h", (e, f))):
            mlp = dst + ("mlp", name)
            table[f"{src}mlp.{name}.weight"] = (shape, mlp + ("kernel",), lambda w: w.T)
            table[f"{src}mlp.{name}.bias"] = ((shape[0],), mlp + ("bias",), same)
    return table


def _prefix(names) -> str:
    """ "glm." when the checkpoint was saved from a model that wraps GLMModel as `.glm`."""
    return "glm." if any(n.startswith("glm.") for n in names) else ""


def convert_tensors(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """GLM tensors -> our nested parameter dict (float32), after checking every name, shape
    and dtype. Raises GLMImportError listing every problem found."""
    prefix = _prefix(tensors)
    expected = tensor_map(cfg)
    given = {n[len(prefix) :] if n.startswith(prefix) else "\0" + n: n for n in tensors}
    missing = [prefix + n for n in expected if n not in given]
    unexpected = [orig for n, orig in given.items() if n not in expected]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_names(missing)}")
    if unexpected:
        problems.append(
            f"unexpected tensors (not part of the GLM architecture): {_names(unexpected)}"
        )
    for name, (shape, _, _) in expected.items():
        if name not in given:
            continue
        array = tensors[given[name]]
        if tuple(array.shape) != shape:
            problems.append(
                f"{prefix + name}: shape {tuple(array.shape)}, expected {shape} from config.json"
            )
        if str(array.dtype) not in FLOAT_DTYPES:
            problems.append(
                f"{prefix + name}: dtype {array.dtype}, expected a floating type "
                f"({', '.join(FLOAT_DTYPES)})"
            )
    if problems:
        raise GLMImportError(
            "the GLM checkpoint does not match its config.json "
            f"(layers={cfg.num_layers}, hidden={cfg.hidden_size}, heads="
            f"{cfg.num_heads}, vocab={cfg.vocab_size}, positions="
            f"{cfg.max_positions}):\n  " + "\n  ".join(problems)
        )
    params: dict = {}
    for name, (_, path, transform) in expected.items():
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(
            transform(np.asarray(tensors[given[name]]).astype(np.float32))
        )
    return params


def _names(names, limit=8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# -- reading weight files --------------------------------------------------------------------


def read_glm_tensors(checkpoint: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as a numpy array (safetensors preferred over .bin)."""
    root = Path(checkpoint)
    if (root / SAFETENSORS).is_file():
        return _read_safetensors([root / SAFETENSORS])
    if (root / SAFETENSORS_INDEX).is_file():
        return _read_safetensors(_shards(root / SAFETENSORS_INDEX))
    if (root / TORCH_BIN).is_file():
        return _read_torch([root / TORCH_BIN])
    if (root / TORCH_INDEX).is_file():
        return _read_torch(_shards(root / TORCH_INDEX))
    raise GLMImportError(
        f"{root}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
        f"{TORCH_BIN} or {TORCH_INDEX})"
    )


def _shards(index_file: Path) -> list[Path]:
    weight_map = json.loads(index_file.read_text()).get("weight_map")
    if not weight_map:
        raise GLMImportError(f"{index_file}: no weight_map")
    files = [index_file.parent / f for f in dict.fromkeys(weight_map.values())]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise GLMImportError(f"{index_file}: shard files not found: {absent}")
    return files


def _read_safetensors(files) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file  # bfloat16 arrives as ml_dtypes.bfloat16

    tensors: dict[str, np.ndarray] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def _read_torch(files) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise GLMImportError(
            f"{files[0]} is a PyTorch state dict: reading it needs torch "
            "(pip install 'recsys_jax[torch]'), or convert the checkpoint to "
            "safetensors"
        ) from None
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        state = torch.load(str(f), map_location="cpu", weights_only=True)
        for name, value in state.items():
            # numpy has no bfloat16: go through float32 (exact).
            tensors[name] = value.float().numpy() if value.is_floating_point() else value.numpy()
    return tensors


def load_glm_checkpoint(checkpoint: str | Path, dtype: str = "float32") -> tuple[ModelConfig, dict]:
    """-> (our ModelConfig, our nested float32 parameter dict) for a GLM checkpoint directory."""
    cfg = model_config(read_glm_config(checkpoint), dtype)
    return cfg, convert_tensors(read_glm_tensors(checkpoint), cfg)


# -- growing the vocabulary ------------------------------------------------------------------


def resize_vocabulary(params: dict, rows: int, seed: int = 0) -> dict:
    """`params` (a saved tree) with `word_embeddings` grown to `rows` rows.

    New rows (our special and item tokens appended after a pretrained vocabulary) are drawn
    from a normal with the per-dimension mean and std of the pretrained rows: distinct from
    each other (they stay fixed if embeddings are frozen, as in a LoRA-only run) and on the
    scale the pretrained layers expect. Existing rows are kept bit-identical.
    """
    node = params["word_embeddings"]["embedding"]
    wrapped = isinstance(node, dict)
    table = np.asarray(node["value"] if wrapped else node)
    if rows < table.shape[0]:
        raise GLMImportError(
            f"cannot shrink the word embeddings from {table.shape[0]} to {rows} rows"
        )
    rng = np.random.default_rng(seed)
    base = table.astype(np.float32)
    new = base.mean(0) + base.std(0) * rng.standard_normal((rows - table.shape[0], table.shape[1]))
    grown = np.concatenate([table, new.astype(table.dtype)])
    out = dict(params)
    out["word_embeddings"] = dict(params["word_embeddings"])
    out["word_embeddings"]["embedding"] = {**node, "value": grown} if wrapped else grown
    return out
