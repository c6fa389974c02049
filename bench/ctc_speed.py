"""CTC loss alone, forward + backward: PyTorch's native F.ctc_loss (cudnn off, as models.heads ran it) against
models/kernels/ctc_triton.py's kernels, on one GPU.

Usage:  python bench/ctc_speed.py                          # GPU: 16 x 10 s, 4 x 60 s, 1 x 600 s
        python bench/ctc_speed.py --shapes 1x600 --repeats 3
        python bench/ctc_speed.py --shapes 1x600 --states_per_program 256 512 --publish_every 1 4 16
        python bench/ctc_speed.py --device cpu             # smoke check: tiny shapes, Triton's interpreter

Inputs as bench/speed.py's make_batch: 50 frames and ~12 labels a second, vocab 32, unpadded; the log-probs are
log_softmax of random logits, transposed to (frames, batch, vocab) as models.heads does. Each time is the median
of ``--repeats`` timed calls after ``--warmup`` (CUDA events on a GPU); "fwd+bwd" is the loss and the gradient
with respect to the log-probs. The last columns are the largest difference of the Triton loss and gradient from
native, relative to native's largest value (tests/conftest.py's relative_error). With several ``--states_per_program``
or ``--publish_every`` values (models/kernels/ctc_triton.py's STATES_PER_PROGRAM and PUBLISH_EVERY, the module's own by
default) the Triton kernels are timed at each pair.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

FRAMES_PER_SECOND, LABELS_PER_SECOND, VOCAB = 50, 12, 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shapes", nargs="+", help="batch x seconds, e.g. 4x60 (default: 16x10 4x60 1x600 on "
                                                    "cuda, 2x0.4 1x1 on cpu)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--states_per_program", type=int, nargs="+", help="STATES_PER_PROGRAM values to time")
    parser.add_argument("--publish_every", type=int, nargs="+", help="PUBLISH_EVERY values to time")
    args = parser.parse_args(argv)
    if args.shapes is None:
        args.shapes = ["16x10", "4x60", "1x600"] if args.device == "cuda" else ["2x0.4", "1x1"]
    return args


def make_inputs(batch: int, seconds: float, device):
    """log_probs (frames, batch, vocab) requiring grad, targets (batch, labels), both length tensors."""
    frames, labels = int(seconds * FRAMES_PER_SECOND), int(seconds * LABELS_PER_SECOND)
    logits = torch.randn(batch, frames, VOCAB, device=device)
    log_probs = F.log_softmax(logits, dim=-1).transpose(0, 1).detach().requires_grad_()  # (frames, batch, vocab)
    targets = torch.randint(1, VOCAB, (batch, labels), device=device)
    input_lengths = torch.full((batch,), frames, device=device)
    target_lengths = torch.full((batch,), labels, device=device)
    return log_probs, targets, input_lengths, target_lengths


def native_ctc(log_probs, targets, input_lengths, target_lengths):
    with torch.backends.cudnn.flags(enabled=False):
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="none",
                          zero_infinity=False)


def median_ms(fn, device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-6)).item()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined: before the import
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from models.kernels import ctc_triton

    settings = [(states, publish) for states in args.states_per_program or [ctc_triton.STATES_PER_PROGRAM]
                for publish in args.publish_every or [ctc_triton.PUBLISH_EVERY]]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (Triton interpreter)"
    print(device_name, torch.__version__)
    print(f"{'shape':>10s} {'frames':>7s} {'labels':>7s} {'impl':>7s} {'states':>7s} {'publish':>7s} "
          f"{'fwd ms':>9s} {'fwd+bwd ms':>11s} {'speed-up':>9s} {'loss rel':>9s} {'grad rel':>9s}")
    for shape in args.shapes:
        batch, seconds = shape.split("x")
        inputs = make_inputs(int(batch), float(seconds), args.device)
        log_probs, targets = inputs[0], inputs[1]

        def measure(ctc):
            """(loss, grad, fwd ms, fwd+bwd ms) of one implementation."""
            def forward():
                with torch.no_grad():
                    ctc(*inputs)

            def forward_backward():
                torch.autograd.grad(ctc(*inputs).sum(), log_probs)

            loss = ctc(*inputs)
            grad = torch.autograd.grad(loss.sum(), log_probs)[0]
            return (loss.detach(), grad, median_ms(forward, args.device, args.repeats, args.warmup),
                    median_ms(forward_backward, args.device, args.repeats, args.warmup))

        reference = measure(native_ctc)

        def report(name, states, publish, result):
            loss, grad, forward_ms, forward_backward_ms = result
            print(f"{shape:>10s} {log_probs.shape[0]:7d} {targets.shape[1]:7d} {name:>7s} {states:>7s} "
                  f"{publish:>7s} {forward_ms:9.2f} {forward_backward_ms:11.2f} "
                  f"{reference[3] / forward_backward_ms:8.2f}x {relative_error(loss, reference[0]):9.2e} "
                  f"{relative_error(grad, reference[1]):9.2e}", flush=True)

        report("native", "", "", reference)
        for states, publish in settings:
            ctc_triton.STATES_PER_PROGRAM, ctc_triton.PUBLISH_EVERY = states, publish
            result = measure(lambda *ctc_inputs: ctc_triton.ctc_loss_triton(*ctc_inputs, blank=0))
            report("triton", str(states), str(publish), result)


if __name__ == "__main__":
    main()
