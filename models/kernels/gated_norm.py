"""Mamba2's gated RMSNorm in PyTorch (mamba_ssm's RMSNormGated, norm_before_gate=False), and the bidirectional
mixer's: the torch backend's norm and the reference of the Triton pass (``gated_norm_triton.py``).
"""
import torch
import torch.nn.functional as F


def gated_rms_norm(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """mamba_ssm's gated RMSNorm with norm_before_gate=False: rmsnorm(x * silu(z)) * weight, over the last dim,
    in fp32, returned in x's dtype."""
    dtype = x.dtype
    x = x.float() * F.silu(z.float())
    x = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    return (x * weight.float()).to(dtype)


def bidirectional_gated_rms_norm_ref(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float,
                                     index: torch.Tensor | None) -> torch.Tensor:
    """The reference: y's backward half gathered back to input time (by ``index``; None: flipped), then
    ``gated_rms_norm`` over each direction's d channels. Shapes as ``bidirectional_gated_rms_norm``."""
    d = y.shape[-1] // 2
    backward = y[..., d:]  # (batch, seqlen, d), padded-reverse time
    backward = backward.flip(1) if index is None else torch.gather(backward, 1, index[..., None].expand_as(backward))
    y = torch.cat([y[..., :d], backward], dim=-1)  # (batch, seqlen, 2 d), input time
    grouped = lambda t: t.unflatten(-1, (2, d))  # noqa: E731  (batch, seqlen, 2, d)
    return gated_rms_norm(grouped(y), grouped(z), grouped(weight), eps).flatten(-2)
