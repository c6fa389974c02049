"""TED-LIUM 3 (legacy split) -> data dir of 16 kHz FLAC segments, ``meta.{train,dev,test}.txt`` and ``vocab.json``.

Usage:
    python corpora/tedlium.py --src database/TEDLIUM_release-3 --out data/tedlium

Input (the official release, or ``python corpora/synth.py tedlium``)::

    <src>/legacy/{train,dev,test}/stm/<talk>.stm   <talk> 1 <speaker> <start> <end> <o,f0,male> <transcript>
    <src>/legacy/{train,dev,test}/sph/<talk>.sph   NIST SPHERE, 16 kHz 16-bit mono PCM

Output::

    <out>/<talk>/<talk>_%08d.flac        one segment; %08d is its index among the talk's scored segments
    <out>/meta.{train,dev,test}.txt      <talk>_%08d|num_samples|TRANSCRIPT
    <out>/vocab.json                     Wav2Vec2CTCTokenizer vocab of the training transcripts

Segments marked ``ignore_time_segment_in_scoring`` are dropped (counted). Transcripts are normalised like the
original recipe (keithito's tacotron ``numbers.py`` with ``inflect``), then upper-cased:

    ASCII via unidecode; "1,000" -> "1000"; "$3.50" -> "three dollars, fifty cents"; "2.5" -> "two point five";
    "1st" -> "first"; "1999" -> "nineteen ninety-nine"; other integers spelled out; "&" -> " and ";
    "%" -> " percent"; "+" -> " plus "; "@" -> " at "; "<unk>" -> "[UNK]"; "-" -> space; then UPPER CASE, and every
    character other than A-Z and "'" is dropped (counted per character in the summary); whitespace collapsed.

Where this differs from the original recipe (README, "Differences from the original code"): "1,000" is one
number here ("one thousand"; the original reads "one , zero" and its "," becomes an [UNK] target), the symbols
are spelled out as separate words ("AT&T" -> "AT AND T"; the original writes "ATandT"), transcripts are upper
case (the original's lower case: the same vocabulary indices, A-Z for a-z), and characters outside the
vocabulary are dropped instead of becoming [UNK] targets.

Case convention: UPPER CASE, as the English wav2vec2 CTC vocabularies are. Apostrophes stay where TED-LIUM writes
them ("doesn 't" -> "DOESN 'T"); the loader joins " '" into "'" (hparams ``replace_apos``).

Bad input fails naming the culprit (``file:line: ...``, a missing .sph, a rate other than 16 kHz, more than one
channel). A segment ending after its audio (by more than the stm's 10 ms time resolution) is logged, counted and
reported as a skip. A rerun keeps every segment file already there with the right length.
"""
import argparse
import logging
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
from tqdm import tqdm
from unidecode import unidecode

from corpora import SR, UNK, CorpusError, build_ctc_vocab, hours, setup_logging, write_json_atomic, write_meta

log = logging.getLogger("corpora.tedlium")

SPLITS = ("train", "dev", "test")
IGNORE = "ignore_time_segment_in_scoring"
STM_TIME_RESOLUTION = 0.01  # seconds; stm times carry two decimals, an end this far past the audio is clamped

# --------------------------------------------------------------------------------------------------------------
# Text normalisation


@lru_cache(maxsize=1)
def _inflect():
    import inflect  # 2 s to import: only when a transcript holds a number

    return inflect.engine()


_comma_number_re = re.compile(r"([0-9][0-9,]+[0-9])")
_decimal_number_re = re.compile(r"([0-9]+\.[0-9]+)")
_pounds_re = re.compile(r"£([0-9,]*[0-9]+)")
_dollars_re = re.compile(r"\$([0-9.,]*[0-9]+)")
_ordinal_re = re.compile(r"[0-9]+(st|nd|rd|th)")
_number_re = re.compile(r"[0-9]+")


def _spell_dollars(match: re.Match) -> str:
    amount = match.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return f"{amount} dollars"  # unexpected format: leave the digits to the integer pass
    dollars = int(parts[0]) if parts[0] else 0
    cents = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    dollar_unit = "dollar" if dollars == 1 else "dollars"
    cent_unit = "cent" if cents == 1 else "cents"
    if dollars and cents:
        return f"{dollars} {dollar_unit}, {cents} {cent_unit}"
    if dollars:
        return f"{dollars} {dollar_unit}"
    if cents:
        return f"{cents} {cent_unit}"
    return "zero dollars"


def _spell_ordinal(match: re.Match) -> str:
    return _inflect().number_to_words(match.group(0))


