"""Causal depthwise conv1d + SiLU over channels-last (batch, seqlen, channels) tensors: Triton forward and backward.

The conv of the Mamba2 mixer on the triton backend when causal-conv1d (a CUDA build of tens of minutes) is not
installed. PyTorch's depthwise ``conv1d`` wants (batch, channels, seqlen), so the mixer's (batch, seqlen, channels)
activations would be transposed and copied around it in both passes, and its weight gradient is slow; these
kernels read the activations where they lie. Per output frame t and channel c (``conv.causal_conv_silu_ref`` is
the reference):

    pre[b, t, c] = bias[c] + sum_k weight[c, k] * x[b, t - (width - 1) + k, c]     (x = 0 before the first frame)
    out[b, t, c] = silu(pre[b, t, c])

Backward, with g = dout * silu'(pre):
    dx[b, s, c]     = sum_k weight[c, k] * g[b, s + (width - 1) - k, c]            (g = 0 past the last frame)
    dweight[c, k]   = sum_{b, t} g[b, t, c] * x[b, t - (width - 1) + k, c]
    dbias[c]        = sum_{b, t} g[b, t, c]
Only x is kept for backward (PyTorch's conv + SiLU keep the pre-activation too): the first backward kernel
recomputes pre from the same taps that dweight needs, reduces its fp32 g over the (frames, channels) tile for
dweight and dbias into one row of a small fp32 buffer, summed afterwards by PyTorch (deterministic, no atomics),
and writes g in x's dtype (bf16 under autocast: fewer bytes than fp32 at the same difference from the reference,
bench/NOTES.md "Conv"); the second gathers dx from g, summing in fp32. The outputs take x's dtype, dweight and
dbias the parameters'.

Reversed channels (the backward direction of the bidirectional mixer) see each sequence in padded-reverse time:
the frames t above are then those of x read at rev(t) = index[b, t] (the mixer's padded reversal; without an
index, seqlen - 1 - t), so their outputs come out reversed and dx goes back to where x was read. The mixer's conv
then reads in_proj's output in place for both directions, with no reversed copy of its input
(``conv.causal_conv_silu_bidirectional_ref`` is the reference). A program whose channels all run one way (every program
of the large mixer, whose pieces are multiples of BLOCK_C) reads and writes a frame per row, channels contiguous,
in vector loads and stores; only a program straddling the directions gathers per element. A launch whose caller
says no program straddles them (``mixed_tiles=False``, the mixer's) is compiled without that gather
(MIXED_TILES): fewer registers.
"""
import torch
import triton
import triton.language as tl

BLOCK_T = 32  # frames per program
BLOCK_C = 128  # channels per program (contiguous in memory: coalesced loads)
NUM_WARPS = 2  # of every launch: the fastest of bench/conv_speed.py --sweep's tiles and warps (bench/NOTES.md, "Conv")


MIXED = tl.constexpr(2)  # tile_kind of a tile holding channels of both directions (0: all forward, 1: all reversed)


@triton.jit
def _reversed_frames(t, index_ptr, batch, seqlen, HAS_INDEX: tl.constexpr):
    """(BLOCK_T,) the frames of x that frames t of a reversed channel read: their padded reversal, index[batch, t],
    or without an index seqlen - 1 - t."""
    if HAS_INDEX:
        flipped = tl.load(index_ptr + batch * seqlen + t, mask=(t >= 0) & (t < seqlen), other=0)
    else:
        flipped = seqlen - 1 - t
    return flipped


@triton.jit
def _tap(x_base, reversed_c, tile_kind, index_ptr, batch, t, c_ok, k, seqlen, stride_xt, WIDTH: tl.constexpr,
         REVERSE: tl.constexpr, HAS_INDEX: tl.constexpr, MIXED_TILES: tl.constexpr):
    """x (BLOCK_T, BLOCK_C) as tap k of the outputs at frames t reads it: frame t - (WIDTH - 1) + k, zero before the
    first, for reversed channels in reversed time; x_base points at (batch, frame 0, channels c).

    A tile of one direction reads one frame per row (channels contiguous: vectorised loads); only a tile that
    straddles the two directions' channels gathers a frame per element, and only where MIXED_TILES compiles that
    gather in. Each load sits in its own branch: the compiler's contiguity analysis does not see through a pointer
    chosen by a branch."""
    src = t - (WIDTH - 1) + k
    mask = ((src >= 0) & (src < seqlen))[:, None] & c_ok[None, :]
    if REVERSE:
        flipped = _reversed_frames(src, index_ptr, batch, seqlen, HAS_INDEX)
        frame_of_row = tl.where(tile_kind == 1, flipped, src)  # (BLOCK_T,)
        if MIXED_TILES:
            # computed outside the branches: Triton 3.6 merged copies made inside them across branches, then failed
            # to compile (a value used where it is not defined)
            frame_of_element = tl.where(reversed_c[None, :], flipped[:, None], src[:, None])  # (BLOCK_T, BLOCK_C)
            if tile_kind == MIXED:
                x = tl.load(x_base + frame_of_element * stride_xt, mask=mask, other=0.0)
            else:
                x = tl.load(x_base + frame_of_row[:, None] * stride_xt, mask=mask, other=0.0)
        else:
            x = tl.load(x_base + frame_of_row[:, None] * stride_xt, mask=mask, other=0.0)
    else:
        x = tl.load(x_base + src[:, None] * stride_xt, mask=mask, other=0.0)
    return x


