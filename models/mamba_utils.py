"""Attention -> bidirectional Mamba2 surgery for Hugging Face Wav2Vec2 encoders.

    model = Wav2Vec2ForCTC.from_pretrained("facebook/wav2vec2-large-lv60")
    substitute_layer(model.wav2vec2.encoder, model.config)   # every encoder_layer.attention -> BiMamba2Wrapper

Inside each encoder layer only the self-attention is swapped; the layer's residual, dropout, layer norms and
feed-forward, the CNN front end, the positional conv and the CTC head keep their pretrained weights:

    hidden (B, T, D) ──┬──────────────────── Mamba2 fw ─────────────────────────┐
                       │                                                        (+) ── [+ hidden] ── mask ── out
                       └─ reverse valid frames ── Mamba2 bw ── reverse back ────┘     (residual_inside)

The backward direction runs on the *padding-aware* reversal: each sequence's valid frames are reversed and its
padding stays at the end, so both Mamba2 directions are causal scans that never see padding before a valid frame.
"""
import functools
import logging
import weakref
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from hparams import CHOICES
from models.kernels.backend import MixerKernels, default_device_type, mixer_kernels
from models.kernels.graphs import capture_cuda_graph, current_autocast_dtype
from models.kernels.mixer_graphs import MIXER_GRAPH_FRAMES, GraphedRecompute, full_lengths, recompute_graph_pair
from models.kernels.scan_graphs import SCAN_GRAPH_FRAMES
from models.mamba2 import Mamba2

logger = logging.getLogger(__name__)

# What a converted encoder's config names as its attention implementation: no attention is left to run, and the
# mask Hugging Face builds for it is the (batch, frames) padding mask as the encoder got it, all a BiMamba2Wrapper
# reads. For SDPA the encoder would build a (batch, 1, frames, frames) one: quadratic in the length (8 GB per
# utterance of a padded batch of 30-minute recordings) and made, with a host sync, at every forward.
BIMAMBA2_ATTENTION = "bimamba2"


def _no_attention(module, *args, **kwargs):
    raise RuntimeError(f"{type(module).__name__} is an attention module in an encoder converted to BiMamba2 "
                       f"(config attention implementation {BIMAMBA2_ATTENTION!r}): nothing here should call it")


