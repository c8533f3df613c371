import pytest

from recsys_jax.example import SPECIAL_TOKENS
from recsys_jax.tokenizer import (
    ENTITY,
    TARGET_ENTITY,
    TEXT,
    Tokenizer,
    TokenizerError,
    train_sentencepiece,
)

CORPUS = [
    "Red Nail Polish, 0.5 Ounce",
    "Blue Shampoo for dry hair",
    "user_12 bought things",
    "Here is the purchase history of",
    "What to recommend next?",
] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(train_sentencepiece(CORPUS, vocab_size=400), ["<a_1>", "<b_2>"])


def test_vocabulary_layout(tok):
    assert tok.vocab_size == tok.text_size + len(SPECIAL_TOKENS) + 2
    assert tok.special.pad == tok.text_size
    assert tok.encode("[MASK]") == [tok.special.mask]
    assert tok.encode("<a_1><b_2>") == [tok.vocab_size - 2, tok.vocab_size - 1]


def test_encode_decode_is_exact(tok):
    text = "user_12 bought Red Nail Polish, <a_1><b_2>, Zebra（ｍｉｘ）!"  # byte fallback, no NFKC
    assert tok.decode(tok.encode(text)) == text


def test_unknown_atomic_token_is_an_error(tok):
    with pytest.raises(TokenizerError, match="unknown atomic token"):
        tok.encode("<item_99>")


def test_segments_give_entity_and_target_spans(tok):
    segs = [
        ("History: ", TEXT),
        ("Red Nail Polish", ENTITY),
        (", ", TEXT),
        ("Blue Shampoo", ENTITY),
        (". Next: ", TEXT),
        ("<a_1><b_2>", TARGET_ENTITY),
    ]
    ex = tok.encode_segments(segs, "2-3")
    assert ex.task == "2-3"
    assert len(ex.entity_spans) == 3 and ex.target_spans == [ex.entity_spans[-1]]
    for (s, e), (text, _) in zip(ex.entity_spans, [segs[1], segs[3], segs[5]]):
        assert tok.decode(ex.ids[s:e]) == text
    # An entity spells the same wherever it appears: context-free encoding.
    assert list(ex.ids[slice(*ex.entity_spans[0])]) == tok.encode("Red Nail Polish")
    assert tok.decode(ex.ids) == "".join(t for t, _ in segs)


def test_save_load_roundtrip(tok, tmp_path):
    tok.save(tmp_path / "tok")
    again = Tokenizer.load(tmp_path / "tok")
    assert again.vocab_size == tok.vocab_size and again.special == tok.special
    assert again.encode("Blue <b_2> hair") == tok.encode("Blue <b_2> hair")
    with pytest.raises(TokenizerError, match="no tokenizer"):
        Tokenizer.load(tmp_path / "missing")


def test_training_needs_text():
    with pytest.raises(TokenizerError):
        train_sentencepiece(["", "  "])


def test_decode_rejects_out_of_range(tok):
    with pytest.raises(TokenizerError):
        tok.decode([tok.vocab_size + 5])


def _pretrained_style_spm():
    """A SentencePiece model with the library's default settings (dummy prefix, NFKC), as a
    pretrained GLM ships one (e.g. cog-pretrain.model)."""
    import io

    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buffer, vocab_size=45, minloglevel=2
    )
    return buffer.getvalue()


def test_wrapping_a_pretrained_vocabulary_appends_after_its_ids(tmp_path):
    model = _pretrained_style_spm()
    pieces = Tokenizer(model).text_size
    rows = pieces + 7  # the checkpoint's own special tokens / padding rows
    tok = Tokenizer.wrap_pretrained(model, rows, ["<a_1>", "<b_2>"])
    assert tok.first_added_id == rows and tok.special.pad == rows
    assert tok.vocab_size == rows + len(SPECIAL_TOKENS) + 2
    assert tok.encode("<b_2>") == [tok.vocab_size - 1]
    ids = tok.encode("Red Nail Polish")
    assert ids and max(ids) < pieces  # text uses the pretrained pieces, unchanged
    assert tok.decode(ids + [pieces + 3, tok.special.mask]) == "Red Nail Polish"
    assert tok.decode([pieces + 3], skip_special=False) == f"<pretrained_{pieces + 3}>"
    tok.save(tmp_path / "tok")
    again = Tokenizer.load(tmp_path / "tok")
    assert again.first_added_id == rows and again.encode("<a_1>") == tok.encode("<a_1>")
    with pytest.raises(TokenizerError, match="smaller than its text model"):
        Tokenizer.wrap_pretrained(model, pieces - 1)
