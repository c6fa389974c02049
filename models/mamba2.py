"""Mamba2 in plain PyTorch, with mamba_ssm's parameter names, shapes and initialisation.

A ``Mamba2`` here holds exactly the parameters of ``mamba_ssm.modules.mamba2.Mamba2`` (ngroups=1, rmsnorm=True,
no bias): ``in_proj.weight``, ``conv1d.weight``, ``conv1d.bias``, ``dt_bias``, ``A_log``, ``D``, ``norm.weight``,
``out_proj.weight``. A checkpoint therefore moves freely between this module and the original code. The SSD scan
is pluggable:

- ``ssd_chunked``: the chunked state-space-duality algorithm of the Mamba2 paper (Dao & Gu 2024, listing 1) in
  PyTorch einsums, fp32, with the states passed from chunk to chunk as mamba_ssm's kernels do; runs anywhere, no
  per-time-step loop (the torch backend runs it at TORCH_CHUNK_SIZE).
- ``ssd_ref``: the sequential recurrence, one time step at a time; slow and obviously right, the specification
  the other two are tested against.
- ``mamba_ssm``'s Triton ``mamba_chunk_scan_combined`` on CUDA when installed (``backend="triton"``), replayed as
  CUDA graphs where a call is small enough for its launches to cost more than its work (models/scan_graphs.py,
  ``scan_graph_frames``). Its causal conv1d is ``causal_conv1d``'s kernel when installed, else this repository's
  Triton kernel (models/conv_triton.py), so the GPU path needs nothing that takes long to compile; the other
  backends run it through ``nn.functional.conv1d``.

All three share the signature of ``mamba_chunk_scan_combined``:
    y = scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)
    x (batch, seqlen, nheads, headdim), dt (batch, seqlen, nheads), A (nheads,),
    B, C (batch, seqlen, ngroups, d_state), D (nheads,) -> y (batch, seqlen, nheads, headdim)
"""
import functools
import importlib.util
import logging
import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from models.scan_graphs import SCAN_GRAPH_FRAMES, graphed_chunk_scan

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "triton", "ref")  # ref: the sequential recurrence, for tests only


def triton_available() -> bool:
    """True when mamba_ssm's Triton kernels can be imported (they need CUDA at run time)."""
    return importlib.util.find_spec("mamba_ssm") is not None


def resolve_backend(backend: str, device: torch.device | None = None) -> str:
    """'auto' -> 'triton' on CUDA with mamba_ssm installed, else 'torch'; other names pass through checked."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown Mamba2 backend '{backend}': expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        on_cuda = device is not None and device.type == "cuda"
        return "triton" if on_cuda and triton_available() else "torch"
    if backend == "triton" and not triton_available():
        raise RuntimeError("backend 'triton' needs mamba_ssm: run scripts/install_gpu.sh (see README, GPU install)")
    return backend


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


# ssd_chunked's chunk on the torch backend: of 16, 32, 64 and 128 the fastest on 2 CPU cores at 500, 3000 and 30000
# frames (24 heads, headdim 64, d_state 128); 256, mamba_ssm's, took 2.2x as long at 500 frames and 2.4x at 30000
TORCH_CHUNK_SIZE = 64


def ssd_torch(x, dt, A, B, C, chunk_size=None, **kwargs):
    """The torch backend's scan: ``ssd_chunked`` at TORCH_CHUNK_SIZE. ``chunk_size`` (mamba_chunk_size) is the
    Triton kernel's; the chunked algorithm's result does not depend on it, so it is not used here."""
    return ssd_chunked(x, dt, A, B, C, TORCH_CHUNK_SIZE, **kwargs)


def scan_fn(backend: str, graph_frames: int = 0):
    """The scan of a backend; on triton with graph_frames > 0, mamba_ssm's replayed as CUDA graphs for calls of
    up to that many frames (models/scan_graphs.py)."""
    if backend == "triton":
        if graph_frames > 0:
            _triton_scan()  # its log line
            return functools.partial(graphed_chunk_scan, max_frames=graph_frames)
        return _triton_scan()
    return {"torch": ssd_torch, "ref": ssd_ref}[backend]


@functools.cache  # once per process: the import, and the line that explains a long first step
def _triton_scan():
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    logger.info("Mamba2 triton backend: mamba_ssm's kernels compile on their first use on a machine (every autotune "
                "configuration, fp32 and bf16 apart: minutes), later runs load them from Triton's cache "
                "(TRITON_CACHE_DIR, default ~/.triton/cache)")
    return mamba_chunk_scan_combined


@functools.cache  # a failed import is not cached by Python: retried on every call, it cost ~50 us per layer
def _causal_conv1d_fn():
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    return causal_conv1d_fn


def causal_conv_silu_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv + SiLU through nn.functional.conv1d: x (batch, seqlen, channels), weight (channels, 1,
    width) -> like x. Width - 1 frames of left context (padding both sides, keep the first seqlen outputs)."""
    seqlen, width = x.shape[1], weight.shape[-1]
    x = x.transpose(1, 2)  # (batch, channels, seqlen), conv1d's layout
    return F.silu(F.conv1d(x, weight, bias, padding=width - 1, groups=x.shape[1])[..., :seqlen]).transpose(1, 2)


