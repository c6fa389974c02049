"""SLURP (real + synthetic) -> data dir for intent classification: ``meta.*.txt`` (nltLa), categories, audio links.

Usage:
    python corpora/slurp.py --src database/SLURP --out data/slurp_full

Input (the official release: text from github.com/pswietojanski/slurp, audio from zenodo.org/record/4274930, or
``python corpora/synth.py slurp``)::

    <src>/slurp/dataset/slurp/{train,devel,test,train_synthetic}.jsonl   one record per line
    <src>/slurp_real/audio-<id>[-headset].flac                           recordings of train/devel/test
    <src>/slurp_synth/audio-<id>.flac                                    recordings of train_synthetic

Output (one meta line per RECORDING; a record with three recordings gives three lines)::

    <out>/en/en_<%010d>.flac         symlink to the source (relative link by default), or a 16 kHz mono FLAC
                                     conversion when the source is not already one
    <out>/meta.train.txt             real train      en_<idx>|num_samples|SENTENCE|scenario,action|en
    <out>/meta.dev.txt               devel
    <out>/meta.test.txt              test
    <out>/meta.train.syn.txt         real train lines, then train_synthetic lines
    <out>/categories.json            [{scenario: index}, {action: index}], each sorted alphabetically, from the
                                     real train/devel/test records (18 scenarios and 46 actions on the full corpus)
    <out>/vocab.json                 character vocab (Wav2Vec2CTCTokenizer form) of the train + synthetic sentences

The running index follows the jsonl files in the order train, devel, test, train_synthetic, one per recording
referenced, so names do not depend on which audio files are present. A referenced file that is missing (the real
corpus misses a few) or referenced twice is logged, counted and reported in the summary, never silently dropped.

Sentence normalisation: ASCII via unidecode, UPPER CASE (the convention of every corpus here), ``|`` (the meta
field separator) replaced by a space, whitespace collapsed; digits and punctuation are kept as SLURP writes them.
Reruns keep links that already point at their source and conversions of the right length.
"""
import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm
from unidecode import unidecode

from corpora import SR, CorpusError, build_ctc_vocab, hours, setup_logging, write_json_atomic, write_meta

log = logging.getLogger("corpora.slurp")

LANG = "en"
MAX_VOCAB = 300
# (meta name, jsonl stem, audio dir)
PARTS = (("train", "train", "slurp_real"), ("dev", "devel", "slurp_real"), ("test", "test", "slurp_real"),
         ("train_synthetic", "train_synthetic", "slurp_synth"))
REQUIRED = ("sentence", "scenario", "action", "recordings")


def normalize_sentence(text: str) -> str:
    return " ".join(unidecode(text).replace("|", " ").upper().split())


