"""Greedy text generation through the cached loop equals step-by-step argmax of the full
forward pass; sampling is seeded; banned tokens never appear."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recsys_jax.decoding.generate import generate_text
from recsys_jax.decoding.inputs import answer_sample, decoder_inputs
from recsys_jax.example import SpecialIds, TokenizedExample
from recsys_jax.masking import MaskingConfig
from recsys_jax.model import GLM, ModelConfig

V = 40
SP = SpecialIds(pad=34, mask=35, smask=36, gmask=37, sop=38, eop=39)
CFG = ModelConfig(
    vocab_size=V,
    num_layers=2,
    num_heads=2,
    hidden_size=32,
    max_positions=64,
    max_block_positions=64,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
BANNED = (SP.pad, SP.mask, SP.smask, SP.gmask, SP.sop)


def _setup():
    model = GLM(CFG, rngs=nnx.Rngs(3))
    rng = np.random.default_rng(0)
    samples = [
        answer_sample(
            TokenizedExample(ids=rng.integers(2, 30, n)), SP, MaskingConfig(), answer_is_item=False
        )
        for n in (5, 9)
    ]
    inputs = decoder_inputs(samples, SP, 12)
    return model, inputs.prompt, inputs.mask_pos


@pytest.mark.slow
def test_greedy_equals_full_forward_argmax():
    model, prompt, mask_pos = _setup()
    graphdef, state = nnx.split(model)
    out, lengths = generate_text(
        graphdef,
        state,
        prompt,
        mask_pos,
        jax.random.key(0),
        max_new=6,
        eop=SP.eop,
        sop=SP.sop,
        banned=BANNED,
    )
    out = np.asarray(out)
    for b in range(2):
        n = int(prompt["segment_ids"][b].sum())
        part_b = [SP.sop]
        expected = []
        for _step in range(6):
            k = len(part_b)
            toks = np.concatenate([prompt["tokens"][b, :n], part_b])[None]
            pos = np.concatenate([prompt["positions"][b, :n], [mask_pos[b]] * k])[None]
            blk = np.concatenate([prompt["block_positions"][b, :n], np.arange(1, k + 1)])[None]
            pa = np.concatenate([np.ones(n), np.zeros(k)])[None].astype(np.int32)
            logits = np.asarray(
                model(
                    jnp.asarray(toks),
                    jnp.asarray(pos),
                    jnp.asarray(blk),
                    jnp.ones_like(jnp.asarray(toks)),
                    jnp.asarray(pa),
                )
            )[0, -1].copy()
            logits[list(BANNED)] = -np.inf
            token = int(np.argmax(logits))
            expected.append(token)
            if token == SP.eop:
                break
            part_b.append(token)
        got = list(out[b, : len(expected)])
        assert got == expected
        assert int(lengths[b]) == len([t for t in expected if t != SP.eop])
        assert not set(out[b].tolist()) & set(BANNED)


@pytest.mark.slow
def test_sampling_is_seeded():
    model, prompt, mask_pos = _setup()
    graphdef, state = nnx.split(model)
    run = lambda seed: np.asarray(
        generate_text(
            graphdef,
            state,
            prompt,
            mask_pos,
            jax.random.key(seed),
            max_new=6,
            eop=SP.eop,
            sop=SP.sop,
            temperature=1.0,
            banned=BANNED,
        )[0]
    )
    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2)) or not np.array_equal(run(1), run(3))
