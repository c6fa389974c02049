"""The original code's checkpoint and hparams format (idiap linearize-distill-pretrained-transformers, ``speech/``)
⇄ this one, so that its run directories serve as they are: ``infer.py --model-path``, ``--teacher_path``,
``--restore_from`` and a resumed ``--model-dir``.

An original run directory::

    hparams.json                    every key of the original's speech/hyperparams.py (ORIGINAL_DEFAULTS below)
    model.ckpt-<step>               {'model': Model.state_dict(), 'optim', 'sched', 'step'}
    model.ckpt-<step>-wer-0.1234-cer-0.0567   a best checkpoint: its plain model.ckpt-<step> is removed
    best_metrics.json, args.json, outputs_*.log, eval_<step>/

Model keys: the original wraps the Wav2Vec2ForCTC in ``Model`` as ``asr_model`` and names its classifier heads
``classifier.linear.<i>``; this code saves the Wav2Vec2ForCTC itself, heads as ``classifier_heads.heads.<i>``:

    asr_model.wav2vec2.*        <->  wav2vec2.*        (the BiMamba2 parameters, ``...attention.{fw,bw}_mamba.*``,
    asr_model.lm_head.*         <->  lm_head.*          are mamba_ssm's Mamba2 names and shapes on both sides)
    classifier.linear.<i>.*     <->  classifier_heads.heads.<i>.*

A leading ``module.`` (a checkpoint of a DDP-wrapped model) is dropped, and the positional conv's weight norm of
older transformers (``weight_g`` / ``weight_v``) becomes torch's parametrization (``original0`` / ``original1``).
The optimiser state is re-indexed by parameter name (the original's AdamW holds every parameter, frozen ones
included, in two groups by the same weight-decay rule as this code's); the LambdaLR state and the step carry over.
The original keeps no data position or RNG state: a run continued from its checkpoint draws its data afresh.

Hparams: keys this code shares are taken as they are. The original's other keys are legacy here: accepted, with
one log line listing them, when they hold the value under which the original does what this code does (or have
no effect at all); refused, naming them, when they would change behaviour this code does not implement
(``use_decoder=True``, ``decay_type=linear``, ...).
"""
import dataclasses
import json
import logging
from pathlib import Path

from hparams import HParams

logger = logging.getLogger(__name__)

# Every key of the original's speech/hyperparams.py with its default (its types: the original's parser refuses a
# float for an int key, so an export writes each value with its default's type).
ORIGINAL_DEFAULTS = {
    "sr": 16000, "max_eval_batches": 10000, "data_format": "nlt", "bucket_size": 1024,
    "shuffle_training_data": True, "batch_frame_limit": 2.5e6, "batch_quad_frame_limit": 4e11, "batch_size": 24,
    "data_warmup_steps": 5000, "input_length_lower_bound": 0, "input_length_upper_bound": 160000,
    "target_length_lower_bound": 2, "use_attention_mask": True, "sample_partial_data": 1.0, "pad_token_id": 0,
    "reg_weight": 5e-3, "max_grad_norm": 1.0, "feat_proj_dropout": 0.2, "final_dropout": 0.0,
    "hidden_dropout": 0.2, "activation_dropout": 0.2, "mask_time_prob": 0.1, "warmup_steps": 5000,
    "plateau_steps": 0, "reset_period": 0, "reset_times": 1, "max_lr": 3e-4, "min_lr": 0.0, "final_lr": 1.5e-6,
    "decay_steps": 75000, "decay_rate": 1e-2, "decay_type": "exp", "adam_eps": 1e-8, "loss_normalize_type": "sample",
    "remove_unk": True, "replace_apos": True, "upper_only": False, "asr_model_type": "ctc", "asr_vocab_size": 32,
    "asr_model_name": "facebook/wav2vec2-large-lv60", "asr_processor_name": "",
    "asr_keep_feature_encoder_only": False, "asr_use_flash_attn": False, "asr_use_mamba": False,
    "asr_mamba_residual_inside": True, "asr_mamba_use_mamba2": True, "freeze_module": ".", "freeze_steps": 10000,
    "reinit_module": ".", "use_decoder": False, "decoder_type": "bart", "decoder_name": "facebook/bart-base",
    "decoder_stack_encoder": False, "decoder_model_name": "", "decoder_weight": 1.0, "ctc_weight": 1.0,
    "decoder_dropout": 0.2, "adaptor_type": "conv", "adaptor_num_layers": 3, "adaptor_pos_encoding": False,
    "adaptor_pos_encoding_mode": "encoding", "adaptor_pe_weight": 0.1, "adaptor_use_layernorm": False,
    "adaptor_use_glu": True, "eval_num_beams": 5, "eval_length_penalty": 1.0, "teacher_snapshot_cycle": 10000,
    "alpha_layer_distill_loss": 1, "alpha_logits_distill_loss": 1, "use_classifier": False,
    "classifier_num_targets": "18,46", "classifier_weight": 1.0, "classifier_pooling": "mean",
}

