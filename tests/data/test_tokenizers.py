"""visionzoo.data.tokenizers: CLIP's BPE equals open_clip's tokenizer, trained vocabularies,
save/load, errors."""

from __future__ import annotations

import gzip
import json

import ftfy
import pytest
import torch
from open_clip import tokenizer as oc_tokenizer

from visionzoo.data.shapes import ShapesGenerator
from visionzoo.data.tokenizers import (
    BLIP_SPECIAL_TOKENS,
    CLIP_SPECIAL_TOKENS,
    TextTokenizer,
    clip_bpe_tokenizer,
    clip_clean,
    load_tokenizer,
    train_tokenizer,
)
from visionzoo.errors import DataError, VisionZooError

# Punctuation, numbers, contractions, whitespace, accents (composed and combining), curly
# quotes, ligatures, full-width forms, emoji, CJK, Greek, Cyrillic, HTML entities, control
# characters, special-token text, the empty string and texts longer than 77 tokens.
CORPUS = [
    "a photo of a cat.",
    "A Photo Of A DOG!",
    "Two dogs playing in the snow, 2 balls and 13 sticks.",
    "The year 1999 was 100% great; pi = 3.14159...",
    "don't won't I'm you're we've they'll he'd it's",
    "hello,world!!! ??? ... --- ***",
    "  leading and   trailing\twhitespace\n\nnewlines  ",
    "naïve café résumé façade",
    "cafe\u0301 with a combining accent",
    "“curly quotes” and ‘single ones’",
    "ﬁne ﬂowers in ＦＵＬＬ　ｗｉｄｔｈ１２３",
    "emoji 🐶🐱 and 👍🏽 skin tones",
    "中文字符和日本語のテキスト",
    "Ελληνικά κείμενα ΣΟΦΙΑ",
    "русский текст, ёлка",
    "&amp; &lt;3 &quot;html&quot; &amp;amp;",
    "tabs\tand\u00a0non-breaking\u2003spaces",
    "email me at someone@example.com or visit https://example.org/path?q=1",
    "#hashtag @mention $100 ^caret ~tilde `backtick`",
    "a" * 40,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "<start_of_text> literally in text <end_of_text>",
    "",
    "!",
    "x²  ½ ① Ⅻ",
    "numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12",
    " ".join(["word"] * 90),
    "a very long caption " + " ".join(f"token{i}" for i in range(60)) + " that keeps going.",
    "Mixed CASE, punctuation; colons: and (parentheses) [brackets] {braces}",
    "the quick brown fox jumps over the lazy dog",
    "control\x00chars\x1b and \x7f delete",
]


@pytest.fixture(scope="module")
def clip_tok() -> TextTokenizer:
    return clip_bpe_tokenizer(oc_tokenizer.default_bpe())


@pytest.fixture(scope="module")
def captions() -> list[str]:
    gen = ShapesGenerator(64)
    return [gen.sample("train", i)["caption"] for i in range(120)]


# --- CLIP's BPE ----------------------------------------------------------------------------------


def test_clip_bpe_ids_equal_open_clip(clip_tok):
    expected = oc_tokenizer.tokenize(CORPUS)  # (31, 77)
    got = clip_tok(CORPUS)
    assert got.dtype == torch.long and got.shape == expected.shape == (len(CORPUS), 77)
    assert torch.equal(got, expected)
    # Another context length, and single strings.
    assert torch.equal(clip_tok(CORPUS, context_length=16), oc_tokenizer.tokenize(CORPUS, 16))
    assert torch.equal(clip_tok("A cat."), oc_tokenizer.tokenize("A cat."))
    assert clip_tok.vocab_size == 49408
    assert (clip_tok.sot_token_id, clip_tok.eot_token_id, clip_tok.pad_token_id) == (
        49406,
        49407,
        0,
    )


def test_truncation_keeps_end_of_text(clip_tok):
    long = " ".join(["word"] * 90)
    row = clip_tok(long)[0]
    assert row[0] == 49406 and row[-1] == 49407 and (row[1:-1] != 0).all()
    # The mask marks every position of a full row; a short row's padding is masked out.
    batch = clip_tok.batch([long, "a cat"])
    assert batch.attention_mask[0].all()
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 1] + [0] * 73
    assert batch.input_ids[1, 3] == 49407


def test_clip_decode_round_trip(clip_tok):
    assert clip_tok.decode(clip_tok("A photo of a CAT")[0]) == "a photo of a cat"
    assert clip_tok.decode(clip_tok("naïve café")[0]) == "naïve café"
    assert clip_tok.decode_batch(clip_tok(["one dog", "two cats"])) == ["one dog", "two cats"]


def test_fix_text_hook_gives_ftfys_mojibake_repair():
    broken = "naÃ¯ve cafÃ© â€œquotedâ€\x9d"
    assert clip_clean(broken, ftfy.fix_text) == 'naïve café "quoted"'
    tok = clip_bpe_tokenizer(oc_tokenizer.default_bpe(), fix_text=ftfy.fix_text)
    assert torch.equal(tok(broken), oc_tokenizer.tokenize(broken))
    # Departure: without ftfy, the mojibake stays (and the ids differ).
    assert clip_clean(broken).startswith("naã¯ve")


