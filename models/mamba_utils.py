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
import logging

import torch
from einops import rearrange
from torch import nn

from models.mamba2 import Mamba2, causal_conv_silu, gated_rms_norm, resolve_backend, scan_fn

logger = logging.getLogger(__name__)

MAMBA_INITS = ("random", "attention")


def valid_lengths(attention_mask: torch.Tensor | None, batch: int, seqlen: int, device) -> torch.Tensor:
    """Frames per sequence (batch,) from any mask form a Hugging Face encoder passes to its attention.

    None (no padding); 2-D (batch, seqlen) with 1 = keep; 4-D (batch, 1, seqlen, seqlen) boolean (True = keep, SDPA)
    or additive float (0 = keep, a large negative = masked, eager). Padding is always at the end.
    """
    if attention_mask is None:
        return torch.full((batch,), seqlen, dtype=torch.long, device=device)
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


def reverse_padded(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (batch, seqlen, dim) gathered along time by ``padded_reverse_index``."""
    return torch.gather(x, 1, index[..., None].expand_as(x))


def reverse_padded_ref(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reference for ``reverse_padded``: one sequence at a time."""
    out = x.clone()
    for b, n in enumerate(lengths.tolist()):
        out[b, :n] = x[b, :n].flip(0)
    return out


def bimamba2_fused(fw: Mamba2, bw: Mamba2, hidden: torch.Tensor, index: torch.Tensor, backend: str) -> torch.Tensor:
    """fw(hidden) + reverse(bw(reverse(hidden))) with both directions in one pass of each kernel.

    The two Mamba2 blocks' weights are stacked at run time (the checkpoint keeps mamba_ssm's two-module layout):
    one batched GEMM for both in_proj, one depthwise conv over both directions' channels, one SSD scan with the
    backward direction's heads stacked after the forward's (ngroups = 2: each direction keeps its own B and C),
    one norm, one batched GEMM for both out_proj. ``BiMamba2Wrapper.forward_separate`` is its reference.
    hidden (batch, seqlen, d_model), index from ``padded_reverse_index`` -> (batch, seqlen, d_model)
    """
    batch, seqlen, d_model = hidden.shape
    d_inner, d_state, nheads = fw.d_inner, fw.d_state, fw.nheads
    both = torch.stack([hidden, reverse_padded(hidden, index)])  # (2, batch, seqlen, d_model): bw in reversed time
    w_in = torch.stack([fw.in_proj.weight, bw.in_proj.weight])  # (2, d_in_proj, d_model)
    zxbcdt = torch.matmul(both.flatten(1, 2), w_in.transpose(1, 2)).unflatten(1, (batch, seqlen))  # (2, b, l, d_in_proj)
    z, xBC, dt = torch.split(zxbcdt, [d_inner, d_inner + 2 * d_state, nheads], dim=-1)

    conv_weight = torch.cat([fw.conv1d.weight, bw.conv1d.weight])  # (2 * conv_dim, 1, d_conv)
    conv_bias = torch.cat([fw.conv1d.bias, bw.conv1d.bias])
    xBC = causal_conv_silu(rearrange(xBC, "two b l c -> b (two c) l"), conv_weight, conv_bias)
    x, B, C = torch.split(rearrange(xBC, "b (two c) l -> two b l c", two=2), [d_inner, d_state, d_state], dim=-1)

    y = scan_fn(backend)(
        rearrange(x, "two b l (h p) -> b l (two h) p", p=fw.headdim).contiguous(),  # (b, l, 2 * nheads, headdim)
        rearrange(dt, "two b l h -> b l (two h)").contiguous(),
        torch.cat([-torch.exp(fw.A_log.float()), -torch.exp(bw.A_log.float())]),  # (2 * nheads,)
        rearrange(B, "two b l n -> b l two n").contiguous(),  # (b, l, ngroups=2, d_state)
        rearrange(C, "two b l n -> b l two n").contiguous(),
        fw.chunk_size,
        D=torch.cat([fw.D, bw.D]),
        dt_bias=torch.cat([fw.dt_bias, bw.dt_bias]),
        dt_softplus=True,
    )  # (b, l, 2 * nheads, headdim)
    y = rearrange(y, "b l (two h) p -> two b l (h p)", two=2)  # (2, b, l, d_inner)
    y = gated_rms_norm(y, z, torch.stack([fw.norm.weight, bw.norm.weight])[:, None, None], fw.norm.eps)
    w_out = torch.stack([fw.out_proj.weight, bw.out_proj.weight])  # (2, d_model, d_inner)
    out = torch.matmul(y.flatten(1, 2), w_out.transpose(1, 2)).unflatten(1, (batch, seqlen))  # (2, b, l, d_model)
    return out[0] + reverse_padded(out[1], index)


class BiMamba2Wrapper(nn.Module):
    """A drop-in for ``Wav2Vec2Attention``: same call, same ``(hidden_states, attn_weights)`` return.

    ``fw_mamba`` and ``bw_mamba`` are two independent Mamba2 blocks with mamba_ssm's parameter names, so a
    state_dict matches the original code's ``...attention.fw_mamba.in_proj.weight`` layout. ``fused`` runs both
    directions through each kernel at once (``bimamba2_fused``); ``forward_separate`` is the two-module reference.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 1,
        headdim: int = 64,
        chunk_size: int = 256,
        residual_inside: bool = False,
        backend: str = "auto",
        fused: bool = True,
    ):
        super().__init__()
        mamba_kwargs = dict(
            d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim, chunk_size=chunk_size, backend=backend
        )
        self.fw_mamba = Mamba2(d_model, **mamba_kwargs)
        self.bw_mamba = Mamba2(d_model, **mamba_kwargs)
        self.residual_inside = residual_inside
        self.fused = fused

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        batch, seqlen, _ = hidden_states.shape
        lengths = valid_lengths(attention_mask, batch, seqlen, hidden_states.device)  # (batch,)
        index = padded_reverse_index(lengths, seqlen)  # (batch, seqlen)

        if self.fused:
            backend = resolve_backend(self.fw_mamba.backend, hidden_states.device)
            out = bimamba2_fused(self.fw_mamba, self.bw_mamba, hidden_states, index, backend)
        else:
            out = self.forward_separate(hidden_states, index)
        if self.residual_inside:
            out = out + hidden_states
        valid = torch.arange(seqlen, device=lengths.device)[None, :] < lengths[:, None]  # (batch, seqlen)
        out = torch.where(valid[..., None], out, torch.zeros_like(out))  # padded frames are zero
        return out, None

    def forward_separate(self, hidden_states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
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

    kwargs: residual_inside (False, as the original's wrapper), d_state, d_conv, expand, headdim, chunk_size,
    backend ("auto" | "torch" | "triton"), init ("random" | "attention", see ``init_from_attention``).
    New parameters are created on the device of the attention they replace, in fp32.
    """
    init = kwargs.pop("init", "random")
    if init not in MAMBA_INITS:
        raise ValueError(f"unknown Mamba init '{init}': expected one of {', '.join(MAMBA_INITS)}")
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
    logger.info("substitute_layer: %d attention modules -> BiMamba2Wrapper (init=%s)", count, init)
    return module
