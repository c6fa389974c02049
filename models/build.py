"""Build the model a run trains or evaluates: HF Wav2Vec2ForCTC (+ classifier heads) (+ BiMamba2 surgery).

    model = build_asr_model(hparams)                    # pretrained weights from hparams.asr_model_name
    model = build_asr_model(hparams, pretrained=False)  # config only; a checkpoint is loaded afterwards
    out = forward_model(model, input_values, attention_mask, record_hidden_states=True)
"""
import contextlib
import dataclasses
import functools
import importlib.util
import logging

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from models.heads import ClassifierHeads
from models.kernels.front_end import use_channels_last_feature_encoder
from models.kernels.layer_graphs import LayerGraphs, TrainingLayerGraphs
from models.mamba_utils import BIMAMBA2_ATTENTION, substitute_layer
from models.wav2vec2_forward import wav2vec2_forward

logger = logging.getLogger(__name__)


def attention_implementation(use_flash_attn: bool) -> str:
    """flash_attention_2 when asked for and usable (flash-attn importable, CUDA present), else PyTorch SDPA."""
    if not use_flash_attn:
        return "sdpa"
    if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        return "flash_attention_2"
    logger.info("asr_use_flash_attn=True but flash-attn/CUDA is not available: using PyTorch SDPA attention")
    return "sdpa"