def test_plain_text_merges_file(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version: 0.2\nh e</w>\nc a\nca t</w>\n", encoding="utf-8")
    tok = clip_bpe_tokenizer(path, num_merges=None, context_length=8)
    assert tok.vocab_size == 512 + 3 + 2
    assert tok.token_to_id("he</w>") == 512 and tok.token_to_id("cat</w>") == 514
    assert tok.encode("he cat") == [512, 514]
    assert tok("he cat").tolist() == [[515, 512, 514, 516, 0, 0, 0, 0]]
    # gzip is recognised by its magic bytes whatever the suffix.
    gz = tmp_path / "merges.bin"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert clip_bpe_tokenizer(gz, num_merges=None).encode("he cat") == [512, 514]


def test_merges_file_errors(tmp_path):
    with pytest.raises(DataError, match="nothere.txt does not exist"):
        clip_bpe_tokenizer(tmp_path / "nothere.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("#version\na b c\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.txt: merge 1 is 'a b c'"):
        clip_bpe_tokenizer(bad, num_merges=None)
    short = tmp_path / "short.txt"
    short.write_text("#version\na b\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds 1 merges, fewer than the num_merges=48894"):
        clip_bpe_tokenizer(short)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="binary.txt is not UTF-8"):
        clip_bpe_tokenizer(binary)


# --- trained vocabularies ------------------------------------------------------------------------


def test_trained_clip_style_bpe(captions, tmp_path):
    tok = train_tokenizer(captions, vocab_size=200, style="clip", context_length=32)
    for i, token in enumerate(CLIP_SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i
    assert (tok.pad_token_id, tok.sot_token_id, tok.eot_token_id) == (0, 1, 2)
    assert 4 < tok.vocab_size <= 200
    ids = tok(captions[:8])
    assert ids.shape == (8, 32) and (ids[:, 0] == 1).all()
    # Every row holds exactly one end token, followed only by padding.
    ends = (ids == 2).int().argmax(dim=1)
    assert ((ids == 2).sum(dim=1) == 1).all()
    for row, end in zip(ids, ends.tolist(), strict=True):
        assert (row[end + 1 :] == 0).all() and (row[1:end] > 3).all()
    plain = next(c for c in captions if "," not in c)
    assert tok.decode(tok(plain)[0]) == plain
    # CLIP's cleaning applies: case and spacing do not matter.
    assert torch.equal(tok(" A  LARGE red Circle "), tok("a large red circle"))
    # An unseen character becomes <unk>.
    assert tok.token_to_id("<unk>") in tok.encode("a large red circle zzz")

    path = tok.save(tmp_path / "run" / "tokenizer.json")
    again = load_tokenizer(path)
    assert again.context_length == 32 and again.vocab_size == tok.vocab_size
    assert torch.equal(again(captions), tok(captions))


def test_trained_blip_style_wordpiece(captions, tmp_path):
    tok = train_tokenizer(captions, vocab_size=150, style="blip")
    for i, token in enumerate(BLIP_SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 2, 3)
    assert tok.context_length == 35
    batch = tok.batch(captions[:4], context_length=40)
    assert batch.input_ids.shape == (4, 40)
    assert torch.equal(batch.attention_mask.bool(), batch.input_ids != 0)
    assert tok.decode(tok(captions[0])[0]) == captions[0]
    # WordPiece: an unseen word is [UNK] (id 1).
    assert tok.encode("a zebra") == [tok.token_to_id("a"), 1]
    again = TextTokenizer.load(tok.save(tmp_path / "tok.json"))
    assert torch.equal(again(captions), tok(captions))
    assert again.style == "blip"


def test_train_tokenizer_errors(captions, tmp_path):
    with pytest.raises(VisionZooError, match="vocab_size must be an integer > 4"):
        train_tokenizer(captions, vocab_size=3)
    with pytest.raises(VisionZooError, match="style must be one of clip, blip"):
        train_tokenizer(captions, vocab_size=100, style="bert")
    with pytest.raises(VisionZooError, match="algorithm must be one of bpe, wordpiece"):
        train_tokenizer(captions, vocab_size=100, algorithm="unigram")
    with pytest.raises(VisionZooError, match="single string"):
        train_tokenizer("a caption", vocab_size=100)
    with pytest.raises(VisionZooError, match="no texts"):
        train_tokenizer([], vocab_size=100)
    with pytest.raises(VisionZooError, match="context_length must be an integer >= 2"):
        train_tokenizer(captions, vocab_size=100, context_length=1)
    tok = train_tokenizer(captions, vocab_size=100)
    with pytest.raises(VisionZooError, match="texts must be strings, got int"):
        tok(["a", 3])


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="missing.json does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {}}), encoding="utf-8")
    with pytest.raises(DataError, match="other.json is not a visionzoo tokenizer file"):
        load_tokenizer(other)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="cannot read tokenizer file .*broken.json"):
        load_tokenizer(broken)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text(json.dumps({"format": "visionzoo-tokenizer", "style": "clip"}))
    with pytest.raises(DataError, match="corrupt.json is corrupt"):
        load_tokenizer(corrupt)
