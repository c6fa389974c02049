"""VoxCeleb1 speaker identification: check the tree in place and summarise the split.

Usage:
    python corpora/voxceleb1.py --src data/VoxCeleb1

Expected layout (the official release, or ``python corpora/synth.py voxceleb1``)::

    <src>/wav/id10001/1zcIwhmdeo4/00001.wav    16 kHz mono; speaker / YouTube video / utterance
    <src>/veri_test_class.txt                  SUPERB SI's split (s3prl), read by the HF ``superb`` script the
                                               original code loads: "<1|2|3> id10001/1zcIwhmdeo4/00001.wav"
    <src>/iden_split.txt                       the official identification split, same format (1 train, 2 val,
                                               3 test): read when veri_test_class.txt is absent

Nothing is written: the data loader (utils/data.py) builds its dataset from the tree with ``read_iden_split``
and ``speaker_labels`` below. The label of a speaker is its SUPERB class index, as the HF ``superb`` script's
ClassLabel gives it: ``id10001`` -> 0 ... ``id11251`` -> 1250 (the sorted index only when all 1251 speakers are
there). A missing or malformed list, a speaker id outside that range, or a listed file that is absent, fails
naming the line.
"""
import argparse
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import soundfile as sf
from tqdm import tqdm

from corpora import SR, CorpusError, hours

SPLIT_FILE = "iden_split.txt"
SUPERB_SPLIT_FILE = "veri_test_class.txt"  # what the HF superb script (and so the original code) reads
SPLIT_NAMES = {1: "train", 2: "validation", 3: "test"}
SPLIT_URL = "https://mm.kaist.ac.kr/datasets/voxceleb/meta/iden_split.txt"
FIRST_SPEAKER, NUM_CLASSES = 10001, 1251  # SUPERB SI's classes: id10001 ... id11251
_relpath_re = re.compile(r"(id\d+)/[^/\s]+/[^/\s]+\.wav")


def split_file(root) -> Path:
    """``<root>/veri_test_class.txt`` (SUPERB's split, the paper's) when it is there, else ``<root>/iden_split.txt``."""
    superb = Path(root) / SUPERB_SPLIT_FILE
    return superb if superb.is_file() else Path(root) / SPLIT_FILE


def read_iden_split(root) -> list[tuple[int, str]]:
    """[(split, "id10001/1zcIwhmdeo4/00001.wav")] from ``split_file(root)``; split 1 = train, 2 = val, 3 = test."""
    return [(split, relpath) for _, split, relpath in _read_iden_split_lines(root)]


def _read_iden_split_lines(root) -> list[tuple[str, int, str]]:
    """[("file:line", split, relpath)]."""
    path = split_file(root)
    if not path.is_file():
        raise CorpusError(
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
            raise CorpusError(f"{where}: expected '<1|2|3> <speaker>/<video>/<utterance>.wav', got {line!r}")
        relpath = fields[1]
        if not _relpath_re.fullmatch(relpath):
            raise CorpusError(f"{where}: expected a path like id10001/1zcIwhmdeo4/00001.wav, got {relpath!r}")
        if not 0 <= speaker_class(speaker_of(relpath)) < NUM_CLASSES:
            raise CorpusError(f"{where}: speaker {speaker_of(relpath)} is not one of SUPERB SI's "
                              f"id{FIRST_SPEAKER} ... id{FIRST_SPEAKER + NUM_CLASSES - 1}")
        if relpath in seen:
            raise CorpusError(f"{where}: {relpath} already listed at line {seen[relpath]}")
        seen[relpath] = number
        entries.append((where, int(fields[0]), relpath))
    if not entries:
        raise CorpusError(f"{path}: empty")
    return entries


def speaker_of(relpath: str) -> str:
    return relpath.split("/", 1)[0]


def speaker_class(speaker: str) -> int:
    """SUPERB SI's class index of a speaker id: id10001 -> 0 ... id11251 -> 1250."""
    return int(speaker[2:]) - FIRST_SPEAKER


def speaker_labels(relpaths) -> dict[str, int]:
    """{speaker id: its class index} (``speaker_class``) for the speakers of ``relpaths``."""
    return {speaker: speaker_class(speaker) for speaker in sorted({speaker_of(p) for p in relpaths})}


def check(root, durations: bool = True, progress: bool = True) -> dict:
    """Every listed file exists (and, with ``durations``, is 16 kHz mono); returns per-split counts and hours."""
    root = Path(root)
    entries = _read_iden_split_lines(root)
    tic = time.time()
    per_split = defaultdict(lambda: {"speakers": set(), "utterances": 0, "samples": 0})
    for where, split, relpath in tqdm(entries, desc="voxceleb1", unit="wav", disable=not progress):
        path = root / "wav" / relpath
        if durations:
            try:
                info = sf.info(str(path))
            except RuntimeError:
                info = None
            if info is None:
                raise CorpusError(f"{where}: {path} is missing or unreadable")
            if info.samplerate != SR or info.channels != 1:
                raise CorpusError(f"{path}: expected {SR} Hz mono, got {info.samplerate} Hz, {info.channels} channels")
            per_split[split]["samples"] += info.frames
        elif not path.is_file():
            raise CorpusError(f"{where}: {path} is missing")
        per_split[split]["speakers"].add(speaker_of(relpath))
        per_split[split]["utterances"] += 1
    train = per_split[1]["speakers"]
    summary = {}
    for split in (1, 2, 3):
        s = per_split[split]
        summary[split] = {"speakers": len(s["speakers"]), "utterances": s["utterances"],
                          "hours": hours(s["samples"]) if durations else None,
                          "speakers_not_in_train": len(s["speakers"] - train)}
    summary["speakers"] = len(speaker_labels(p for _, _, p in entries))
    summary["seconds"] = time.time() - tic
    return summary


def print_summary(summary: dict, root) -> None:
    for split in (1, 2, 3):
        s = summary[split]
        length = f"{s['hours']:7.2f} h" if s["hours"] is not None else "  (hours not measured)"
        note = f" | {s['speakers_not_in_train']} speakers absent from train" if s["speakers_not_in_train"] else ""
        print(f"voxceleb1 {split} {SPLIT_NAMES[split]:10s}: {s['speakers']:5d} speakers, {s['utterances']:7d} "
              f"utterances, {length}{note}")
    print(f"voxceleb1: {summary['speakers']} speakers in {root} (split {split_file(root).name}); checked in "
          f"{summary['seconds']:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default="data/VoxCeleb1",
                        help="VoxCeleb1 root (holds wav/ and veri_test_class.txt or iden_split.txt)")
    parser.add_argument("--quick", action="store_true", help="only check that listed files exist (no hours)")
    args = parser.parse_args(argv)
    try:
        summary = check(args.src, durations=not args.quick)
    except CorpusError as err:
        sys.exit(f"error: {err}")
    print_summary(summary, args.src)


if __name__ == "__main__":
    main()
