"""Wav2Vec2 with a bidirectional Mamba2 (BiMamba2) in place of each encoder self-attention, for CTC.

    from transformers import AutoModelForCTC, AutoProcessor, pipeline

    model = AutoModelForCTC.from_pretrained("path/or/hub-id", trust_remote_code=True)
    processor = AutoProcessor.from_pretrained("path/or/hub-id")
    asr = pipeline("automatic-speech-recognition", model="path/or/hub-id", trust_remote_code=True)
    asr("lecture.flac", return_timestamps="word")

Everything but the mixer is Hugging Face's Wav2Vec2: CNN front end, feature projection, positional convolution,
SpecAugment, and in each encoder layer the norms, dropout, residual and feed-forward; the CTC head on top. Each
layer's ``attention`` is a ``BiMamba2Mixer`` with the attention's call and return:

    hidden (B, T, D) ──┬──────────────────── Mamba2 fw ─────────────────────┐
                       │                                                    (+) ── [+ hidden] ── padded frames = 0
                       └─ reverse valid frames ── Mamba2 bw ── reverse back ┘     (config.mamba_residual_inside)

The backward direction reads each sequence's valid frames reversed with its padding left at the end, so both
directions are causal scans that never see padding before a valid frame: in a padded batch every sequence gets the
outputs it gets alone. The encoder costs time and memory linear in the length, so an hour of audio goes through in
one pass; in eval mode a layer-norm CNN front end runs over long inputs in pieces (``ChunkedFeatureEncoder``).

Each Mamba2 direction (Dao & Gu, 2024) has mamba_ssm's parameter names and shapes (ngroups=1, gated RMSNorm, no
biases). Its SSD scan is mamba_ssm's Triton kernel on CUDA when mamba_ssm is installed, else ``ssd_chunked`` below,
the chunked algorithm in PyTorch (runs anywhere, linear in the length). Optional classifier heads (intent, speaker)
pool the last hidden state over each sequence's valid frames; their logits are ``output.classifier_logits`` and
their class names ``config.classifier_labels``.

This file needs only torch and transformers. It is the source of the model trained and converted by the CALD speech
repository (models/hf_code/), where tests hold it to that repository's own implementation.
"""
import io
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput
from transformers.models.wav2vec2.modeling_wav2vec2 import (Wav2Vec2EncoderLayer, Wav2Vec2EncoderLayerStableLayerNorm,
                                                            Wav2Vec2FeatureEncoder, Wav2Vec2Model,
                                                            Wav2Vec2PositionalConvEmbedding, Wav2Vec2PreTrainedModel)
from transformers.pipelines.automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from transformers.utils.generic import can_return_tuple

from .configuration_wav2vec2_bimamba2 import Wav2Vec2BiMamba2Config

try:  # mamba_ssm's Triton SSD scan (CUDA); without it the PyTorch scan below runs
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except ImportError:
    mamba_chunk_scan_combined = None

try:  # the pipeline reads audio files with libsndfile when soundfile is installed (else with ffmpeg)
    import soundfile
except ImportError:
    soundfile = None

try:  # and resamples them with soxr when installed (else as the stock pipeline does, with torchaudio)
    import soxr
except ImportError:
    soxr = None

# The PyTorch scan's chunk length: its result does not depend on it, and 64 runs fastest on CPU.
TORCH_CHUNK_SIZE = 64