def _spell_integer(match: re.Match) -> str:
    number = int(match.group(0))
    if 1000 < number < 3000:  # read like a year
        if number == 2000:
            return "two thousand"
        if 2000 < number < 2010:
            return "two thousand " + _inflect().number_to_words(number % 100)
        if number % 100 == 0:
            return _inflect().number_to_words(number // 100) + " hundred"
        return _inflect().number_to_words(number, andword="", zero="oh", group=2).replace(", ", " ")
    return _inflect().number_to_words(number, andword="")


def expand_numbers(text: str) -> str:
    """keithito ``normalize_numbers``: "$3.50" -> "three dollars, fifty cents", "2.5" -> "two point five", ..."""
    text = _comma_number_re.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _pounds_re.sub(r"\1 pounds", text)
    text = _dollars_re.sub(_spell_dollars, text)
    text = _decimal_number_re.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ordinal_re.sub(_spell_ordinal, text)
    return _number_re.sub(_spell_integer, text)


def spoken_form(text: str) -> str:
    """Lower-case words as they are said (before the character filter): ASCII, symbols and numbers spelled out."""
    text = unidecode(text)
    text = text.replace("&", " and ").replace("%", " percent").replace("+", " plus ").replace("@", " at ")
    return expand_numbers(text)


_not_kept_re = re.compile(r"[^A-Z' ]")


def normalize_transcript(text: str, dropped: Counter | None = None) -> str:
    """An stm transcript -> the UPPER CASE training target; characters removed are counted in ``dropped``."""
    words = []
    for word in text.split():
        if word == "<unk>":
            words.append(UNK)
            continue
        word = spoken_form(word).replace(", ", " ").replace("-", " ").upper()  # the expansions' own commas
        if dropped is not None:
            dropped.update(_not_kept_re.findall(word))
        words.extend(_not_kept_re.sub(" ", word).split())
    return " ".join(words)


# --------------------------------------------------------------------------------------------------------------
# stm parsing


@dataclass
class Segment:
    talk: str
    index: int  # position among the talk's scored segments: the name's %08d
    start: float
    end: float
    text: str  # as written in the stm
    where: str  # "file:line"

    @property
    def name(self) -> str:
        return f"{self.talk}_{self.index:08d}"


_talk_name_re = re.compile(r"[A-Za-z0-9_-]+")


def read_stm(path) -> tuple[list[Segment], int]:
    """Scored segments of one stm file, and how many ``ignore_time_segment_in_scoring`` lines it had."""
    path = Path(path)
    segments, n_ignored = [], 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path}:{number}"
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split(None, 6)
        if len(fields) < 6:
            raise CorpusError(f"{where}: expected '<talk> <channel> <speaker> <start> <end> <label> <transcript>', "
                              f"got {len(fields)} fields: {line!r}")
        talk, _channel, _speaker, start, end = fields[:5]
        try:
            start, end = float(start), float(end)
        except ValueError:
            raise CorpusError(f"{where}: start and end must be seconds, got {fields[3]!r} {fields[4]!r}") from None
        if not 0 <= start < end:
            raise CorpusError(f"{where}: needs 0 <= start < end, got {start} {end}")
        if not _talk_name_re.fullmatch(talk):
            raise CorpusError(f"{where}: talk name {talk!r} has characters outside [A-Za-z0-9_-]")
        rest = fields[5:]
        if rest and rest[0].startswith("<") and rest[0].endswith(">") and rest[0] != "<unk>":
            rest = rest[1:]  # the <o,f0,male> label
        text = " ".join(rest)
        if text.strip() == IGNORE:
            n_ignored += 1
            continue
        segments.append(Segment(talk, len(segments), start, end, text, where))
    return segments, n_ignored


# --------------------------------------------------------------------------------------------------------------
# Cutting one talk


@dataclass
class TalkResult:
    rows: list = field(default_factory=list)  # (name, num_samples, text)
    written: int = 0
    reused: int = 0
    skipped: list = field(default_factory=list)  # "file:line: reason"
    dropped: Counter = field(default_factory=Counter)
    empty: list = field(default_factory=list)


def _sample_span(segment: Segment) -> tuple[int, int]:
    return int(round(segment.start * SR)), int(round(segment.end * SR))


def _existing_length(path: Path) -> int | None:
    try:
        return sf.info(str(path)).frames
    except Exception:
        return None


