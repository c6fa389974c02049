"""One long recording through transcribe.py's code path at wav2vec2-large size: wall time, real-time factor and
peak memory.

Usage (on a GPU machine):
    python bench/transcribe_long.py --out bench/results/transcribe_long.jsonl       # large, 1 hour, cuda, bf16
    python bench/transcribe_long.py --preset tiny --seconds 5 --device cpu --mixed_precision no \\
        --hparams mamba_headdim=16,mamba_d_state=16,mamba_chunk_size=16            # what the CPU test runs

A converted model of the preset's shape (models/presets.py) with random weights, every attention swapped for a
BiMamba2 of the hparams' default Mamba2 shape (--hparams overrides it), is saved as a run dir (hparams.json,
model.ckpt-0, vocab.json) under --workdir; the recording, tones and noise tiled to --seconds, is written there as a
16 kHz FLAC. utils/transcription.py then transcribes the file as transcribe.py does: read and decoded, one forward
pass with the CNN front end in 5-minute pieces, greedy CTC with word timestamps. A short clip goes through first
(kernel compilation and autotuning stay out of the timing). Peak memory is torch.cuda.max_memory_allocated over the
timed transcription on CUDA, the process's peak resident memory on CPU. One JSON line on stdout (and appended to
--out).
"""
import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.speed import code_version  # noqa: E402
from hparams import create_hparams  # noqa: E402
from models.build import build_asr_model, count_parameters  # noqa: E402
from models.presets import save_preset  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.transcription import AUTOCAST_DTYPES, load_transcriber  # noqa: E402

SR = 16000
VOCAB = {"[PAD]": 0, **{c: i + 1 for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}, "|": 28, "[UNK]": 29}
WARMUP_SECONDS = 2.0


def make_run_dir(run_dir: Path, preset: str, hparams_string: str) -> int:
    """A BiMamba2 run dir of the preset's shape, random weights; returns its parameter count."""
    pretrained = save_preset(preset, run_dir / "w2v2")
    hparams = create_hparams(f"asr_model_name={pretrained},asr_use_mamba=True,mask_time_prob=0,{hparams_string}")
    torch.manual_seed(0)
    model = build_asr_model(hparams)
    hparams.save_json(run_dir / "hparams.json")
    (run_dir / "vocab.json").write_text(json.dumps(VOCAB))
    save_checkpoint(run_dir / "model.ckpt-0", {"model": model.state_dict(), "step": 0})
    return count_parameters(model)


def make_recording(path: Path, seconds: float) -> None:
    """Ten seconds of tones and noise, tiled to ``seconds``, as a 16 kHz FLAC."""
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    clip = 0.2 * np.sin(2 * np.pi * (200 + 150 * np.sin(2 * np.pi * 0.5 * t)) * t) + 0.05 * rng.standard_normal(len(t))
    samples = np.resize(clip.astype(np.float32), int(seconds * SR))
    sf.write(path, samples, SR)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kilobytes on Linux


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--preset", default="large", help="models/presets.py shape (default large: wav2vec2-large-lv60's)")
    add("--seconds", type=float, default=3600.0, help="length of the recording (default one hour)")
    add("--device", default="cuda", help="cuda or cpu")
    add("--mixed_precision", choices=tuple(AUTOCAST_DTYPES), default="bf16", help="autocast precision")
    add("--hparams", default="", help="overrides of the converted model's hparams, e.g. mamba_chunk_size=128")
    add("--workdir", default=None, help="where the run dir and the recording go (default: a temporary dir)")
    add("--out", default=None, help="JSON lines file to append the row to")
    add("--code", default=None, help="the commit measured (default: git's HEAD, '+' for uncommitted changes); give it "
                                     "where the tree is a copy without its own .git")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)

        # 1. the converted model, saved as a run dir
        parameters = make_run_dir(workdir / "run", args.preset, args.hparams)

        # 2. the recording
        recording = workdir / "recording.flac"
        make_recording(recording, args.seconds)

        # 3. transcribe.py's code path: load, warm up on a clip, then the whole file in one pass
        tic = time.perf_counter()
        transcriber = load_transcriber(workdir / "run", device=args.device, mixed_precision=args.mixed_precision)
        load_seconds = time.perf_counter() - tic
        transcriber.transcribe(sf.read(recording, frames=int(WARMUP_SECONDS * SR), dtype="float32")[0])
        if transcriber.device.type == "cuda":
            torch.cuda.synchronize(transcriber.device)
            torch.cuda.reset_peak_memory_stats(transcriber.device)
        tic = time.perf_counter()
        result = transcriber.transcribe_file(recording, timestamps="word")
        if transcriber.device.type == "cuda":
            torch.cuda.synchronize(transcriber.device)
        seconds = time.perf_counter() - tic

    # 4. report
    device = transcriber.device
    on_cuda = device.type == "cuda"
    row = {"bench": "transcribe_long", "preset": args.preset, "parameters": parameters, "hparams": args.hparams,
           "audio_seconds": result["duration"], "seconds": round(seconds, 3),
           "real_time_factor": round(seconds / result["duration"], 6),
           "peak_gib": round(peak_memory_gib(device), 3),
           "peak_memory": "cuda max_memory_allocated" if on_cuda else "process max RSS",
           "load_seconds": round(load_seconds, 2), "words": len(result["words"]),
           "mixed_precision": args.mixed_precision, "device": str(device),
           "device_name": torch.cuda.get_device_name(device) if on_cuda else platform.machine(),
           "torch": torch.__version__, "code": args.code or code_version()}
    print(json.dumps(row))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