def _config_overrides(hparams) -> dict:
    """What the hparams set on the checkpoint's config; everything else (LayerDrop included) is inherited."""
    return dict(
        vocab_size=hparams.asr_vocab_size,
        hidden_dropout=hparams.hidden_dropout,
        activation_dropout=hparams.activation_dropout,
        feat_proj_dropout=hparams.feat_proj_dropout,
        final_dropout=hparams.final_dropout,
        mask_time_prob=hparams.mask_time_prob,
        ctc_loss_reduction="sum",
        ctc_zero_infinity=True,
        pad_token_id=hparams.pad_token_id,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_asr_model(hparams, pretrained: bool = True, init_state_dict: dict | None = None,
                    init_source: str = "init_state_dict") -> Wav2Vec2ForCTC:
    """The model of a run, in fp32 on CPU.

    pretrained: load weights from ``asr_model_name`` (else only its config; a checkpoint follows).
    init_state_dict: attention-model weights (a teacher checkpoint) loaded *before* the surgery, so that
        Target-guided students start from the teacher and ``asr_mamba_init=attention`` reads its attention;
        init_source names where they came from in the error a misfit raises (``load_weights``).
    """
    overrides = _config_overrides(hparams)
    attn = attention_implementation(hparams.asr_use_flash_attn)
    try:
        if pretrained:
            model, loading = Wav2Vec2ForCTC.from_pretrained(
                hparams.asr_model_name, ignore_mismatched_sizes=True, attn_implementation=attn,
                output_loading_info=True, **overrides
            )
            initialise_missing_mask_embedding(model, loading["missing_keys"])
            check_finite(model, hparams.asr_model_name)
        else:
            config = Wav2Vec2Config.from_pretrained(hparams.asr_model_name, **overrides)
            model = Wav2Vec2ForCTC._from_config(config, attn_implementation=attn)
    except OSError as error:
        raise OSError(
            f"cannot load asr_model_name={hparams.asr_model_name!r}: neither a local model directory nor "
            f"reachable on the Hugging Face hub ({error.__class__.__name__}). Offline, pass a local directory, "
            f"e.g. one written by `python -m models.presets demo --out output/models/demo`."
        ) from error
    if hparams.encoder_recompute and hparams.mamba_recompute:
        raise ValueError("encoder_recompute=True recomputes whole encoder layers, their mixers included: "
                         "drop mamba_recompute=True")
    if hparams.encoder_recompute and hparams.student_graph_frames > 0:
        raise ValueError("student_graph_frames > 0 replays encoder layers whose backward recomputes them, as "
                         "encoder_recompute=True does: set one of the two")
    use_channels_last_feature_encoder(model)
    if hparams.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if hparams.encoder_recompute:
        enable_encoder_recompute(model)
    if hparams.use_classifier:
        model.classifier_heads = ClassifierHeads(model.config.hidden_size, hparams.classifier_targets)
    if init_state_dict is not None:
        load_weights(model, init_state_dict, init_source)
    params_attention = count_parameters(model)

    if hparams.asr_use_mamba:
        encoder = model.wav2vec2.encoder
        before = {k: v for k, v in encoder.state_dict().items() if ".attention." not in k}
        substitute_layer(
            encoder,
            model.config,
            residual_inside=hparams.asr_mamba_residual_inside,
            d_state=hparams.mamba_d_state,
            d_conv=hparams.mamba_d_conv,
            expand=hparams.mamba_expand,
            headdim=hparams.mamba_headdim,
            chunk_size=hparams.mamba_chunk_size,
            recompute=hparams.mamba_recompute,
            backend=hparams.mamba_backend,
            scan_graph_frames=hparams.mamba_scan_graph_frames,
            mixer_graph_frames=hparams.mamba_mixer_graph_frames,
            init=hparams.asr_mamba_init,
        )
        verify_surgery(before, encoder.state_dict())
        logger.info("parameters: %.2fM with attention -> %.2fM with BiMamba2",
                    params_attention / 1e6, count_parameters(model) / 1e6)
    else:
        logger.info("parameters: %.2fM", params_attention / 1e6)
    return model


MASK_EMBEDDING = "wav2vec2.masked_spec_embed"


@torch.no_grad()
def initialise_missing_mask_embedding(model: Wav2Vec2ForCTC, missing_keys) -> None:
    """SpecAugment's mask embedding, when the checkpoint has none, drawn as Wav2Vec2Model.__init__ does (U[0, 1)).

    A model saved with mask_time_prob=0 has no ``masked_spec_embed``; loaded with mask_time_prob > 0 it gets a new
    one, which transformers before 5.24 leaves uninitialised (``_init_weights`` has no case for it): NaN in the
    masked frames, NaN gradients at every step.
    """
    if MASK_EMBEDDING in missing_keys:
        model.get_parameter(MASK_EMBEDDING).uniform_()
        logger.info("%s not in the checkpoint: initialised U[0, 1)", MASK_EMBEDDING)


def enable_encoder_recompute(model: Wav2Vec2ForCTC) -> None:
    """encoder_recompute=True: each encoder layer keeps only its input for backward and runs again there (Hugging
    Face's gradient checkpointing, non-reentrant: the layers' dropout masks are replayed)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """``model.load_state_dict(state_dict)``, strict but for SpecAugment's mask embedding, which a Wav2Vec2 has only
    when mask_time_prob or mask_feature_prob > 0: a teacher trained without SpecAugment seeds a student with it
    (which keeps its own embedding, drawn at construction) and the other way round (the teacher's is dropped).
    Any other missing or unexpected key, or a tensor of another shape, is one error naming ``source``."""
    own = model.state_dict()
    misshapen = [k for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if misshapen:
        first = misshapen[0]
        raise ValueError(f"{source} does not fit the model: {len(misshapen)} tensor(s) of another shape, e.g. {first} "
                         f"{tuple(state_dict[first].shape)} where the model has {tuple(own[first].shape)}; was it "
                         f"saved by a model of another size (asr_model_name, asr_vocab_size, classifier_num_targets, "
                         f"mamba_*)?")
    result = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if k != MASK_EMBEDDING]
    unexpected = [k for k in result.unexpected_keys if k != MASK_EMBEDDING]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the model: {len(missing)} missing key(s) {missing[:5]}, "
                         f"{len(unexpected)} unexpected key(s) {unexpected[:5]}; was it saved by a model of "
                         f"another size, or with asr_use_mamba / use_classifier set differently?")
    for key in set(result.missing_keys + result.unexpected_keys) - set(missing + unexpected):
        logger.info("%s: %s %s (SpecAugment differs)", source, key,
                    "kept as initialised" if key in result.missing_keys else "dropped")


def check_finite(model: nn.Module, source: str) -> None:
    """Every loaded weight is finite; else an error naming them (and where they came from)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"{source}: non-finite values in {len(bad)} parameter(s) after loading: "
                         f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}")


def verify_surgery(before: dict, after: dict) -> None:
    """Every non-attention tensor is the very same storage as before; new keys are exactly the Mamba2 ones."""
    missing = sorted(set(before) - set(after))
    changed = [k for k in before if k in after and after[k].data_ptr() != before[k].data_ptr()]
    mamba_key = lambda k: ".attention.fw_mamba." in k or ".attention.bw_mamba." in k  # noqa: E731
    unexpected = [k for k in set(after) - set(before) if not mamba_key(k)]
    leftover = [k for k in after if any(f".attention.{p}_proj." in k for p in "qkv")]
    if missing or changed or unexpected or leftover:
        raise RuntimeError(
            f"surgery check failed: missing {missing[:5]}, changed {changed[:5]}, "
            f"unexpected {unexpected[:5]}, attention left {leftover[:5]}"
        )


@dataclasses.dataclass
class ModelOutput:
    logits: torch.Tensor  # (batch, frames, vocab)
    last_hidden_state: torch.Tensor  # (batch, frames, hidden)
    frame_mask: torch.Tensor  # (batch, frames) bool, True on valid frames
    output_lengths: torch.Tensor  # (batch,) valid frames
    hidden_states: list | None  # layer outputs 1..N, the last after the encoder's final norm; None unless asked
    head_logits: list | None = None  # [(batch, classes) per classifier head] when the model has heads


@contextlib.contextmanager
def record_layer_outputs(encoder: nn.Module):
    """Collect each encoder layer's output during one forward; yields a dict {layer index: (batch, frames, hidden)}.

    The encoder's input to its first layer is stored under -1 (the output of ``encoder.dropout``, which both HF
    encoder variants apply just before the layers). Layers skipped by LayerDrop are absent.
    """
    outputs = {}
    handles = [encoder.dropout.register_forward_hook(lambda m, i, o: outputs.__setitem__(-1, o))]
    for index, layer in enumerate(encoder.layers):
        handles.append(layer.register_forward_hook(lambda m, i, o, index=index: outputs.__setitem__(index, o)))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def layer_hidden_states(recorded: dict, num_layers: int, last_hidden_state: torch.Tensor) -> list:
    """Hidden states after layers 1..N as transformers 4.x listed them: a LayerDrop-skipped layer passes its input
    on, and the last entry is the encoder's output (after its final norm in stable-layer-norm models)."""
    states, current = [], recorded[-1]
    for index in range(num_layers - 1):
        current = recorded.get(index, current)
        states.append(current)
    return states + [last_hidden_state]


def forward_model(model: Wav2Vec2ForCTC, input_values, attention_mask, record_hidden_states: bool = False,
                  sample_lengths: list[int] | None = None,
                  layer_graphs: LayerGraphs | TrainingLayerGraphs | None = None):
    """Wav2Vec2ForCTC's forward without its loss, plus what the losses need: frame mask and lengths, and the
    classifier heads' logits. sample_lengths: each utterance's samples as host integers (the batch's
    ``sample_lengths``), which spare the forward reading them back from the device; layer_graphs: CUDA graphs of
    the encoder's layers (``wav2vec2_forward``)."""
    encoder = model.wav2vec2.encoder
    recorder = record_layer_outputs(encoder) if record_hidden_states else contextlib.nullcontext()
    with recorder as recorded:
        last_hidden_state = wav2vec2_forward(model.wav2vec2, input_values, attention_mask, sample_lengths,
                                             layer_graphs)
    logits = model.lm_head(model.dropout(last_hidden_state))  # (batch, frames, vocab)
    output_lengths = model._get_feat_extract_output_lengths(attention_mask.sum(-1)).long()  # (batch,)
    frames = logits.shape[1]
    frame_mask = torch.arange(frames, device=logits.device)[None, :] < output_lengths[:, None]  # (batch, frames)
    hidden_states = None
    if record_hidden_states:
        hidden_states = layer_hidden_states(recorded, len(encoder.layers), last_hidden_state)
    heads = getattr(model, "classifier_heads", None)
    head_logits = heads(last_hidden_state, frame_mask) if heads is not None else None
    return ModelOutput(logits, last_hidden_state, frame_mask, output_lengths, hidden_states, head_logits)


def teacher_layer_graphs(model: Wav2Vec2ForCTC, max_frames: int) -> LayerGraphs | None:
    """CUDA graphs of ``model``'s encoder layers for its forwards without a gradient (``LayerGraphs``, up to
    ``max_frames`` batch x padded frames), or None where they do not apply: ``max_frames`` 0, a model off CUDA, or
    attention other than SDPA (flash-attn's padded path reads the lengths on the host, which a graph cannot; the
    BiMamba2 mixers replay graphs of their own)."""
    if max_frames <= 0 or not next(model.parameters()).is_cuda or model.config._attn_implementation != "sdpa":
        return None
    return LayerGraphs(model.wav2vec2.encoder.layers[0], max_frames=max_frames)


def student_layer_graphs(model: Wav2Vec2ForCTC, max_frames: int) -> TrainingLayerGraphs | None:
    """CUDA graphs of a BiMamba2 ``model``'s encoder layers for its training forwards and backwards
    (``TrainingLayerGraphs``, up to ``max_frames`` batch x padded frames), or None where they do not apply:
    ``max_frames`` 0, a model off CUDA, or an encoder with attention (the teacher's graphs are
    ``teacher_layer_graphs``)."""
    if (max_frames <= 0 or not next(model.parameters()).is_cuda
            or model.config._attn_implementation != BIMAMBA2_ATTENTION):
        return None
    return TrainingLayerGraphs(model.wav2vec2.encoder.layers[0], max_frames=max_frames)


def feature_encoder_geometry(config) -> tuple[int, int]:
    """(receptive field, stride) of the CNN front end in samples: 400 and 320 for wav2vec2-large."""
    field, stride = 1, 1
    for kernel, step in zip(config.conv_kernel, config.conv_stride):
        field += (kernel - 1) * stride
        stride *= step
    return field, stride


# Inference (infer.py, transcribe.py, bench): the front end runs in pieces of 5 minutes of audio at 16 kHz, so that a
# long recording goes through in one pass
CNN_CHUNK_FRAMES = 15000


@contextlib.contextmanager
def chunked_feature_encoder(model: Wav2Vec2ForCTC, max_frames: int):
    """Run the CNN front end over long inputs in pieces of ``max_frames`` output frames (inference).

    Each piece reads the samples its frames see (their receptive field), so the result equals the unchunked one
    for layer-norm front ends (wav2vec2-large-lv60's); a group-norm front end normalises over the whole input
    and is left unchunked. Peak memory of the front end then no longer grows with the audio length.
    """
    encoder = model.wav2vec2.feature_extractor
    if model.config.feat_extract_norm != "layer":
        yield
        return
    field, stride = feature_encoder_geometry(model.config)
    whole = encoder.forward

    def forward(input_values):  # (batch, samples) -> (batch, channels, frames)
        frames = int(model._get_feat_extract_output_lengths(input_values.shape[-1]))
        if frames <= max_frames:
            return whole(input_values)
        pieces = []
        for first in range(0, frames, max_frames):
            last = min(first + max_frames, frames)
            pieces.append(whole(input_values[:, first * stride:(last - 1) * stride + field]))
        return torch.cat(pieces, dim=-1)

    encoder.forward = forward
    try:
        yield
    finally:
        del encoder.forward  # back to the class's forward


class SpeechModel(nn.Module):
    """``forward_model`` as a module, so that one call (through DDP when distributed) runs the whole forward.
    ``student_graph_frames`` (hparam): the encoder's layers replay CUDA graphs in training (``student_layer_graphs``,
    made at the first forward, once the model is on its device)."""

    def __init__(self, model: Wav2Vec2ForCTC, student_graph_frames: int = 0):
        super().__init__()
        self.model = model
        self.student_graph_frames = student_graph_frames

    @functools.cached_property
    def layer_graphs(self) -> TrainingLayerGraphs | None:
        return student_layer_graphs(self.model, self.student_graph_frames)

    def forward(self, input_values, attention_mask, record_hidden_states: bool = False,
                sample_lengths: list[int] | None = None) -> ModelOutput:
        return forward_model(self.model, input_values, attention_mask, record_hidden_states, sample_lengths,
                             self.layer_graphs)