# ----------------------------------------------------------------------------------------------------------------
# The SSD scan: y_t = sum_{s <= t} C_t . (prod_{s < r <= t} exp(dt_r A)) dt_s B_s x_s + D x_t


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T) with out[..., i, j] = x[..., j+1] + ... + x[..., i] for j <= i and -inf above the
    diagonal. Each segment is summed directly (not as a difference of cumulative sums), so exp() of it is exact."""
    T = x.size(-1)
    x = x[..., None].expand(*x.shape, T)  # (..., T, T): x[..., i, j] = x[..., i]
    strictly_lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    sums = torch.cumsum(x.masked_fill(~strictly_lower, 0), dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
    return sums.masked_fill(~lower, -torch.inf)


def ssd_chunked(x, dt, A, B, C, chunk_size: int, D, dt_bias) -> torch.Tensor:
    """The chunked state-space-duality scan (Mamba2 paper, listing 1): quadratic attention-like form inside each
    chunk, a linear recurrence of states across chunks, so the cost is linear in the length. In fp32.

    x (batch, seqlen, nheads, headdim), dt (batch, seqlen, nheads) before softplus(dt + dt_bias), A (nheads,),
    B, C (batch, seqlen, ngroups, d_state), D and dt_bias (nheads,) -> y (batch, seqlen, nheads, headdim).
    The signature of mamba_ssm's ``mamba_chunk_scan_combined(..., dt_softplus=True)``.
    """
    dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, A = x.float(), A.float()
        dt = F.softplus(dt.float() + dt_bias.float())  # (batch, seqlen, nheads)
        batch, seqlen, nheads, headdim = x.shape
        ngroups, d_state = B.shape[2], B.shape[3]
        chunk_size = min(chunk_size, seqlen)
        pad = (-seqlen) % chunk_size  # zero dt past the end: no decay and no input; those outputs are cut off
        chunks = (seqlen + pad) // chunk_size
        # heads h = (g, r): the r heads of group g share its B and C
        X = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))  # (batch, padded, nheads, headdim)
        X = X.view(batch, chunks, chunk_size, ngroups, nheads // ngroups, headdim)  # (b, c, l, g, r, p)
        dA = F.pad(dt * A, (0, 0, 0, pad)).view(batch, chunks, chunk_size, ngroups, -1)  # (b, c, l, g, r)
        dA = dA.permute(0, 3, 4, 1, 2)  # (batch, ngroups, r, chunks, chunk_size)
        B, C = (F.pad(t.float(), (0, 0, 0, 0, 0, pad)).view(batch, chunks, chunk_size, ngroups, d_state)
                for t in (B, C))  # (b, c, l, g, n)
        dA_cumsum = torch.cumsum(dA, dim=-1)  # (b, g, r, c, l)

        # 1. outputs from inputs of the same chunk (the diagonal blocks)
        CB = torch.einsum("bclgn,bcsgn->bgcls", C, B)  # (batch, ngroups, chunks, l, s)
        decay = torch.exp(segment_sums(dA))  # (batch, ngroups, r, chunks, l, s)
        Y_diag = torch.einsum("bgrcls,bcsgrp->bclgrp", CB[:, :, None] * decay, X)
        # 2. the state each chunk leaves behind, from its own inputs
        decay_states = torch.exp(dA_cumsum[..., -1:] - dA_cumsum)  # (b, g, r, c, l)
        chunk_states = torch.einsum("bclgn,bgrcl,bclgrp->bcgrpn", B, decay_states, X)  # (b, c, g, r, p, n)
        # 3. the recurrence across chunks: the state entering each chunk
        decay_chunk = torch.exp(dA_cumsum[..., -1])  # (b, g, r, c)
        entering = [torch.zeros_like(chunk_states[:, 0])]  # (b, g, r, p, n)
        for c in range(chunks - 1):
            entering.append(decay_chunk[..., c, None, None] * entering[-1] + chunk_states[:, c])
        states = torch.stack(entering, dim=1)  # (b, c, g, r, p, n)
        # 4. the entering state's contribution to each output
        Y_off = torch.einsum("bclgn,bcgrpn,bgrcl->bclgrp", C, states, torch.exp(dA_cumsum))

        y = (Y_diag + Y_off).reshape(batch, chunks * chunk_size, nheads, headdim)[:, :seqlen]
        y = y + x * D.float()[:, None]
    return y.to(dtype)


def ssd_scan(x, dt, A, B, C, chunk_size: int, D, dt_bias) -> torch.Tensor:
    """mamba_ssm's Triton scan on CUDA when installed (at ``chunk_size``), else ``ssd_chunked``."""
    if x.is_cuda and mamba_chunk_scan_combined is not None:
        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True)
    return ssd_chunked(x, dt, A, B, C, TORCH_CHUNK_SIZE, D=D, dt_bias=dt_bias)


# ----------------------------------------------------------------------------------------------------------------
# Mamba2 and the bidirectional mixer


class GatedRMSNorm(nn.Module):
    """mamba_ssm's gated RMSNorm (norm_before_gate=False): rmsnorm(x * silu(z)) * weight, in fp32."""

    def __init__(self, size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float() * F.silu(z.float())
        x = x * torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + self.eps)
        return (x * self.weight.float()).to(dtype)


