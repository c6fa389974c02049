"""LayerNorm over the last dimension, then exact GELU, in one Triton pass: each layer's normalisation and activation
in the channels-last CNN front end (``front_end.ChannelsLastConvLayer``) on a GPU where no gradient flows through
them (a frozen front end, as the recipes train it, and inference). ``front_end.layer_norm_gelu_ref`` is the
reference.

Per row x (channels,), in fp32 whatever x's dtype, as PyTorch's LayerNorm under autocast computes it:

    u = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias          (var: the biased variance, as LayerNorm's)
    y = u / 2 * (1 + erf(u / sqrt(2)))                              (nn.functional.gelu, exact)

written in fp32, what autocast's LayerNorm and the GELU after it return (the next conv casts it to bf16 either way).
Through PyTorch that is three passes over the front end's largest activations, 512 channels at 3200 frames a second
of audio in its first layer: the bf16 conv output cast to fp32, the norm, the GELU, 22 bytes read and written per
element; here 6.
"""
import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 8
SQRT_HALF: tl.constexpr = tl.constexpr(0.7071067811865476)


@triton.jit(do_not_specialize=("rows",))  # batch x frames, new every batch: no recompile at a multiple of 16
def _layer_norm_gelu(x_ptr, w_ptr, b_ptr, out_ptr, rows, channels, eps, BLOCK_R: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """out (rows, channels) fp32 = gelu(layer_norm(x)) for this program's BLOCK_R rows; x rows contiguous."""
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    c = tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    c_ok = c < channels
    mask = (r < rows)[:, None] & c_ok[None, :]
    offsets = r.to(tl.int64)[:, None] * channels + c[None, :]  # int64: a front end's rows x channels can pass 2^31
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_C)
    mean = tl.sum(x, axis=1) / channels  # (BLOCK_R,)
    centred = tl.where(mask, x - mean[:, None], 0.0)
    variance = tl.sum(centred * centred, axis=1) / channels
    weight = tl.load(w_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    u = centred / tl.sqrt(variance + eps)[:, None] * weight[None, :] + bias[None, :]
    tl.store(out_ptr + offsets, 0.5 * u * (1.0 + tl.math.erf(u * SQRT_HALF)), mask=mask)


@torch.no_grad()
def layer_norm_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """x (..., channels) any float dtype, weight and bias (channels,) -> (..., channels) fp32 contiguous; no
    autograd (the callers use it where no gradient is needed)."""
    x = x.contiguous()
    channels = x.shape[-1]
    rows = x.numel() // channels
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    _layer_norm_gelu[(triton.cdiv(rows, ROWS_PER_PROGRAM),)](
        x, weight.contiguous(), bias.contiguous(), out, rows, channels, eps, BLOCK_R=ROWS_PER_PROGRAM,
        BLOCK_C=triton.next_power_of_2(channels))
    return out

