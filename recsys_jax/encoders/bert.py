"""A BERT-family text encoder in Flax NNX that loads a local Hugging Face folder.

    model = load_bert("path/to/all-MiniLM-L6-v2")      # config.json + model.safetensors
    hidden = model(token_ids, attention_mask)          # [B, L] int32 each -> [B, L, H] float32

The architecture is the original BERT encoder: word + absolute position + token-type
embeddings and a LayerNorm, then post-LayerNorm layers (self-attention with a padding mask,
residual, LayerNorm; dense -> GELU -> dense, residual, LayerNorm). The pooler head is not
used (sentence embeddings mean-pool the last hidden states; see `text_embeddings.py`).

Parameter names follow the checkpoint's (`encoder.layer.3.attention.self.query.weight`, ...)
so the loader is one table; checkpoints saved from a `BertFor...` head model carry a `bert.`
prefix, which is accepted too. The encoder is frozen preprocessing run on one device, so its
parameters carry no logical axis names (the GLM's sharding rules never see it).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# Activations by config.json's `hidden_act`: "gelu" in BERT checkpoints is the exact (erf) GELU.
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_hf(cls, data: dict, where: str = "config.json") -> BertConfig:
        """From a Hugging Face `config.json` dict; refuses what this encoder cannot run."""
        model_type = data.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(
                f"{where}: model_type {model_type!r} is not supported; the encoder "
                f"runs BERT checkpoints (model_type 'bert')"
            )
        position_type = data.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"{where}: position_embedding_type {position_type!r} is not "
                f"supported (only 'absolute')"
            )
        try:
            cfg = cls(
                vocab_size=int(data["vocab_size"]),
                hidden_size=int(data["hidden_size"]),
                num_layers=int(data["num_hidden_layers"]),
                num_heads=int(data["num_attention_heads"]),
                intermediate_size=int(data["intermediate_size"]),
                max_positions=int(data["max_position_embeddings"]),
                type_vocab_size=int(data.get("type_vocab_size", 2)),
                layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
                hidden_act=str(data.get("hidden_act", "gelu")),
            )
        except KeyError as err:
            raise ValueError(f"{where} has no {err.args[0]!r}; is this a BERT config?") from None
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"{where}: hidden_act {cfg.hidden_act!r} is not supported; choose "
                f"one of {sorted(_ACTIVATIONS)}"
            )
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError(
                f"{where}: hidden_size {cfg.hidden_size} is not divisible by "
                f"num_attention_heads {cfg.num_heads}"
            )
        return cfg

    @classmethod
    def from_folder(cls, folder) -> BertConfig:
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: an encoder folder holds config.json, "
                f"model.safetensors and tokenizer.json"
            )
        return cls.from_hf(json.loads(path.read_text()), str(path))


def _zeros(shape):
    return nnx.Param(jnp.zeros(shape, jnp.float32))


def _normal(rngs, shape):
    return nnx.Param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32))


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias = _zeros((dim,))

    def __call__(self, x):
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight[...] + self.bias[...]


class Linear(nnx.Module):
    """y = x @ kernel + bias; kernel is [in, out] (the checkpoint's [out, in] transposed)."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.kernel = _normal(rngs, (d_in, d_out))
        self.bias = _zeros((d_out,))

    def __call__(self, x):
        return x @ self.kernel[...] + self.bias[...]


class Embeddings(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.word = _normal(rngs, (cfg.vocab_size, cfg.hidden_size))
        self.position = _normal(rngs, (cfg.max_positions, cfg.hidden_size))
        self.token_type = _normal(rngs, (cfg.type_vocab_size, cfg.hidden_size))
        self.norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)

    def __call__(self, ids):
        # Single-segment input: every token has token type 0.
        x = (
            jnp.take(self.word[...], ids, axis=0)
            + self.position[...][None, : ids.shape[1]]
            + self.token_type[...][0]
        )
        return self.norm(x)


class Layer(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        h, f = cfg.hidden_size, cfg.intermediate_size
        self.num_heads = cfg.num_heads
        self.activation = cfg.hidden_act
        self.query = Linear(h, h, rngs=rngs)
        self.key = Linear(h, h, rngs=rngs)
        self.value = Linear(h, h, rngs=rngs)
        self.attention_output = Linear(h, h, rngs=rngs)
        self.attention_norm = LayerNorm(h, cfg.layer_norm_eps)
        self.intermediate = Linear(h, f, rngs=rngs)
        self.output = Linear(f, h, rngs=rngs)
        self.output_norm = LayerNorm(h, cfg.layer_norm_eps)

    def __call__(self, x, mask):
        """x [B, L, H], mask bool [B, L] (True = real token) -> [B, L, H]."""
        b, length, h = x.shape
        split = lambda y: y.reshape(b, length, self.num_heads, h // self.num_heads)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(h // self.num_heads)
        # Padding keys are never attended; a padding query's row is garbage but masked later.
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        context = jnp.einsum("bnqk,bknd->bqnd", jax.nn.softmax(scores, axis=-1), v)
        x = self.attention_norm(x + self.attention_output(context.reshape(b, length, h)))
        ffn = self.output(_ACTIVATIONS[self.activation](self.intermediate(x)))
        return self.output_norm(x + ffn)


class BertEncoder(nnx.Module):
    """`model(ids, mask)`: ids int [B, L], mask [B, L] (1 = token, 0 = padding) -> [B, L, H]."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, rngs=rngs)
        self.layers = nnx.List([Layer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def __call__(self, ids, mask):
        if ids.shape[1] > self.cfg.max_positions:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds the encoder's "
                f"{self.cfg.max_positions} positions"
            )
        mask = jnp.asarray(mask).astype(bool)
        x = self.embeddings(ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x


def checkpoint_names(model: BertEncoder) -> dict[str, tuple[nnx.Variable, bool]]:
    """Checkpoint tensor name -> (our parameter, whether the tensor is stored transposed)."""
    e = model.embeddings
    names = {
        "embeddings.word_embeddings.weight": (e.word, False),
        "embeddings.position_embeddings.weight": (e.position, False),
        "embeddings.token_type_embeddings.weight": (e.token_type, False),
        "embeddings.LayerNorm.weight": (e.norm.weight, False),
        "embeddings.LayerNorm.bias": (e.norm.bias, False),
    }
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}."
        linears = {
            "attention.self.query": layer.query,
            "attention.self.key": layer.key,
            "attention.self.value": layer.value,
            "attention.output.dense": layer.attention_output,
            "intermediate.dense": layer.intermediate,
            "output.dense": layer.output,
        }
        for name, linear in linears.items():
            names[p + name + ".weight"] = (linear.kernel, True)  # torch Linear: [out, in]
            names[p + name + ".bias"] = (linear.bias, False)
        for name, norm in {
            "attention.output.LayerNorm": layer.attention_norm,
            "output.LayerNorm": layer.output_norm,
        }.items():
            names[p + name + ".weight"] = (norm.weight, False)
            names[p + name + ".bias"] = (norm.bias, False)
    return names


def load_bert(folder) -> BertEncoder:
    """A `BertEncoder` with the weights of a Hugging Face folder (config.json + model.safetensors).

    Raises ValueError naming the tensor when one is missing or has the wrong shape.
    """
    from safetensors import safe_open

    folder = Path(folder)
    cfg = BertConfig.from_folder(folder)
    path = folder / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (only safetensors weights are read; convert "
            f"a pytorch_model.bin with the `safetensors` package first)"
        )
    model = nnx.eval_shape(lambda: BertEncoder(cfg, rngs=nnx.Rngs(0)))  # shapes, no memory
    with safe_open(str(path), framework="numpy") as f:
        stored = set(f.keys())
        for name, (param, transposed) in checkpoint_names(model).items():
            key = name if name in stored else f"bert.{name}"
            if key not in stored:
                raise ValueError(
                    f"{path} has no tensor {name!r} (nor 'bert.{name}'), which "
                    f"config.json ({cfg.num_layers} layers) requires; is this a "
                    f"BERT checkpoint?"
                )
            stored_value = np.asarray(f.get_tensor(key), np.float32)
            value = stored_value.T if transposed else stored_value
            if value.shape != tuple(param.shape):
                shown = tuple(reversed(param.shape)) if transposed else tuple(param.shape)
                raise ValueError(
                    f"{path}: tensor {key!r} has shape {stored_value.shape}"
                    f", but config.json (hidden_size {cfg.hidden_size}, "
                    f"intermediate_size {cfg.intermediate_size}, vocab_size "
                    f"{cfg.vocab_size}) needs {shown}"
                )
            param.set_value(jnp.asarray(value))
    return model
