"""VoxCeleb1 speaker identification: check the tree in place and summarise the official split.

Usage:
    python corpora/voxceleb1.py --src data/VoxCeleb1

Expected layout (the official release, or ``python corpora/synth.py voxceleb1``)::

    <src>/wav/id10001/1zcIwhmdeo4/00001.wav    16 kHz mono; speaker / YouTube video / utterance
    <src>/iden_split.txt                       "<1|2|3> id10001/1zcIwhmdeo4/00001.wav" (1 train, 2 val, 3 test)

Nothing is written: the data loader (utils/data.py) builds its dataset from the tree with ``read_iden_split``
and ``speaker_labels`` below. A missing or malformed list, or a listed file that is absent, fails naming the line.
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
SPLIT_NAMES = {1: "train", 2: "validation", 3: "test"}
SPLIT_URL = "https://mm.kaist.ac.kr/datasets/voxceleb/meta/iden_split.txt"
_relpath_re = re.compile(r"(id\d+)/[^/\s]+/[^/\s]+\.wav")


def read_iden_split(root) -> list[tuple[int, str]]:
    """[(split, "id10001/1zcIwhmdeo4/00001.wav")] from ``<root>/iden_split.txt``; split 1 = train, 2 = val, 3 = test."""
    return [(split, relpath) for _, split, relpath in _read_iden_split_lines(root)]


def _read_iden_split_lines(root) -> list[tuple[str, int, str]]:
    """[("file:line", split, relpath)]."""
    path = Path(root) / SPLIT_FILE
    if not path.is_file():
        raise CorpusError(
            f"{path} not found. It is the official VoxCeleb1 identification split list: one line "
            f"'<split> <speaker>/<video>/<utterance>.wav' per file, split 1 = train, 2 = validation, 3 = test. "
            f"It is published at {SPLIT_URL} (the list s3prl's SUPERB speaker-identification recipe uses); put it "
            f"at {path}.")
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
        if relpath in seen:
            raise CorpusError(f"{where}: {relpath} already listed at line {seen[relpath]}")
        seen[relpath] = number
        entries.append((where, int(fields[0]), relpath))
    if not entries:
        raise CorpusError(f"{path}: empty")
    return entries


def speaker_of(relpath: str) -> str:
    return relpath.split("/", 1)[0]


def speaker_labels(relpaths) -> dict[str, int]:
    """{speaker id: index of the speaker among the sorted speaker ids}."""
    return {speaker: i for i, speaker in enumerate(sorted({speaker_of(p) for p in relpaths}))}


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
    print(f"voxceleb1: {summary['speakers']} speakers in {root}; checked in {summary['seconds']:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default="data/VoxCeleb1", help="VoxCeleb1 root (holds wav/ and iden_split.txt)")
    parser.add_argument("--quick", action="store_true", help="only check that listed files exist (no hours)")
    args = parser.parse_args(argv)
    try:
        summary = check(args.src, durations=not args.quick)
    except CorpusError as err:
        sys.exit(f"error: {err}")
    print_summary(summary, args.src)


if __name__ == "__main__":
    main()
