"""The SSD scan in plain PyTorch: the sequential recurrence (the specification) and the chunked algorithm.

- ``ssd_ref``: the recurrence one time step at a time; slow and obviously right, the reference every other scan
  (``ssd_chunked``, mamba_ssm's Triton kernels, their CUDA graphs) is tested against.
- ``ssd_chunked``: the chunked state-space-duality algorithm of the Mamba2 paper (Dao & Gu 2024, listing 1) in
  PyTorch einsums, fp32, with the states passed from chunk to chunk as mamba_ssm's kernels do; runs anywhere, no
  per-time-step loop. The torch backend runs it at TORCH_CHUNK_SIZE (``ssd_torch``).

Both share the signature of mamba_ssm's ``mamba_chunk_scan_combined``:
    y = scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)
    x (batch, seqlen, nheads, headdim), dt (batch, seqlen, nheads), A (nheads,),
    B, C (batch, seqlen, ngroups, d_state), D (nheads,) -> y (batch, seqlen, nheads, headdim)
"""
import torch
import torch.nn.functional as F
from einops import rearrange, repeat


def _step_sizes(dt, dt_bias, dt_softplus):
    """fp32 softplus(dt + dt_bias) (batch, seqlen, nheads), as mamba_ssm's kernels take dt."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    return F.softplus(dt) if dt_softplus else dt


def _discretise(x, dt, A, B, C, dt_bias, dt_softplus):
    """ssd_ref's prologue: fp32, the step sizes, groups broadcast to heads."""
    x, B, C = x.float(), B.float(), C.float()
    dt = _step_sizes(dt, dt_bias, dt_softplus)  # (batch, seqlen, nheads)
    nheads = x.shape[2]
    B = repeat(B, "b l g n -> b l (g r) n", r=nheads // B.shape[2])  # (batch, seqlen, nheads, d_state)
    C = repeat(C, "b l g n -> b l (g r) n", r=nheads // C.shape[2])
    return x, dt, A.float(), B, C


def ssd_ref(x, dt, A, B, C, chunk_size=None, D=None, dt_bias=None, dt_softplus=False):
    """Sequential SSM recurrence. h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,  y_t = h_t C_t + D x_t."""
    dtype = x.dtype
    x, dt, A, B, C = _discretise(x, dt, A, B, C, dt_bias, dt_softplus)
    batch, seqlen, nheads, headdim = x.shape
    state = x.new_zeros(batch, nheads, headdim, B.shape[-1])  # (batch, nheads, headdim, d_state)
    ys = []
    for t in range(seqlen):
        decay = torch.exp(dt[:, t] * A)  # (batch, nheads)
        update = torch.einsum("bh,bhp,bhn->bhpn", dt[:, t], x[:, t], B[:, t])
        state = decay[:, :, None, None] * state + update
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))  # (batch, nheads, headdim)
    y = torch.stack(ys, dim=1)  # (batch, seqlen, nheads, headdim)
    if D is not None:
        y = y + x * D.float()[:, None]
    return y.to(dtype)


def segsum(x: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T) with out[..., i, j] = sum(x[..., j+1 : i+1]) for j <= i, -inf above the diagonal.

    Summing each segment directly (not as a difference of cumulative sums) keeps exp(segsum) exact in fp32.
    """
    T = x.size(-1)
    x = repeat(x, "... d -> ... d e", e=T)  # (..., T, T)
    strictly_lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~strictly_lower, 0)
    x_segsum = torch.cumsum(x, dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=0)
    return x_segsum.masked_fill(~lower, -torch.inf)


def ssd_chunked(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False):
    """Chunked SSD: quadratic attention-like form inside chunks, a linear recurrence across them.

    As mamba_ssm's kernels do, C B^T is formed once per group (not per head) and the states are passed from chunk
    to chunk in a scan, so the cost is linear in seqlen for any chunk_size (the result does not depend on it).
    """
    dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, A = x.float(), A.float()
        dt = _step_sizes(dt, dt_bias, dt_softplus)  # (batch, seqlen, nheads)
        seqlen, ngroups = x.shape[1], B.shape[2]
        chunk_size = min(chunk_size, seqlen)  # never pad past one chunk's worth
        pad = (-seqlen) % chunk_size  # zero dt past the end: no decay and no input, outputs cut off below
        X = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))  # (batch, padded, nheads, headdim)
        dA = F.pad(dt * A, (0, 0, 0, pad))  # (batch, padded, nheads)
        B, C = (F.pad(t.float(), (0, 0, 0, 0, 0, pad)) for t in (B, C))  # (batch, padded, ngroups, d_state)
        # heads h = (g r): the r heads of group g share its B and C
        X = rearrange(X, "b (c l) (g r) p -> b c l g r p", l=chunk_size, g=ngroups)
        B, C = (rearrange(t, "b (c l) g n -> b c l g n", l=chunk_size) for t in (B, C))
        dA = rearrange(dA, "b (c l) (g r) -> b g r c l", l=chunk_size, g=ngroups)
        dA_cumsum = torch.cumsum(dA, dim=-1)  # (batch, ngroups, r, chunks, chunk_size)

        # 1. outputs within each chunk (the diagonal blocks)
        CB = torch.einsum("bclgn,bcsgn->bgcls", C, B)  # (batch, ngroups, chunks, l, s)
        L = torch.exp(segsum(dA))  # (batch, ngroups, r, chunks, l, s)
        Y_diag = torch.einsum("bgrcls,bcsgrp->bclgrp", CB[:, :, None] * L, X)
        # 2. the state each chunk leaves behind, from its own inputs
        decay_states = torch.exp(dA_cumsum[..., -1:] - dA_cumsum)  # (batch, ngroups, r, chunks, chunk_size)
        chunk_states = torch.einsum("bclgn,bgrcl,bclgrp->bcgrpn", B, decay_states, X)  # (b, chunks, g, r, p, n)
        # 3. the recurrence across chunks: the state entering each chunk, one chunk after the other
        decay_chunk = torch.exp(dA_cumsum[..., -1])  # (batch, ngroups, r, chunks)
        entering = [torch.zeros_like(chunk_states[:, 0])]  # (batch, g, r, p, n)
        for c in range(chunk_states.shape[1] - 1):
            entering.append(decay_chunk[..., c, None, None] * entering[-1] + chunk_states[:, c])
        states = torch.stack(entering, dim=1)  # (batch, chunks, g, r, p, n)
        # 4. the entering state's contribution to each output
        Y_off = torch.einsum("bclgn,bcgrpn,bgrcl->bclgrp", C, states, torch.exp(dA_cumsum))

        y = rearrange(Y_diag + Y_off, "b c l g r p -> b (c l) (g r) p")[:, :seqlen]  # (batch, seqlen, nheads, p)
        if D is not None:
            y = y + x * D.float()[:, None]
    return y.to(dtype)


# ssd_chunked's chunk on the torch backend: the fastest of 16 to 256 on CPU (bench/NOTES.md, "CPU scan chunk")
TORCH_CHUNK_SIZE = 64


def ssd_torch(x, dt, A, B, C, chunk_size=None, **kwargs):
    """The torch backend's scan: ``ssd_chunked`` at TORCH_CHUNK_SIZE. ``chunk_size`` (mamba_chunk_size) is the
    Triton kernel's; the chunked algorithm's result does not depend on it, so it is not used here."""
    return ssd_chunked(x, dt, A, B, C, TORCH_CHUNK_SIZE, **kwargs)