def conv_implementation(backend: str) -> str:
    """Which causal conv + SiLU a backend runs: on triton, "causal_conv1d" (its kernel, when installed) or "triton"
    (models/conv_triton.py's); on the others "conv1d" (``causal_conv_silu_ref``)."""
    if backend != "triton":
        return "conv1d"
    return "causal_conv1d" if _causal_conv1d_fn() is not None else "triton"


def causal_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, backend: str) -> torch.Tensor:
    """Depthwise causal conv + SiLU: x (batch, seqlen, channels), weight (channels, 1, width) -> like x, by
    ``conv_implementation(backend)``; the two kernels read the channels-last activations in place."""
    implementation = conv_implementation(backend)
    if implementation == "conv1d":
        return causal_conv_silu_ref(x, weight, bias)
    if implementation == "causal_conv1d":  # channels-last input: (batch, channels, seqlen) with channel stride 1
        return _causal_conv1d_fn()(x.transpose(1, 2), rearrange(weight, "d 1 w -> d w"), bias,
                                   activation="silu").transpose(1, 2)
    from models.conv_triton import causal_conv_silu_triton

    return causal_conv_silu_triton(x, weight, bias)


def gated_rms_norm(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """mamba_ssm's gated RMSNorm with norm_before_gate=False: rmsnorm(x * silu(z)) * weight, over the last dim,
    in fp32."""
    dtype = x.dtype
    x = x.float() * F.silu(z.float())
    x = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    return (x * weight.float()).to(dtype)


class RMSNormGated(nn.Module):
    """The norm of a Mamba2 block; parameter ``weight`` as in mamba_ssm."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x, z):
        return gated_rms_norm(x, z, self.weight, self.eps)


class Mamba2(nn.Module):
    """One direction of the BiMamba2 mixer: (batch, seqlen, d_model) -> (batch, seqlen, d_model), causal."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 1,
        headdim: int = 64,
        chunk_size: int = 256,
        backend: str = "auto",
        scan_graph_frames: int = SCAN_GRAPH_FRAMES,
        A_init_range=(1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
    ):
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.headdim = d_model, d_state, d_conv, headdim
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(
                f"Mamba2: inner width {self.d_inner} (expand {expand} x d_model {d_model}) is not divisible by "
                f"headdim {headdim}; set mamba_headdim to a divisor of it"
            )
        self.nheads = self.d_inner // headdim
        if chunk_size < 1:
            raise ValueError(f"Mamba2: chunk_size {chunk_size} must be at least 1 (hparam mamba_chunk_size)")
        self.chunk_size = chunk_size
        if scan_graph_frames < 0:
            raise ValueError(f"Mamba2: scan_graph_frames {scan_graph_frames} must be >= 0 (hparam "
                             f"mamba_scan_graph_frames; 0: mamba_ssm's scan launched eagerly)")
        self.scan_graph_frames = scan_graph_frames  # triton backend: scans this small replay CUDA graphs
        self.backend = backend
        resolve_backend(backend)  # fail at construction on an unknown name

        # in_proj rows, in mamba_ssm's order: [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)
        conv_dim = self.d_inner + 2 * d_state  # the conv runs over [x, B, C]
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim, padding=d_conv - 1)
        # dt log-uniform in [dt_min, dt_max], stored through the inverse softplus (mamba_ssm's initialisation)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.norm = RMSNormGated(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u: torch.Tensor, backend: str | None = None) -> torch.Tensor:
        backend = resolve_backend(backend or self.backend, u.device)
        zxbcdt = self.in_proj(u)  # (batch, seqlen, 2 * d_inner + 2 * d_state + nheads)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * self.d_state, self.nheads], dim=-1)
        xBC = causal_conv_silu(xBC, self.conv1d.weight, self.conv1d.bias, backend)  # (batch, seqlen, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        y = scan_fn(backend, self.scan_graph_frames)(
            rearrange(x, "b l (h p) -> b l h p", p=self.headdim),
            dt,
            -torch.exp(self.A_log.float()),  # (nheads,)
            rearrange(B, "b l n -> b l 1 n"),
            rearrange(C, "b l n -> b l 1 n"),
            self.chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
        )  # (batch, seqlen, nheads, headdim)
        y = self.norm(rearrange(y, "b l h p -> b l (h p)"), z)
        return self.out_proj(y)