# Legacy keys and the one value under which the original behaves as this code (any other is refused):
# '.' matches no parameter name, so freeze_module / reinit_module freeze and re-initialise nothing.
REQUIRED_VALUES = {
    "shuffle_training_data": True, "input_length_lower_bound": 0, "use_attention_mask": True,
    "sample_partial_data": 1.0, "plateau_steps": 0, "reset_period": 0, "min_lr": 0.0, "decay_type": "exp",
    "asr_model_type": "ctc", "asr_processor_name": "", "asr_keep_feature_encoder_only": False,
    "asr_mamba_use_mamba2": True, "freeze_module": ".", "reinit_module": ".", "use_decoder": False,
}
# Legacy keys without effect here whatever their value: their feature is off by the values above (reset_times,
# freeze_steps, the decoder's, adaptor's and beam search's), the original never reads them (decay_rate), or this
# code's transcripts are upper case already (upper_only).
INERT_KEYS = frozenset(ORIGINAL_DEFAULTS) - set(REQUIRED_VALUES) - {f.name for f in dataclasses.fields(HParams)}

# Keys of this code the original lacks that fix the model's shape: an export refuses other values than these
# (the original builds mamba_ssm's Mamba2(d_model, expand=1) with its defaults).
ORIGINAL_MAMBA_SHAPE = {"mamba_d_state": 128, "mamba_d_conv": 4, "mamba_headdim": 64, "mamba_expand": 1}

_HEADS = ("classifier.linear.", "classifier_heads.heads.")  # (original, this code)
_WEIGHT_NORM = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}


# --- hparams -------------------------------------------------------------------------------------------------


def is_original_hparams(values: dict) -> bool:
    """Whether a saved hparams dict is the original's (it holds keys this code only knows as legacy)."""
    return any(k in REQUIRED_VALUES or k in INERT_KEYS for k in values)


def hparams_from_original(values: dict, source) -> dict:
    """An original hparams dict as this code's: legacy keys checked, logged and dropped; shared keys kept (this
    code's parser then coerces and checks them, naming ``source``)."""
    refused = {k: v for k, v in values.items() if k in REQUIRED_VALUES and v != REQUIRED_VALUES[k]}
    if refused:
        raise ValueError(f"{source}: original-code hparams this code does not implement: " + ", ".join(
            f"{k}={v!r} (only {REQUIRED_VALUES[k]!r} is supported)" for k, v in refused.items()))
    legacy = sorted(k for k in values if k in REQUIRED_VALUES or k in INERT_KEYS)
    logger.info("%s: the original code's hparams; %d legacy keys without effect here: %s", source, len(legacy),
                ", ".join(legacy))
    return {k: v for k, v in values.items() if k not in REQUIRED_VALUES and k not in INERT_KEYS}


def read_hparams_json(path) -> dict:
    """The values of a run's hparams.json in this code's keys (an original-code one converted)."""
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a JSON object of hparams")
    return hparams_from_original(values, path) if is_original_hparams(values) else values


def hparams_to_original(hparams) -> tuple[dict, dict]:
    """(the original's full hparams dict for ``hparams``, {this code's non-default keys the original has no key
    for: value}). A value the original cannot hold (a fraction for its integer keys) is an error naming it."""
    mine, defaults = hparams.values(), HParams().values()
    out = {}
    for key, default in ORIGINAL_DEFAULTS.items():
        value = mine.get(key, default)
        kind = type(default)
        if kind is int and not isinstance(value, bool) and float(value).is_integer():
            value = int(value)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ValueError(f"hparam {key}={value!r}: the original code holds {key} as {kind.__name__}")
        out[key] = value
    unexpressed = {k: v for k, v in mine.items() if k not in ORIGINAL_DEFAULTS and v != defaults[k]}
    return out, unexpressed


