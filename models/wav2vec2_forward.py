"""Wav2Vec2Model's forward without host-device synchronisations; Hugging Face's own forward is its reference.

    last_hidden_state = wav2vec2_forward(model.wav2vec2, input_values, attention_mask, sample_lengths)
    # == model.wav2vec2(input_values, attention_mask=attention_mask).last_hidden_state, SpecAugment's masks drawn
    #    from the same numpy state and LayerDrop's from the same torch state

Hugging Face's forward stops the host until the GPU catches up several times a call: it reads the padding mask to
decide whether attention needs one (``padding_mask.all()``), zeroes the padded frames and writes SpecAugment's mask
embedding by boolean indexing (each a ``nonzero``), and copies SpecAugment's masks to the device with a blocking
copy after reading the lengths back (``.tolist()``). Each of these drains the GPU's queue in the middle of a
training step, which then idles while the host issues the next kernels. Here the same computation takes the
utterances' lengths from the host (``sample_lengths``, known when the batch is collated): SpecAugment's masks are
drawn on the host by Hugging Face's own ``_compute_mask_indices`` and copied without blocking, padded frames are
zeroed and masked with ``masked_fill`` / ``torch.where``, and SDPA's boolean mask is built from the frame mask
without reading it. The layers themselves, their LayerDrop and the positional convolution are Hugging Face's,
called as its encoder calls them (so hooks and gradient checkpointing on the layers work as before); given
``layer_graphs`` (the distillation teacher's, or the student's in training), a call of a layer replays its CUDA
graphs instead (models/kernels/layer_graphs.py).
"""
import contextlib

import numpy as np
import torch
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Model, _compute_mask_indices

from models.kernels.layer_graphs import LayerGraphs, TrainingLayerGraphs
from models.mamba_utils import BIMAMBA2_ATTENTION


def frame_lengths(wav2vec2: Wav2Vec2Model, sample_lengths: list[int]) -> list[int]:
    """Output frames of the CNN front end for each utterance's sample count (host integers in, host integers out)."""
    return wav2vec2._get_feat_extract_output_lengths(torch.tensor(sample_lengths)).tolist()


