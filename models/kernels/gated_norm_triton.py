"""The bidirectional mixer's gated RMSNorm in one Triton pass, forward and backward, reading the backward direction's
rows in reversed time where the SSD scan wrote them (``gated_norm.bidirectional_gated_rms_norm_ref`` is its reference).

In the fused mixer (``models.mamba_utils.bimamba2_fused``) the scan returns y (batch, seqlen, 2 d) whose channels
[d, 2 d), the backward direction's, are in padded-reverse time, while the gate z (a slice of in_proj's output) is in
input time for both directions. Per input frame t of batch item b and group g of d channels (g = 0 forward,
1 backward), in fp32 whatever the inputs' dtypes (mamba_ssm's RMSNormGated with norm_before_gate=False, each group
alone, as ``gated_norm.gated_rms_norm``):

    r_0(t) = t,   r_1(t) = index[b, t]   (the mixer's padded reversal; without an index, seqlen - 1 - t)
    h             = y[b, r_g(t), g] * silu(z[b, t, g])                                     (d,)
    rstd          = 1 / sqrt(mean(h^2) + eps)
    out[b, t, g]  = h * rstd * weight[g]                                                   (input time, y's dtype)

Backward, with n = h * rstd and dn = dout * weight[g], per frame and group:
    dh               = rstd * (dn - n * mean(dn * n))
    dy[b, r_g(t), g] = dh * silu(z)                  (to the row of y it was read from: r_g is a permutation)
    dz[b, t, g]      = dh * y * sigmoid(z) * (1 + z * (1 - sigmoid(z)))
    dweight[g]       = sum over (b, t) of dout * n
The reversal is a gather in the forward and a scatter in the backward: the copies that reversed y's backward half
for mamba_ssm's norm, and their gradients' copies, are gone. Saved for backward: y, z, weight and the index; rstd is
one reduction over values the backward loads anyway, so it is recomputed rather than stored. A backward program
loops over BACKWARD_STEPS blocks of ROWS_PER_PROGRAM frames, summing dout * n over them in registers, and writes
the sum into its row of a small fp32 buffer (a row per 16 frames: 3 MB at 2 x 3000 frames of the large model, where
each bf16 activation is 25 MB), which PyTorch sums (deterministic, no atomics). Nothing inside is an autocast op
(Triton launches, empty buffers, an fp32 sum): under autocast the kernels take the scan's bf16 y and z with the fp32
weight as they come.

One program holds a group's d channels (BLOCK_D = next_power_of_2(d), masked) for ROWS_PER_PROGRAM frames: at the
large model's d = 1024 the fewest registers without spills (bench/NOTES.md, "Gated norm").
"""
import torch
import triton
import triton.language as tl

ROWS_PER_PROGRAM = 2  # frames a program (a backward one: a step) holds, each with its group's d channels in a block
NUM_WARPS = 8
BACKWARD_STEPS = 8  # blocks of ROWS_PER_PROGRAM frames a backward program loops over, summing dweight over them


@triton.jit
def _source_frames(t, group, index_ptr, batch, seqlen, HAS_INDEX: tl.constexpr):
    """(BLOCK_R,) the frames of y that input frames t read for ``group``: t for the forward one, for the backward
    one their padded reversal, index[batch, t], or without an index seqlen - 1 - t."""
    if HAS_INDEX:
        flipped = tl.load(index_ptr + batch * seqlen + t, mask=(t < seqlen) & (group == 1), other=0)
    else:
        flipped = seqlen - 1 - t
    return tl.where(group == 1, flipped, t)


@triton.jit
def _channels(d, BLOCK_D: tl.constexpr):
    """(BLOCK_D,) this program's group's channels (of 2 d) and their mask."""
    c = tl.arange(0, BLOCK_D)  # within the group
    return tl.program_id(1) * d + c, c < d


@triton.jit
def _block(frame_block, channel, c_ok, index_ptr, seqlen, d, stride_zb, stride_zt, stride_zc,
           HAS_INDEX: tl.constexpr, BLOCK_R: tl.constexpr):
    """Block ``frame_block`` of BLOCK_R input frames in this program's batch item, at ``channel``: the elements'
    mask and int64 offsets (a batch of long recordings holds more than 2^31 elements) at the input frames in the
    contiguous (batch, seqlen, 2 d) tensors, at the frames they read in y, and in z."""
    t = frame_block * BLOCK_R + tl.arange(0, BLOCK_R)  # (BLOCK_R,) input frames
    batch = tl.program_id(2).to(tl.int64)
    mask = (t < seqlen)[:, None] & c_ok[None, :]  # (BLOCK_R, BLOCK_D)
    row = batch * seqlen + t  # (BLOCK_R,) int64
    source_row = batch * seqlen + _source_frames(t, tl.program_id(1), index_ptr, batch, seqlen, HAS_INDEX)
    offsets = row[:, None] * (2 * d) + channel[None, :]  # (BLOCK_R, BLOCK_D)
    y_offsets = source_row[:, None] * (2 * d) + channel[None, :]
    z_offsets = (batch * stride_zb + t.to(tl.int64) * stride_zt)[:, None] + channel[None, :] * stride_zc
    return mask, offsets, y_offsets, z_offsets