def read_jsonl(path) -> list[dict]:
    """SLURP records with the fields this script needs; a bad line fails as ``file:line: ...``."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{where}: not a JSON object ({err})") from None
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise CorpusError(f"{where}: record lacks {', '.join(missing)}")
        for key in ("scenario", "action"):
            if not isinstance(record[key], str) or not record[key] or any(c in record[key] for c in ",| "):
                raise CorpusError(f"{where}: {key} must be a non-empty word without ',', '|' or spaces, "
                                  f"got {record[key]!r}")
        if not all(isinstance(r, dict) and isinstance(r.get("file"), str) for r in record["recordings"]):
            raise CorpusError(f"{where}: every recording needs a 'file' name")
        record["_where"] = where
        records.append(record)
    return records


def link_target(source: Path, link: Path, mode: str) -> str:
    return os.path.abspath(source) if mode == "absolute" else os.path.relpath(os.path.abspath(source),
                                                                              os.path.abspath(link.parent))


def place_audio(source: Path, dest: Path, mode: str) -> tuple[int, str]:
    """Link (or convert) ``source`` to ``dest``; returns (num_samples at 16 kHz, "linked"|"converted"|"kept")."""
    info = sf.info(str(source))
    native = info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
    if native and mode != "copy":
        target = link_target(source, dest, mode)
        if dest.is_symlink() and os.readlink(dest) == target:
            return info.frames, "kept"
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        os.symlink(target, dest)
        return info.frames, "linked"
    expected = int(info.frames * SR / info.samplerate + 0.5)  # soxr.resample's output length
    if dest.exists() and not dest.is_symlink():
        try:
            if sf.info(str(dest)).frames == expected:
                return expected, "kept"
        except RuntimeError:
            pass
    audio, rate = sf.read(str(source), dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)  # (frames,) mono
    if rate != SR:
        audio = soxr.resample(audio, rate, SR)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    sf.write(str(tmp), np.clip(audio, -1, 1), SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, dest)
    return len(audio), "converted"


def prepare(src, out, link: str = "relative", progress: bool = True) -> dict:
    """Prepare ``src`` (SLURP root) into ``out``; returns the summary."""
    src, out = Path(src), Path(out)
    tic = time.time()
    # 1. records
    jsonl_dir = src / "slurp" / "dataset" / "slurp"
    records = {}
    for part, stem, _ in PARTS:
        path = jsonl_dir / f"{stem}.jsonl"
        if not path.is_file():
            if part == "train_synthetic":
                log.warning("%s missing: meta.train.syn.txt will hold the real training data only", path)
                records[part] = []
                continue
            raise CorpusError(f"{path}: not found; expected the SLURP layout <src>/slurp/dataset/slurp/"
                              f"{{train,devel,test,train_synthetic}}.jsonl (github.com/pswietojanski/slurp)")
        records[part] = read_jsonl(path)

    # 2. categories from the real splits
    real = [r for part in ("train", "dev", "test") for r in records[part]]
    scenarios = {s: i for i, s in enumerate(sorted({r["scenario"] for r in real}))}
    actions = {a: i for i, a in enumerate(sorted({r["action"] for r in real}))}

    # 3. one meta line per recording, audio linked or converted
    (out / LANG).mkdir(parents=True, exist_ok=True)
    index, seen, rows, summary = 0, {}, {}, {}
    for part, _, audio_dir in PARTS:
        rows[part], stats, n_pipes = [], Counter(), 0
        todo = [(record, recording["file"]) for record in records[part] for recording in record["recordings"]]
        for record, file in tqdm(todo, desc=f"slurp {part}", unit="rec", disable=not progress):
            name = f"{LANG}_{index:010d}"
            index += 1
            key = (audio_dir, file)
            if key in seen:
                log.warning("skip %s: %s/%s already used by %s", record["_where"], audio_dir, file, seen[key])
                stats["duplicate"] += 1
                continue
            seen[key] = record["_where"]
            source = src / audio_dir / file
            if not source.is_file():
                log.warning("skip %s: audio %s missing", record["_where"], source)
                stats["missing"] += 1
                continue
            if record["scenario"] not in scenarios or record["action"] not in actions:
                stats["unknown_label"] += 1  # kept; the loader filters labels outside categories.json
            num_samples, how = place_audio(source, out / LANG / f"{name}.flac", link)
            stats[how] += 1
            n_pipes += "|" in record["sentence"]
            rows[part].append((name, num_samples, normalize_sentence(record["sentence"]),
                               f"{record['scenario']},{record['action']}", LANG))
        if stats["unknown_label"]:
            log.warning("%s: %d recordings have a scenario or action absent from the real splits", part,
                        stats["unknown_label"])
        if n_pipes:
            log.warning("%s: '|' replaced by a space in %d sentences", part, n_pipes)
        summary[part] = {"records": len(records[part]), "recordings": len(rows[part]),
                         "hours": hours(sum(r[1] for r in rows[part])), **dict(stats)}

    # 4. meta, categories, vocab
    for part in ("train", "dev", "test"):
        write_meta(out / f"meta.{part}.txt", rows[part])
    write_meta(out / "meta.train.syn.txt", rows["train"] + rows["train_synthetic"])
    write_json_atomic(out / "categories.json", [scenarios, actions])
    vocab = build_ctc_vocab(r[2] for r in rows["train"] + rows["train_synthetic"])
    if len(vocab) > MAX_VOCAB:
        raise CorpusError(f"{out}/vocab.json would have {len(vocab)} entries (limit {MAX_VOCAB}); the transcripts "
                          f"hold unexpected characters")
    unseen = Counter(c for part in ("dev", "test") for r in rows[part] for c in r[2].replace(" ", "")
                     if c not in vocab)
    write_json_atomic(out / "vocab.json", vocab)
    summary.update(scenarios=len(scenarios), actions=len(actions), vocab_size=len(vocab),
                   chars_unseen_in_training=dict(unseen), seconds=time.time() - tic)
    return summary


def print_summary(summary: dict, out) -> None:
    for part, _, _ in PARTS:
        s = summary[part]
        extra = ", ".join(f"{s.get(k, 0)} {k}" for k in ("missing", "duplicate") if s.get(k))
        print(f"slurp {part:15s}: {s['recordings']:6d} recordings, {s['hours']:6.2f} h from {s['records']} records"
              f" | linked {s.get('linked', 0)}, converted {s.get('converted', 0)}, kept {s.get('kept', 0)}"
              f" | skipped: {extra or 'none'}")
    unseen = " ".join(f"{c!r}x{n}" for c, n in sorted(summary["chars_unseen_in_training"].items())) or "none"
    print(f"slurp: {summary['scenarios']} scenarios, {summary['actions']} actions, vocab.json with "
          f"{summary['vocab_size']} entries (dev/test characters outside it: {unseen}); meta.train.syn.txt = "
          f"{summary['train']['recordings']} real + {summary['train_synthetic']['recordings']} synthetic; "
          f"{out} ready in {summary['seconds']:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default="database/SLURP", help="SLURP root (holds slurp/, slurp_real/, slurp_synth/)")
    parser.add_argument("--out", default="data/slurp_full", help="data dir to write")
    parser.add_argument("--link", choices=("relative", "absolute", "copy"), default="relative",
                        help="how 16 kHz mono FLAC sources are placed: relative symlink (survives moving src and "
                             "out together), absolute symlink (survives moving out alone), or a copy")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        summary = prepare(args.src, args.out, link=args.link)
    except CorpusError as err:
        sys.exit(f"error: {err}")
    print_summary(summary, args.out)


if __name__ == "__main__":
    main()