def padding_mask(batch_size: int, q_length: int, kv_length: int, attention_mask: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor | None:
    """Hugging Face's mask function for ``BIMAMBA2_ATTENTION``: the 2-D (batch, frames) padding mask, bool, as the
    encoder got it (None if it got none); never a (frames, frames) one, and no host sync to drop an all-valid one."""
    return attention_mask


AttentionInterface.register(BIMAMBA2_ATTENTION, _no_attention)
AttentionMaskInterface.register(BIMAMBA2_ATTENTION, padding_mask)


def valid_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Frames per sequence (batch,) from any mask form a Hugging Face encoder passes to its attention.

    2-D (batch, seqlen) with 1 = keep; 4-D (batch, 1, seqlen, seqlen) boolean (True = keep, SDPA) or additive
    float (0 = keep, a large negative = masked, eager). Padding is always at the end.
    """
    if attention_mask.dim() == 4:
        keys = attention_mask[:, 0, 0, :]  # the first query is always a valid frame: its row masks the keys
        keep = keys if keys.dtype == torch.bool else keys == 0
    elif attention_mask.dim() == 2:
        keep = attention_mask.bool()
    else:
        raise ValueError(f"BiMamba2Wrapper: unsupported attention_mask of shape {tuple(attention_mask.shape)}")
    return keep.sum(dim=-1)


def padded_reverse_index(lengths: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(batch, seqlen) gather index reversing each row's first lengths[b] frames and leaving the rest in place.

    The permutation is its own inverse, so the same index reverses back.
    """
    t = torch.arange(seqlen, device=lengths.device)  # (seqlen,)
    lengths = lengths[:, None]  # (batch, 1)
    return torch.where(t < lengths, lengths - 1 - t, t)  # (batch, seqlen)


class PaddingLayout:
    """A padded batch's layout as every BiMamba2Wrapper of an encoder reads it: lengths (batch,), the padded
    reversal's index (batch, seqlen) and the padded frames (batch, seqlen) bool. Hugging Face hands each layer the
    same mask tensor, so ``of`` makes the layout once per mask (per forward, not per layer: 24 times fewer small
    kernels in the large model) and gives the same one again while that tensor lives unchanged."""

    _last = None  # (weakref to the mask, its _version, seqlen, layout): the layout of the last mask seen

    def __init__(self, attention_mask: torch.Tensor, seqlen: int):
        self.lengths = valid_lengths(attention_mask)  # (batch,)
        self.index = padded_reverse_index(self.lengths, seqlen)  # (batch, seqlen)
        self.padded = torch.arange(seqlen, device=self.lengths.device)[None, :] >= self.lengths[:, None]

    @classmethod
    def of(cls, attention_mask: torch.Tensor, seqlen: int) -> "PaddingLayout":
        last = cls._last
        if last is not None and last[0]() is attention_mask and last[1:3] == (attention_mask._version, seqlen):
            return last[3]
        layout = cls(attention_mask, seqlen)
        cls._last = (weakref.ref(attention_mask), attention_mask._version, seqlen, layout)
        return layout


def reverse_padded(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x (batch, seqlen, dim) gathered along time by ``padded_reverse_index``; index None (a batch without
    padding): the whole sequence reversed, a flip (cheaper than the gather both ways, no index to read)."""
    if index is None:
        return x.flip(1)
    return torch.gather(x, 1, index[..., None].expand_as(x))


def reverse_padded_ref(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reference for ``reverse_padded``: one sequence at a time."""
    out = x.clone()
    for b, n in enumerate(lengths.tolist()):
        out[b, :n] = x[b, :n].flip(0)
    return out


class Direction(NamedTuple):
    """One direction's parameters as ``bimamba2_fused`` reads them: a Mamba2's (``Direction.of``), or the static
    buffers a CUDA graph of the mixer reads (``mixer_graphs``)."""

    in_proj: torch.Tensor  # (2 * d_inner + 2 * d_state + nheads, d_model): rows [z, x, B, C, dt]
    conv_weight: torch.Tensor  # (d_inner + 2 * d_state, 1, d_conv)
    conv_bias: torch.Tensor  # (d_inner + 2 * d_state,)
    dt_bias: torch.Tensor  # (nheads,)
    A_log: torch.Tensor  # (nheads,)
    D: torch.Tensor  # (nheads,)
    norm: torch.Tensor  # (d_inner,)
    out_proj: torch.Tensor  # (d_model, d_inner)

    @classmethod
    def of(cls, mamba: Mamba2) -> "Direction":
        return cls(mamba.in_proj.weight, mamba.conv1d.weight, mamba.conv1d.bias, mamba.dt_bias, mamba.A_log,
                   mamba.D, mamba.norm.weight, mamba.out_proj.weight)


class MixerDims(NamedTuple):
    """What ``bimamba2_fused`` needs of a Mamba2 besides its parameters (both directions are built alike)."""

    d_inner: int
    d_state: int
    nheads: int
    headdim: int
    chunk_size: int
    eps: float

    @classmethod
    def of(cls, mamba: Mamba2) -> "MixerDims":
        return cls(mamba.d_inner, mamba.d_state, mamba.nheads, mamba.headdim, mamba.chunk_size, mamba.norm.eps)


def bimamba2_fused(dims: MixerDims, fw: Direction, bw: Direction, hidden: torch.Tensor, index: torch.Tensor | None,
                   kernels: MixerKernels) -> torch.Tensor:
    """fw(hidden) + reverse(bw(reverse(hidden))) with both directions in one pass of each GEMM, conv, scan and norm.

    The directions' channels are laid side by side at run time (the checkpoint keeps mamba_ssm's two-module
    layout): one in_proj GEMM for both directions, one depthwise conv over both directions' channels, one SSD scan
    with the backward heads stacked after the forward ones (ngroups = 2: each direction keeps its own B and C), one
    gated norm with a group per direction, one out_proj GEMM that also sums the two directions.
    ``BiMamba2Wrapper.forward_separate`` is its reference.

    A projection, the gate and the norm act on each frame alone, so they commute with the time reversal: the input
    is projected unreversed, and what the backward scan reads is reversed on the way in: x, B and C by the conv
    itself, which reads the backward channels in reversed time from the GEMM's output in place, and dt by a copy.
    The norm reads the scan's backward half in reversed time where the scan wrote it (on the triton backend; a
    reversed copy first on the others), with the gate z in input time for both directions. ``kernels`` (one
    backend's, ``models.kernels.backend``) run the conv, the scan and the norm.
    hidden (batch, seqlen, d_model), index from ``padded_reverse_index`` (None: no padding) -> (batch, seqlen,
    d_model)
    """
    d_inner, d_state, nheads = dims.d_inner, dims.d_state, dims.nheads
    # in_proj rows [z_fw, z_bw, x_fw, x_bw, B_fw, B_bw, C_fw, C_bw, dt_fw, dt_bw]: the conv's channels in one slice
    in_weight = _interleave(fw.in_proj, bw.in_proj, [d_inner, d_inner, d_state, d_state, nheads])
    conv_sizes = (d_inner, d_state, d_state)
    z, xBC, dt = torch.split(F.linear(hidden, in_weight), [2 * d_inner, 2 * sum(conv_sizes), 2 * nheads], dim=-1)

    conv_weight = _interleave(fw.conv_weight, bw.conv_weight, conv_sizes)  # (2 * conv_dim, 1, d_conv)
    conv_bias = _interleave(fw.conv_bias, bw.conv_bias, conv_sizes)
    backward_channels = backward_channel_mask(conv_sizes, hidden.device)  # (2 * conv_dim,)
    # (batch, seqlen, 2 * conv_dim): the backward direction's channels in reversed time
    xBC = kernels.bidirectional_conv(xBC, conv_weight, conv_bias, backward_channels, index, conv_sizes)
    x, B, C = torch.split(xBC, [2 * d_inner, 2 * d_state, 2 * d_state], dim=-1)
    dt_fw, dt_bw = torch.split(dt, [nheads, nheads], dim=-1)

    y = kernels.scan(
        x.unflatten(-1, (2 * nheads, dims.headdim)),  # (batch, seqlen, 2 * nheads, headdim)
        torch.cat([dt_fw, reverse_padded(dt_bw, index)], dim=-1),  # (batch, seqlen, 2 * nheads)
        -torch.exp(torch.cat([fw.A_log, bw.A_log]).float()),  # (2 * nheads,)
        B.unflatten(-1, (2, d_state)),  # (batch, seqlen, ngroups=2, d_state)
        C.unflatten(-1, (2, d_state)),
        dims.chunk_size,
        D=torch.cat([fw.D, bw.D]),
        dt_bias=torch.cat([fw.dt_bias, bw.dt_bias]),
        dt_softplus=True,
    ).flatten(-2)  # (batch, seqlen, 2 * d_inner), the backward half in reversed time
    # (batch, seqlen, 2 * d_inner), input time: the norm reads the backward half reversed
    y = kernels.bidirectional_norm(y, z, torch.cat([fw.norm, bw.norm]), dims.eps, index)
    # [y_fw | y_bw] against [W_fw | W_bw]: one GEMM gives fw.out_proj(y_fw) + bw.out_proj(y_bw)
    return F.linear(y, torch.cat([fw.out_proj, bw.out_proj], dim=1))


@functools.cache
def backward_channel_mask(sizes: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(2 * sum(sizes),) int8, 1 on the backward direction's channels of the layout ``_interleave`` makes of
    pieces of ``sizes``: [x_fw, x_bw, B_fw, B_bw, C_fw, C_bw] -> [0.., 1.., 0.., 1.., 0.., 1..]. Made once."""
    flags = [direction for size in sizes for direction in (0, 1) for _ in range(size)]
    return torch.tensor(flags, dtype=torch.int8, device=device)


def _interleave(fw_param: torch.Tensor, bw_param: torch.Tensor, sizes: list[int] | tuple[int, ...]) -> torch.Tensor:
    """Two directions' parameters (rows or channels first) split by ``sizes`` and laid piece by piece side by side:
    [x, B, C] per direction -> [x_fw, x_bw, B_fw, B_bw, C_fw, C_bw]. A split, not slices: one cat in backward."""
    parts_fw, parts_bw = fw_param.split(sizes), bw_param.split(sizes)
    return torch.cat([p for pair in zip(parts_fw, parts_bw) for p in pair])


def _fused_of_graph_inputs(hidden, lengths, *params, dims: MixerDims, kernels: MixerKernels,
                           autocast_dtype) -> tuple[torch.Tensor]:
    """``bimamba2_fused`` of a CUDA graph's static inputs: hidden (batch, frames, d_model), lengths (batch,) each
    sequence's valid frames (frames past it, the graph's time padding included, stay where they are in the
    backward direction), params fw's then bw's ``Direction`` -> (out (batch, frames, d_model),)."""
    index = padded_reverse_index(lengths, hidden.shape[1])  # (batch, frames)
    # no cache of cast weights: a graph must cast the parameters each replay copies in
    with torch.autocast(hidden.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None,
                        cache_enabled=False):
        fw, bw = Direction(*params[:len(Direction._fields)]), Direction(*params[len(Direction._fields):])
        return (bimamba2_fused(dims, fw, bw, hidden, index, kernels),)


def mixer_graphs(dims: MixerDims, kernels: MixerKernels, autocast_dtype, capture=capture_cuda_graph):
    """The fused mixer's forward and backward graphs (``models.kernels.mixer_graphs``) for mixers of ``dims`` run by
    ``kernels`` under autocast to ``autocast_dtype`` (None: no autocast); inside them every kernel is launched as
    it is captured. Time is padded to the chunk."""
    fused = functools.partial(_fused_of_graph_inputs, dims=dims, kernels=kernels.without_graphs(),
                              autocast_dtype=autocast_dtype)
    return recompute_graph_pair(fused, 2 * len(Direction._fields), dims.chunk_size, capture)


_cuda_mixer_graphs = functools.cache(mixer_graphs)  # one pair per (dims, kernels, autocast dtype) in a process


def release_mixer_graphs() -> None:
    """Drop every graph and buffer the fused mixers keep (they live until the process ends otherwise)."""
    _cuda_mixer_graphs.cache_clear()


def graphed_bimamba2_fused(dims: MixerDims, fw: Direction, bw: Direction, hidden: torch.Tensor,
                           lengths: torch.Tensor, kernels: MixerKernels) -> torch.Tensor:
    """``bimamba2_fused`` replayed from CUDA graphs: one graph launch forward and one backward (which recomputes the
    forward) instead of each of the mixer's kernels and their Python. lengths (batch,) valid frames of each
    sequence."""
    graphs = _cuda_mixer_graphs(dims, kernels, current_autocast_dtype(hidden.device.type))
    return GraphedRecompute.apply(hidden, graphs, 1, lengths, *fw, *bw)


class BiMamba2Wrapper(nn.Module):
    """A drop-in for ``Wav2Vec2Attention``: same call, same ``(hidden_states, attn_weights)`` return.

    ``fw_mamba`` and ``bw_mamba`` are two independent Mamba2 blocks with mamba_ssm's parameter names and shapes:
    their keys are the original code's less its ``asr_model.`` prefix (models/original.py). ``fused`` runs both
    directions through each kernel at once (``bimamba2_fused``); ``forward_separate`` is the two-module reference.
    ``recompute`` stores only the mixer's input for backward and runs it again there (activation checkpointing):
    far less memory on long inputs for about one more mixer forward. On the triton backend a fused mixer of up to
    ``mixer_graph_frames`` frames (batch x length padded to the chunk) replays CUDA graphs
    (``graphed_bimamba2_fused``) where no gradient is taken (inference, evaluation) and, with ``recompute``, in
    training too: their backward recomputes the forward. ``kernels`` (chosen once from ``backend``, see
    ``models.kernels.backend``) run the fused path; each Mamba2 holds the same backend's for its own forward.
    """

    def __init__(self, d_model: int, residual_inside: bool = False, fused: bool = True, recompute: bool = False,
                 backend: str = "auto", scan_graph_frames: int = SCAN_GRAPH_FRAMES,
                 mixer_graph_frames: int = MIXER_GRAPH_FRAMES, **mamba_kwargs):
        """backend, scan_graph_frames, mixer_graph_frames: the mixer's kernels (``models.kernels.backend``, hparams
        mamba_backend, mamba_scan_graph_frames, mamba_mixer_graph_frames); mamba_kwargs: Mamba2's shape (d_state,
        d_conv, expand, headdim, chunk_size)."""
        super().__init__()
        self.kernels = mixer_kernels(backend, default_device_type(), scan_graph_frames, mixer_graph_frames)
        self.fw_mamba = Mamba2(d_model, backend=backend, scan_graph_frames=scan_graph_frames, **mamba_kwargs)
        self.bw_mamba = Mamba2(d_model, backend=backend, scan_graph_frames=scan_graph_frames, **mamba_kwargs)
        self.residual_inside = residual_inside
        self.fused = fused
        self.recompute = recompute

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        batch, seqlen, _ = hidden_states.shape
        # no padding (Hugging Face passes None for an unpadded batch): nothing to mask
        layout = None if attention_mask is None else PaddingLayout.of(attention_mask, seqlen)
        index = None if layout is None else layout.index

        recompute = self.recompute and torch.is_grad_enabled()
        if self.fused:
            if hidden_states.device.type != self.kernels.device_type:  # moved after it was built
                self.kernels = self.kernels.for_device(hidden_states.device)
            kernels = self.kernels
            dims, fw, bw = self.fused_arguments()
            # with a gradient, only where the forward is to be recomputed anyway: the graphs' backward recomputes
            # it, which costs more GPU time than the launches it saves (bench/NOTES.md, "Mixer graphs")
            if (not torch.is_grad_enabled() or recompute) and kernels.replays_mixer(hidden_states, dims.chunk_size):
                lengths = layout.lengths if layout is not None else full_lengths(batch, seqlen,
                                                                                 hidden_states.device)
                mixer = functools.partial(graphed_bimamba2_fused, dims, fw, bw, lengths=lengths, kernels=kernels)
                recompute = False  # the graphs' backward recomputes the forward itself
            else:
                mixer = functools.partial(bimamba2_fused, dims, fw, bw, index=index, kernels=kernels)
        else:
            mixer = functools.partial(self.forward_separate, index=index)
        if recompute:  # keep only the input; rerun the mixer in backward
            out = torch.utils.checkpoint.checkpoint(mixer, hidden_states, use_reentrant=False)
        else:
            out = mixer(hidden_states)
        if self.residual_inside:
            out = out + hidden_states
        if layout is not None:  # padded frames are zero
            out = out.masked_fill(layout.padded[..., None], 0.0)
        return out, None

    def fused_arguments(self) -> tuple[MixerDims, Direction, Direction]:
        """``bimamba2_fused``'s first three arguments for this wrapper's two Mamba2."""
        return MixerDims.of(self.fw_mamba), Direction.of(self.fw_mamba), Direction.of(self.bw_mamba)

    def forward_separate(self, hidden_states: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The two directions one after the other, each through its own Mamba2 (the reference of the fused path)."""
        fw = self.fw_mamba(hidden_states)  # (batch, seqlen, d_model)
        bw = reverse_padded(self.bw_mamba(reverse_padded(hidden_states, index)), index)
        return fw + bw


