"""The Mamba2 mixer's causal depthwise conv + SiLU alone, on one GPU: nn.functional.conv1d (the reference, as the
triton backend ran it before models/conv_triton.py) against the Triton kernels.

Usage (GPU):  python bench/conv_speed.py

The fused BiMamba2 mixer of the large model convolves 2 x (1024 + 2 x 128) = 2560 channels (x, B and C of both
directions), in bf16 autocast, from a channels-last (batch, frames, channels) activation; 50 frames a second.
Prints the median of 20 timed repeats (CUDA events, after 5 warm-up) of forward + backward (all three gradients)
and of a no-grad forward, and the kernels' largest difference from the reference relative to its largest output.
"triton, bw reversed" is the mixer's call: the backward direction's channels read in reversed time (unpadded: a
flip), against its reference, those channels reversed first and then conv1d.
"""
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.conv_triton import causal_conv_silu_triton
from models.mamba2 import causal_conv_silu_ref
from models.mamba_utils import backward_channel_mask, reverse_channels

CHANNELS, WIDTH = 2560, 4
SHAPES = ((16, 500), (4, 3000), (1, 90000))  # (batch, frames): 16 x 10 s, 4 x 60 s, 1 x 1800 s


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


def main() -> None:
    print(torch.cuda.get_device_name(), torch.__version__)
    for batch, frames in SHAPES:
        x = torch.randn(batch, frames, CHANNELS, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        weight = torch.randn(CHANNELS, 1, WIDTH, device="cuda", requires_grad=True)
        bias = torch.randn(CHANNELS, device="cuda", requires_grad=True)
        dout = torch.randn_like(x)
        backward_channels = backward_channel_mask((1024, 128, 128), x.device)  # the large mixer's layout
        convs = {
            "conv1d reference": causal_conv_silu_ref,
            "triton": causal_conv_silu_triton,
            "reversed first": lambda x, w, b: causal_conv_silu_ref(reverse_channels(x, backward_channels, None), w, b),
            "triton, bw reversed": lambda x, w, b: causal_conv_silu_triton(x, w, b, backward_channels),
        }
        outputs = {}
        for name, conv in convs.items():
            def train():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    out = conv(x, weight, bias)
                torch.autograd.grad(out, [x, weight, bias], dout)

            def infer():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                    outputs[name] = conv(x, weight, bias).float()

            print(f"{batch:3d} x {frames:6d} frames  {name:19s}  fwd+bwd {median_ms(train):8.3f} ms  "
                  f"fwd {median_ms(infer):8.3f} ms", flush=True)
        for kernel, reference in (("triton", "conv1d reference"), ("triton, bw reversed", "reversed first")):
            error = (outputs[kernel] - outputs[reference]).abs().max() / outputs[reference].abs().max()
            print(f"{'':22s}max |{kernel} - {reference}| / max |{reference}| = {error.item():.2e}")


if __name__ == "__main__":
    main()
