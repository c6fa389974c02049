"""The Mamba2 mixer's causal depthwise conv + SiLU alone, on one GPU: nn.functional.conv1d (the reference, as the triton
backend ran it before models/kernels/conv_triton.py) against the Triton kernels.

Usage (GPU):  python bench/conv_speed.py
              python bench/conv_speed.py --sweep --block_t 16 32 --num_warps 4 8   # the mixer's call per setting

The fused BiMamba2 mixer of the large model convolves 2 x (1024 + 2 x 128) = 2560 channels (x, B and C of both
directions), in bf16 autocast, from a channels-last (batch, frames, channels) activation; 50 frames a second.
Prints the median of 20 timed repeats (CUDA events, after 5 warm-up) of forward + backward (all three gradients)
and of a no-grad forward, and the kernels' largest difference from the reference relative to its largest output.
"triton, bw reversed" is the mixer's call: the backward direction's channels read in reversed time (unpadded: a flip),
every tile of channels one way (mixed_tiles=False), against its reference, those channels reversed first and then
conv1d; "triton, mixed tiles" the same call compiled with the per-element gather a tile of both directions needs.
``--sweep`` times the mixer's call alone under each (BLOCK_T, BLOCK_C, NUM_WARPS) of models/kernels/conv_triton.py, with
the bandwidth its least traffic would take (forward: x read, out written; backward: x and dout read, dx written; bf16)
against a copy of x (torch's clone). """
import argparse
import itertools
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.kernels import conv_triton
from models.kernels.conv import causal_conv_silu_ref, reverse_channels
from models.kernels.conv_triton import causal_conv_silu_triton
from models.mamba_utils import backward_channel_mask

CHANNELS, WIDTH = 2560, 4
SHAPES = ((16, 500), (4, 3000), (1, 90000))  # (batch, frames): 16 x 10 s, 4 x 60 s, 1 x 1800 s
SWEEP_SHAPES = ((16, 500), (1, 30000))  # 16 x 10 s and 1 x 600 s
MIXER_PIECES = (1024, 128, 128)  # the large mixer's x, B, C channels per direction


def median_ms(fn, repeats: int = 20, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def inputs(batch: int, frames: int):
    """The mixer's conv input (bf16, channels-last), fp32 weight and bias, an output gradient."""
    x = torch.randn(batch, frames, CHANNELS, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(CHANNELS, 1, WIDTH, device="cuda", requires_grad=True)
    bias = torch.randn(CHANNELS, device="cuda", requires_grad=True)
    return x, weight, bias, torch.randn_like(x)


def mixer_conv(x, weight, bias):
    """The mixer's call: the backward direction's channels of MIXER_PIECES reversed, every tile one way."""
    return causal_conv_silu_triton(x, weight, bias, backward_channel_mask(MIXER_PIECES, x.device), None, False)


def timed_passes(conv, x, weight, bias, dout) -> tuple[float, float]:
    """Median ms of forward + backward (all three gradients) and of a no-grad forward, in bf16 autocast."""
    def train():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = conv(x, weight, bias)
        torch.autograd.grad(out, [x, weight, bias], dout)

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            conv(x, weight, bias)

    return median_ms(train), median_ms(infer)


def compare() -> None:
    """Every conv at every shape of SHAPES, and the kernels' differences from their references."""
    for batch, frames in SHAPES:
        x, weight, bias, dout = inputs(batch, frames)
        backward_channels = backward_channel_mask(MIXER_PIECES, x.device)
        convs = {
            "conv1d reference": causal_conv_silu_ref,
            "triton": causal_conv_silu_triton,
            "reversed first": lambda x, w, b: causal_conv_silu_ref(reverse_channels(x, backward_channels, None), w, b),
            "triton, bw reversed": mixer_conv,
            "triton, mixed tiles": lambda x, w, b: causal_conv_silu_triton(x, w, b, backward_channels),
        }
        outputs = {}
        for name, conv in convs.items():
            train_ms, infer_ms = timed_passes(conv, x, weight, bias, dout)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                outputs[name] = conv(x, weight, bias).float()
            print(f"{batch:3d} x {frames:6d} frames  {name:19s}  fwd+bwd {train_ms:8.3f} ms  fwd {infer_ms:8.3f} ms",
                  flush=True)
        for kernel, reference in (("triton", "conv1d reference"), ("triton, bw reversed", "reversed first"),
                                  ("triton, mixed tiles", "reversed first")):
            error = (outputs[kernel] - outputs[reference]).abs().max() / outputs[reference].abs().max()
            print(f"{'':22s}max |{kernel} - {reference}| / max |{reference}| = {error.item():.2e}")


def sweep(block_ts: list[int], block_cs: list[int], warps: list[int]) -> None:
    """The mixer's call (backward channels reversed) under each tile and warp count."""
    for batch, frames in SWEEP_SHAPES:
        x, weight, bias, dout = inputs(batch, frames)
        tensor_bytes = x.numel() * x.element_size()
        copy_ms = median_ms(lambda: x.detach().clone())  # reads and writes one tensor: 2 x tensor_bytes
        print(f"{batch:3d} x {frames:6d} frames  copy of x {copy_ms:.3f} ms "
              f"({2 * tensor_bytes / copy_ms / 1e6:.0f} GB/s)")
        for block_t, block_c, num_warps in itertools.product(block_ts, block_cs, warps):
            conv_triton.BLOCK_T, conv_triton.BLOCK_C, conv_triton.NUM_WARPS = block_t, block_c, num_warps
            train_ms, infer_ms = timed_passes(mixer_conv, x, weight, bias, dout)
            backward_ms = train_ms - infer_ms
            print(f"{batch:3d} x {frames:6d} frames  BLOCK_T {block_t:3d} BLOCK_C {block_c:4d} warps {num_warps}  "
                  f"fwd {infer_ms:7.3f} ms ({2 * tensor_bytes / infer_ms / 1e6:5.0f} GB/s)  "
                  f"fwd+bwd {train_ms:7.3f} ms (bwd {3 * tensor_bytes / backward_ms / 1e6:5.0f} GB/s)", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="time the mixer's call under each setting below")
    parser.add_argument("--block_t", type=int, nargs="+", default=[conv_triton.BLOCK_T])
    parser.add_argument("--block_c", type=int, nargs="+", default=[conv_triton.BLOCK_C])
    parser.add_argument("--num_warps", type=int, nargs="+", default=[conv_triton.NUM_WARPS])
    args = parser.parse_args(argv)
    print(torch.cuda.get_device_name(), torch.__version__)
    if args.sweep:
        sweep(args.block_t, args.block_c, args.num_warps)
    else:
        compare()


if __name__ == "__main__":
    main()