class Mamba2(nn.Module):
    """One direction of the mixer: (batch, seqlen, hidden) -> (batch, seqlen, hidden), causal in time."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__()
        d_model = config.hidden_size
        self.d_inner = config.mamba_expand * d_model
        self.d_state, self.headdim = config.mamba_d_state, config.mamba_headdim
        self.chunk_size = config.mamba_chunk_size  # mamba_ssm's scan
        self.nheads = self.d_inner // self.headdim
        # in_proj rows, in mamba_ssm's order: [z (gate), x, B, C (the conv's channels), dt]
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * self.d_state + self.nheads, bias=False)
        conv_dim = self.d_inner + 2 * self.d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=config.mamba_d_conv, groups=conv_dim,
                                padding=config.mamba_d_conv - 1)
        self.dt_bias = nn.Parameter(torch.zeros(self.nheads))
        self.A_log = nn.Parameter(torch.zeros(self.nheads))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = GatedRMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        seqlen = hidden_states.shape[1]
        z, xBC, dt = torch.split(self.in_proj(hidden_states), [self.d_inner, self.d_inner + 2 * self.d_state,
                                                                self.nheads], dim=-1)
        # causal depthwise conv: padded d_conv - 1 frames on both sides, the first seqlen outputs kept
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :seqlen]).transpose(1, 2)  # (batch, seqlen, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        y = ssd_scan(
            x.unflatten(-1, (self.nheads, self.headdim)),  # (batch, seqlen, nheads, headdim)
            dt,  # (batch, seqlen, nheads)
            -torch.exp(self.A_log.float()),  # (nheads,)
            B[:, :, None],  # (batch, seqlen, ngroups=1, d_state)
            C[:, :, None],
            self.chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
        )  # (batch, seqlen, nheads, headdim)
        return self.out_proj(self.norm(y.flatten(-2), z))


def padded_reverse_index(lengths: torch.Tensor, seqlen: int) -> torch.Tensor:
    """(batch, seqlen) gather index that reverses each row's first lengths[b] frames and leaves its padding in
    place; the permutation is its own inverse."""
    t = torch.arange(seqlen, device=lengths.device)  # (seqlen,)
    lengths = lengths[:, None]  # (batch, 1)
    return torch.where(t < lengths, lengths - 1 - t, t)


def reverse_padded(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x (batch, seqlen, hidden) reversed along time by ``padded_reverse_index`` (None, no padding: a flip)."""
    if index is None:
        return x.flip(1)
    return torch.gather(x, 1, index[..., None].expand_as(x))


class BiMamba2Mixer(nn.Module):
    """Where an encoder layer's self-attention was: fw(hidden) + reverse(bw(reverse(hidden))) over valid frames."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__()
        self.fw_mamba = Mamba2(config)
        self.bw_mamba = Mamba2(config)
        self.residual_inside = config.mamba_residual_inside

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """hidden_states (batch, frames, hidden); attention_mask (batch, frames) bool, True on valid frames, padding
        at the end (None: no padding) -> (output like hidden_states, None), the attention's return."""
        index = None
        if attention_mask is not None:
            index = padded_reverse_index(attention_mask.sum(-1), hidden_states.shape[1])  # (batch, frames)
        out = self.fw_mamba(hidden_states) + reverse_padded(self.bw_mamba(reverse_padded(hidden_states, index)), index)
        if self.residual_inside:
            out = out + hidden_states
        if attention_mask is not None:  # padded frames are zero
            out = out.masked_fill(~attention_mask[..., None], 0.0)
        return out, None


# ----------------------------------------------------------------------------------------------------------------
# The encoder and the model


class Wav2Vec2BiMamba2EncoderLayer(Wav2Vec2EncoderLayer):
    """Wav2Vec2's post-norm encoder layer with a ``BiMamba2Mixer`` as its ``attention``."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__(config)
        self.attention = BiMamba2Mixer(config)


class Wav2Vec2BiMamba2EncoderLayerStableLayerNorm(Wav2Vec2EncoderLayerStableLayerNorm):
    """Wav2Vec2's pre-norm encoder layer (wav2vec2-large-lv60's) with a ``BiMamba2Mixer`` as its ``attention``."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__(config)
        self.attention = BiMamba2Mixer(config)


