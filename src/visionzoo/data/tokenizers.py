"""Text tokenizers for the vision-language models, built on the ``tokenizers`` library.

Two kinds, one wrapper (:class:`TextTokenizer`):

* **CLIP's byte-level BPE** (:func:`clip_bpe_tokenizer`), built from the merges file OpenAI
  released with CLIP (arXiv:2103.00020, §2.4: "a lower-cased byte pair encoding (BPE)
  representation of the text with a 49,152 vocab size"; ``bpe_simple_vocab_16e6.txt.gz``,
  which open_clip ships inside its package). Nothing of that file is copied into visionzoo: the
  caller passes its path. The ids equal OpenAI's / open_clip's tokenizer: 256 byte symbols, the
  same 256 with the end-of-word marker ``</w>``, one symbol per merge (48,894 merges), then
  ``<start_of_text>`` (49406) and ``<end_of_text>`` (49407); text is cleaned and lower-cased,
  split by CLIP's regular expression (contractions, runs of letters, *single* digits, runs of
  other symbols), mapped to byte symbols and merged by rank.
* **A vocabulary trained on a dataset's captions** (:func:`train_tokenizer`): character BPE
  with CLIP's pre-processing (``algorithm="bpe"``) or BERT-style WordPiece
  (``algorithm="wordpiece"``), with the special tokens of CLIP (``style="clip"``:
  ``<pad>`` 0, ``<start_of_text>`` 1, ``<end_of_text>`` 2, ``<unk>`` 3) or of BLIP
  (``style="blip"``: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4, ``[DEC]``
  5, ``[ENC]`` 6 — BLIP, arXiv:2201.12086 §3.1, starts the text encoder with [CLS], the
  image-grounded encoder with [ENC] and the decoder with [Decode]). It is saved as one JSON
  file in the run folder (:meth:`TextTokenizer.save`, :func:`load_tokenizer`).

Calling a tokenizer gives ``Tensor[N, L]`` (int64): ``[bos] + tokens + [eos]`` padded with the
pad id to the context length L; a text that is too long is truncated *keeping* the final
``eos`` (CLIP pools the text feature at its end-of-text token, so it must survive truncation).
:meth:`TextTokenizer.batch` also returns the attention mask (1 = real token), which BERT-style
encoders need; for OpenAI's vocabulary the pad id is 0, which is also the symbol ``!``, so the
mask cannot be recovered from the ids alone.

Departures from OpenAI's tokenizer, marked where they happen: its text cleaning runs
``ftfy.fix_text``; we apply the parts of it that matter for normal text (NFC, straight quotes,
Latin ligatures, full-width forms, control characters) without depending on ftfy, and skip its
mojibake repair — pass ``fix_text=ftfy.fix_text`` to :func:`clip_bpe_tokenizer` for the full
behaviour. Trained BPE vocabularies use character symbols (with an ``<unk>`` token), not bytes:
a byte alphabet would cost 512 entries of a caption vocabulary of a few hundred.

Shape glossary: N texts, L context length.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor

from ..errors import DataError, VisionZooError

__all__ = [
    "CLIP_SPECIAL_TOKENS",
    "BLIP_SPECIAL_TOKENS",
    "CLIP_NUM_MERGES",
    "TokenBatch",
    "TextTokenizer",
    "clip_clean",
    "clip_bpe_tokenizer",
    "train_tokenizer",
    "load_tokenizer",
]

# Special tokens of trained vocabularies, in id order (the trainer gives them ids 0, 1, ...).
CLIP_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<start_of_text>", "<end_of_text>", "<unk>")
BLIP_SPECIAL_TOKENS: tuple[str, ...] = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "[DEC]",
    "[ENC]",
)
# (pad, bos, eos) of each style.
_STYLE_TOKENS = {
    "clip": ("<pad>", "<start_of_text>", "<end_of_text>"),
    "blip": ("[PAD]", "[CLS]", "[SEP]"),
}
STYLES = tuple(_STYLE_TOKENS)
ALGORITHMS = ("bpe", "wordpiece")
_DEFAULT_CONTEXT = {"clip": 77, "blip": 35}  # CLIP's 77; BLIP's captioning max length 35

# OpenAI's vocabulary: 49,408 = 2 * 256 byte symbols + 48,894 merges + 2 special tokens; the
# merges file holds more lines than that, and the rest are unused.
CLIP_NUM_MERGES = 49152 - 256 - 2
_CLIP_SOT, _CLIP_EOT = "<start_of_text>", "<end_of_text>"
# CLIP's pre-tokenisation: contractions, letter runs, one digit at a time, other-symbol runs
# (whitespace is dropped). Applied to lower-cased text, so its IGNORECASE flag does not matter.
_CLIP_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_EOW = "</w>"  # end-of-word marker of CLIP's BPE symbols

_FORMAT = "visionzoo-tokenizer"


# --- text cleaning -------------------------------------------------------------------------------


def _build_fix_table() -> dict[int, str]:
    table: dict[int, str] = {}
    # Full-width ASCII forms and the ideographic space (CJK input methods) -> ASCII.
    for cp in range(0xFF01, 0xFF5F):
        table[cp] = chr(cp - 0xFF01 + 0x21)
    table[0x3000] = " "
    # Latin ligatures -> their letters (compatibility decomposition).
    for cp in (
        *range(0xFB00, 0xFB07),
        0x0132,
        0x0133,
        0x013F,
        0x0140,
        0x0149,
        *range(0x01C4, 0x01CD),
    ):
        table[cp] = unicodedata.normalize("NFKC", chr(cp))
    for cp in (0x01F1, 0x01F2, 0x01F3):
        table[cp] = unicodedata.normalize("NFKC", chr(cp))
    # Curly quotes -> straight ones.
    for cp in (0x02BC, 0x2018, 0x2019, 0x201A, 0x201B):
        table[cp] = "'"
    for cp in range(0x201C, 0x2020):
        table[cp] = '"'
    # Control characters other than whitespace are removed.
    for cp in (*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F):
        table[cp] = ""
    for cp, text in list(table.items()):
        # 'ŉ' decomposes to 'ʼn': straighten the apostrophe it produces too.
        table[cp] = text.replace("\u02bc", "'")
    return table


_FIX_TABLE = _build_fix_table()


def _light_fix_text(text: str) -> str:
    # Departure: the text-repair steps of ftfy.fix_text that matter for well-formed text, in
    # its order (ligatures, width, quotes, control characters, then NFC); no mojibake repair.
    return unicodedata.normalize("NFC", text.translate(_FIX_TABLE))


def clip_clean(text: str, fix_text: Callable[[str], str] | None = None) -> str:
    """CLIP's text cleaning: repair (``fix_text``, default a light ftfy-like fix), HTML unescape
    twice, collapse whitespace runs to one space, strip, lower-case."""
    text = (fix_text or _light_fix_text)(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


# --- the wrapper ---------------------------------------------------------------------------------


class TokenBatch(NamedTuple):
    """``input_ids`` Tensor[N, L] int64 and ``attention_mask`` Tensor[N, L] int64 (1 = token)."""

    input_ids: Tensor
    attention_mask: Tensor


def _check_context_length(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise VisionZooError(
            f"context_length must be an integer >= 2 (room for the start and end tokens), "
            f"got {value!r}"
        )
    return value


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus the conventions of a vision-language model.

    Args:
        tokenizer: the underlying ``tokenizers.Tokenizer`` (model, pre-tokenizer, decoder).
        pad_token, bos_token, eos_token: special tokens, which must be in its vocabulary.
        context_length: L of ``__call__`` when none is given.
        clean: "clip" to apply :func:`clip_clean` in Python before encoding (the Rust side then
            has no normaliser), "none" when the tokenizer normalises itself (BERT-style).
        style: "clip" or "blip" (informational, stored with the file).
        pad_token_id: overrides the pad token's id (OpenAI's vocabulary has no pad token and
            pads with 0).
        fix_text: text repair used by ``clean="clip"`` (not saved; e.g. ``ftfy.fix_text``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        pad_token: str | None,
        bos_token: str,
        eos_token: str,
        context_length: int,
        clean: str = "clip",
        style: str = "clip",
        pad_token_id: int | None = None,
        fix_text: Callable[[str], str] | None = None,
    ) -> None:
        if clean not in ("clip", "none"):
            raise VisionZooError(f"clean must be 'clip' or 'none', got {clean!r}")
        self.tokenizer = tokenizer
        self.context_length = _check_context_length(context_length)
        self.clean = clean
        self.style = style
        self.fix_text = fix_text
        self.pad_token, self.bos_token, self.eos_token = pad_token, bos_token, eos_token
        self.bos_token_id = self._require_id(bos_token)
        self.eos_token_id = self._require_id(eos_token)
        if pad_token_id is None:
            if pad_token is None:
                raise VisionZooError("a tokenizer needs a pad_token or a pad_token_id")
            pad_token_id = self._require_id(pad_token)
        self.pad_token_id = int(pad_token_id)

    def _require_id(self, token: str) -> int:
        idx = self.tokenizer.token_to_id(token)
        if idx is None:
            raise VisionZooError(f"special token {token!r} is not in the tokenizer's vocabulary")
        return int(idx)

    # CLIP's names for the start / end tokens.
    @property
    def sot_token_id(self) -> int:
        return self.bos_token_id

    @property
    def eot_token_id(self) -> int:
        return self.eos_token_id

    @property
    def vocab_size(self) -> int:
        """Number of ids (the text model's embedding rows must be at least this)."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.tokenizer.id_to_token(idx)

    # --- encoding --------------------------------------------------------------------------------

    def _prepare(self, text: str) -> str:
        if not isinstance(text, str):
            raise VisionZooError(f"texts must be strings, got {type(text).__name__}: {text!r}")
        return clip_clean(text, self.fix_text) if self.clean == "clip" else text

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without start, end or padding tokens."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens (the Rust tokenizer runs the batch)."""
        prepared = [self._prepare(t) for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(prepared, add_special_tokens=False)]

    def batch(self, texts: str | Sequence[str], context_length: int | None = None) -> TokenBatch:
        """``[bos] + ids + [eos]`` per text, truncated keeping ``eos``, padded to L; with the
        attention mask."""
        if isinstance(texts, str):
            texts = [texts]
        length = _check_context_length(
            self.context_length if context_length is None else context_length
        )
        encoded = self.encode_batch(texts)
        # Truncation as OpenAI's: keep the first L-2 tokens, the end token stays last. The rows
        # are padded as lists and converted once (a tensor a row cost more than the encoding).
        bos, eos, pad = self.bos_token_id, self.eos_token_id, self.pad_token_id
        rows = [[bos, *tokens[: length - 2], eos] for tokens in encoded]
        ids = torch.tensor(
            [row + [pad] * (length - len(row)) for row in rows], dtype=torch.long
        ).reshape(len(rows), length)
        mask = torch.tensor(
            [[1] * len(row) + [0] * (length - len(row)) for row in rows], dtype=torch.long
        ).reshape(len(rows), length)
        return TokenBatch(ids, mask)

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> Tensor:
        """Tensor[N, L] int64 token ids (see :meth:`batch`)."""
        return self.batch(texts, context_length).input_ids

    # --- decoding --------------------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | Tensor, skip_special_tokens: bool = True) -> str:
        """Text of one row of ids: a leading start token is dropped and the text ends at the
        first end token (the padding after it is not text)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            if ids and ids[0] == self.bos_token_id:
                ids = ids[1:]
            if self.eos_token_id in ids:
                ids = ids[: ids.index(self.eos_token_id)]
        text = self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return text.strip()

    def decode_batch(self, ids: Tensor | Sequence[Sequence[int]]) -> list[str]:
        """:meth:`decode` of each row."""
        return [self.decode(row) for row in ids]

    # --- files -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": 1,
            "style": self.style,
            "context_length": self.context_length,
            "clean": self.clean,
            "pad_token": self.pad_token,
            "pad_token_id": self.pad_token_id,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tokenizer": json.loads(self.tokenizer.to_str()),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tokenizer as one JSON file (e.g. ``runs/<run>/tokenizer.json``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()), encoding="utf-8")
        os.replace(tmp, path)  # never a half-written tokenizer next to a checkpoint
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextTokenizer:
        """Read a file written by :meth:`save`; DataError names the file when it is not one."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"tokenizer file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read tokenizer file {path}: {e}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "tokenizer state") -> TextTokenizer:
        """Rebuild a tokenizer from :meth:`to_dict` (e.g. the copy a checkpoint carries);
        DataError names ``source`` when ``data`` is not one."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DataError(
                f'{source} is not a visionzoo tokenizer file (no "format": "{_FORMAT}"); '
                "write one with TextTokenizer.save"
            )
        try:
            tokenizer = Tokenizer.from_str(json.dumps(data["tokenizer"]))
            return cls(
                tokenizer,
                pad_token=data["pad_token"],
                bos_token=data["bos_token"],
                eos_token=data["eos_token"],
                context_length=data["context_length"],
                clean=data["clean"],
                style=data["style"],
                pad_token_id=data["pad_token_id"],
            )
        except VisionZooError as e:  # e.g. a special token missing from the vocabulary
            raise DataError(f"{source}: {e}") from None
        except Exception as e:  # KeyError, TypeError, the Rust parser's errors
            raise DataError(f"{source} is corrupt: {e!r}") from None

    def __repr__(self) -> str:
        return (
            f"TextTokenizer(style={self.style!r}, vocab_size={self.vocab_size}, "
            f"context_length={self.context_length}, bos={self.bos_token_id}, "
            f"eos={self.eos_token_id}, pad={self.pad_token_id})"
        )


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Load a tokenizer saved with :meth:`TextTokenizer.save`."""
    return TextTokenizer.load(path)


