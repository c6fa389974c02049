"""Data: meta files, transcripts, dynamic batching, data warm-up, a resumable prefetching feeder, SUPERB SI.

    utts = load_corpus("data/tedlium", "meta.train.txt", hparams)
    tokenizer = build_tokenizer("data/tedlium/vocab.json")
    feeder = BatchFeeder(utts, hparams, tokenizer, rank=rank, world_size=world_size)
    for step in range(start, max_steps):
        feeder.set_step(step)
        batch = next(feeder)               # dict of tensors, see ``collate``
    state = feeder.state_dict()            # goes into the checkpoint; ``load_state_dict`` on resume
    feeder.close()

Prepared data dir (written by ``corpora/*.py``)
-----------------------------------------------
``<data-dir>/meta.{train,dev,test}.txt`` (SLURP also ``meta.train.syn.txt``), ``<data-dir>/vocab.json`` (a
Wav2Vec2CTCTokenizer vocab: ``[PAD]`` = 0, letters, ``'``, ``|`` as word delimiter, ``[UNK]``; matched case
sensitively, the corpora write UPPER CASE), and for SLURP
``<data-dir>/categories.json``: a JSON list with one ``{class name: index}`` dict per classifier head
(scenarios, actions). The audio of utterance ``<name>`` is ``<data-dir>/<name minus its last _field>/<name>.flac``
(or ``.wav``): ``AlGore_2009_00000003`` -> ``AlGore_2009/AlGore_2009_00000003.flac``, ``en_0000000012`` ->
``en/en_0000000012.flac``; a name without ``_`` lies directly in ``<data-dir>``.

Meta formats (``hparams.data_format``)
--------------------------------------
One utterance per line, fields separated by ``|`` (or by tabs on a line that holds no ``|``); blank lines are
skipped; a line with another number of fields is an error naming ``file:line``.

* ``nlt``   = ``name|num_samples|text``                    (TED-LIUM 3)
* ``nltLa`` = ``name|num_samples|text|labels|lang``        (SLURP)

``num_samples`` is the audio length in samples at ``hparams.sr`` (a positive integer; batching uses it without
opening the audio, and ``check_audio`` and loading check it within ``LENGTH_TOLERANCE`` samples). ``text`` is the
transcript, cleaned by ``clean_transcript``. ``labels`` holds one class name per classifier head, comma separated,
each looked up in that head's dict of categories.json; lines with a name missing from categories.json are dropped
with a logged count. ``lang`` is read and ignored. Names must be unique within a file.

VoxCeleb1 speaker identification (``--use_hf_dataset``)
--------------------------------------------------------
``--data-dir s3prl/superb--si--data/VoxCeleb1`` names the HF dataset ``s3prl/superb``, subset ``si``, manual dir
``data/VoxCeleb1``. ``datasets`` >= 4 no longer runs hub loading scripts, so ``superb_si_dataset`` builds the same
splits locally, as that script does: from ``<manual>/wav/idXXXXX/<video>/<n>.wav`` and ``<manual>/veri_test_class.txt``
(SUPERB's split; the official ``iden_split.txt`` when it is absent, logged; 1 = train, 2 = validation, 3 = test;
label = the speaker's SUPERB class index, id10001 -> 0 ... id11251 -> 1250; name = ``id10001_<video>_00001`` as the
original code names it) and caches the ``DatasetDict`` with ``save_to_disk`` in ``<manual>/superb_si-<fingerprint>``,
rebuilt when the split file changes. SI utterances have ``text == ""`` and ``labels == (speaker_class,)``.
"""
import collections
import dataclasses
import functools
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import soundfile
import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor

logger = logging.getLogger(__name__)

UNK, PAD, WORD_DELIMITER = "[UNK]", "[PAD]", "|"
LENGTH_TOLERANCE = 16  # samples; audio may differ this much from meta's num_samples (rounding in cutting tools)
META_FIELDS = {"nlt": ("name", "num_samples", "text"), "nltLa": ("name", "num_samples", "text", "labels", "lang")}
SI_SPLITS = ("train", "validation", "test")  # the split file's 1, 2, 3
_SI_CACHE_VERSION = "2"  # bump when the cached DatasetDict's columns change
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # the only audio encodings that can hold NaN or inf samples
CHECK_WORKERS = 8  # threads reading audio headers (libsndfile releases the GIL; the wait is the file system)


