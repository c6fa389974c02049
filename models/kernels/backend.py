"""Which implementation each piece of the BiMamba2 mixer runs, chosen once from the hparam ``mamba_backend``.

    kernels = mixer_kernels("auto", "cuda", scan_graph_frames=16384, mixer_graph_frames=16384)
    y = kernels.scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)

=========  =====================================  ===============================  ===========================  ======
backend    scan                                   conv + SiLU                      gated norm (bidirectional)   graphs
=========  =====================================  ===============================  ===========================  ======
torch      ``ssd.ssd_torch``: the chunked SSD      ``conv.causal_conv_silu_ref``    the backward half reversed,  none
           in PyTorch (CPU, or anywhere)          (nn.functional.conv1d)           then ``gated_rms_norm``
triton     mamba_ssm's ``mamba_chunk_scan_        causal-conv1d's kernel when      one Triton pass reading the  scan,
           combined``, replayed as CUDA graphs    installed, else this             backward half reversed in    mixer
           up to ``scan_graph_frames``            package's (``conv_triton.py``)   place (gated_norm_triton)
ref        ``ssd.ssd_ref``: the sequential        as torch                         as torch                     none
           recurrence (tests)
=========  =====================================  ===============================  ===========================  ======

``auto`` is triton on CUDA when mamba_ssm is importable, else torch. A ``MixerKernels`` is made for one device
type; a module that meets its tensors on another asks ``mixer_kernels`` again (``for_device``). The allowed names
are hparams.py's ``CHOICES["mamba_backend"]``.
"""
import dataclasses
import functools
import importlib.util
from typing import Callable

import torch

from hparams import CHOICES
from models.kernels import conv, gated_norm, ssd
from models.kernels.graphs import graphs_apply

BACKENDS = CHOICES["mamba_backend"]


def mamba_ssm_available() -> bool:
    """True when mamba_ssm's Triton kernels can be imported (they need CUDA at run time)."""
    return importlib.util.find_spec("mamba_ssm") is not None


def resolve_backend(name: str, device_type: str) -> str:
    """``auto`` -> ``triton`` on CUDA with mamba_ssm installed, else ``torch``; the other names checked."""
    if name not in BACKENDS:
        raise ValueError(f"unknown Mamba2 backend '{name}': expected one of {', '.join(BACKENDS)} "
                         f"(hparam mamba_backend)")
    if name == "auto":
        return "triton" if device_type == "cuda" and mamba_ssm_available() else "torch"
    if name == "triton" and not mamba_ssm_available():
        raise RuntimeError("mamba_backend=triton needs mamba_ssm: run scripts/install_gpu.sh (README, GPU install)")
    return name


def default_device_type() -> str:
    """The device type a model built now is expected to run on: cuda when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclasses.dataclass(frozen=True)
class MixerKernels:
    """The mixer's pieces for one backend and device type (see the module's table)."""

    name: str  # requested: auto | torch | triton | ref
    backend: str  # resolved: torch | triton | ref
    device_type: str
    scan_graph_frames: int  # triton: scans of up to this batch x length replay CUDA graphs (others: unused)
    mixer_graph_frames: int  # triton: fused mixers of up to this batch x length replay CUDA graphs (others: unused)
    scan: Callable  # mamba_chunk_scan_combined's signature
    conv: Callable  # (x, weight, bias) -> silu(causal depthwise conv), x (batch, seqlen, channels)
    # (x, weight, bias, reversed_channels, index, piece_sizes): the flagged channels' conv in padded-reverse time
    bidirectional_conv: Callable
    # (y, z, weight, eps, index): the gated norm of y whose backward half is in padded-reverse time
    bidirectional_norm: Callable

    def for_device(self, device: torch.device) -> "MixerKernels":
        """These kernels, or the same backend's for another device type (a module moved after it was built)."""
        if device.type == self.device_type:
            return self
        return mixer_kernels(self.name, device.type, self.scan_graph_frames, self.mixer_graph_frames)

    def replays_mixer(self, hidden: torch.Tensor, multiple: int) -> bool:
        """Whether a fused mixer call on ``hidden`` (batch, frames, d_model) replays CUDA graphs: the triton backend,
        at most mixer_graph_frames frames with time padded to ``multiple`` (``graphs.graphs_apply``)."""
        return self.backend == "triton" and graphs_apply(hidden, multiple, self.mixer_graph_frames)

    def without_graphs(self) -> "MixerKernels":
        """The same kernels launched eagerly: what a CUDA graph of the mixer captures."""
        return mixer_kernels(self.name, self.device_type, 0, 0)


@functools.cache
def mixer_kernels(name: str, device_type: str, scan_graph_frames: int = 0,
                  mixer_graph_frames: int = 0) -> MixerKernels:
    """The ``MixerKernels`` of backend ``name`` on ``device_type`` (made once per arguments)."""
    for key, frames in (("mamba_scan_graph_frames", scan_graph_frames),
                        ("mamba_mixer_graph_frames", mixer_graph_frames)):
        if frames < 0:
            raise ValueError(f"{key}={frames} must be >= 0 (0: the kernels launched eagerly)")
    backend = resolve_backend(name, device_type)
    if backend != "triton":
        scan = ssd.ssd_ref if backend == "ref" else ssd.ssd_torch
        return MixerKernels(name, backend, device_type, scan_graph_frames, mixer_graph_frames, scan,
                            conv.causal_conv_silu_ref, _bidirectional_conv_ref,
                            gated_norm.bidirectional_gated_rms_norm_ref)
    from models.kernels.gated_norm_triton import bidirectional_gated_rms_norm
    from models.kernels.scan_graphs import triton_scan

    causal_conv1d = _causal_conv1d_fn()
    if causal_conv1d is not None:
        run_conv = functools.partial(_causal_conv1d_silu, causal_conv1d)
        run_bidirectional_conv = functools.partial(_bidirectional_conv_reversed_first, run_conv)
    else:
        from models.kernels.conv_triton import causal_conv_silu_bidirectional_triton, causal_conv_silu_triton

        run_conv, run_bidirectional_conv = causal_conv_silu_triton, causal_conv_silu_bidirectional_triton
    return MixerKernels(name, backend, device_type, scan_graph_frames, mixer_graph_frames,
                        triton_scan(scan_graph_frames), run_conv, run_bidirectional_conv, bidirectional_gated_rms_norm)


def _bidirectional_conv_ref(x, weight, bias, reversed_channels, index, piece_sizes=None):
    return conv.causal_conv_silu_bidirectional_ref(x, weight, bias, reversed_channels, index)


def _bidirectional_conv_reversed_first(run_conv, x, weight, bias, reversed_channels, index, piece_sizes=None):
    """A one-way conv kernel on the input with the flagged channels reversed first (a copy)."""
    return run_conv(conv.reverse_channels(x, reversed_channels, index), weight, bias)


@functools.cache  # a failed import is not cached by Python: retried on every call, it costs time in every layer
def _causal_conv1d_fn():
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    return causal_conv1d_fn


def _causal_conv1d_silu(causal_conv1d_fn, x, weight, bias):
    """causal-conv1d's kernel on channels-last input: (batch, channels, seqlen) with channel stride 1."""
    return causal_conv1d_fn(x.transpose(1, 2), weight.squeeze(1), bias, activation="silu").transpose(1, 2)
