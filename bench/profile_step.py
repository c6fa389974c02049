"""Where a training or inference step of the student (or teacher) spends its GPU time: torch.profiler's table.

Usage (GPU):  python bench/profile_step.py --model student --mode train --batch 16 --seconds 10 [--rows 30]
              python bench/profile_step.py --by_shape      # a row per operator and input shapes: which copy is it

Rows are sorted by the GPU time spent in each operator itself, not in the operators it calls (self CUDA), so the
column adds up to the total under the table. ``--device cpu --preset demo`` runs the script itself on a CPU.
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.speed import MODELS, build, infer_step, make_batch, train_step  # noqa: E402


def make_step(model, mode: str, batch: int, seconds: float, device):
    """One training (forward, CTC, backward, AdamW) or inference step of ``model`` on a fixed random batch."""
    inputs = make_batch(batch, seconds, device)
    if mode == "train":
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
        return lambda: train_step(model.train(), optimizer, inputs)
    return lambda: infer_step(model.eval(), inputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="student", choices=MODELS)
    parser.add_argument("--mode", default="train", choices=("train", "infer"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--by_shape", action="store_true", help="one row per operator and its input shapes")
    parser.add_argument("--preset", default="large", help="models/presets.py size (default large)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu to try the script itself")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    step = make_step(build(args.model, device, preset=args.preset), args.mode, args.batch, args.seconds, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for _ in range(3):
        step()
    sync()
    with profile(activities=activities, record_shapes=args.by_shape) as prof:
        for _ in range(3):
            step()
        sync()
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages(group_by_input_shape=args.by_shape).table(
        sort_by=sort_by, row_limit=args.rows, max_name_column_width=70, max_shapes_column_width=90)
    print(table)
    return table


if __name__ == "__main__":
    main()