class DataError(ValueError):
    """The training data cannot go on (the data warm-up empties every batch, too many unreadable audio files): the
    run stops; never retried as a failed step."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    name: str
    num_samples: int  # audio length in samples at hparams.sr, as the meta file (or the wav header) says
    text: str  # cleaned transcript; "" for corpora without one (SI)
    labels: tuple[int, ...]  # one class index per classifier head; () without classifier labels
    audio_path: str


# ------------------------------------------------------------------------------------------------------------
# Transcripts and vocabulary


def clean_transcript(text: str, remove_unk: bool = True, replace_apos: bool = True) -> str:
    """Drop ``[UNK]`` and turn ``-`` into a space (``remove_unk``), join `` '`` into ``'`` (``replace_apos``:
    TED-LIUM writes ``doesn 't``), and collapse whitespace."""
    if remove_unk:
        text = text.replace(UNK, " ").replace("-", " ")
    if replace_apos:
        text = re.sub(r"\s+'", "'", text)
    return " ".join(text.split())


def _load_json(path: Path, missing: str):
    """The JSON in ``path``; a missing file or bad JSON is an error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def build_tokenizer(vocab_path) -> Wav2Vec2CTCTokenizer:
    """The CTC tokenizer of ``vocab_path`` (a vocab.json, or a data dir holding one).

    ``len(tokenizer)`` equals the number of entries of vocab.json (no ``<s>``/``</s>`` are added), which is what
    ``hparams.asr_vocab_size`` must be."""
    path = vocab_file(vocab_path)
    vocab = _load_json(path, "vocab file not found (corpora/*.py writes vocab.json into the data dir)")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{path}: expected a JSON object {{token: id}}")
    missing = [t for t in (PAD, UNK, WORD_DELIMITER) if t not in vocab]
    if missing:
        raise ValueError(f"{path}: vocab lacks {', '.join(missing)}")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{path}: token ids must be 0..{len(vocab) - 1} without gaps")
    return Wav2Vec2CTCTokenizer(str(path), unk_token=UNK, pad_token=PAD, word_delimiter_token=WORD_DELIMITER,
                                bos_token=None, eos_token=None, do_lower_case=False)


def vocab_file(vocab_path) -> Path:
    """The vocab.json ``vocab_path`` names: the file itself, or the one in a directory."""
    path = Path(vocab_path)
    return path / "vocab.json" if path.is_dir() else path


def check_same_vocab(vocab_path, recorded: Path, what: str, matters: bool) -> None:
    """``vocab_path`` must map every token to the same id as ``recorded``, the vocab.json a run dir keeps (``what``
    says whose it is). With ``matters`` (CTC outputs are trained or decoded) a difference is an error naming both
    files, else a warning; a run dir without one (written before run dirs kept it) is not checked."""
    if not recorded.is_file():
        logger.info("%s keeps no vocab.json: %s is not checked against it", what, vocab_path)
        return
    path = vocab_file(vocab_path)
    given, kept = _load_json(path, "vocab file not found"), _load_json(recorded, "vocab file not found")
    if given == kept:
        return
    moved = [t for t in given if t in kept and given[t] != kept[t]]
    differences = [f"{len(moved)} token(s) with another id, e.g. {moved[0]!r} {given[moved[0]]} here and "
                   f"{kept[moved[0]]} there"] if moved else []
    only = {"here": [t for t in given if t not in kept], "there": [t for t in kept if t not in given]}
    for where, tokens in only.items():
        if tokens:
            differences.append(f"{len(tokens)} token(s) only {where}, e.g. {tokens[0]!r}")
    message = f"{path} differs from {recorded}, the vocabulary of {what}: {'; '.join(differences)}"
    if not matters:
        logger.warning("%s (no CTC output is used: ctc_weight=0)", message)
        return
    raise ValueError(f"{message}; pass --vocab-path {recorded}, or the data prepared as for that run")


def _vocab_chars(tokenizer) -> frozenset:
    """Characters a transcript may hold: single-character tokens of the vocab (not the delimiter), and space."""
    chars = getattr(tokenizer, "_cald_vocab_chars", None)
    if chars is None:
        delimiter = tokenizer.word_delimiter_token
        chars = frozenset(t for t in tokenizer.get_vocab() if len(t) == 1 and t != delimiter) | {" "}
        tokenizer._cald_vocab_chars = chars
    return chars


def unknown_characters(tokenizer, text: str) -> set:
    """Characters of ``text`` outside the vocab; a literal ``[UNK]`` token is legitimate (it encodes as unk)."""
    return set(text.replace(UNK, "")) - _vocab_chars(tokenizer)


def _unknown_message(tokenizer, chars: set) -> str:
    listed = " ".join(repr(c) for c in sorted(chars))
    other_case = {c for c in chars if c.swapcase() != c and c.swapcase() in _vocab_chars(tokenizer)}
    hint = " (vocab.json has them in the other case)" if other_case else ""
    return f"characters not in vocab.json: {listed}{hint}"


def encode_transcript(tokenizer, text: str, name: str = "?", strict: bool = True) -> list[int]:
    """Token ids of a cleaned transcript; spaces become the word delimiter ``|``.

    ``strict`` (training): a character outside the vocab is an error naming ``name`` and the characters, since
    mapping it silently to ``[UNK]`` would train the model on a wrong target; only a literal ``[UNK]`` token (kept
    when ``remove_unk=False``) encodes as the unk id. Not ``strict`` (dev/test, whose characters the train-built
    vocab may lack, e.g. SLURP): such characters encode as ``[UNK]``; ``check_transcripts`` logs them."""
    unknown = unknown_characters(tokenizer, text) if strict else ()
    if unknown:
        raise ValueError(f"{name}: {_unknown_message(tokenizer, unknown)} in {text!r}")
    ids = []
    for i, piece in enumerate(text.split(UNK)):  # HF would eat the spaces around a special token
        if i:
            ids.append(tokenizer.unk_token_id)
        ids += tokenizer(piece).input_ids if piece else []
    return ids


def check_transcripts(utts: Sequence[Utterance], tokenizer, strict: bool = True) -> None:
    """Fail (``strict``) or warn if any transcript holds a character outside the vocab (names up to 5)."""
    bad = [(u.name, unknown_characters(tokenizer, u.text)) for u in utts]
    bad = [(name, chars) for name, chars in bad if chars]
    if bad:
        chars = set().union(*(c for _, c in bad))
        names = ", ".join(name for name, _ in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        message = f"{len(bad)} transcripts hold {_unknown_message(tokenizer, chars)}: {names}"
        if strict:
            raise ValueError(message)
        logger.warning("%s; they encode as [UNK] in the dev loss (the reference texts keep them)", message)


# ------------------------------------------------------------------------------------------------------------
# Meta files and categories


def load_categories(data_dir) -> list[dict[str, int]]:
    """``<data_dir>/categories.json``: one ``{class name: index}`` dict per classifier head."""
    path = Path(data_dir) / "categories.json"
    heads = _load_json(path, "categories file not found (needed by data_format=nltLa)")
    if not isinstance(heads, list) or not heads or not all(isinstance(h, dict) and h for h in heads):
        raise ValueError(f"{path}: expected a non-empty JSON list of {{class name: index}} objects, one per head")
    for i, head in enumerate(heads):
        indices = list(head.values())
        if not all(isinstance(j, int) and not isinstance(j, bool) and j >= 0 for j in indices):
            raise ValueError(f"{path}: head {i}: indices must be non-negative integers")
        if len(set(indices)) != len(indices):
            raise ValueError(f"{path}: head {i}: two classes share an index")
    return heads


def _check_classifier_sizes(where, sizes: list[int], hparams) -> None:
    """With ``use_classifier``, the data's heads must fit ``hparams.classifier_num_targets``."""
    if not hparams.use_classifier:
        return
    targets = hparams.classifier_targets
    if len(sizes) != len(targets) or any(s > t for s, t in zip(sizes, targets)):
        raise ValueError(f"{where}: {len(sizes)} classifier head(s) of {','.join(map(str, sizes))} classes, but "
                         f"hparams.classifier_num_targets={hparams.classifier_num_targets}")


def _audio_dir_and_stem(data_dir: Path, name: str) -> Path:
    return data_dir / name.rsplit("_", 1)[0] / name if "_" in name else data_dir / name


class _AudioPathResolver:
    """``.flac`` or ``.wav`` by one directory listing per audio dir (no file is opened or stat'ed per line)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._listings: dict[Path, set] = {}

    def __call__(self, name: str) -> str:
        stem = _audio_dir_and_stem(self.data_dir, name)
        listing = self._listings.get(stem.parent)
        if listing is None:
            try:
                listing = set(os.listdir(stem.parent))
            except OSError:
                listing = set()
            self._listings[stem.parent] = listing
        for ext in (".flac", ".wav"):
            if name + ext in listing:
                return str(stem) + ext
        return str(stem) + ".flac"  # missing: loading it fails naming this path


def read_meta(meta_path, data_dir, hparams, categories: Optional[list] = None) -> list[Utterance]:
    """Utterances of a meta file in ``hparams.data_format`` (see the module docstring), transcripts cleaned.

    Audio is not opened (a missing file fails when it is loaded). ``categories`` defaults to
    ``load_categories(data_dir)`` for nltLa."""
    fmt = hparams.data_format
    if fmt not in META_FIELDS:
        raise ValueError(f"unknown data_format {fmt!r}; expected one of {', '.join(META_FIELDS)}")
    n_fields = len(META_FIELDS[fmt])
    data_dir = Path(data_dir)
    if fmt == "nltLa":
        if categories is None:
            categories = load_categories(data_dir)
        _check_classifier_sizes(data_dir / "categories.json", [len(h) for h in categories], hparams)
    resolve = _AudioPathResolver(data_dir)
    utts, first_line, dropped = [], {}, []
    with open(meta_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{meta_path}:{lineno}"
            sep = "|" if "|" in line or "\t" not in line else "\t"
            fields = line.split(sep)
            if len(fields) != n_fields:
                raise ValueError(f"{where}: expected {n_fields} fields ({'|'.join(META_FIELDS[fmt])}) separated "
                                 f"by {sep!r}, got {len(fields)}")
            name, num_samples, text = fields[0].strip(), fields[1].strip(), fields[2]
            if not name:
                raise ValueError(f"{where}: empty utterance name")
            try:
                num_samples = int(num_samples)
            except ValueError:
                raise ValueError(f"{where}: num_samples {num_samples!r} is not an integer") from None
            if num_samples <= 0:
                raise ValueError(f"{where}: num_samples must be positive, got {num_samples}")
            if name in first_line:
                raise ValueError(f"{where}: utterance {name} already on line {first_line[name]}")
            first_line[name] = lineno
            labels = ()
            if fmt == "nltLa":
                names = [x.strip() for x in fields[3].split(",")]
                if len(names) != len(categories):
                    raise ValueError(f"{where}: expected {len(categories)} comma-separated labels (one per head of "
                                     f"categories.json), got {len(names)}")
                if any(x not in head for x, head in zip(names, categories)):
                    dropped.append((lineno, fields[3]))
                    continue
                labels = tuple(head[x] for x, head in zip(names, categories))
            text = clean_transcript(text, hparams.remove_unk, hparams.replace_apos)
            utts.append(Utterance(name, num_samples, text, labels, resolve(name)))
    if dropped:
        logger.warning("%s: dropped %d of %d lines whose labels are not in categories.json (first: line %d, %r)",
                       meta_path, len(dropped), len(dropped) + len(utts), *dropped[0])
    if not utts:
        raise ValueError(f"{meta_path}: no utterances")
    return utts


def load_corpus(data_dir, meta, hparams, use_hf_dataset: bool = False) -> list[Utterance]:
    """The utterances of one split.

    Without ``use_hf_dataset``, ``meta`` is a meta file: a bare file name (``meta.test.txt``) is taken from
    ``data_dir``, a path (``./meta.test.txt``, ``data/slurp_full/meta.train.syn.txt``) as given. With it,
    ``data_dir`` is ``<dataset id>--<subset>--<manual dir>`` (only
    ``s3prl/superb--si--<VoxCeleb1 dir>``) and ``meta`` a split name: train, validation or test."""
    if use_hf_dataset:
        dataset_id, subset, manual_dir = parse_hf_data_dir(data_dir)
        if (dataset_id, subset) != ("s3prl/superb", "si"):
            raise ValueError(f"--data-dir {data_dir}: only s3prl/superb--si--<manual dir> is supported as a HF "
                             f"dataset, got {dataset_id} subset {subset}")
        if meta not in SI_SPLITS:
            raise ValueError(f"HF dataset {dataset_id}/{subset}: split {meta!r} is not one of {', '.join(SI_SPLITS)}")
        dataset = superb_si_dataset(manual_dir, sr=hparams.sr)
        _check_classifier_sizes(f"{manual_dir} (speaker classes)", [_num_speakers(dataset)], hparams)
        split = dataset[meta]
        utts = [Utterance(name, int(n), "", (int(label),), file) for name, n, label, file in
                zip(split["name"], split["num_samples"], split["label"], split["file"])]
        where = f"{data_dir} [{meta}]"
    else:
        path = resolve_meta(data_dir, meta)
        utts = read_meta(path, data_dir, hparams)
        where = str(path)
    hours = sum(u.num_samples for u in utts) / hparams.sr / 3600
    logger.info("%s: %d utterances, %.2f hours", where, len(utts), hours)
    return utts


def resolve_meta(data_dir, meta) -> Path:
    """The meta file ``meta`` names: a bare file name lies in ``data_dir`` (a file of that name in the current
    directory is not looked at), a path with a directory part is taken as given."""
    text = str(meta)
    as_given = "/" in text or os.sep in text or Path(text).is_absolute()
    path = Path(text) if as_given else Path(data_dir) / text
    if not path.is_file():
        if as_given:
            raise FileNotFoundError(f"meta file {path} not found")
        raise FileNotFoundError(f"meta file {text} not found in --data-dir {data_dir} (a bare file name is taken from "
                                f"there; write ./{text} for the one in the current directory)")
    return path


# ------------------------------------------------------------------------------------------------------------
# VoxCeleb1 speaker identification as the SUPERB SI DatasetDict


def parse_hf_data_dir(data_dir) -> tuple[str, str, str]:
    """``s3prl/superb--si--data/VoxCeleb1`` -> (``s3prl/superb``, ``si``, ``data/VoxCeleb1``)."""
    parts = str(data_dir).split("--", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--data-dir {data_dir}: with --use_hf_dataset expected <dataset id>--<subset>--<manual "
                         f"dir>, e.g. s3prl/superb--si--data/VoxCeleb1")
    return parts[0], parts[1], parts[2]


def _num_speakers(dataset) -> int:
    return 1 + max(max(dataset[s]["label"], default=-1) for s in dataset)


SPLIT_FILE = "iden_split.txt"  # the official identification split
SUPERB_SPLIT_FILE = "veri_test_class.txt"  # what the HF superb script (and so the original code) reads
SPLIT_URL = "https://mm.kaist.ac.kr/datasets/voxceleb/meta/iden_split.txt"
FIRST_SPEAKER, NUM_CLASSES = 10001, 1251  # SUPERB SI's classes: id10001 ... id11251
_relpath_re = re.compile(r"(id\d+)/[^/\s]+/[^/\s]+\.wav")


def split_file(root) -> Path:
    """``<root>/veri_test_class.txt`` (SUPERB's split, the paper's) when it is there, else ``<root>/iden_split.txt``."""
    superb = Path(root) / SUPERB_SPLIT_FILE
    return superb if superb.is_file() else Path(root) / SPLIT_FILE


def read_iden_split(root) -> list[tuple[int, str]]:
    """[(split, "id10001/1zcIwhmdeo4/00001.wav")] from ``split_file(root)``; split 1 = train, 2 = val, 3 = test."""
    return [(split, relpath) for _, split, relpath in read_split_lines(root)]


def read_split_lines(root) -> list[tuple[str, int, str]]:
    """[("file:line", split, relpath)] of ``split_file(root)``: a missing or malformed list, a speaker id outside
    SUPERB SI's classes or a file listed twice is an error naming the line."""
    path = split_file(root)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found (nor {Path(root) / SUPERB_SPLIT_FILE}). It is the official VoxCeleb1 identification "
            f"split list: one line '<split> <speaker>/<video>/<utterance>.wav' per file, split 1 = train, "
            f"2 = validation, 3 = test. It is published at {SPLIT_URL}; s3prl's SUPERB speaker-identification "
            f"recipe ships the same split as {SUPERB_SPLIT_FILE}, which the HF superb dataset reads and which is "
            f"preferred when present. Put either in {Path(root)}.")
    entries, seen = [], {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        fields = line.split()
        if len(fields) != 2 or fields[0] not in ("1", "2", "3"):
            raise ValueError(f"{where}: expected '<1|2|3> <speaker>/<video>/<utterance>.wav', got {line!r}")
        relpath = fields[1]
        if not _relpath_re.fullmatch(relpath):
            raise ValueError(f"{where}: expected a path like id10001/1zcIwhmdeo4/00001.wav, got {relpath!r}")
        if not 0 <= speaker_class(speaker_of(relpath)) < NUM_CLASSES:
            raise ValueError(f"{where}: speaker {speaker_of(relpath)} is not one of SUPERB SI's "
                              f"id{FIRST_SPEAKER} ... id{FIRST_SPEAKER + NUM_CLASSES - 1}")
        if relpath in seen:
            raise ValueError(f"{where}: {relpath} already listed at line {seen[relpath]}")
        seen[relpath] = number
        entries.append((where, int(fields[0]), relpath))
    if not entries:
        raise ValueError(f"{path}: empty")
    return entries


def speaker_of(relpath: str) -> str:
    return relpath.split("/", 1)[0]


def speaker_class(speaker: str) -> int:
    """SUPERB SI's class index of a speaker id: id10001 -> 0 ... id11251 -> 1250."""
    return int(speaker[2:]) - FIRST_SPEAKER


def speaker_labels(relpaths) -> dict[str, int]:
    """{speaker id: its class index} (``speaker_class``) for the speakers of ``relpaths``."""
    return {speaker: speaker_class(speaker) for speaker in sorted({speaker_of(p) for p in relpaths})}


def speaker_names(num_classes: int = NUM_CLASSES) -> list[str]:
    """The speaker id of each class index: ["id10001", ..., "id11251"] (the first ``num_classes``)."""
    return [f"id{FIRST_SPEAKER + index}" for index in range(num_classes)]


def superb_si_dataset(manual_dir, sr: int = 16000, rebuild: bool = False):
    """The SUPERB SI ``DatasetDict`` (train / validation / test; columns ``name``, ``file``, ``label``,
    ``num_samples``, ``speaker_id``) built from ``<manual_dir>/wav`` and its split file: ``veri_test_class.txt``
    (SUPERB's, read by the HF superb script), else ``iden_split.txt`` (``split_file``).

    Cached under ``<manual_dir>/superb_si-<fingerprint>``, the fingerprint covering the split file's name and
    content and the manual dir's absolute path: an edited split file or a moved corpus rebuilds (older caches are
    removed). Building reads every wav header (sample rate ``sr``, mono), naming the first bad file."""
    import datasets  # slow import, only SI needs it

    manual_dir = Path(manual_dir).resolve()
    split_path = split_file(manual_dir)
    if not split_path.is_file():
        read_iden_split(manual_dir)  # raises, explaining what the file is and where to get it
    logger.info("SUPERB SI: split from %s", split_path)
    digest = hashlib.sha256(split_path.read_bytes())
    digest.update(f"{split_path.name}|{manual_dir}|{sr}|{_SI_CACHE_VERSION}".encode())
    cache = manual_dir / f"superb_si-{digest.hexdigest()[:16]}"
    if cache.is_dir() and not rebuild:
        logger.info("SUPERB SI: loading the cached splits from %s", cache)
        return datasets.load_from_disk(str(cache))

    entries = read_iden_split(manual_dir)
    labels = speaker_labels([relpath for _, relpath in entries])
    columns = {split: {"name": [], "file": [], "label": [], "num_samples": [], "speaker_id": []}
               for split in SI_SPLITS}
    logger.info("SUPERB SI: reading %d wav headers under %s", len(entries), manual_dir / "wav")
    for split_id, relpath in entries:
        if split_id not in (1, 2, 3):
            raise ValueError(f"{split_path}: split {split_id} for {relpath}; expected 1, 2 or 3")
        path = manual_dir / "wav" / relpath
        try:
            info = soundfile.info(str(path))
        except Exception as err:  # a missing or unreadable file: libsndfile says which
            raise ValueError(f"{path}: cannot read the audio header ({err})") from None
        if info.samplerate != sr:
            raise ValueError(f"{path}: sample rate {info.samplerate} Hz, expected {sr} (hparams.sr)")
        if info.channels != 1:
            raise ValueError(f"{path}: {info.channels} channels, expected mono")
        speaker = relpath.split("/")[0]
        col = columns[SI_SPLITS[split_id - 1]]
        col["name"].append(relpath.rsplit(".", 1)[0].replace("/", "_"))  # id10001_1zcIwhmdeo4_00001
        col["file"].append(str(path))
        col["label"].append(labels[speaker])
        col["num_samples"].append(int(info.frames))
        col["speaker_id"].append(speaker)
    features = datasets.Features({"name": datasets.Value("string"), "file": datasets.Value("string"),
                                  "label": datasets.Value("int64"), "num_samples": datasets.Value("int64"),
                                  "speaker_id": datasets.Value("string")})
    dataset = datasets.DatasetDict({s: datasets.Dataset.from_dict(columns[s], features=features) for s in SI_SPLITS})

    tmp = manual_dir / f".{cache.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp), num_shards={s: 1 for s in SI_SPLITS})  # 1: an empty split reloads too
    if rebuild:
        shutil.rmtree(cache, ignore_errors=True)
    try:
        os.rename(tmp, cache)  # atomic; another process (rank) may have won the race, then use its copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in manual_dir.glob("superb_si-*"):
        if stale != cache:
            shutil.rmtree(stale, ignore_errors=True)
    logger.info("SUPERB SI: %s, %d speakers; cached in %s",
                ", ".join(f"{s} {len(dataset[s])}" for s in SI_SPLITS), len(labels), cache)
    return datasets.load_from_disk(str(cache))


# ------------------------------------------------------------------------------------------------------------
# Audio and batch collation


def load_audio(utt: Utterance, sr: int) -> np.ndarray:
    """float32 mono samples of ``utt``; a missing, corrupt, stereo or wrongly sampled file, a length off meta's
    ``num_samples`` by more than ``LENGTH_TOLERANCE``, or a NaN or inf sample, is an error naming the file."""
    path = utt.audio_path
    if not os.path.isfile(path):
        raise FileNotFoundError(_missing_audio(utt))
    try:
        audio, file_sr = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot decode audio of {utt.name} ({err})") from None
    problem = _format_problem(utt, file_sr, audio.shape[1], len(audio), sr)
    if problem is not None:
        raise ValueError(problem)
    nonfinite = np.count_nonzero(~np.isfinite(audio))
    if nonfinite:
        raise ValueError(f"{path}: {nonfinite} of {audio.size} samples of {utt.name} are NaN or inf")
    return audio[:, 0]


def _missing_audio(utt: Utterance) -> str:
    return f"{utt.name}: audio file {utt.audio_path} not found (nor with .wav / .flac)"


def _format_problem(utt: Utterance, file_sr: int, channels: int, frames: int, sr: int) -> Optional[str]:
    if file_sr != sr:
        return f"{utt.audio_path}: sample rate {file_sr} Hz, expected {sr} (hparams.sr)"
    if channels != 1:
        return f"{utt.audio_path}: {channels} channels, expected mono"
    if abs(frames - utt.num_samples) > LENGTH_TOLERANCE:
        return f"{utt.audio_path}: {frames} samples, but the meta line of {utt.name} says {utt.num_samples}"
    return None


def audio_problem(utt: Utterance, sr: int) -> Optional[str]:
    """What ``load_audio`` would fail on, read from the file's header (present, readable, ``sr`` Hz, mono, meta's
    length) without decoding it; a float-encoded file, the only kind that can hold NaN or inf, is decoded too.
    None when nothing is wrong. A body damaged behind a sound header shows only when the file is loaded."""
    if not os.path.isfile(utt.audio_path):
        return _missing_audio(utt)
    try:
        info = soundfile.info(utt.audio_path)
    except Exception as err:
        return f"{utt.audio_path}: cannot read the audio header of {utt.name} ({err})"
    problem = _format_problem(utt, info.samplerate, info.channels, info.frames, sr)
    if problem is None and info.subtype in FLOAT_SUBTYPES:
        try:
            load_audio(utt, sr)
        except (OSError, ValueError) as err:
            return str(err)
    return problem


def bad_audio_limit(num_utterances: int) -> int:
    """How many unreadable training files a run tolerates (left out) before it stops: 1% of them, at least 10."""
    return max(10, num_utterances // 100)


def check_audio(utts: Sequence[Utterance], sr: int, where: str, drop: bool = False) -> list[Utterance]:
    """``audio_problem`` of every utterance, in ``CHECK_WORKERS`` threads. Any problem is an error naming the first
    files, unless ``drop`` (training data): then the utterances with one are left out with a warning, up to
    ``bad_audio_limit``; more stop the run. Returns the utterances kept."""
    tic = time.time()
    chunks = [utts[i:i + 256] for i in range(0, len(utts), 256)]
    with ThreadPoolExecutor(CHECK_WORKERS, thread_name_prefix="cald-audio-check") as pool:
        found = [p for chunk in pool.map(lambda c: [audio_problem(u, sr) for u in c], chunks) for p in chunk]
    bad = [(u, p) for u, p in zip(utts, found) if p is not None]
    logger.info("%s: %d audio headers checked in %.1f s", where, len(utts), time.time() - tic)
    if not bad:
        return list(utts)
    examples = "; ".join(p for _, p in bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    summary = f"{where}: {len(bad)} of {len(utts)} audio files fail the check: {examples}"
    if not drop:
        raise ValueError(summary)
    if len(bad) > bad_audio_limit(len(utts)):
        raise DataError(f"{summary}; more than {bad_audio_limit(len(utts))}: is --data-dir complete (and mounted)?")
    logger.warning("%s; these utterances are left out of training", summary)
    left_out = {id(u) for u, _ in bad}
    return [u for u in utts if id(u) not in left_out]


def build_feature_extractor(hparams) -> Wav2Vec2FeatureExtractor:
    """Per-utterance zero-mean unit-variance normalisation over valid samples, zero padding, attention mask."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=hparams.sr, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def collate(utts: Sequence[Utterance], tokenizer, feature_extractor, hparams, audio=None,
            strict_vocab: bool = True) -> dict:
    """A batch dict (B utterances, T = longest samples, L = longest token sequence, at least 1):

    * ``input_values``      float32 (B, T)  normalised by ``feature_extractor``, zero padded
    * ``attention_mask``    long    (B, T)  1 on valid samples
    * ``labels``            long    (B, L)  CTC token ids, padded with -100 (all -100 without transcripts)
    * ``label_lengths``     long    (B,)    tokens per transcript (0 without one)
    * ``classifier_labels`` long    (B, H)  one class index per head; only when the utterances have labels
    * ``num_samples``       long    (B,)    audio length in samples
    * ``sample_lengths``    list[int]       the same on the host (to_device leaves it there)
    * ``names``, ``texts``  list[str]       utterance names and cleaned transcripts

    ``audio``: preloaded sample arrays (else ``load_audio``). ``tokenizer`` may be None when no text is set.
    ``strict_vocab``: see ``encode_transcript`` (training True, eval False)."""
    if not utts:
        raise ValueError("collate: empty batch")
    if audio is None:
        audio = [load_audio(u, hparams.sr) for u in utts]
    features = feature_extractor(list(audio), sampling_rate=hparams.sr, padding=True, return_attention_mask=True,
                                 return_tensors="np")
    ids = []
    for u in utts:
        if not u.text:
            ids.append([])
        elif tokenizer is None:
            raise ValueError(f"{u.name}: has a transcript but collate got no tokenizer")
        else:
            ids.append(encode_transcript(tokenizer, u.text, u.name, strict_vocab))
    labels = torch.full((len(utts), max(1, max(map(len, ids)))), -100, dtype=torch.long)  # (B, L)
    for i, seq in enumerate(ids):
        labels[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    batch = {
        "input_values": torch.from_numpy(np.asarray(features["input_values"], dtype=np.float32)),  # (B, T)
        "attention_mask": torch.from_numpy(np.asarray(features["attention_mask"])).long(),  # (B, T)
        "labels": labels,
        "label_lengths": torch.tensor([len(seq) for seq in ids], dtype=torch.long),  # (B,)
        "num_samples": torch.tensor([len(a) for a in audio], dtype=torch.long),  # (B,)
        "sample_lengths": [len(a) for a in audio],  # num_samples on the host: the forward reads no lengths back
        "names": [u.name for u in utts],
        "texts": [u.text for u in utts],
    }
    n_heads = {len(u.labels) for u in utts}
    if len(n_heads) > 1:
        raise ValueError(f"batch mixes utterances with {sorted(n_heads)} classifier labels: {batch['names']}")
    if n_heads != {0}:
        batch["classifier_labels"] = torch.tensor([u.labels for u in utts], dtype=torch.long)  # (B, H)
    return batch


# ------------------------------------------------------------------------------------------------------------
# Dynamic batching


def make_batches(utts: Sequence[Utterance], batch_size: int, frame_limit: float, quad_frame_limit: float,
                 bucket_size: int, rng: Optional[np.random.Generator] = None) -> list[list[Utterance]]:
    """Length-bucketed dynamic batches.

    With ``rng`` the utterances are shuffled, cut into buckets of ``bucket_size``, each bucket sorted by
    ``num_samples`` and packed, and the batches shuffled; with ``rng=None`` (eval) nothing is shuffled. A batch
    closes before an utterance of length ``len`` (the batch's longest, as buckets are sorted) when it already
    holds ``batch_size`` or when ``(n + 1) * len > frame_limit`` or ``(n + 1) * len ** 2 > quad_frame_limit``
    (n = utterances so far). An utterance alone over a limit still forms its own batch (logged)."""
    if batch_size < 1 or bucket_size < 1:
        raise ValueError(f"batch_size and bucket_size must be >= 1, got {batch_size} and {bucket_size}")
    order = list(utts) if rng is None else [utts[i] for i in rng.permutation(len(utts))]
    batches, oversize = [], []
    for start in range(0, len(order), bucket_size):
        bucket = sorted(order[start:start + bucket_size], key=lambda u: u.num_samples)
        batch: list[Utterance] = []
        for u in bucket:
            n, length = len(batch), u.num_samples
            if batch and (n == batch_size or (n + 1) * length > frame_limit
                          or (n + 1) * length * length > quad_frame_limit):
                batches.append(batch)
                batch = []
            if length > frame_limit or length * length > quad_frame_limit:
                oversize.append(u.name)
            batch.append(u)
        if batch:
            batches.append(batch)
    if oversize:
        logger.warning("%d utterance(s) alone exceed the batch frame limits and form single batches, e.g. %s",
                       len(oversize), ", ".join(oversize[:3]))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shard(batches: list, rank: int, world_size: int, trim: bool = True) -> list:
    """``batches[rank::world_size]``; ``trim`` first drops the tail so that every rank gets the same count."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    if trim:
        batches = batches[:len(batches) // world_size * world_size]
    return batches[rank::world_size]


# ------------------------------------------------------------------------------------------------------------
# Background prefetch


class _Prefetcher:
    """Runs ``prepare`` over the items of ``plans`` (an iterator) in a pool of ``workers`` threads fed by a daemon
    thread, handing the results over in the plans' order, up to ``depth`` items ahead; ``get`` re-raises an error
    of either.

    Threads suffice: reading audio (libsndfile) and the numpy normalisation release the GIL for most of their
    time, so ``workers`` threads build up to ``workers`` batches at once."""

    _END = object()

    def __init__(self, plans: Iterator, prepare: Callable, depth: int, workers: int = 1):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="cald-data-worker")
        self._thread = threading.Thread(target=self._run, args=(plans, prepare), daemon=True,
                                        name="cald-data-prefetch")
        self._thread.start()

    def _run(self, plans, prepare):
        building: collections.deque[Future] = collections.deque()  # in order, at most `workers` at once
        try:
            for plan in plans:
                building.append(self._pool.submit(prepare, plan))
                if len(building) == self._workers and not self._put((True, building.popleft().result())):
                    return
            while building:
                if not self._put((True, building.popleft().result())):
                    return
            self._put((True, self._END))
        except BaseException as err:  # handed to the consumer, which raises it with its traceback
            self._put((False, err))
        finally:
            for future in building:
                future.cancel()
            self._pool.shutdown(wait=False)

    def _put(self, message) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def get(self):
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is self._END:
            raise StopIteration
        return item

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        while True:  # unblock a pending put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._pool.shutdown(wait=True, cancel_futures=True)  # a worker finishes the batch it is building


# ------------------------------------------------------------------------------------------------------------
# Training feeder


class BatchFeeder:
    """Endless training batches for one rank, prefetched, with data warm-up and an exact resume.

    Epoch ``e`` packs ``make_batches(utts, ..., rng=np.random.default_rng(seed + e))``; this rank takes
    ``shard(batches, rank, world_size)`` (tail trimmed: equal counts on all ranks, so ``seed`` must be the same
    on every rank). While the trainer's step is below ``hparams.data_warmup_steps``, each batch loses the
    utterances longer than ``input_length_upper_bound`` samples (when > 0) and those whose transcript has at most
    ``target_length_lower_bound`` characters (not for corpora without transcripts); an emptied batch is skipped. A
    warm-up that would keep no utterance at all is an error (``check_warmup``), and so is a whole epoch's worth of
    emptied batches in a row (``DataError``). An utterance whose audio cannot be loaded (``load_audio``) is left out
    of its batch, with a warning once per file; more than ``bad_audio_limit`` such files stop the run.

    Drive it with ``feeder.set_step(step)`` then ``next(feeder)`` (or ``feeder.next(step)``), steps never
    decreasing. The warm-up decision uses the step at which a batch is consumed: a batch the prefetcher built
    under the other decision is rebuilt, so the output never depends on thread timing. ``state_dict()`` holds the
    epoch and the batches the trainer consumed (not those prefetched); a new feeder given ``load_state_dict``
    yields exactly the batches the uninterrupted one would have. ``workers`` threads build batches at once (the
    order and content never depend on their number); ``close()`` stops them (they also die with the process); a
    feeder is a context manager.
    """

    def __init__(self, utts: Sequence[Utterance], hparams, tokenizer, feature_extractor=None,
                 seed: Optional[int] = None, rank: int = 0, world_size: int = 1, prefetch: int = 8,
                 workers: int = 2):
        if not utts:
            raise ValueError("BatchFeeder: no utterances")
        self.utts = list(utts)
        self.hparams = hparams
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor or build_feature_extractor(hparams)
        self.seed = hparams.seed if seed is None else seed
        self.rank, self.world_size, self.prefetch, self.workers = rank, world_size, prefetch, workers
        self.has_transcripts = any(u.text for u in self.utts)
        if self.has_transcripts:
            check_transcripts(self.utts, tokenizer)
        if not self.epoch_batches(0):
            raise ValueError(f"BatchFeeder: {len(self.utts)} utterances make fewer batches than world_size="
                             f"{world_size}")
        self._fingerprint = hashlib.sha256("\n".join(u.name for u in self.utts).encode()).hexdigest()[:16]
        self._epoch, self._index = 0, 0  # position of the next batch the trainer gets
        self._step = 0
        self._prefetcher: Optional[_Prefetcher] = None
        self._warmup_dropped = self._warmup_skipped = 0
        self._warmup_reported = self._warmup_checked = False
        self._emptied_in_a_row = 0
        self._unreadable: dict[str, str] = {}  # audio path -> why it cannot be loaded
        self._unreadable_lock = threading.Lock()

    # -- position ----------------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list[Utterance]]:
        """This rank's batches of ``epoch`` before the warm-up filter."""
        hp = self.hparams
        rng = np.random.default_rng(self.seed + epoch)
        batches = make_batches(self.utts, hp.batch_size, hp.batch_frame_limit, hp.batch_quad_frame_limit,
                               hp.bucket_size, rng)
        return shard(batches, self.rank, self.world_size)

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self._epoch

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "index": self._index, "seed": self.seed, "world_size": self.world_size,
                "rank": self.rank, "num_utterances": len(self.utts), "fingerprint": self._fingerprint}

    def same_data(self, state) -> bool:
        """Whether a saved state (one rank's or every rank's) comes from this very utterance list and seed, so that
        continuing from its position continues the same data order (the world size may differ)."""
        saved, mine = (state[0] if isinstance(state, (list, tuple)) else state), self.state_dict()
        return all(saved.get(k) == mine[k] for k in ("seed", "num_utterances", "fingerprint"))

    def load_state_dict(self, state, strict: bool = True) -> None:
        """Continue after the last batch the saved feeder handed out. ``state`` is this rank's ``state_dict()`` or
        the list of every rank's (this rank takes ``state[rank]``): ranks drift apart by the batches the data
        warm-up empties, so a multi-GPU checkpoint must hold all of them. ``strict``: the seed, world size and
        utterance list must be the same, else resuming would not reproduce the run (error naming the fields)."""
        if isinstance(state, (list, tuple)) and len(state) != self.world_size:
            state = self._rescale_position(state, strict)
        elif isinstance(state, (list, tuple)):
            state = state[self.rank]
        mine = self.state_dict()
        differ = [k for k in ("seed", "world_size", "num_utterances", "fingerprint") if state.get(k) != mine[k]]
        if differ:
            message = "feeder state from another setup: " + ", ".join(
                f"{k} {state.get(k)!r} != {mine[k]!r}" for k in differ)
            if strict:
                raise ValueError(message)
            logger.warning("%s; continuing at epoch %d batch %d anyway", message, state["epoch"], state["index"])
        self._stop_prefetch()
        self._epoch, self._index = int(state["epoch"]), int(state["index"])
        logger.info("feeder resumed at epoch %d, batch %d", self._epoch, self._index)

    def _rescale_position(self, states: list, strict: bool) -> dict:
        """A state saved by another number of ranks: continue at the same place in the epoch's global batch list
        (the least advanced saved rank's index times the saved world size, shared out over this world size).
        Exact only without data warm-up skips; a resume on the same number of ranks is exact."""
        if strict:
            raise ValueError(f"feeder states of {len(states)} ranks, but world_size={self.world_size}")
        epoch = min(int(s["epoch"]) for s in states)
        consumed = min(int(s["index"]) for s in states if int(s["epoch"]) == epoch) * len(states)
        logger.warning("feeder state of %d ranks resumed on %d: continuing after global batch %d of epoch %d",
                       len(states), self.world_size, consumed, epoch)
        return {**states[0], "epoch": epoch, "index": consumed // self.world_size, "rank": self.rank}

    # -- data warm-up ------------------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """The trainer's current optimiser step (drives the data warm-up)."""
        self._step = int(step)

    def _warm(self, step: int) -> bool:
        return step < self.hparams.data_warmup_steps

    def _filter(self, batch: list[Utterance]) -> list[Utterance]:
        hp = self.hparams
        if hp.input_length_upper_bound > 0:
            batch = [u for u in batch if u.num_samples <= hp.input_length_upper_bound]
        if self.has_transcripts:
            batch = [u for u in batch if len(u.text) > hp.target_length_lower_bound]
        return batch

    def _warmup_bounds(self) -> str:
        hp = self.hparams
        bounds = []
        if hp.input_length_upper_bound > 0:
            bounds.append(f"at most input_length_upper_bound={hp.input_length_upper_bound} samples "
                          f"({hp.input_length_upper_bound / hp.sr:g} s at sr={hp.sr}; the shortest utterance has "
                          f"{min(u.num_samples for u in self.utts)})")
        if self.has_transcripts:
            bounds.append(f"a transcript longer than target_length_lower_bound={hp.target_length_lower_bound} "
                          f"characters (the longest has {max(len(u.text) for u in self.utts)})")
        warmup = f"the data warm-up (steps below data_warmup_steps={hp.data_warmup_steps})"
        return f"{warmup} keeps utterances of {' and '.join(bounds)}" if bounds else f"{warmup} keeps every utterance"

    def check_warmup(self, step: int) -> None:
        """At a step under the data warm-up: an error if its filter keeps no utterance, a warning if under 10%. Done
        once, by the trainer at start-up or else at the first warm batch."""
        if not self._warm(step) or self._warmup_checked:
            return
        self._warmup_checked = True
        kept = len(self._filter(self.utts))
        if kept == 0:
            raise DataError(f"{self._warmup_bounds()}: none of the {len(self.utts)} training utterances passes")
        message = f"{self._warmup_bounds()}: {kept} of {len(self.utts)} training utterances pass"
        logger.log(logging.WARNING if kept < 0.1 * len(self.utts) else logging.INFO, message)

    def _prepare(self, batch: list[Utterance], warm: bool) -> Optional[dict]:
        """The collated batch of the utterances that pass the warm-up filter (when ``warm``) and whose audio loads;
        None when none is left."""
        kept = self._filter(batch) if warm else batch
        audio, loaded = [], []
        for utt in kept:
            try:
                audio.append(load_audio(utt, self.hparams.sr))
                loaded.append(utt)
            except (OSError, ValueError) as error:
                self._left_out(utt, error)
        if not loaded:
            return None
        return collate(loaded, self.tokenizer, self.feature_extractor, self.hparams, audio=audio)

    def _left_out(self, utt: Utterance, error: Exception) -> None:
        """Count an unreadable training file, warn once per file, stop past ``bad_audio_limit`` files."""
        with self._unreadable_lock:  # held while warning too: the workers' warnings count up in the log's order
            if utt.audio_path in self._unreadable:
                return
            self._unreadable[utt.audio_path] = str(error)
            count = len(self._unreadable)
            limit = bad_audio_limit(len(self.utts))
            if count > limit:
                first = next(iter(self._unreadable.values()))
                raise DataError(f"{count} training audio files cannot be loaded, more than {limit} (1% of the "
                                f"corpus, at least 10): the first: {first}; the last: {error}")
            logger.warning("%s; utterance %s is left out of its batch whenever it comes (%d unreadable training "
                           "file(s) so far)", error, utt.name, count)

    def _prepare_plan(self, plan: tuple) -> tuple:
        """(epoch, index, warm, utterances) -> the same with the batch dict (or None) appended."""
        return (*plan, self._prepare(plan[3], plan[2]))

    def _plans(self, epoch: int, index: int):
        """(epoch, index, warm, utterances) from the given position on, endlessly."""
        while True:
            batches = self.epoch_batches(epoch)
            if not batches:
                raise ValueError(f"epoch {epoch}: fewer batches than world_size={self.world_size}")
            logger.debug("rank %d: epoch %d packed into %d batches (prefetch from batch %d)", self.rank, epoch,
                         len(batches), index)
            for i in range(index, len(batches)):
                yield epoch, i, self._warm(self._step), batches[i]
            epoch, index = epoch + 1, 0

    # -- iteration ---------------------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._prefetcher is None:
            self._prefetcher = _Prefetcher(self._plans(self._epoch, self._index), self._prepare_plan, self.prefetch,
                                           self.workers)
        warm = self._warm(self._step)
        self.check_warmup(self._step)
        if not warm and self._step >= self.hparams.data_warmup_steps > 0 and not self._warmup_reported:
            self._warmup_reported = True
            logger.info("data warm-up over at step %d (it dropped %d utterances, skipped %d batches)",
                        self._step, self._warmup_dropped, self._warmup_skipped)
        while True:
            try:
                epoch, index, prepared_warm, utts, batch = self._prefetcher.get()
            except Exception:  # a load error: the next call restarts (and fails again) at this batch
                self._prefetcher = None
                raise
            if prepared_warm != warm:  # prefetched across the warm-up boundary: build it as it is consumed now
                try:
                    batch = self._prepare(utts, warm)
                except Exception:
                    self._stop_prefetch()
                    raise
            self._epoch, self._index = epoch, index + 1
            if warm:
                warmup_dropped = len(utts) - len(self._filter(utts))
                self._warmup_dropped += warmup_dropped
                self._warmup_skipped += warmup_dropped == len(utts)
            if batch is None:  # emptied by the warm-up or by unreadable audio
                self._emptied_in_a_row += 1
                if self._emptied_in_a_row > len(self.utts):  # more than a whole epoch's batches
                    raise DataError(f"{self._emptied_in_a_row} batches in a row came out empty (rank {self.rank}): "
                                    f"{self._warmup_bounds() if warm else 'their audio cannot be loaded'}")
                continue
            self._emptied_in_a_row = 0
            return batch

    def next(self, step: Optional[int] = None) -> dict:
        if step is not None:
            self.set_step(step)
        return next(self)

    def _stop_prefetch(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def close(self) -> None:
        """Stop the prefetch thread; a later ``next`` restarts it at the current position."""
        self._stop_prefetch()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------------------------------
# Evaluation batches


def plan_eval_batches(utts: Sequence[Utterance], hparams, rank: int = 0, world_size: int = 1,
                      max_batches: Optional[int] = None) -> list[list[Utterance]]:
    """This rank's dev/test batches: all utterances sorted by length and packed with halved frame limits (no
    shuffling). ``max_batches`` (default ``hparams.max_eval_batches``; 0 = all) keeps that many batches evenly
    spread over the length range, so a capped eval is not biased to short utterances. Sharding is padding free:
    rank r gets batches r, r + W, ... (counts differ by at most one, no utterance twice), so gather results by
    name (``all_gather_object``), not with an even tensor gather."""
    batches = make_batches(utts, hparams.batch_size, hparams.batch_frame_limit / 2,
                           hparams.batch_quad_frame_limit / 2, bucket_size=max(1, len(utts)), rng=None)
    cap = hparams.max_eval_batches if max_batches is None else max_batches
    if 0 < cap < len(batches):
        keep = sorted(set(np.linspace(0, len(batches) - 1, cap).round().astype(int).tolist()))
        batches = [batches[i] for i in keep]
    return shard(batches, rank, world_size, trim=False)


class EvalBatches:
    """An evaluation's collated batches in order, built by background threads while the model runs (``iter``
    starts them; they stop when the iteration is exhausted or closed: a ``break`` out of the loop closes it once
    the iterator is dropped). ``len`` is the number of batches, a progress bar's total."""

    def __init__(self, plan: list[list[Utterance]], build, prefetch: int, workers: int):
        self.plan, self.build, self.prefetch, self.workers = plan, build, prefetch, workers

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[dict]:
        prefetcher = _Prefetcher(iter(self.plan), self.build, self.prefetch, self.workers)
        try:
            while True:
                try:
                    yield prefetcher.get()
                except StopIteration:
                    return
        finally:
            prefetcher.close()


def eval_batches(utts: Sequence[Utterance], hparams, tokenizer, feature_extractor=None, rank: int = 0,
                 world_size: int = 1, max_batches: Optional[int] = None, prefetch: int = 4,
                 workers: int = 2) -> EvalBatches:
    """Collated ``plan_eval_batches`` (``EvalBatches``: an iterable with a length), built by ``workers``
    background threads; no data warm-up filter; characters outside the vocab encode as ``[UNK]`` (logged once)."""
    feature_extractor = feature_extractor or build_feature_extractor(hparams)
    if any(u.text for u in utts):
        check_transcripts(utts, tokenizer, strict=False)
    plan = plan_eval_batches(utts, hparams, rank, world_size, max_batches)
    build = functools.partial(collate, tokenizer=tokenizer, feature_extractor=feature_extractor, hparams=hparams,
                              strict_vocab=False)
    return EvalBatches(plan, build, prefetch, workers)
