"""Mamba2 in plain PyTorch, with mamba_ssm's parameter names, shapes and initialisation.

A ``Mamba2`` here holds exactly the parameters of ``mamba_ssm.modules.mamba2.Mamba2`` (ngroups=1, rmsnorm=True,
no bias): ``in_proj.weight``, ``conv1d.weight``, ``conv1d.bias``, ``dt_bias``, ``A_log``, ``D``, ``norm.weight``,
``out_proj.weight``, so its state_dict loads into mamba_ssm's module and back. The block:

    u (batch, seqlen, d_model) -> in_proj -> [z, x, B, C, dt]
    x, B, C <- silu(causal depthwise conv1d([x, B, C]))
    y       <- SSD scan(x, dt, A = -exp(A_log), B, C, D, dt_bias)           (per head, state d_state)
    out     <- out_proj(rmsnorm(y * silu(z)) * norm.weight)

Which scan, conv and norm run is chosen once from ``backend`` (hparam ``mamba_backend``), into a
``models.kernels.backend.MixerKernels``: on CPU the chunked SSD of the Mamba2 paper in PyTorch, on CUDA mamba_ssm's
Triton kernels; ``ref`` runs the sequential recurrence that both are tested against (``models.kernels.ssd``).
"""
import math

import torch
from einops import rearrange
from torch import nn

from models.kernels.backend import default_device_type, mixer_kernels
from models.kernels.gated_norm import gated_rms_norm
from models.kernels.scan_graphs import SCAN_GRAPH_FRAMES


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
        self.kernels = mixer_kernels(backend, default_device_type(), scan_graph_frames)

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

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.device.type != self.kernels.device_type:  # moved after it was built
            self.kernels = self.kernels.for_device(u.device)
        kernels = self.kernels
        zxbcdt = self.in_proj(u)  # (batch, seqlen, 2 * d_inner + 2 * d_state + nheads)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * self.d_state, self.nheads], dim=-1)
        xBC = kernels.conv(xBC, self.conv1d.weight, self.conv1d.bias)  # (batch, seqlen, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        y = kernels.scan(
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
