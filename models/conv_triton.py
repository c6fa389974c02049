"""Causal depthwise conv1d + SiLU over channels-last (batch, seqlen, channels) tensors: Triton forward and backward.

The conv of the Mamba2 mixer on the triton backend when causal-conv1d (a CUDA build of tens of minutes) is not
installed. PyTorch's depthwise ``conv1d`` wants (batch, channels, seqlen), so the mixer's (batch, seqlen, channels)
activations were transposed and copied around it in both passes, and its weight gradient is slow; these kernels
read the activations where they lie. Per output frame t and channel c (``models.mamba2.causal_conv_silu_ref`` is
the reference, tests/test_models.py and tests/test_gpu.py check the two agree):

    pre[b, t, c] = bias[c] + sum_k weight[c, k] * x[b, t - (width - 1) + k, c]     (x = 0 before the first frame)
    out[b, t, c] = silu(pre[b, t, c])

Backward, with g = dout * silu'(pre):
    dx[b, s, c]     = sum_k weight[c, k] * g[b, s + (width - 1) - k, c]            (g = 0 past the last frame)
    dweight[c, k]   = sum_{b, t} g[b, t, c] * x[b, t - (width - 1) + k, c]
    dbias[c]        = sum_{b, t} g[b, t, c]
Only x is kept for backward (PyTorch's conv + SiLU keep the pre-activation too): the first backward kernel
recomputes pre from the same taps that dweight needs, writes g (fp32, freed after the backward) and reduces its
(frames, channels) tile for dweight and dbias into one row of a small fp32 buffer, summed afterwards by PyTorch
(deterministic, no atomics); the second gathers dx from g. Accumulation is fp32 throughout; the outputs take x's
dtype, dweight and dbias the parameters'.
"""
import torch
import triton
import triton.language as tl

BLOCK_T = 32  # frames per program
BLOCK_C = 128  # channels per program (contiguous in memory: coalesced loads)


@triton.jit
def _pre_activation(x_base, w_ptr, b_ptr, t, c, c_ok, seqlen, stride_xt, WIDTH: tl.constexpr, BLOCK_T: tl.constexpr,
                    BLOCK_C: tl.constexpr):
    """pre (BLOCK_T, BLOCK_C) fp32 at frames t, channels c; x_base points at (batch, frame 0, channels c)."""
    pre = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32) + tl.load(b_ptr + c, mask=c_ok, other=0.0)[None, :]
    for k in tl.static_range(WIDTH):
        src = t - (WIDTH - 1) + k  # the input frame tap k reads
        ok = (src >= 0) & (src < seqlen)
        x_k = tl.load(x_base + src[:, None] * stride_xt, mask=ok[:, None] & c_ok[None, :], other=0.0)
        w_k = tl.load(w_ptr + c * WIDTH + k, mask=c_ok, other=0.0)
        pre += x_k.to(tl.float32) * w_k.to(tl.float32)[None, :]
    return pre