@triton.jit
def _pre_activation(x_base, w_ptr, b_ptr, reversed_c, tile_kind, index_ptr, batch, t, c, c_ok, seqlen, stride_xt,
                    WIDTH: tl.constexpr, REVERSE: tl.constexpr, HAS_INDEX: tl.constexpr, MIXED_TILES: tl.constexpr,
                    BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """pre (BLOCK_T, BLOCK_C) fp32 at frames t, channels c."""
    pre = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32) + tl.load(b_ptr + c, mask=c_ok, other=0.0)[None, :]
    for k in tl.static_range(WIDTH):
        x_k = _tap(x_base, reversed_c, tile_kind, index_ptr, batch, t, c_ok, k, seqlen, stride_xt, WIDTH, REVERSE,
                   HAS_INDEX, MIXED_TILES)
        w_k = tl.load(w_ptr + c * WIDTH + k, mask=c_ok, other=0.0)
        pre += x_k.to(tl.float32) * w_k.to(tl.float32)[None, :]
    return pre


@triton.jit
def _tile(rev_ptr, channels, REVERSE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's frames t, channels c, their mask, its batch (int64 offsets: a batch may hold more than
    2^31 elements), which of its channels are reversed and its tile_kind (0 all forward, 1 all reversed, MIXED)."""
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,)
    batch = tl.program_id(2).to(tl.int64)
    c_ok = c < channels
    if REVERSE:
        reversed_c = tl.load(rev_ptr + c, mask=c_ok, other=0) != 0
        n_reversed = tl.sum(reversed_c.to(tl.int32), axis=0)
        tile_kind = tl.where(n_reversed == 0, 0, tl.where(n_reversed == tl.sum(c_ok.to(tl.int32), axis=0), 1, MIXED))
    else:
        reversed_c = c_ok
        tile_kind = 0
    return t, c, c_ok, batch, reversed_c, tile_kind


@triton.jit(do_not_specialize=("seqlen",))  # a new length every batch: no recompile at a multiple of 16
def _conv_silu_fwd(x_ptr, w_ptr, b_ptr, rev_ptr, index_ptr, out_ptr, seqlen, channels, stride_xb, stride_xt, stride_xc,
                   WIDTH: tl.constexpr, REVERSE: tl.constexpr, HAS_INDEX: tl.constexpr, MIXED_TILES: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    t, c, c_ok, batch, reversed_c, tile_kind = _tile(rev_ptr, channels, REVERSE, BLOCK_T, BLOCK_C)
    x_base = x_ptr + batch * stride_xb + c[None, :] * stride_xc
    pre = _pre_activation(x_base, w_ptr, b_ptr, reversed_c, tile_kind, index_ptr, batch, t, c, c_ok, seqlen,
                          stride_xt, WIDTH, REVERSE, HAS_INDEX, MIXED_TILES, BLOCK_T, BLOCK_C)
    offsets = batch * seqlen * channels + t[:, None] * channels + c[None, :]  # out is contiguous
    tl.store(out_ptr + offsets, (pre * tl.sigmoid(pre)).to(out_ptr.dtype.element_ty),
             mask=(t < seqlen)[:, None] & c_ok[None, :])


@triton.jit(do_not_specialize=("seqlen",))  # a new length every batch: no recompile at a multiple of 16
def _conv_silu_bwd_g(x_ptr, w_ptr, b_ptr, rev_ptr, index_ptr, dout_ptr, g_ptr, dw_rows_ptr, db_rows_ptr, seqlen,
                     channels, stride_xb, stride_xt, stride_xc, WIDTH: tl.constexpr, REVERSE: tl.constexpr,
                     HAS_INDEX: tl.constexpr, MIXED_TILES: tl.constexpr, BLOCK_T: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """g = dout * silu'(pre) at this tile's frames, and the tile's dweight and dbias rows."""
    t, c, c_ok, batch, reversed_c, tile_kind = _tile(rev_ptr, channels, REVERSE, BLOCK_T, BLOCK_C)
    x_base = x_ptr + batch * stride_xb + c[None, :] * stride_xc
    offsets = batch * seqlen * channels + t[:, None] * channels + c[None, :]  # dout and g are contiguous
    mask = (t < seqlen)[:, None] & c_ok[None, :]
    pre = _pre_activation(x_base, w_ptr, b_ptr, reversed_c, tile_kind, index_ptr, batch, t, c, c_ok, seqlen,
                          stride_xt, WIDTH, REVERSE, HAS_INDEX, MIXED_TILES, BLOCK_T, BLOCK_C)
    sig = tl.sigmoid(pre)
    g = tl.load(dout_ptr + offsets, mask=mask, other=0.0).to(tl.float32) * sig * (1.0 + pre * (1.0 - sig))
    tl.store(g_ptr + offsets, g.to(g_ptr.dtype.element_ty), mask=mask)
    row = batch * tl.num_programs(0) + tl.program_id(0)  # this tile's row of the dweight / dbias buffers
    tl.store(db_rows_ptr + row * channels + c, tl.sum(g, axis=0), mask=c_ok)
    for k in tl.static_range(WIDTH):  # the taps _pre_activation read, again (cached)
        x_k = _tap(x_base, reversed_c, tile_kind, index_ptr, batch, t, c_ok, k, seqlen, stride_xt, WIDTH, REVERSE,
                   HAS_INDEX, MIXED_TILES)
        tl.store(dw_rows_ptr + (row * WIDTH + k) * channels + c, tl.sum(g * x_k.to(tl.float32), axis=0), mask=c_ok)