# --- checkpoints ---------------------------------------------------------------------------------------------


def is_original_checkpoint(state: dict) -> bool:
    """The original's checkpoints hold ``optim`` / ``sched`` (this code's ``optimizer`` / ``scheduler``) and model
    keys under ``asr_model.`` (this code's under ``wav2vec2.``)."""
    keys = state.get("model", {})
    return "optim" in state or "sched" in state or any(k.startswith(("asr_model.", "module.")) for k in keys)


def model_from_original(state_dict: dict, source) -> dict:
    """An original ``Model.state_dict()`` in this code's key names."""
    out = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name.startswith("asr_model."):
            name = name[len("asr_model."):]
        elif name.startswith(_HEADS[0]):
            name = _HEADS[1] + name[len(_HEADS[0]):]
        else:
            raise ValueError(f"{source}: unexpected key {key!r} in an original-code checkpoint (expected "
                             f"asr_model.* or classifier.linear.*; decoder and adaptor models are not supported)")
        for old, new in _WEIGHT_NORM.items():
            if name.endswith(old):
                name = name[: -len(old)] + new
        out[name] = value
    return out


def model_to_original(state_dict: dict) -> dict:
    """This code's model state dict in the original ``Model.state_dict()`` key names."""
    return {(_HEADS[0] + k[len(_HEADS[1]):] if k.startswith(_HEADS[1]) else "asr_model." + k): v
            for k, v in state_dict.items()}


def optimizer_from_original(optim_state: dict, names: list[str], groups: list[list[str]], is_decayed,
                            source) -> dict:
    """The original's AdamW state re-indexed for this code's optimiser.

    names: every parameter name of the model in ``named_parameters`` order (this code's names; the original's
    ``Model`` registers the same parameters in the same order); groups: the parameter names of each of this code's
    param groups (decayed, then not). The original's groups hold every parameter by ``is_decayed``, in that order;
    the state of a parameter this code does not optimise (e.g. a frozen CTC head) is dropped."""
    original_groups = [[n for n in names if is_decayed(n)], [n for n in names if not is_decayed(n)]]
    saved_groups = optim_state["param_groups"]
    saved_sizes = [len(g["params"]) for g in saved_groups]
    if saved_sizes != [len(g) for g in original_groups] or len(groups) != len(saved_groups):
        raise ValueError(f"{source}: its optimiser holds {saved_sizes} parameters per group, this model "
                         f"{[len(g) for g in original_groups]} by the original's rule: not this model's checkpoint")
    saved_index = {name: index for saved, group in zip(saved_groups, original_groups)
                   for index, name in zip(saved["params"], group)}
    state, param_groups, position = {}, [], 0
    for group, saved in zip(groups, saved_groups):
        ids = []
        for name in group:
            if saved_index[name] in optim_state["state"]:
                state[position] = optim_state["state"][saved_index[name]]
            ids.append(position)
            position += 1
        param_groups.append({**saved, "params": ids})
    return {"state": state, "param_groups": param_groups}


def checkpoint_from_original(state: dict, names: list[str], groups: list[list[str]], is_decayed, source) -> dict:
    """An original checkpoint as this code's ``{model, optimizer, scheduler, step}`` (no feeder or RNG state).
    optimizer / scheduler are None where the checkpoint has none (an export holds the weights and step only)."""
    step = state.get("step") or (state.get("sched") or {}).get("last_epoch") or 0
    optimizer = state.get("optim")
    if optimizer is not None:
        optimizer = optimizer_from_original(optimizer, names, groups, is_decayed, source)
    return {"model": model_from_original(state["model"], source), "optimizer": optimizer,
            "scheduler": state.get("sched"), "step": int(step)}


def checkpoint_to_original(state: dict) -> dict:
    """This code's checkpoint as one the original code loads: its model's weights and the step (the original
    restores an optimiser and schedule only where a checkpoint holds them)."""
    return {"model": model_to_original(state["model"]), "step": int(state["step"])}
