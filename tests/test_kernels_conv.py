"""models/kernels/conv_triton.py against models/kernels/conv.py: the mixer's causal conv + SiLU, one-way and with the
backward direction's channels in padded-reverse time. Without CUDA the kernels run in Triton's interpreter."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.kernels.conv import causal_conv_silu_bidirectional_ref, causal_conv_silu_ref
from models.mamba_utils import backward_channel_mask, padded_reverse_index


@pytest.mark.parametrize("seqlen", [1, 3, 37, 70])
@pytest.mark.parametrize("channels", [5, 200])
def test_triton_causal_conv_matches_the_conv1d_reference(seqlen, channels):
    """Forward and all three gradients, on a strided input (a slice of a wider activation, as the mixer's x, B, C
    of in_proj's output): frames and channels past a block's edge, a sequence shorter than the kernel. Without
    CUDA the kernels run in Triton's interpreter (tests/conftest.py)."""
    from models.kernels.conv_triton import causal_conv_silu_triton

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    wide = torch.randn(2, seqlen, channels + 9, device=device)
    x = wide[..., 4:4 + channels].requires_grad_()  # (batch, seqlen, channels), frame stride channels + 9
    weight = torch.randn(channels, 1, 4, device=device, requires_grad=True)
    bias = torch.randn(channels, device=device, requires_grad=True)
    dout = torch.randn(2, seqlen, channels, device=device)
    results = []
    for conv in (causal_conv_silu_triton, causal_conv_silu_ref):
        with torch.backends.cudnn.flags(allow_tf32=False):  # on a GPU: the reference in fp32, not TF32
            out = conv(x, weight, bias)
            results.append((out, *torch.autograd.grad(out, [x, weight, bias], dout)))
    for triton_result, reference in zip(*results):
        torch.testing.assert_close(triton_result, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["random", "mixer", "one_way"])
@pytest.mark.parametrize("lengths", [None, [37, 20]])  # None: no padding, the whole sequence reversed
def test_triton_conv_reads_reversed_channels_in_place_as_the_reference_reverses_them(lengths, layout):
    """The fused mixer's conv: the backward direction's channels in padded-reverse time, read from in_proj's output
    where it lies (a strided slice), against reversing them first; forward and all three gradients. Layouts:
    channels flagged at random (every 128-channel tile holds both directions), and the mixer's [x_fw, x_bw, B_fw,
    B_bw, C_fw, C_bw] with pieces of 128, 32, 32 channels: a tile of forward channels only, one of backward channels
    only (the kernels' one-frame-per-row path) and a mixed one; and pieces of 128 channels each, every tile one way,
    which compiles the kernels without the per-element gather (``one_way_tiles``)."""
    torch.manual_seed(0)
    piece_sizes = {"random": None, "mixer": (128, 32, 32), "one_way": (128, 128, 128)}[layout]
    if piece_sizes is None:
        reversed_channels = (torch.rand(200) < 0.5).to(torch.int8)
    else:
        reversed_channels = backward_channel_mask(piece_sizes, torch.device("cpu"))
    channels = len(reversed_channels)
    wide = torch.randn(2, 37, channels + 9)
    x = wide[..., 4:4 + channels].requires_grad_()  # (batch, seqlen, channels): blocks of 128 channels and a rest
    weight = torch.randn(channels, 1, 4, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True)
    index = padded_reverse_index(torch.tensor(lengths), 37) if lengths else None
    dout = torch.randn(2, 37, channels)
    results = []
    from models.kernels.conv_triton import causal_conv_silu_bidirectional_triton

    for out in (causal_conv_silu_bidirectional_triton(x, weight, bias, reversed_channels, index, piece_sizes),
                causal_conv_silu_bidirectional_ref(x, weight, bias, reversed_channels, index)):
        results.append((out, *torch.autograd.grad(out, [x, weight, bias], dout)))
    for triton_result, reference in zip(*results):
        torch.testing.assert_close(triton_result, reference, rtol=1e-5, atol=1e-5)
    reversed_frames = results[1][0][:, :, reversed_channels.bool()]
    plain = causal_conv_silu_ref(x, weight, bias)[:, :, reversed_channels.bool()]
    assert not torch.allclose(reversed_frames, plain)  # the reversal did something


def test_the_triton_conv_kernels_compile_for_hopper_with_every_switch():
    """Triton's interpreter (the CPU tier's way of running the kernels) accepts programs its compiler refuses, such
    as a return under a compile-time switch before more code: bench/kernel_compile.py compiles every kernel for
    sm_90, which needs no GPU."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "bench.kernel_compile", "--arch", "90"], env=env,
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": ok") == 27, result.stdout