@triton.jit(do_not_specialize=("seqlen",))  # a new length every batch: no recompile at a multiple of 16
def _conv_bwd_dx(g_ptr, w_ptr, rev_ptr, index_ptr, dx_ptr, seqlen, channels, WIDTH: tl.constexpr,
                 REVERSE: tl.constexpr, HAS_INDEX: tl.constexpr, MIXED_TILES: tl.constexpr, BLOCK_T: tl.constexpr,
                 BLOCK_C: tl.constexpr):
    """dx at this tile's frames t: frame t feeds the outputs t + (WIDTH - 1) - k through tap k, and goes back to
    the frame of x it was read from."""
    t, c, c_ok, batch, reversed_c, tile_kind = _tile(rev_ptr, channels, REVERSE, BLOCK_T, BLOCK_C)
    base = batch * seqlen * channels + c[None, :]  # g and dx are contiguous
    dx = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        dst = t + (WIDTH - 1) - k
        g_k = tl.load(g_ptr + base + dst[:, None] * channels, mask=(dst < seqlen)[:, None] & c_ok[None, :], other=0.0)
        w_k = tl.load(w_ptr + c * WIDTH + k, mask=c_ok, other=0.0)
        dx += g_k.to(tl.float32) * w_k.to(tl.float32)[None, :]
    dx = dx.to(dx_ptr.dtype.element_ty)
    mask = (t < seqlen)[:, None] & c_ok[None, :]
    if REVERSE:  # back to the frames x was read from (a permutation: no clash); one branch per pointer, as in _tap
        flipped = _reversed_frames(t, index_ptr, batch, seqlen, HAS_INDEX)
        scatters = False  # compiled away unless MIXED_TILES
        if MIXED_TILES:
            scatters = tile_kind == MIXED
        if scatters:
            tl.store(dx_ptr + base + tl.where(reversed_c[None, :], flipped[:, None], t[:, None]) * channels, dx,
                     mask=mask)
        else:
            tl.store(dx_ptr + base + tl.where(tile_kind == 1, flipped, t)[:, None] * channels, dx, mask=mask)
    else:
        tl.store(dx_ptr + base + t[:, None] * channels, dx, mask=mask)


def _grid(batch: int, seqlen: int, channels: int) -> tuple[int, int, int]:
    """Programs of every kernel here: (frame tiles, channel tiles, batch)."""
    return triton.cdiv(seqlen, BLOCK_T), triton.cdiv(channels, BLOCK_C), batch