def _write_flac(path: Path, audio: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    sf.write(str(tmp), audio, SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)


def prepare_talk(sph: Path, segments: list[Segment], out_dir: Path) -> TalkResult:
    """Cut, normalise and write one talk's segments (skipping files already there with the right length)."""
    result = TalkResult()
    texts = {}
    for segment in segments:
        text = normalize_transcript(segment.text, result.dropped)
        if not text:
            result.empty.append(f"{segment.where}: empty transcript after normalisation: {segment.text!r}")
            continue
        texts[segment.name] = text
    todo = [s for s in segments if s.name in texts]
    if not todo:
        return result
    if not sph.is_file():
        raise CorpusError(f"{sph}: missing audio for {todo[0].where.rsplit(':', 1)[0]}")
    try:
        info = sf.info(str(sph))
    except RuntimeError as err:
        raise CorpusError(f"{sph}: soundfile cannot read it ({err}); a shorten-compressed SPHERE file needs "
                          f"decompressing first (sph2pipe -p -f sph in.sph out.sph)") from None
    if info.samplerate != SR or info.channels != 1:
        raise CorpusError(f"{sph}: expected {SR} Hz mono, got {info.samplerate} Hz with {info.channels} channels")
    talk_dir = out_dir / segments[0].talk
    audio = None
    for segment in todo:
        begin, end = _sample_span(segment)
        if end > info.frames:
            if end - info.frames > STM_TIME_RESOLUTION * SR:
                result.skipped.append(f"{segment.where}: segment ends at {segment.end:.2f} s, after the audio "
                                      f"({info.frames / SR:.2f} s)")
                continue
            end = info.frames
        path = talk_dir / f"{segment.name}.flac"
        if _existing_length(path) == end - begin:
            result.reused += 1
        else:
            if audio is None:
                audio, _ = sf.read(str(sph), dtype="int16")
                talk_dir.mkdir(parents=True, exist_ok=True)
            _write_flac(path, audio[begin:end])
            result.written += 1
        result.rows.append((segment.name, end - begin, texts[segment.name]))
    return result


def _prepare_talk_job(args):
    return prepare_talk(*args)


# --------------------------------------------------------------------------------------------------------------


def prepare(src, out, jobs: int = 1, progress: bool = True) -> dict:
    """Prepare every legacy split of ``src`` into ``out``; returns the summary {split: {...}}."""
    src, out = Path(src), Path(out)
    tic = time.time()
    # 1. read every stm (fails early on a malformed line before any audio is touched)
    talks = {}
    for split in SPLITS:
        stm_dir = src / "legacy" / split / "stm"
        if not stm_dir.is_dir():
            raise CorpusError(f"{stm_dir}: not found; expected the TED-LIUM 3 layout "
                              f"<src>/legacy/{{train,dev,test}}/{{sph,stm}}/")
        talks[split] = []
        for stm in sorted(stm_dir.glob("*.stm")):
            segments, n_ignored = read_stm(stm)
            talks[split].append((stm, segments, n_ignored))
        if not talks[split]:
            raise CorpusError(f"{stm_dir}: no .stm files")

    # 2. cut segments, talk by talk
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    pool = ProcessPoolExecutor(jobs) if jobs > 1 else None
    try:
        for split in SPLITS:
            work = [(src / "legacy" / split / "sph" / f"{stm.stem}.sph", segments, out)
                    for stm, segments, _ in talks[split]]
            results = pool.map(_prepare_talk_job, work) if pool else map(_prepare_talk_job, work)
            rows, stats = [], Counter()
            dropped, skipped = Counter(), []
            for result in tqdm(results, total=len(work), desc=f"tedlium {split}", unit="talk", disable=not progress):
                rows += result.rows
                stats.update(written=result.written, reused=result.reused)
                dropped += result.dropped
                for message in result.skipped + result.empty:
                    log.warning("skip %s", message)
                skipped += result.skipped + result.empty
            write_meta(out / f"meta.{split}.txt", rows)
            summary[split] = {
                "talks": len(work),
                "segments": len(rows),
                "hours": hours(sum(r[1] for r in rows)),
                "ignored": sum(n for _, _, n in talks[split]),
                "skipped": len(skipped),
                "written": stats["written"],
                "reused": stats["reused"],
                "dropped_chars": dict(dropped),
            }
            if split == "train":
                vocab = build_ctc_vocab(r[2] for r in rows)
    finally:
        if pool:
            pool.shutdown()

    # 3. vocabulary of the training transcripts
    if not summary["train"]["segments"]:
        raise CorpusError(f"{src}: no training segments left; cannot build vocab.json")
    write_json_atomic(out / "vocab.json", vocab)
    summary["vocab_size"] = len(vocab)
    summary["seconds"] = time.time() - tic
    return summary


def print_summary(summary: dict, out) -> None:
    for split in SPLITS:
        s = summary[split]
        dropped = " ".join(f"{c!r}x{n}" for c, n in sorted(s["dropped_chars"].items())) or "none"
        print(f"tedlium {split:5s}: {s['segments']:6d} segments, {s['hours']:7.2f} h from {s['talks']} talks | "
              f"{s['ignored']} ignore_time_segment_in_scoring dropped, {s['skipped']} skipped, "
              f"{s['written']} written, {s['reused']} kept from a previous run | characters dropped: {dropped}")
    print(f"tedlium: vocab.json with {summary['vocab_size']} entries; {out} ready in {summary['seconds']:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", default="database/TEDLIUM_release-3", help="TED-LIUM 3 root (holds legacy/)")
    parser.add_argument("--out", default="data/tedlium", help="data dir to write")
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="talks cut in parallel")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        summary = prepare(args.src, args.out, jobs=args.jobs)
    except CorpusError as err:
        sys.exit(f"error: {err}")
    print_summary(summary, args.out)


if __name__ == "__main__":
    main()
