"""The mixer's causal depthwise conv1d + SiLU in PyTorch: the reference of the Triton kernels (``conv_triton.py``)
and the conv of the torch backend, on channels-last (batch, seqlen, channels) activations.
"""
import torch
import torch.nn.functional as F


def causal_conv_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The reference: depthwise causal conv + SiLU through nn.functional.conv1d, x (batch, seqlen, channels), weight
    (channels, 1, width) -> like x. Width - 1 frames of left context (padding both sides, keep the first seqlen
    outputs)."""
    seqlen, width = x.shape[1], weight.shape[-1]
    x = x.transpose(1, 2)  # (batch, channels, seqlen), conv1d's layout
    return F.silu(F.conv1d(x, weight, bias, padding=width - 1, groups=x.shape[1])[..., :seqlen]).transpose(1, 2)


def reverse_channels(x: torch.Tensor, reversed_channels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x (batch, seqlen, channels) with the channels flagged in ``reversed_channels`` (channels,) in padded-reverse
    time (gathered along time by ``index`` (batch, seqlen); None: the whole sequence reversed), the others as they
    are."""
    reversed_x = x.flip(1) if index is None else torch.gather(x, 1, index[..., None].expand_as(x))
    return torch.where(reversed_channels.bool(), reversed_x, x)


def causal_conv_silu_bidirectional_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                       reversed_channels: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """The reference of ``causal_conv_silu_triton`` with reversed channels: those channels reversed first, then
    ``causal_conv_silu_ref``; their outputs stay in padded-reverse time."""
    return causal_conv_silu_ref(reverse_channels(x, reversed_channels, index), weight, bias)