class CausalConvSiLU(torch.autograd.Function):
    """x (batch, seqlen, channels) any strides, weight (channels, width), bias (channels,), reversed_channels
    (channels,) int8 0 / 1 or None, index (batch, seqlen) or None, mixed_tiles (whether a tile may hold both
    directions) -> (batch, seqlen, channels) contiguous, x's dtype. Saves x only."""

    @staticmethod
    def forward(ctx, x, weight, bias, reversed_channels, index, mixed_tiles):
        batch, seqlen, channels = x.shape
        weight, bias = weight.contiguous(), bias.contiguous()
        out = torch.empty((batch, seqlen, channels), dtype=x.dtype, device=x.device)
        _conv_silu_fwd[_grid(batch, seqlen, channels)](
            x, weight, bias, reversed_channels, index, out, seqlen, channels, *x.stride(),
            WIDTH=weight.shape[1], **_switches(reversed_channels, index, mixed_tiles), BLOCK_T=BLOCK_T,
            BLOCK_C=BLOCK_C, num_warps=NUM_WARPS)
        ctx.save_for_backward(x, weight, bias, reversed_channels, index)
        ctx.mixed_tiles = mixed_tiles
        return out

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, reversed_channels, index = ctx.saved_tensors
        batch, seqlen, channels = x.shape
        width = weight.shape[1]
        dout = dout.contiguous()
        grid = _grid(batch, seqlen, channels)
        rows = grid[0] * batch
        switches = _switches(reversed_channels, index, ctx.mixed_tiles)
        g = torch.empty((batch, seqlen, channels), dtype=x.dtype, device=x.device)
        dw_rows = torch.empty((rows, width, channels), dtype=torch.float32, device=x.device)
        db_rows = torch.empty((rows, channels), dtype=torch.float32, device=x.device)
        _conv_silu_bwd_g[grid](x, weight, bias, reversed_channels, index, dout, g, dw_rows, db_rows, seqlen, channels,
                               *x.stride(), WIDTH=width, **switches, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C,
                               num_warps=NUM_WARPS)
        dx = torch.empty((batch, seqlen, channels), dtype=x.dtype, device=x.device)
        _conv_bwd_dx[grid](g, weight, reversed_channels, index, dx, seqlen, channels, WIDTH=width, **switches,
                           BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS)
        dweight = dw_rows.sum(0).t().to(weight.dtype)  # (channels, width)
        return dx, dweight, db_rows.sum(0).to(bias.dtype), None, None, None


def _switches(reversed_channels, index, mixed_tiles: bool) -> dict:
    """The kernels' compile-time switches; a pointer they leave unused is passed as None."""
    return {"REVERSE": reversed_channels is not None, "HAS_INDEX": index is not None,
            "MIXED_TILES": reversed_channels is not None and mixed_tiles}


def one_way_tiles(piece_sizes) -> bool:
    """Whether two directions' channels laid piece by piece, [fw, bw] of each size as
    the mixer lays them, leave every tile of BLOCK_C channels in one direction:
    every piece a multiple of BLOCK_C (the large mixer's 1024, 128, 128)."""
    return all(size % BLOCK_C == 0 for size in piece_sizes)


def causal_conv_silu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            reversed_channels: torch.Tensor | None = None, index: torch.Tensor | None = None,
                            mixed_tiles: bool = True) -> torch.Tensor:
    """x (batch, seqlen, channels), weight (channels, 1, width) as nn.Conv1d's, bias (channels,) -> like x.
    reversed_channels (channels,) bool: those channels run in padded-reverse time (index from
    ``padded_reverse_index``, None: the whole sequence reversed), their outputs reversed too. mixed_tiles=False
    is the caller's word that no tile of BLOCK_C channels holds both directions (``one_way_tiles``): the kernels
    are then compiled without the per-element gather such a tile needs (fewer registers); a wrong word gives wrong
    outputs."""
    if reversed_channels is None:
        index = None
    elif reversed_channels.dtype != torch.int8:
        reversed_channels = reversed_channels.to(torch.int8)  # 0 / 1 bytes, as the kernels read them
    if index is not None:
        index = index.contiguous()
    return CausalConvSiLU.apply(x, weight.squeeze(1), bias, reversed_channels, index, mixed_tiles)



def causal_conv_silu_bidirectional_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                                          reversed_channels: torch.Tensor, index: torch.Tensor | None,
                                          piece_sizes: tuple[int, ...] | None = None) -> torch.Tensor:
    """``causal_conv_silu_triton`` with reversed channels laid out in pieces of ``piece_sizes`` (the mixer's
    [x, B, C] widths, [fw, bw] of each), compiled without the gather of mixed tiles where no tile holds both
    directions (``one_way_tiles``); None: any layout."""
    mixed_tiles = piece_sizes is None or not one_way_tiles(piece_sizes)
    return causal_conv_silu_triton(x, weight, bias, reversed_channels, index, mixed_tiles)
