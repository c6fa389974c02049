"""VoxCeleb1 speaker identification: check the tree in place and summarise the split.

Usage:
    python corpora/voxceleb1.py --src data/VoxCeleb1

Expected layout (the official release, or ``python corpora/synth.py voxceleb1``)::

    <src>/wav/id10001/1zcIwhmdeo4/00001.wav    16 kHz mono; speaker / YouTube video / utterance
    <src>/veri_test_class.txt                  SUPERB SI's split (s3prl), read by the HF ``superb`` script the
                                               original code loads: "<1|2|3> id10001/1zcIwhmdeo4/00001.wav"
    <src>/iden_split.txt                       the official identification split, same format (1 train, 2 val,
                                               3 test): read when veri_test_class.txt is absent

Nothing is written: the data loader (utils/data.py, ``superb_si_dataset``) builds its dataset from the tree with
the same split reader (``read_split_lines``) this check uses. The label of a speaker is its SUPERB class index, as the HF ``superb`` script's
ClassLabel gives it: ``id10001`` -> 0 ... ``id11251`` -> 1250 (the sorted index only when all 1251 speakers are
there). A missing or malformed list, a speaker id outside that range, or a listed file that is absent, fails
naming the line.
"""
import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import soundfile as sf
from tqdm import tqdm

from corpora import SR, CorpusError, hours
from utils.data import SI_SPLITS, read_split_lines, speaker_labels, speaker_of, split_file

def check(root, durations: bool = True, progress: bool = True) -> dict:
    """Every listed file exists (and, with ``durations``, is 16 kHz mono); returns per-split counts and hours."""
    root = Path(root)
    entries = read_split_lines(root)
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
        print(f"voxceleb1 {split} {SI_SPLITS[split - 1]:10s}: {s['speakers']:5d} speakers, {s['utterances']:7d} "
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
    except (CorpusError, FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    print_summary(summary, args.src)


if __name__ == "__main__":
    main()