def _is_self_attention(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj"))


def replace_attention(encoder: nn.Module, make_module) -> int:
    """Replace ``encoder.layers[i].attention`` by ``make_module(old_attention)`` for every layer; returns the count.

    Fails on anything that is not a Wav2Vec2-style encoder (a ``layers`` list whose items hold an ``attention``
    with q/k/v/out projections).
    """
    layers = getattr(encoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise TypeError(
            f"substitute_layer expects a Wav2Vec2 encoder (e.g. model.wav2vec2.encoder) with a `layers` list, "
            f"got {type(encoder).__name__}"
        )
    for i, layer in enumerate(layers):
        attention = getattr(layer, "attention", None)
        if attention is None or not _is_self_attention(attention):
            raise TypeError(
                f"encoder.layers[{i}] ({type(layer).__name__}) has no self-attention with q/k/v/out projections "
                f"(found {type(attention).__name__}); was the model already converted?"
            )
        layer.attention = make_module(attention)
    return len(layers)


@torch.no_grad()
def init_from_attention(mamba: Mamba2, attention: nn.Module) -> None:
    """MambaInLlama-style initialisation from the attention a mixer replaces: x <- v, B <- k, C <- q, out <- o.

    Linear attention softmax(q k^T) v is read as the SSM y_t = sum_s C_t B_s^T x_s with no decay, so the value,
    key and query projections seed the x, B and C rows of ``in_proj``. Where shapes differ, the leading rows are
    copied: B and C get the first d_state rows of W_k and W_q; x gets the first d_inner rows of W_v (all of them
    at expand=1). ``out_proj`` takes W_o when expand=1. Mamba2 has no projection biases, so the attention's biases
    are dropped. The gate z, dt, the conv, A_log, D and the norm keep mamba_ssm's random initialisation.
    """
    d_inner, d_state = mamba.d_inner, mamba.d_state
    rows = mamba.in_proj.weight  # (2 * d_inner + 2 * d_state + nheads, d_model): [z, x, B, C, dt]
    x_start, b_start, c_start = d_inner, 2 * d_inner, 2 * d_inner + d_state
    for start, size, source in ((x_start, d_inner, attention.v_proj), (b_start, d_state, attention.k_proj),
                                (c_start, d_state, attention.q_proj)):
        n = min(size, source.weight.shape[0])
        rows[start:start + n].copy_(source.weight[:n])
    if mamba.out_proj.weight.shape == attention.out_proj.weight.shape:
        mamba.out_proj.weight.copy_(attention.out_proj.weight)


def substitute_layer(module: nn.Module, config, **kwargs) -> nn.Module:
    """Swap every self-attention in a Wav2Vec2 encoder for a ``BiMamba2Wrapper`` (in place; returns ``module``).

    kwargs: residual_inside (False, as the original's wrapper), d_state, d_conv, expand, headdim, chunk_size (see
    ``Mamba2``), backend ("auto" | "torch" | "triton" | "ref"), scan_graph_frames, mixer_graph_frames, fused,
    recompute (see ``BiMamba2Wrapper``), init ("random" | "attention", see ``init_from_attention``).
    New parameters are created on the device of the attention they replace, in fp32. ``config`` (the model's)
    is set to ``BIMAMBA2_ATTENTION``, so that the encoder builds its mixers a 2-D padding mask.
    """
    init = kwargs.pop("init", "random")
    if init not in CHOICES["asr_mamba_init"]:
        raise ValueError(f"unknown Mamba init '{init}': expected one of {', '.join(CHOICES['asr_mamba_init'])}")
    wrapper_kwargs = dict(residual_inside=False)
    wrapper_kwargs.update(kwargs)
    if config.hidden_size * wrapper_kwargs.get("expand", 1) % wrapper_kwargs.get("headdim", 64):
        raise ValueError(
            f"hidden size {config.hidden_size} x expand {wrapper_kwargs.get('expand', 1)} is not divisible by "
            f"headdim {wrapper_kwargs.get('headdim', 64)}"
        )

    def make_wrapper(attention: nn.Module) -> BiMamba2Wrapper:
        wrapper = BiMamba2Wrapper(config.hidden_size, **wrapper_kwargs).to(attention.q_proj.weight.device)
        if init == "attention":
            init_from_attention(wrapper.fw_mamba, attention)
            init_from_attention(wrapper.bw_mamba, attention)
        return wrapper

    count = replace_attention(module, make_wrapper)
    remaining = [name for name, m in module.named_modules() if _is_self_attention(m)]
    wrappers = sum(isinstance(m, BiMamba2Wrapper) for m in module.modules())
    if remaining or wrappers != count:
        raise RuntimeError(f"substitute_layer left attention modules {remaining} / {wrappers} wrappers of {count}")
    config._attn_implementation = BIMAMBA2_ATTENTION  # the encoder then hands the mixers the 2-D padding mask
    logger.info("substitute_layer: %d attention modules -> BiMamba2Wrapper (init=%s)", count, init)
    return module