def upload(tensor: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """A host tensor (or array) on ``device`` without stopping the host: on CUDA, copied from pinned memory
    asynchronously (a plain ``.to(device)`` waits for the GPU to finish its queue first)."""
    tensor = torch.as_tensor(tensor)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def spec_augment(wav2vec2: Wav2Vec2Model, hidden_states: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """``Wav2Vec2Model._mask_hidden_states`` (training mode, no given mask): time masks drawn by Hugging Face's
    ``_compute_mask_indices`` from the host lengths (the same numpy draws as its own call), the masked frames set to
    ``masked_spec_embed``; feature masks zero channels. hidden_states (batch, frames, hidden)."""
    config = wav2vec2.config
    if not getattr(config, "apply_spec_augment", True) or not wav2vec2.training:
        return hidden_states
    batch, frames, hidden = hidden_states.shape
    if config.mask_time_prob > 0:
        valid = (np.arange(frames)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)  # (batch, frames)
        mask = _compute_mask_indices((batch, frames), mask_prob=config.mask_time_prob,
                                     mask_length=config.mask_time_length, attention_mask=torch.from_numpy(valid),
                                     min_masks=config.mask_time_min_masks)  # (batch, frames) bool, numpy
        mask = upload(mask, hidden_states.device)
        embed = wav2vec2.masked_spec_embed.to(hidden_states.dtype)  # (hidden,)
        hidden_states = torch.where(mask[..., None], embed, hidden_states)
    if config.mask_feature_prob > 0:
        mask = _compute_mask_indices((batch, hidden), mask_prob=config.mask_feature_prob,
                                     mask_length=config.mask_feature_length,
                                     min_masks=config.mask_feature_min_masks)  # (batch, hidden) bool, numpy
        hidden_states = hidden_states.masked_fill(upload(mask, hidden_states.device)[:, None, :], 0.0)
    return hidden_states


def layer_attention_mask(encoder, hidden_states: torch.Tensor, frame_mask: torch.Tensor, padded: bool):
    """What the encoder's layers get as ``attention_mask``, from frame_mask (batch, frames), True on each
    utterance's frames, and whether any frame is padding. BiMamba2 mixers (``BIMAMBA2_ATTENTION``) get the 2-D mask
    and SDPA the boolean (batch, 1, frames, frames) keep-mask as a broadcast view of it; both get None without
    padding (SDPA's flash kernel and the mixers' plain flip apply), as Hugging Face decides after reading the mask.
    Other attention implementations get Hugging Face's own mask."""
    implementation = encoder.config._attn_implementation
    if implementation not in ("sdpa", BIMAMBA2_ATTENTION):
        return create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden_states,
                                         attention_mask=frame_mask)
    if not padded:
        return None
    if implementation == BIMAMBA2_ATTENTION:
        return frame_mask
    batch, frames = frame_mask.shape
    return frame_mask[:, None, None, :].expand(batch, 1, frames, frames)


def wav2vec2_forward(wav2vec2: Wav2Vec2Model, input_values: torch.Tensor, attention_mask: torch.Tensor | None,
                     sample_lengths: list[int] | None = None,
                     layer_graphs: LayerGraphs | TrainingLayerGraphs | None = None) -> torch.Tensor:
    """Last hidden state (batch, frames, hidden) of ``wav2vec2`` on input_values (batch, samples) with
    attention_mask (batch, samples), 1 on the samples of each utterance (padding at the end) or None (no padding).
    sample_lengths: each utterance's samples as host integers; when None they are read from attention_mask (one
    synchronisation). layer_graphs: the encoder layers' CUDA graphs (the distillation teacher's SDPA layers without
    gradients; the BiMamba2 student's in training), which replace the layers' launches where
    ``layer_graphs.applies``."""
    if wav2vec2.adapter is not None:
        raise ValueError("wav2vec2_forward: models with an adapter (config.add_adapter) are not supported")
    features = wav2vec2.feature_extractor(input_values).transpose(1, 2)  # (batch, frames, conv channels)
    batch, frames, _ = features.shape
    lengths, frame_mask = [frames] * batch, None
    if attention_mask is not None:
        if sample_lengths is None:
            sample_lengths = attention_mask.sum(-1).tolist()
        lengths = frame_lengths(wav2vec2, sample_lengths)
        frame_mask = torch.arange(frames, device=features.device)[None, :] < upload(
            torch.tensor(lengths), features.device)[:, None]  # (batch, frames) bool, True on each utterance's frames
    hidden_states, _ = wav2vec2.feature_projection(features)  # (batch, frames, hidden)
    hidden_states = spec_augment(wav2vec2, hidden_states, lengths)

    encoder = wav2vec2.encoder
    layer_mask = None
    if frame_mask is not None:  # padded frames are zero
        hidden_states = hidden_states.masked_fill(~frame_mask[..., None], 0.0)
        layer_mask = layer_attention_mask(encoder, hidden_states, frame_mask,
                                          padded=any(n != frames for n in lengths))
    hidden_states = hidden_states + encoder.pos_conv_embed(hidden_states)
    if not wav2vec2.config.do_stable_layer_norm:  # post-norm encoder (wav2vec2-base): norm before the layers
        hidden_states = encoder.layer_norm(hidden_states)
    hidden_states = encoder.dropout(hidden_states)
    replaying = contextlib.nullcontext()
    if layer_graphs is not None and layer_graphs.applies(hidden_states):
        if frame_mask is None:
            frame_mask = torch.ones(batch, frames, dtype=torch.bool, device=hidden_states.device)
        replaying = layer_graphs.replaying(encoder.layers, frame_mask)
    with replaying:
        for layer in encoder.layers:
            # LayerDrop as Hugging Face draws it: one torch.rand([]) on the host per layer while training
            if encoder.training and encoder.config.layerdrop > 0.0 and torch.rand([]) < encoder.config.layerdrop:
                continue
            hidden_states = layer(hidden_states, attention_mask=layer_mask)
    if wav2vec2.config.do_stable_layer_norm:  # pre-norm encoder (wav2vec2-large-lv60): norm after the layers
        hidden_states = encoder.layer_norm(hidden_states)
    return hidden_states
