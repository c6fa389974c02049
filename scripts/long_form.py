"""Long-form check: minutes of the test split's held-out voices as one recording, transcribed in one pass, against
the same utterances transcribed one by one.

Usage:
    python scripts/long_form.py --model output/demo/runs/hybrid --data-dir output/demo/data/tedlium --minutes 5 \\
        --out output/demo/long_form

The test utterances of a prepared TED-LIUM-layout data dir (meta.test.txt: talks whose voices no training run
heard), in meta order, are joined with GAP_SECONDS of silence between them until the recording lasts --minutes,
written to ``<out>/long_form.flac`` and transcribed by transcribe.py's code path (utils/transcription.py: the file
read back, one forward pass over all of it). Each utterance is also transcribed alone. Both hypotheses are cleaned
as infer.py cleans them and scored by WER / CER (jiwer): the long recording against its utterances' transcripts
joined in order, the segments as a corpus. ``<out>/long_form.json`` holds both scores, the recording's length and
real-time factor, its hypothesis, and each segment's reference and hypothesis (as scored); the two WERs are printed.

--model is what transcribe.py takes (a run dir, a model.ckpt-*, an exported dir); a run's vocabulary defaults to
the data dir's vocab.json.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from hparams import create_hparams  # noqa: E402
from utils.data import clean_transcript, load_audio, read_meta  # noqa: E402
from utils.metrics import asr_metrics  # noqa: E402
from utils.transcription import AUTOCAST_DTYPES, load_transcriber  # noqa: E402

logger = logging.getLogger("long_form")

GAP_SECONDS = 0.3  # silence between two utterances of the long recording (a pause between sentences)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model", required=True, help="a run dir, a model.ckpt-<step> file, or an exported model dir")
    add("--data-dir", "--data_dir", dest="data_dir", required=True, help="prepared TED-LIUM-layout data dir")
    add("--out", required=True, help="directory for long_form.flac and long_form.json")
    add("--minutes", type=float, default=5.0, help="length of the long recording (default 5)")
    add("--eval_meta", default="meta.test.txt", help="meta file of held-out utterances, under --data-dir")
    add("--vocab", default=None, help="a run's vocab.json (default: <data-dir>/vocab.json)")
    add("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    add("--mixed_precision", choices=tuple(AUTOCAST_DTYPES), default="no", help="autocast precision")
    return parser.parse_args(argv)


def take_utterances(utts, sampling_rate: int, seconds: float) -> tuple[list, list]:
    """(utterances, their samples): taken in order until they and the gaps between them last ``seconds``."""
    used, audio, samples = [], [], 0
    for utt in utts:
        if samples >= seconds * sampling_rate:
            break
        used.append(utt)
        audio.append(load_audio(utt, sampling_rate))
        samples += len(audio[-1]) + int(GAP_SECONDS * sampling_rate) * (len(used) > 1)
    if samples < seconds * sampling_rate:
        logger.warning("the split holds %.1f s of audio, less than the %.1f s asked for", samples / sampling_rate,
                       seconds)
    return used, audio


def join_with_gaps(audio: list, sampling_rate: int) -> np.ndarray:
    """The utterances' samples in order, GAP_SECONDS of silence between each two."""
    gap = np.zeros(int(GAP_SECONDS * sampling_rate), dtype=np.float32)
    pieces = [piece for samples in audio for piece in (gap, samples)][1:]
    return np.concatenate(pieces)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data_dir, out_dir = Path(args.data_dir), Path(args.out)

    # 1. model
    transcriber = load_transcriber(args.model, args.vocab or data_dir, device=args.device,
                                   mixed_precision=args.mixed_precision)
    if transcriber.tokenizer is None:
        sys.exit(f"error: {args.model} gives no transcripts (its CTC head was not trained: ctc_weight=0)")
    sampling_rate = transcriber.sampling_rate
    hparams = create_hparams(f"sr={sampling_rate}")  # TED-LIUM's meta format and transcript cleaning

    # 2. the long recording: held-out utterances in meta order
    utts = read_meta(data_dir / args.eval_meta, data_dir, hparams)
    used, audio = take_utterances(utts, sampling_rate, args.minutes * 60)
    recording = join_with_gaps(audio, sampling_rate)
    out_dir.mkdir(parents=True, exist_ok=True)
    recording_path = out_dir / "long_form.flac"
    sf.write(recording_path, recording, sampling_rate)
    logger.info("%s: %d utterances of %s, %.1f minutes", recording_path, len(used), args.eval_meta,
                len(recording) / sampling_rate / 60)

    # 3. each utterance alone
    clean = lambda text: clean_transcript(text, hparams.remove_unk, hparams.replace_apos)  # noqa: E731
    refs, segment_hyps, tic = [u.text for u in used], [], time.perf_counter()
    for samples in audio:
        segment_hyps.append(clean(transcriber.transcribe(samples, "none")["text"]))
    segment_seconds = time.perf_counter() - tic
    segments = asr_metrics(refs, segment_hyps)

    # 4. the long recording in one pass, read back from its file as transcribe.py reads any file
    row = transcriber.transcribe_file(recording_path, timestamps="word")
    long_hyp = clean(row["text"])
    long_form = asr_metrics([" ".join(refs)], [long_hyp])

    # 5. report
    result = {"model": str(args.model), "data_dir": str(data_dir), "utterances": len(used),
              "minutes": round(row["duration"] / 60, 3), "long_wer": long_form["wer"], "long_cer": long_form["cer"],
              "segment_wer": segments["wer"], "segment_cer": segments["cer"],
              "long_real_time_factor": row["real_time_factor"],
              "segment_real_time_factor": round(segment_seconds * sampling_rate / sum(map(len, audio)), 5),
              "device": str(transcriber.device), "recording": str(recording_path),
              "long_hyp": long_hyp,
              "segments": [{"name": u.name, "ref": ref, "hyp": hyp} for u, ref, hyp in zip(used, refs, segment_hyps)]}
    (out_dir / "long_form.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(used)} held-out utterances, {result['minutes']:.1f} minutes: WER {100 * long_form['wer']:.1f}% as one "
          f"recording in one pass, {100 * segments['wer']:.1f}% one utterance at a time "
          f"(CER {100 * long_form['cer']:.1f}% / {100 * segments['cer']:.1f}%); {out_dir / 'long_form.json'}")
    return result


if __name__ == "__main__":
    main()