@triton.jit(do_not_specialize=("seqlen",))  # a new length every batch: no recompile at a multiple of 16
def _gated_norm_fwd(y_ptr, z_ptr, w_ptr, index_ptr, out_ptr, eps, seqlen, d, stride_zb, stride_zt, stride_zc,
                    HAS_INDEX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    channel, c_ok = _channels(d, BLOCK_D)
    mask, offsets, y_offsets, z_offsets = _block(tl.program_id(0), channel, c_ok, index_ptr, seqlen, d, stride_zb,
                                                 stride_zt, stride_zc, HAS_INDEX, BLOCK_R)
    y = tl.load(y_ptr + y_offsets, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_D)
    z = tl.load(z_ptr + z_offsets, mask=mask, other=0.0).to(tl.float32)
    h = y * z * tl.sigmoid(z)
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=1) / d + eps)  # (BLOCK_R,)
    w = tl.load(w_ptr + channel, mask=c_ok, other=0.0).to(tl.float32)  # (BLOCK_D,)
    tl.store(out_ptr + offsets, (h * rstd[:, None] * w[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=("seqlen",))  # a new length every batch: no recompile at a multiple of 16
def _gated_norm_bwd(y_ptr, z_ptr, w_ptr, index_ptr, dout_ptr, dy_ptr, dz_ptr, dw_rows_ptr, eps, seqlen, d,
                    stride_zb, stride_zt, stride_zc, HAS_INDEX: tl.constexpr, STEPS: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """dy at the frames of y the forward read and dz at the input frames, for STEPS blocks of BLOCK_R frames; the
    blocks' dweight sums into this program's row of the buffer."""
    channel, c_ok = _channels(d, BLOCK_D)
    w = tl.load(w_ptr + channel, mask=c_ok, other=0.0).to(tl.float32)  # (BLOCK_D,)
    dw_acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=tl.float32)
    for step in range(STEPS):
        mask, offsets, y_offsets, z_offsets = _block(tl.program_id(0) * STEPS + step, channel, c_ok, index_ptr,
                                                     seqlen, d, stride_zb, stride_zt, stride_zc, HAS_INDEX, BLOCK_R)
        y = tl.load(y_ptr + y_offsets, mask=mask, other=0.0).to(tl.float32)  # (BLOCK_R, BLOCK_D)
        z = tl.load(z_ptr + z_offsets, mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        silu = z * sig
        dh_dz = y * sig * (1.0 + z * (1.0 - sig))  # dz = dh * dh_dz
        h = y * silu
        rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=1) / d + eps)  # (BLOCK_R,)
        n = h * rstd[:, None]
        dout = tl.load(dout_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        dw_acc += dout * n
        dn = dout * w[None, :]
        dh = rstd[:, None] * (dn - n * (tl.sum(dn * n, axis=1) / d)[:, None])
        tl.store(dy_ptr + y_offsets, (dh * silu).to(dy_ptr.dtype.element_ty), mask=mask)
        tl.store(dz_ptr + offsets, (dh * dh_dz).to(dz_ptr.dtype.element_ty), mask=mask)
    dw_row = tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)  # (batch, program) of the buffer's rows
    tl.store(dw_rows_ptr + dw_row.to(tl.int64) * (2 * d) + channel, tl.sum(dw_acc, axis=0), mask=c_ok)


def _launch(kernel, frames_per_program, y, z, index, *args, **constexprs):
    """``kernel`` over programs (blocks of ``frames_per_program`` frames, 2 groups, batch) with its pointers and eps
    in ``args``; y contiguous (batch, seqlen, 2 d), z any strides."""
    batch, seqlen, channels = y.shape
    d = channels // 2
    kernel[triton.cdiv(seqlen, frames_per_program), 2, batch](
        y, z, *args, seqlen, d, *z.stride(), HAS_INDEX=index is not None, BLOCK_R=ROWS_PER_PROGRAM,
        BLOCK_D=triton.next_power_of_2(d), num_warps=NUM_WARPS, **constexprs)


class BidirectionalGatedRMSNorm(torch.autograd.Function):
    """y (batch, seqlen, 2 d) contiguous, the second half in padded-reverse time, z (batch, seqlen, 2 d) any
    strides, weight (2 d,), eps, index (batch, seqlen) int64 or None -> (batch, seqlen, 2 d) in input time, y's
    dtype. Saves y, z, weight and index."""

    @staticmethod
    def forward(ctx, y, z, weight, eps, index):
        weight = weight.contiguous()
        out = torch.empty(y.shape, dtype=y.dtype, device=y.device)
        _launch(_gated_norm_fwd, ROWS_PER_PROGRAM, y, z, index, weight, index, out, eps)
        ctx.save_for_backward(y, z, weight, index)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, dout):
        y, z, weight, index = ctx.saved_tensors
        batch, seqlen, channels = y.shape
        dy = torch.empty(y.shape, dtype=y.dtype, device=y.device)
        dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        frames_per_program = BACKWARD_STEPS * ROWS_PER_PROGRAM
        dw_rows = torch.empty((batch * triton.cdiv(seqlen, frames_per_program), channels), dtype=torch.float32,
                              device=y.device)
        _launch(_gated_norm_bwd, frames_per_program, y, z, index, weight, index, dout.contiguous(), dy, dz, dw_rows,
                ctx.eps, STEPS=BACKWARD_STEPS)
        return dy, dz, dw_rows.sum(0).to(weight.dtype), None, None


def bidirectional_gated_rms_norm(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float,
                                 index: torch.Tensor | None) -> torch.Tensor:
    """rmsnorm(y * silu(z)) * weight over each direction's d channels, y's backward half read in padded-reverse
    time (index from ``padded_reverse_index``, None: the whole sequence reversed). y (batch, seqlen, 2 d), z (batch,
    seqlen, 2 d) any strides, read in place (a slice of in_proj's output: channel stride 1, as loads vectorise),
    weight (2 d,) -> (batch, seqlen, 2 d) in input time, y's dtype; gradients for y (in y's layout), z and weight."""
    if index is not None:
        index = index.contiguous()
    return BidirectionalGatedRMSNorm.apply(y.contiguous(), z, weight, eps, index)

