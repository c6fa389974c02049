"""CPU inference of the attention teacher vs the converted student at base size (12 layers, hidden 768).

Usage:
    python bench/cpu_speed.py                          # 10 s and 60 s utterances, 2 threads, fastest of 3
    python bench/cpu_speed.py --seconds 10 --threads 4 --repeats 5 --out bench/results/cpu.jsonl

The CPU path must not be pathological (the chunked SSD of models/mamba2.py, no per-time-step loop): this measures
it. Random weights from the ``base`` preset (no download), built as bench/speed.py builds its models; the student
is every attention swapped for a fused BiMamba2 on the PyTorch backend with the hparams' default shape. One no-grad
forward of one utterance, fp32, after a warm-up pass; the fastest of --repeats. The CNN front end, which both
models share, is timed on its own too. One JSON line per model and length on stdout (and appended to --out).
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.speed import SR, build as build_model, code_version  # noqa: E402


def build(model_name: str, preset: str = "base", **shape) -> transformers.Wav2Vec2ForCTC:
    """The teacher (SDPA attention) or the student (fused BiMamba2, torch backend), eval mode, random weights, as
    bench/speed.py builds them (shape: substitute_layer's; its defaults are the hparams' defaults)."""
    return build_model(model_name, "cpu", spec_augment=False, preset=preset, backend="torch", **shape).eval()


@torch.no_grad()
def fastest_ms(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        run()
        times.append(time.perf_counter() - tic)
    return 1000 * min(times)


def measure(model_name: str, seconds: float, repeats: int, preset: str = "base", **shape) -> dict:
    torch.manual_seed(0)
    model = build(model_name, preset, **shape)
    x = torch.randn(1, int(seconds * SR))  # (1, samples)
    return {"model": model_name, "preset": preset, "seconds": seconds,
            "ms": fastest_ms(lambda: model(x), repeats),
            "cnn_ms": fastest_ms(lambda: model.wav2vec2.feature_extractor(x), repeats)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0], help="utterance lengths")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement (the fastest counts)")
    parser.add_argument("--out", default=None, help="JSON lines file to append the rows to")
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be at least 1")
    torch.set_num_threads(args.threads)
    env = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
           "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d"), "code": code_version()}
    rows = []
    for seconds in args.seconds:
        for model_name in ("teacher", "student"):
            rows.append({**measure(model_name, seconds, args.repeats), **env})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"\n{'seconds':>8} {'teacher ms':>11} {'student ms':>11} {'student/teacher':>16} {'CNN ms':>8}")
    for seconds in args.seconds:
        teacher, student = (next(r for r in rows if r["seconds"] == seconds and r["model"] == m)
                            for m in ("teacher", "student"))
        print(f"{seconds:>8g} {teacher['ms']:>11.0f} {student['ms']:>11.0f} {student['ms'] / teacher['ms']:>15.2f}x "
              f"{teacher['cnn_ms']:>8.0f}")


if __name__ == "__main__":
    main()
