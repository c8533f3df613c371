"""Pretrained text vocabularies: a GPT-2 byte-level BPE checkpoint (the English GLMs' layout)
wrapped by the item-aware tokenizer, reusing the checkpoint's trained special-token ids."""

import json

import pytest

from recsys_jax.example import EOP, GMASK, MASK, PAD, SMASK, SOP
from recsys_jax.text_vocab import (
    HuggingFaceText,
    SentencePieceText,
    TextVocabError,
    find_pretrained_text,
    pretrained_special_ids,
)
from recsys_jax.tokenizer import ENTITY, TARGET_ENTITY, TEXT, Tokenizer, TokenizerError

CORPUS = [
    "Red Nail Polish, 0.5 Ounce",
    "Blue Shampoo for dry hair",
    "user_12 bought things",
    "Here is the purchase history of",
    "What to recommend next?",
] * 20


@pytest.fixture()
def gpt2(tmp_path, gpt2_tokenizer_files):
    rows, added = gpt2_tokenizer_files(tmp_path / "glm")
    return tmp_path / "glm", rows, added


def test_gpt2_files_are_found_and_glm_specials_keep_their_trained_ids(gpt2):
    folder, rows, added = gpt2
    text, source = find_pretrained_text(folder)
    assert isinstance(text, HuggingFaceText) and "merges.txt" in source
    special_ids = pretrained_special_ids(folder, text, rows)
    assert special_ids == {
        MASK: added["[MASK]"],
        SMASK: added["[sMASK]"],
        GMASK: added["[gMASK]"],
        SOP: added["<|startofpiece|>"],
        EOP: added["<|endofpiece|>"],
        PAD: text.token_id("<|endoftext|>"),
    }
    tok = Tokenizer.wrap_pretrained(text, rows, ["<item_1>", "<item_2>"], special_ids)
    # Every special is the checkpoint's own: only the item tokens are new rows.
    assert tok.vocab_size == rows + 2
    assert tok.special.sop == added["<|startofpiece|>"] and tok.special.mask == added["[MASK]"]
    assert tok.encode("[MASK]<item_2>") == [added["[MASK]"], rows + 1]


def test_byte_level_bpe_round_trips_exactly_and_spans_hold(gpt2):
    folder, rows, _ = gpt2
    text, _ = find_pretrained_text(folder)
    tok = Tokenizer.wrap_pretrained(
        text, rows, ["<item_1>"], pretrained_special_ids(folder, text, rows)
    )
    sample = "user_12 bought Red Nail Polish, <item_1>, Zebra（ｍｉｘ） ünïcode!"
    assert tok.decode(tok.encode(sample)) == sample
    segs = [
        ("History: ", TEXT),
        ("Red Nail Polish", ENTITY),
        (". Next: ", TEXT),
        ("<item_1>", TARGET_ENTITY),
    ]
    ex = tok.encode_segments(segs)
    assert tok.decode(ex.ids) == "".join(t for t, _ in segs)
    assert tok.decode(ex.ids[slice(*ex.entity_spans[0])]) == "Red Nail Polish"
    # Specials decode to nothing by default; the checkpoint's unused rows are named on request.
    assert tok.decode([tok.special.sop] + tok.encode("Blue") + [tok.special.eop]) == "Blue"
    assert tok.decode([rows - 1], skip_special=False) == f"<pretrained_{rows - 1}>"
    with pytest.raises(TokenizerError):
        tok.decode([tok.vocab_size])


def test_tokenizer_json_gives_the_same_ids_as_vocab_and_merges(gpt2, tmp_path):
    folder, rows, _ = gpt2
    from_files, _ = find_pretrained_text(folder)
    (tmp_path / "fast").mkdir()
    (tmp_path / "fast" / "tokenizer.json").write_bytes(from_files.to_bytes())
    from_json, source = find_pretrained_text(tmp_path / "fast")
    assert source == "tokenizer.json"
    for line in CORPUS[:5] + ["unseen wordsmithing 42"]:
        assert from_json.encode(line) == from_files.encode(line)


def test_wrapped_tokenizer_survives_json_and_disk(gpt2, tmp_path):
    folder, rows, _ = gpt2
    text, _ = find_pretrained_text(folder)
    tok = Tokenizer.wrap_pretrained(
        text, rows, ["<item_1>"], pretrained_special_ids(folder, text, rows)
    )
    again = Tokenizer.from_json(json.loads(json.dumps(tok.to_json())))
    assert again.special == tok.special and again.vocab_size == tok.vocab_size
    assert again.encode("Blue <item_1> hair") == tok.encode("Blue <item_1> hair")
    tok.save(tmp_path / "saved")
    assert Tokenizer.load(tmp_path / "saved").special == tok.special


def test_special_ids_are_checked(gpt2):
    folder, rows, added = gpt2
    text, _ = find_pretrained_text(folder)
    explicit = pretrained_special_ids(folder, text, rows, {"<|endofpiece|>": 7, "<sop>": 9})
    assert explicit[EOP] == 7 and explicit[SOP] == 9 and explicit[MASK] == added["[MASK]"]
    with pytest.raises(TextVocabError, match="outside the"):
        pretrained_special_ids(folder, text, rows, {"[MASK]": rows})
    with pytest.raises(TextVocabError, match="share an id"):
        pretrained_special_ids(folder, text, rows, {"[MASK]": added["[sMASK]"]})
    with pytest.raises(TextVocabError, match="not a GLM special token"):
        pretrained_special_ids(folder, text, rows, {"[CLS]": 3})


def test_older_sentencepiece_only_json_still_loads():
    import base64

    from recsys_jax.tokenizer import train_sentencepiece

    model = train_sentencepiece(CORPUS, vocab_size=400)
    tok = Tokenizer.from_json(
        {"spm_model": base64.b64encode(model).decode("ascii"), "added_tokens": ["<a_1>"]}
    )
    assert isinstance(tok.text, SentencePieceText)
    assert tok.to_json()["text"]["kind"] == "sentencepiece"
    assert tok.decode(tok.encode("Blue <a_1>")) == "Blue <a_1>"


def test_unreadable_tokenizer_files_fail_clearly(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TextVocabError, match="tokenizer.json"):
        find_pretrained_text(tmp_path)
    assert find_pretrained_text(tmp_path / "empty_dir_that_is_missing") is None