@triton.jit
def _conv_silu_fwd(x_ptr, w_ptr, b_ptr, out_ptr, seqlen, channels, stride_xb, stride_xt, stride_xc,
                   WIDTH: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    batch = tl.program_id(2).to(tl.int64)  # int64 offsets: a batch may hold more than 2^31 elements
    c_ok = c < channels
    x_base = x_ptr + batch * stride_xb + c[None, :] * stride_xc
    pre = _pre_activation(x_base, w_ptr, b_ptr, t, c, c_ok, seqlen, stride_xt, WIDTH, BLOCK_T, BLOCK_C)
    offsets = batch * seqlen * channels + t[:, None] * channels + c[None, :]  # out is contiguous
    tl.store(out_ptr + offsets, (pre * tl.sigmoid(pre)).to(out_ptr.dtype.element_ty),
             mask=(t < seqlen)[:, None] & c_ok[None, :])


@triton.jit
def _conv_silu_bwd_g(x_ptr, w_ptr, b_ptr, dout_ptr, g_ptr, dw_rows_ptr, db_rows_ptr, seqlen, channels,
                     stride_xb, stride_xt, stride_xc,
                     WIDTH: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """g = dout * silu'(pre) at this tile's frames, and the tile's dweight and dbias rows."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    batch = tl.program_id(2).to(tl.int64)
    c_ok = c < channels
    x_base = x_ptr + batch * stride_xb + c[None, :] * stride_xc
    offsets = batch * seqlen * channels + t[:, None] * channels + c[None, :]  # dout and g are contiguous
    mask = (t < seqlen)[:, None] & c_ok[None, :]
    pre = _pre_activation(x_base, w_ptr, b_ptr, t, c, c_ok, seqlen, stride_xt, WIDTH, BLOCK_T, BLOCK_C)
    sig = tl.sigmoid(pre)
    g = tl.load(dout_ptr + offsets, mask=mask, other=0.0).to(tl.float32) * sig * (1.0 + pre * (1.0 - sig))
    tl.store(g_ptr + offsets, g, mask=mask)
    row = batch * tl.num_programs(0) + tl.program_id(0)  # this tile's row of the dweight / dbias buffers
    tl.store(db_rows_ptr + row * channels + c, tl.sum(g, axis=0), mask=c_ok)
    for k in tl.static_range(WIDTH):  # the taps _pre_activation read, again (cached)
        src = t - (WIDTH - 1) + k
        ok = (src >= 0) & (src < seqlen)
        x_k = tl.load(x_base + src[:, None] * stride_xt, mask=ok[:, None] & c_ok[None, :], other=0.0)
        tl.store(dw_rows_ptr + (row * WIDTH + k) * channels + c, tl.sum(g * x_k.to(tl.float32), axis=0), mask=c_ok)


@triton.jit
def _conv_bwd_dx(g_ptr, w_ptr, dx_ptr, seqlen, channels,
                 WIDTH: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx at this tile's frames s: frame s feeds the outputs s + (WIDTH - 1) - k through tap k."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    batch = tl.program_id(2).to(tl.int64)
    c_ok = c < channels
    base = batch * seqlen * channels + c[None, :]  # g and dx are contiguous
    dx = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        dst = t + (WIDTH - 1) - k
        g_k = tl.load(g_ptr + base + dst[:, None] * channels, mask=(dst < seqlen)[:, None] & c_ok[None, :], other=0.0)
        w_k = tl.load(w_ptr + c * WIDTH + k, mask=c_ok, other=0.0)
        dx += g_k * w_k.to(tl.float32)[None, :]
    tl.store(dx_ptr + base + t[:, None] * channels, dx.to(dx_ptr.dtype.element_ty),
             mask=(t < seqlen)[:, None] & c_ok[None, :])


def _grid(batch: int, seqlen: int, channels: int) -> tuple[int, int, int]:
    """Programs of every kernel here: (frame tiles, channel tiles, batch)."""
    return triton.cdiv(seqlen, BLOCK_T), triton.cdiv(channels, BLOCK_C), batch


class CausalConvSiLU(torch.autograd.Function):
    """x (batch, seqlen, channels) any strides, weight (channels, width), bias (channels,) -> (batch, seqlen,
    channels) contiguous, x's dtype. Saves x only."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        batch, seqlen, channels = x.shape
        weight, bias = weight.contiguous(), bias.contiguous()
        out = torch.empty((batch, seqlen, channels), dtype=x.dtype, device=x.device)
        grid = _grid(batch, seqlen, channels)
        _conv_silu_fwd[grid](x, weight, bias, out, seqlen, channels, *x.stride(),
                             WIDTH=weight.shape[1], BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        ctx.save_for_backward(x, weight, bias)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        batch, seqlen, channels = x.shape
        width = weight.shape[1]
        dout = dout.contiguous()
        grid = _grid(batch, seqlen, channels)
        rows = grid[0] * batch
        g = torch.empty((batch, seqlen, channels), dtype=torch.float32, device=x.device)
        dw_rows = torch.empty((rows, width, channels), dtype=torch.float32, device=x.device)
        db_rows = torch.empty((rows, channels), dtype=torch.float32, device=x.device)
        _conv_silu_bwd_g[grid](x, weight, bias, dout, g, dw_rows, db_rows, seqlen, channels, *x.stride(),
                               WIDTH=width, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        dx = torch.empty((batch, seqlen, channels), dtype=x.dtype, device=x.device)
        _conv_bwd_dx[grid](g, weight, dx, seqlen, channels, WIDTH=width, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
        dweight = dw_rows.sum(0).t().to(weight.dtype)  # (channels, width)
        return dx, dweight, db_rows.sum(0).to(bias.dtype)


def causal_conv_silu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (batch, seqlen, channels), weight (channels, 1, width) as nn.Conv1d's, bias (channels,) -> like x."""
    return CausalConvSiLU.apply(x, weight.squeeze(1), bias)