class Wav2Vec2BiMamba2Encoder(nn.Module):
    """Wav2Vec2's encoder (positional convolution, layers, LayerDrop, final or first layer norm) over BiMamba2
    layers, which get the padding mask as it is: (batch, frames) bool, never a (frames, frames) attention mask."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__()
        self.config = config
        self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        layer = (Wav2Vec2BiMamba2EncoderLayerStableLayerNorm if config.do_stable_layer_norm
                 else Wav2Vec2BiMamba2EncoderLayer)
        self.layers = nn.ModuleList([layer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """hidden_states (batch, frames, hidden), attention_mask (batch, frames) bool or None."""
        if attention_mask is not None:  # padded frames enter as zeros
            hidden_states = hidden_states.masked_fill(~attention_mask[..., None], 0.0)
        hidden_states = hidden_states + self.pos_conv_embed(hidden_states)
        if not self.config.do_stable_layer_norm:
            hidden_states = self.layer_norm(hidden_states)
        hidden_states = self.dropout(hidden_states)
        for layer in self.layers:
            # LayerDrop (https://huggingface.co/papers/1909.11556)
            if self.training and self.config.layerdrop > 0.0 and torch.rand([]) < self.config.layerdrop:
                continue
            hidden_states = layer(hidden_states, attention_mask=attention_mask, **kwargs)
        if self.config.do_stable_layer_norm:
            hidden_states = self.layer_norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)


def feature_encoder_geometry(config) -> tuple[int, int]:
    """(receptive field, stride) of the CNN front end in samples: 400 and 320 for wav2vec2-large at 16 kHz."""
    field, stride = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * stride
        stride *= step
    return field, stride


class ChunkedFeatureEncoder(Wav2Vec2FeatureEncoder):
    """Wav2Vec2's CNN front end; in eval mode a layer-norm one runs over inputs longer than
    ``config.feature_encoder_chunk_frames`` output frames in pieces of that many, each reading the samples its frames
    see: the same result, and memory that no longer grows with the audio (the first layer's output alone is 6 GB
    per 15 minutes of audio at wav2vec2-large size). A group-norm front end normalises over the whole input and
    runs whole."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__(config)
        self.chunk_frames = config.feature_encoder_chunk_frames if config.feat_extract_norm == "layer" else 0
        self.receptive_field, self.stride = feature_encoder_geometry(config)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """input_values (batch, samples) -> (batch, channels, frames)."""
        samples = input_values.shape[-1]
        frames = (samples - self.receptive_field) // self.stride + 1
        if self.training or self.chunk_frames <= 0 or frames <= self.chunk_frames:
            return super().forward(input_values)
        pieces = []
        for first in range(0, frames, self.chunk_frames):
            last = min(first + self.chunk_frames, frames)
            pieces.append(super().forward(input_values[:, first * self.stride:(last - 1) * self.stride
                                                       + self.receptive_field]))
        return torch.cat(pieces, dim=-1)


class ClassifierHeads(nn.Module):
    """One linear head per entry of ``config.classifier_num_targets`` on the last hidden state averaged over each
    sequence's valid frames."""

    def __init__(self, hidden_size: int, num_targets: list[int]):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in num_targets)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> list[torch.Tensor]:
        """hidden (batch, frames, hidden), frame_mask (batch, frames) -> [(batch, targets_i) per head]."""
        weights = frame_mask.to(hidden.dtype)[..., None]  # (batch, frames, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (batch, hidden)
        return [head(pooled) for head in self.heads]


