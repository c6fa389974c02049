"""Corpus preparation: official raw layouts -> data dirs the loader reads (``meta.*.txt``, ``vocab.json``, audio).

    corpora/tedlium.py    TED-LIUM 3 legacy split      -> name|num_samples|TEXT
    corpora/slurp.py      SLURP (real + synthetic)     -> name|num_samples|TEXT|scenario,action|en
    corpora/voxceleb1.py  VoxCeleb1 identification     -> checked in place; read_iden_split, speaker_labels
    corpora/synth.py      espeak-ng corpora written in those same raw layouts

Shared conventions (every prep script):

- Transcripts are UPPER CASE, as in the English wav2vec2 CTC vocabularies (facebook/wav2vec2-base-960h,
  wav2vec2-large-960h-lv60-self): a word is a run of characters, ``|`` is the word delimiter, ``[UNK]`` a token.
- ``vocab.json`` is in Wav2Vec2CTCTokenizer form: ``{"[PAD]": 0, letters A..Z seen, other characters seen,
  "|": n-2, "[UNK]": n-1}``; load it with ``Wav2Vec2CTCTokenizer(path, pad_token="[PAD]", unk_token="[UNK]",
  word_delimiter_token="|")``. ``[PAD]`` doubles as the CTC blank (hparams ``pad_token_id = 0``).
- Every output file is written atomically (temporary name, then rename): an interrupted run leaves no half file,
  and a rerun skips finished work.
- Problems in the input are either fatal with the culprit named (``file:line: ...``) or logged, counted and
  reported in the final summary; nothing is dropped silently.
"""
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

SR = 16000  # every corpus is prepared at this rate
PAD, UNK, WORD_DELIMITER = "[PAD]", "[UNK]", "|"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CorpusError(Exception):
    """A fatal problem in a raw corpus; the message names the file (and line) at fault."""


def setup_logging(level=logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def build_ctc_vocab(texts: Iterable[str]) -> dict[str, int]:
    """Character vocabulary in Wav2Vec2CTCTokenizer form from transcripts (``[UNK]`` counted as one token).

    ``[PAD]`` first, then every letter A..Z (seen or not: a letter missing from a small training set must not
    turn into ``[UNK]`` in dev and test), then every other character seen, in code-point order, then ``|``
    (the space) and ``[UNK]`` last.
    """
    chars = set()
    for text in texts:
        for word in text.split():
            if word != UNK:
                chars.update(word)
    chars.discard(WORD_DELIMITER)  # '|' never survives into a transcript (it separates meta fields)
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    others = sorted(c for c in chars if not "A" <= c <= "Z")
    tokens = [PAD] + letters + others + [WORD_DELIMITER, UNK]
    return {token: index for index, token in enumerate(tokens)}


def write_text_atomic(path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def write_meta(path, rows: Iterable[Iterable]) -> int:
    """One ``|``-joined line per row; returns the number of lines."""
    lines = ["|".join(str(field) for field in row) for row in rows]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def hours(num_samples: int, sr: int = SR) -> float:
    return num_samples / sr / 3600
