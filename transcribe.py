"""Transcribe your own recordings with a trained or exported model: any length, format, sample rate, channels.

Usage:
    python transcribe.py --model output/tedlium/hybrid lecture.mp3 interviews/ --output transcripts.jsonl
    python transcribe.py --model output/models/ted-bimamba2 talk.flac --timestamps char --device cuda
    python transcribe.py --model output/slurp/hybrid/model.ckpt-90000 --vocab data/slurp_full commands/

--model is a run dir (its latest checkpoint), a model.ckpt-<step> file (hparams.json beside it) or a directory of
scripts/export_hf_model.py. A run's vocabulary is --vocab (its data dir or vocab.json; default <run dir>/vocab.json
when the run recorded one), its classifier class names --labels (as scripts/export_hf_model.py reads them).

Files: WAV, FLAC, OGG and MP3 (soundfile, libsndfile >= 1.1), folders searched for those; any sample rate (soxr
resamples to the model's), mono or multi-channel (channels averaged). Each recording goes through in one pass, an
hour-long lecture included: the CNN front end runs in 5-minute pieces (as infer.py) and the BiMamba2 encoder is
linear in the length. One line per file is printed, ``<file>: <transcript>`` (and the predicted intent or speaker
of a classifier model); --output writes JSON lines: file, duration (s), text, words or chars with start and end
(s), real_time_factor (wall seconds of reading and transcribing per audio second), labels (+ intent) for
classifier models, and, for a file that failed, its error. A file that cannot be read, is empty, or is shorter
than one frame gets one error line naming it, the others are still transcribed, and the exit status is 1.
"""
import argparse
import logging
import sys

from tqdm import tqdm

from utils.transcription import AUTOCAST_DTYPES, TIMESTAMPS, AudioError, audio_files, load_transcriber, write_jsonl

logger = logging.getLogger("transcribe")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("inputs", nargs="+", metavar="FILE_OR_FOLDER", help="audio files, and folders to search for them")
    add("--model", required=True, help="a run dir, a model.ckpt-<step> file, or an exported model dir")
    add("--output", default=None, help="write one JSON line per file here")
    add("--timestamps", choices=TIMESTAMPS, default="word", help="word or character start/end times (default word)")
    add("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    add("--mixed_precision", choices=tuple(AUTOCAST_DTYPES), default="no", help="autocast precision on the device")
    add("--vocab", default=None, help="a run's vocab.json or data dir (default: <run dir>/vocab.json when present)")
    add("--labels", default=None, help="a run's class names: SLURP data dir or categories.json, or VoxCeleb1 dir")
    return parser.parse_args(argv)


def describe(row: dict) -> str:
    """The printed line of a transcribed file: its transcript and predicted classes."""
    parts = [row["text"]] if "text" in row else []
    if "labels" in row:
        parts.append(row.get("intent") or ", ".join(f"{k}={v}" for k, v in row["labels"].items()))
    return f"{row['file']}: {' | '.join(parts)}"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "models", "utils.trained_model"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    # 1. model
    try:
        transcriber = load_transcriber(args.model, args.vocab, args.labels, args.device, args.mixed_precision)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    logger.info("%s on %s, %d Hz", args.model, transcriber.device, transcriber.sampling_rate)

    # 2. files
    files = audio_files(args.inputs)
    if not files:
        sys.exit(f"error: no audio files ({', '.join(args.inputs)}): expected files or folders holding .wav, "
                 f".flac, .ogg or .mp3")

    # 3. transcribe, one file at a time, each in one pass
    rows, failed = [], 0
    for path in tqdm(files, desc="transcribe", unit="file", disable=len(files) < 2):
        try:
            row = transcriber.transcribe_file(path, args.timestamps)
        except AudioError as error:
            failed += 1
            tqdm.write(f"error: {error}", file=sys.stderr)
            rows.append({"file": str(path), "error": str(error)})
            continue
        tqdm.write(describe(row))
        rows.append(row)

    # 4. JSON lines and the exit status
    if args.output:
        write_jsonl(rows, args.output)
        logger.info("%d transcript(s) in %s", len(rows) - failed, args.output)
    if failed:
        print(f"{failed} of {len(files)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
