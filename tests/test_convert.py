"""`python -m recsys_jax.convert --from glm`: a GLM checkpoint in the public layout becomes a
run directory that `train.init_from` fine-tunes (LoRA), wrapping the pretrained vocabulary."""

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from recsys_jax.config import load_config
from recsys_jax.convert import main
from recsys_jax.example import SPECIAL_TOKENS
from recsys_jax.model.glm_import import convert_tensors, model_config
from recsys_jax.run.checkpoints import RunCheckpoints, read_params
from recsys_jax.training.trainer import Trainer


def _reference():
    path = Path(__file__).parent / "model" / "glm_numpy_reference.py"
    spec = importlib.util.spec_from_file_location("glm_numpy_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _reference()


def _flat(tree, prefix=""):
    for k, v in tree.items():
        if isinstance(v, dict) and "value" not in v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield prefix + str(k), np.asarray(v["value"] if isinstance(v, dict) else v)


def _pretrained_glm(folder, toy_p5):
    """A tiny GLM checkpoint with a default-settings SentencePiece model beside its weights."""
    text = (toy_p5 / "items.tsv").read_text().replace("\t", " ").splitlines()
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text * 3),
        model_writer=buffer,
        vocab_size=150,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    pieces = spm.SentencePieceProcessor(model_proto=buffer.getvalue()).get_piece_size()
    vocab = pieces + 5  # rows beyond the pieces: the checkpoint's own specials
    shape = dict(num_layers=1, hidden=32, vocab=vocab, max_sequence_length=128)
    weights = ref.random_glm_weights(**shape)
    ref.write_glm_checkpoint(folder, weights, ref.glm_config_json(heads=2, **shape))
    (folder / "cog-pretrain.model").write_bytes(buffer.getvalue())
    return weights, vocab


@pytest.mark.slow
def test_convert_then_lora_fine_tune_from_it(toy_p5, tmp_path, overrides, capsys):
    weights, vocab = _pretrained_glm(tmp_path / "glm", toy_p5)
    out = tmp_path / "imported"
    assert main(["--from", "glm", "--checkpoint", str(tmp_path / "glm"), "--out", str(out)]) == 0
    assert "cog-pretrain.model" in capsys.readouterr().out
    assert (out / "config.yaml").exists() and (out / "import.json").exists()
    cfg = model_config(
        ref.glm_config_json(num_layers=1, hidden=32, heads=2, vocab=vocab, max_sequence_length=128)
    )
    expected = dict(_flat(convert_tensors(weights, cfg)))
    saved = dict(_flat(read_params(out, 0)))
    assert sorted(saved) == sorted(expected)
    for name, value in expected.items():
        assert np.array_equal(saved[name], value), name

    run = tmp_path / "lora"
    train_cfg = load_config(
        None,
        overrides(
            toy_p5,
            tmp_path / "data",
            run,
            steps=2,
            **{
                "train.init_from": str(out),
                "train.lora_only": True,
                "model.lora_rank": 2,
                "model.max_positions": 129,
                "model.max_block_positions": 129,
                "data.seq_len": 128,
                "train.eval_every": 2,
                "train.checkpoint_every": 2,
            },
        ),
    )
    trainer = Trainer(train_cfg, log=lambda m: None)
    assert trainer.assets.tokenizer.first_added_id == vocab
    trainer.run()
    tuned = dict(_flat(read_params(run, 2)))
    grown = tuned["word_embeddings.embedding"]
    assert grown.shape == (trainer.assets.tokenizer.vocab_size, 32)
    added = trainer.assets.tokenizer.added_tokens
    assert grown.shape[0] == vocab + len(SPECIAL_TOKENS) + len(added)
    # LoRA-only: every pretrained weight is bit-identical, the new rows are fixed extras.
    assert np.array_equal(grown[:vocab], expected["word_embeddings.embedding"])
    for name, value in expected.items():
        if name != "word_embeddings.embedding":
            assert np.array_equal(tuned[name], value), name
    assets = RunCheckpoints(run).restore_json(2, "assets")
    assert "index" in assets and assets["tokenizer"]["first_added_id"] == vocab


def test_convert_errors_name_the_problem(toy_p5, tmp_path, capsys):
    weights, _ = _pretrained_glm(tmp_path / "glm", toy_p5)
    weights.pop("glm.transformer.layers.0.mlp.dense_h_to_4h.bias")
    ref.write_glm_checkpoint(
        tmp_path / "glm",
        weights,
        ref.glm_config_json(
            num_layers=1,
            hidden=32,
            heads=2,
            vocab=weights["glm.word_embeddings.weight"].shape[0],
            max_sequence_length=128,
        ),
    )
    args = ["--from", "glm", "--checkpoint", str(tmp_path / "glm"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert (
        "missing tensors: glm.transformer.layers.0.mlp.dense_h_to_4h.bias"
        in capsys.readouterr().err
    )
    assert main(args[:3] + [str(tmp_path / "nowhere")] + args[4:]) == 2
    assert "config.json: not found" in capsys.readouterr().err


@pytest.mark.slow
def test_english_glm_layout_reuses_its_trained_special_rows(
    toy_p5, tmp_path, overrides, gpt2_tokenizer_files, capsys
):
    """vocab.json + merges.txt + added_tokens.json (GLM-2B/10B): the fine-tune's [MASK],
    <|startofpiece|>, ... are the checkpoint's own embedding rows; only item tokens are new."""
    rows, added = gpt2_tokenizer_files(tmp_path / "glm")
    shape = dict(num_layers=1, hidden=32, vocab=rows, max_sequence_length=128)
    weights = ref.random_glm_weights(**shape)
    ref.write_glm_checkpoint(tmp_path / "glm", weights, ref.glm_config_json(heads=2, **shape))
    out = tmp_path / "imported"
    assert main(["--from", "glm", "--checkpoint", str(tmp_path / "glm"), "--out", str(out)]) == 0
    assert "GPT-2 BPE" in capsys.readouterr().out
    glm = ["--from", "glm", "--checkpoint", str(tmp_path / "glm"), "--out"]
    assert main(glm + [str(tmp_path / "x"), "--special-token", "[MASK]"]) == 2
    assert "expected NAME=ID" in capsys.readouterr().err
    assert main(glm + [str(tmp_path / "x"), "--special-token", "[CLS]=3"]) == 2
    assert "not a GLM special token" in capsys.readouterr().err
    # An explicit id wins over the checkpoint's files.
    assert main(glm + [str(tmp_path / "explicit"), "--special-token", "<|endofpiece|>=5"]) == 0
    saved = RunCheckpoints(tmp_path / "explicit").restore_json(0, "assets")
    assert saved["pretrained_tokenizer"]["special_ids"]["<eop>"] == 5

    cfg = load_config(
        None,
        overrides(
            toy_p5,
            tmp_path / "data",
            tmp_path / "run",
            steps=1,
            **{
                "train.init_from": str(out),
                "model.max_positions": 129,
                "model.max_block_positions": 129,
                "data.seq_len": 128,
            },
        ),
    )
    trainer = Trainer(cfg, log=lambda m: None)
    tok = trainer.assets.tokenizer
    assert (tok.special.mask, tok.special.sop, tok.special.eop) == (
        added["[MASK]"],
        added["<|startofpiece|>"],
        added["<|endofpiece|>"],
    )
    assert tok.vocab_size == rows + len(tok.added_tokens)
    table = np.asarray(trainer.state["params"]["word_embeddings"]["embedding"][...])
    assert table.shape == (rows + len(tok.added_tokens), 32)
    assert np.array_equal(table[:rows], weights["glm.word_embeddings.weight"])