# --- CLIP's byte-level BPE -----------------------------------------------------------------------


def _byte_symbols() -> list[str]:
    """The 256 byte symbols of GPT-2/CLIP byte-level BPE, in vocabulary order: bytes that are
    printable Latin-1 stand for themselves (in byte order); the other 68 are given the
    code points 256, 257, ... in byte order (so that no symbol is whitespace or a control)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    kept = set(printable)
    others = [b for b in range(256) if b not in kept]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _read_merges(path: Path, num_merges: int | None) -> list[tuple[str, str]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"BPE merges file {path} does not exist") from None
    except OSError as e:
        raise DataError(f"cannot read BPE merges file {path}: {e}") from None
    try:
        if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file's suffix
            raw = gzip.decompress(raw)
        lines = raw.decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"BPE merges file {path} is not UTF-8 text or gzip of it: {e}") from None
    # The first line is a header (OpenAI's reads '"bpe_simple_vocab_16e6.txt#version: 0.2').
    body = lines[1:]
    body = [line for line in body if line.strip()]
    if num_merges is not None:
        if len(body) < num_merges:
            raise DataError(
                f"BPE merges file {path} holds {len(body)} merges, fewer than the "
                f"num_merges={num_merges} asked for"
            )
        body = body[:num_merges]
    merges = []
    for lineno, line in enumerate(body, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise DataError(
                f"BPE merges file {path}: merge {lineno - 1} is {line!r}, expected two symbols "
                "separated by a space"
            )
        merges.append((parts[0], parts[1]))
    return merges


def clip_bpe_tokenizer(
    merges_path: str | os.PathLike,
    *,
    context_length: int = 77,
    num_merges: int | None = CLIP_NUM_MERGES,
    fix_text: Callable[[str], str] | None = None,
) -> TextTokenizer:
    """CLIP's tokenizer from its BPE merges file (``bpe_simple_vocab_16e6.txt.gz``, gzip or
    plain text; e.g. the one installed with open_clip).

    ``num_merges``: how many merges (in rank order) form the vocabulary; OpenAI's CLIP uses
    48,894 (``CLIP_NUM_MERGES``), None takes every line. The vocabulary is built exactly as
    OpenAI's: byte symbols, byte symbols + ``</w>``, one entry per merge, ``<start_of_text>``,
    ``<end_of_text>``; padding id 0.
    """
    merges = _read_merges(Path(merges_path), num_merges)
    symbols = _byte_symbols()
    tokens = symbols + [s + _EOW for s in symbols] + [a + b for a, b in merges]
    tokens += [_CLIP_SOT, _CLIP_EOT]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise DataError(f"BPE merges file {merges_path} produces duplicate vocabulary entries")
    tok = Tokenizer(
        models.BPE(
            vocab=vocab, merges=merges, end_of_word_suffix=_EOW, continuing_subword_prefix=""
        )
    )
    # Cleaning and lower-casing happen in Python (clip_clean), so no normaliser here.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            # Each piece's UTF-8 bytes -> byte symbols; no second regex split.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # Recognised in raw text as OpenAI's tokenizer does (its regex lists them first).
    tok.add_special_tokens([_CLIP_SOT, _CLIP_EOT])
    # "</w>" ends a word: turn it into the byte symbol of a space, then bytes -> text.
    tok.decoder = decoders.Sequence([decoders.Replace(_EOW, "\u0120"), decoders.ByteLevel()])
    return TextTokenizer(
        tok,
        pad_token=None,
        pad_token_id=0,  # OpenAI pads with 0 (also the id of "!")
        bos_token=_CLIP_SOT,
        eos_token=_CLIP_EOT,
        context_length=context_length,
        clean="clip",
        style="clip",
        fix_text=fix_text,
    )


# --- trained vocabularies ------------------------------------------------------------------------


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    style: str = "clip",
    algorithm: str | None = None,
    context_length: int | None = None,
    min_frequency: int = 1,
) -> TextTokenizer:
    """Learn a vocabulary of ``vocab_size`` entries from ``texts`` (a dataset's captions).

    Args:
        texts: the training captions (any iterable of str).
        vocab_size: the vocabulary size asked of the trainer, special tokens included; a small
            corpus may give fewer (all its symbols and merges), read :attr:`vocab_size`.
        style: "clip" (``<pad> <start_of_text> <end_of_text> <unk>`` = ids 0-3, CLIP's
            cleaning and pre-tokenisation) or "blip" (``[PAD] [UNK] [CLS] [SEP] [MASK] [DEC]
            [ENC]`` = ids 0-6, BERT's normaliser and pre-tokenizer).
        algorithm: "bpe" (character BPE with ``</w>`` end-of-word symbols, as CLIP's) or
            "wordpiece" (``##`` continuation pieces, as BERT's); default "bpe" for CLIP and
            "wordpiece" for BLIP.
        context_length: L of ``__call__``; default 77 for CLIP, 35 for BLIP.
        min_frequency: merges seen fewer times are not learned.
    """
    if style not in STYLES:
        raise VisionZooError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if algorithm is None:
        algorithm = "bpe" if style == "clip" else "wordpiece"
    if algorithm not in ALGORITHMS:
        raise VisionZooError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    specials = list(CLIP_SPECIAL_TOKENS if style == "clip" else BLIP_SPECIAL_TOKENS)
    if (
        isinstance(vocab_size, bool)
        or not isinstance(vocab_size, int)
        or vocab_size <= len(specials)
    ):
        raise VisionZooError(
            f"vocab_size must be an integer > {len(specials)} (the special tokens), got {vocab_size!r}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise VisionZooError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    context_length = _DEFAULT_CONTEXT[style] if context_length is None else context_length
    _check_context_length(context_length)
    unk = "<unk>" if style == "clip" else "[UNK]"

    if style == "clip":
        clean = "clip"
        corpus = [clip_clean(t) for t in _check_texts(texts)]
        pre = pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True)
        normalizer = None
    else:
        clean = "none"
        corpus = _check_texts(texts)
        pre = pre_tokenizers.BertPreTokenizer()
        normalizer = normalizers.BertNormalizer(lowercase=True)

    if algorithm == "bpe":
        tok = Tokenizer(models.BPE(unk_token=unk, end_of_word_suffix=_EOW))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            end_of_word_suffix=_EOW,
            show_progress=False,
        )
        tok.decoder = decoders.BPEDecoder(suffix=_EOW)
    else:
        tok = Tokenizer(models.WordPiece(unk_token=unk, continuing_subword_prefix="##"))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tok.decoder = decoders.WordPiece(prefix="##")
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.train_from_iterator(corpus, trainer=trainer)
    pad, bos, eos = _STYLE_TOKENS[style]
    return TextTokenizer(
        tok,
        pad_token=pad,
        bos_token=bos,
        eos_token=eos,
        context_length=context_length,
        clean=clean,
        style=style,
    )


def _check_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise VisionZooError("texts must be an iterable of captions, got a single string")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise VisionZooError(f"texts must be strings, got {type(t).__name__}: {t!r}")
    if not out:
        raise VisionZooError("cannot train a tokenizer on no texts")
    return out