class Wav2Vec2BiMamba2PreTrainedModel(Wav2Vec2PreTrainedModel):
    config_class = Wav2Vec2BiMamba2Config
    config: Wav2Vec2BiMamba2Config
    _can_record_outputs = {"hidden_states": [Wav2Vec2BiMamba2EncoderLayer,
                                             Wav2Vec2BiMamba2EncoderLayerStableLayerNorm]}

    def _init_weights(self, module):
        """Wav2Vec2's initialisation; each Mamba2 gets mamba_ssm's: A in [1, 16], dt log-uniform in [1e-3, 0.1]
        (stored through the inverse softplus), D and the norm at one."""
        super()._init_weights(module)
        if isinstance(module, Mamba2):
            init.copy_(module.A_log, torch.log(torch.empty(module.nheads).uniform_(1.0, 16.0)))
            dt = torch.exp(torch.rand(module.nheads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            dt = dt.clamp(min=1e-4)
            init.copy_(module.dt_bias, dt + torch.log(-torch.expm1(-dt)))
            init.ones_(module.D)
        elif isinstance(module, GatedRMSNorm):
            init.ones_(module.weight)


class Wav2Vec2BiMamba2Model(Wav2Vec2Model, Wav2Vec2BiMamba2PreTrainedModel):
    """``Wav2Vec2Model`` (front end, projection, SpecAugment, forward) with the BiMamba2 encoder and the chunked
    front end."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__(config)
        self.feature_extractor = ChunkedFeatureEncoder(config)
        self.encoder = Wav2Vec2BiMamba2Encoder(config)  # in place of the attention encoder Wav2Vec2Model built
        self.post_init()


@dataclass
class Wav2Vec2BiMamba2CTCOutput(CausalLMOutput):
    """``CausalLMOutput`` (loss, logits (batch, frames, vocab), hidden_states) and classifier_logits: one
    (batch, classes) tensor per classifier head, None without heads."""

    classifier_logits: tuple[torch.FloatTensor, ...] | None = None


class Wav2Vec2BiMamba2ForCTC(Wav2Vec2BiMamba2PreTrainedModel):
    """The BiMamba2 Wav2Vec2 with its CTC head (``lm_head``) and optional pooled classifier heads."""

    def __init__(self, config: Wav2Vec2BiMamba2Config):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2BiMamba2Model(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.classifier_heads = (ClassifierHeads(config.hidden_size, config.classifier_num_targets)
                                 if config.classifier_num_targets else None)
        self.post_init()

    def freeze_feature_encoder(self):
        """No gradient for the CNN front end (as in fine-tuning)."""
        self.wav2vec2.feature_extractor._freeze_parameters()

    @can_return_tuple
    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> Wav2Vec2BiMamba2CTCOutput:
        """input_values (batch, samples) normalised as the processor does; attention_mask (batch, samples), 1 on
        valid samples; labels (batch, target_length) CTC targets padded with -100 (for a loss as Wav2Vec2ForCTC's)."""
        outputs = self.wav2vec2(input_values, attention_mask=attention_mask, **kwargs)
        hidden_states = outputs.last_hidden_state  # (batch, frames, hidden)
        logits = self.lm_head(self.dropout(hidden_states))  # (batch, frames, vocab)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1)).to(torch.long)  # (batch,) frames

        loss = None
        if labels is not None:
            if labels.max() >= self.config.vocab_size:
                raise ValueError(f"Label values must be < vocab_size: {self.config.vocab_size}")
            loss = self.loss_function(logits=logits, labels=labels, logit_lengths=lengths,
                                      blank_token_id=self.config.pad_token_id,
                                      reduction=self.config.ctc_loss_reduction,
                                      zero_infinity=self.config.ctc_zero_infinity, **kwargs)
        classifier_logits = None
        if self.classifier_heads is not None:
            frame_mask = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]
            classifier_logits = tuple(self.classifier_heads(hidden_states, frame_mask))
        return Wav2Vec2BiMamba2CTCOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                         classifier_logits=classifier_logits)


# ----------------------------------------------------------------------------------------------------------------
# The automatic-speech-recognition pipeline (config.custom_pipelines names this class for the task)


class Wav2Vec2BiMamba2SpeechRecognitionPipeline(AutomaticSpeechRecognitionPipeline):
    """transformers' automatic-speech-recognition pipeline, which reads a local audio file (path or bytes) with
    libsndfile (WAV, FLAC, OGG, MP3) when soundfile is installed, where the stock pipeline needs the ffmpeg binary,
    downmixes it and brings it to the model's sample rate (with soxr when installed, else as the stock pipeline
    does). Everything else (arrays, ``return_timestamps``, ``chunk_length_s``) is the stock pipeline's; without
    ``chunk_length_s`` a long recording goes through in one pass."""

    def preprocess(self, inputs, chunk_length_s=0, stride_length_s=None):
        if soundfile is not None and isinstance(inputs, (str, bytes)) and not str(inputs).startswith(
                ("http://", "https://")):
            try:
                audio, sampling_rate = soundfile.read(inputs if isinstance(inputs, str) else io.BytesIO(inputs),
                                                      dtype="float32", always_2d=True)
            except RuntimeError:  # a format libsndfile does not read (LibsndfileError): the stock ffmpeg path
                pass
            else:
                audio = audio.mean(axis=1)  # (samples,), channels averaged
                target = self.feature_extractor.sampling_rate
                if soxr is not None and sampling_rate != target:
                    audio, sampling_rate = soxr.resample(audio, sampling_rate, target), target
                inputs = {"raw": audio, "sampling_rate": sampling_rate}
        return super().preprocess(inputs, chunk_length_s=chunk_length_s, stride_length_s=stride_length_s)


Wav2Vec2BiMamba2ForCTC.register_for_auto_class("AutoModelForCTC")
