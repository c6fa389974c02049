"""Hyperparameters: every default in one place, one strict parser, a JSON round trip.

    hparams = create_hparams("batch_frame_limit=2.5e6,asr_use_mamba=True")
    hparams.batch_frame_limit          # 2500000.0
    hparams.save_json(run_dir / "hparams.json")

Precedence (lowest first): the defaults below < a saved ``hparams.json`` (resume, infer) < ``--hparams``.
Values are coerced to the default's type; an unknown key fails naming the nearest valid keys, and a bad value or
one out of its range (``RANGES``: batch_size > 0, input_length_upper_bound >= 0, ...) fails naming its key.
Nothing a user types is ever evaluated as Python.
"""
import dataclasses
import difflib
import json
import re
from pathlib import Path

CHOICES = {
    "asr_mamba_init": ("random", "attention"),
    "mamba_backend": ("auto", "torch", "triton", "ref"),
    "classifier_pooling": ("mean",),
    "data_format": ("nlt", "nltLa"),
    "loss_normalize_type": ("sample", "utterance"),
}

# what a checkpoint's weights were built with: a resume (or --restore_from) cannot change them
ARCHITECTURE_KEYS = ("asr_use_mamba", "asr_vocab_size", "asr_mamba_residual_inside", "mamba_d_state", "mamba_d_conv",
                     "mamba_headdim", "mamba_expand", "use_classifier", "classifier_num_targets", "pad_token_id")

# the range of every numeric hparam that has one: (what it must be, the test); NaN fails every test
_POSITIVE, _NON_NEGATIVE, _PROBABILITY = ("> 0", lambda v: v > 0), (">= 0", lambda v: v >= 0), \
    ("in [0, 1]", lambda v: 0 <= v <= 1)
RANGES = {
    **dict.fromkeys(("asr_vocab_size", "mamba_d_state", "mamba_d_conv", "mamba_headdim", "mamba_expand",
                     "mamba_chunk_size", "sr", "bucket_size", "batch_size", "batch_frame_limit",
                     "batch_quad_frame_limit", "distill_temperature", "teacher_snapshot_cycle", "max_lr", "adam_eps",
                     "max_grad_norm"), _POSITIVE),
    **dict.fromkeys(("mamba_scan_graph_frames", "mamba_mixer_graph_frames", "teacher_graph_frames",
                     "student_graph_frames", "pad_token_id",
                     "data_warmup_steps", "input_length_upper_bound", "target_length_lower_bound", "max_eval_batches",
                     "ctc_weight", "classifier_weight", "alpha_layer_distill_loss", "alpha_logits_distill_loss",
                     "warmup_steps", "final_lr", "decay_steps", "reg_weight", "seed"), _NON_NEGATIVE),
    **dict.fromkeys(("hidden_dropout", "activation_dropout", "feat_proj_dropout", "final_dropout", "mask_time_prob"),
                    _PROBABILITY),
}


@dataclasses.dataclass
class HParams:
    # --- model -----------------------------------------------------------------------------------------
    asr_model_name: str = "facebook/wav2vec2-large-lv60"  # hub id or local dir of a Wav2Vec2 checkpoint
    asr_vocab_size: int = 32  # CTC output size; a checkpoint head of another size is re-initialised
    asr_use_flash_attn: bool = False  # teacher attention: flash-attn 2 where importable on CUDA, else SDPA
    asr_use_mamba: bool = False  # replace every encoder self-attention by a BiMamba2Wrapper
    asr_mamba_residual_inside: bool = True  # BiMamba2Wrapper adds its input to fw + bw outputs
    asr_mamba_init: str = "random"  # random (mamba_ssm's init) | attention (x<-v, B<-k, C<-q, out<-o)
    mamba_backend: str = "auto"  # auto | torch (PyTorch, CPU) | triton (mamba_ssm's, CUDA) | ref (sequential, tests)
    mamba_d_state: int = 128  # SSM state size N
    mamba_d_conv: int = 4  # causal depthwise conv width
    mamba_headdim: int = 64  # P; hidden size * expand must divide by it
    mamba_expand: int = 1  # inner width = expand * hidden size
    mamba_chunk_size: int = 256  # SSD chunk length of mamba_ssm's Triton scan (the torch backend chunks at 64)
    mamba_recompute: bool = False  # activation checkpointing of each BiMamba2 mixer: less memory, more compute
    mamba_scan_graph_frames: int = 16384  # triton: SSD scans of <= this batch x length replay CUDA graphs (0: never)
    # triton: fused mixers of <= this batch x length replay CUDA graphs without gradients, or with mamba_recompute
    mamba_mixer_graph_frames: int = 16384  # (their backward recomputes the forward); 0: never
    encoder_recompute: bool = False  # activation checkpointing of whole encoder layers: least memory, ~1 more forward
    # CUDA, training: the BiMamba2 encoder's layers of <= this batch x frames replay CUDA graphs, a forward and a
    student_graph_frames: int = 0  # backward recomputing the layer (models/kernels/layer_graphs.py); 0: never
    hidden_dropout: float = 0.2
    activation_dropout: float = 0.2
    feat_proj_dropout: float = 0.2
    final_dropout: float = 0.0
    mask_time_prob: float = 0.1  # SpecAugment time masking
    freeze_feature_encoder: bool = True  # the CNN front end is not trained
    pad_token_id: int = 0  # [PAD], also the CTC blank
    use_classifier: bool = False  # pooled linear heads on the last hidden state (SLURP intent, VoxCeleb1 SI)
    classifier_num_targets: str = "18,46"  # classes per head, comma separated ("1251" for SI)
    classifier_pooling: str = "mean"  # mean over valid frames
    # --- data ------------------------------------------------------------------------------------------
    sr: int = 16000  # sample rate every corpus is prepared at
    data_format: str = "nlt"  # meta line fields: nlt = name|samples|text, nltLa = ...|text|labels|lang
    bucket_size: int = 1024  # utterances sorted by length within each bucket before batching
    batch_size: int = 24  # utterances per batch at most
    batch_frame_limit: float = 2.5e6  # (n + 1) * longest samples must stay under this
    batch_quad_frame_limit: float = 4e11  # (n + 1) * longest samples ** 2 must stay under this
    data_warmup_steps: int = 5000  # until this step skip long inputs and short transcripts
    input_length_upper_bound: int = 160000  # samples; the data warm-up's length cap
    target_length_lower_bound: int = 2  # characters; the data warm-up drops transcripts this short or shorter
    remove_unk: bool = True  # drop [UNK] from transcripts, '-' becomes a space
    replace_apos: bool = True  # join " '" into "'" (TED-LIUM writes "doesn 't")
    max_eval_batches: int = 0  # cap on dev batches per evaluation; 0 = the whole set
    # --- loss ------------------------------------------------------------------------------------------
    loss_normalize_type: str = "sample"  # sample (per transcript character) | utterance
    ctc_weight: float = 1.0
    classifier_weight: float = 1.0
    alpha_layer_distill_loss: float = 1.0  # weight of the per-layer hidden-state MSE to the teacher
    alpha_logits_distill_loss: float = 1.0  # weight of the KL to the teacher's CTC logits
    distill_temperature: float = 2.0
    teacher_eval_mode: bool = False  # run the teacher in eval mode (the original keeps it in train mode)
    teacher_graph_frames: int = 16384  # CUDA, SDPA: the teacher's layers replay CUDA graphs up to this batch x frames
    # True: under `sample`, each distillation term is a mean per valid frame of the step, the same weight at any
    # --accumulation_steps k; False (the original's): each micro-batch's frame sums weighted by its characters over
    # the step's frames, about 1/k of that mean (utils/training.py, distill_scale)
    distill_frame_mean: bool = False
    teacher_snapshot_cycle: int = 10000  # waypoint guidance: teacher checkpoints every this many steps
    # --- optimisation ----------------------------------------------------------------------------------
    max_lr: float = 3e-4
    warmup_steps: int = 5000  # linear warm-up from 0 to max_lr
    final_lr: float = 1.5e-6
    decay_steps: int = 75000  # exponential decay from max_lr to final_lr over these steps, then constant
    reg_weight: float = 5e-3  # AdamW weight decay (not on biases and layer norms)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 1234

    # ---------------------------------------------------------------------------------------------------
    def parse(self, hparams_string: str) -> "HParams":
        """Override in place from ``key=value,key=value`` (a value may itself hold commas: ``18,46``)."""
        for key, raw in _split_assignments(hparams_string):
            self.set(key, raw)
        return self

    def set(self, key: str, value) -> None:
        fields = {f.name: f for f in dataclasses.fields(self)}
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise KeyError(f"unknown hparam '{key}'{hint}")
        value = _coerce(key, value, type(getattr(HParams, key)))
        if key in RANGES and not RANGES[key][1](value):
            raise ValueError(f"hparam '{key}' must be {RANGES[key][0]}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"hparam '{key}' must be one of {', '.join(CHOICES[key])}, got {value!r}")
        if key == "classifier_num_targets" and not re.fullmatch(r"[1-9][0-9]*(,[1-9][0-9]*)*", value):
            raise ValueError(f"hparam '{key}' expects comma-separated positive ints, got {value!r}")
        setattr(self, key, value)

    def update(self, values: dict) -> None:
        for key, value in values.items():
            self.set(key, value)

    def values(self) -> dict:
        return dataclasses.asdict(self)

    def diff(self, other: "HParams") -> dict:
        """{key: (mine, other's)} for every key whose value differs."""
        mine, theirs = self.values(), other.values()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}

    def to_json(self) -> str:
        return json.dumps(self.values(), indent=2, sort_keys=True)

    def save_json(self, path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @property
    def classifier_targets(self) -> list[int]:
        """``classifier_num_targets`` as a list of ints, one per head."""
        return [int(n) for n in self.classifier_num_targets.split(",")]


def create_hparams(hparams_string: str = "", json_path=None, saved: dict | None = None) -> HParams:
    """Defaults, then the saved values (``saved``, else the JSON at ``json_path``; errors name ``json_path``), then
    ``hparams_string``. ``saved`` holds values already read, e.g. an original-code hparams.json converted by
    models/original.py."""
    hparams = HParams()
    if saved is None and json_path is not None:
        try:
            saved = json.loads(Path(json_path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{json_path}: not valid JSON ({err})") from None
    if saved is not None:
        try:
            hparams.update(saved)
        except (KeyError, ValueError) as err:
            raise type(err)(f"{json_path}: {err.args[0]}") from None
    return hparams.parse(hparams_string)


def _split_assignments(text: str):
    """'a=1,b=18,46,c=x' -> [('a', '1'), ('b', '18,46'), ('c', 'x')]."""
    pairs = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece:
            key, value = piece.split("=", 1)
            pairs.append([key.strip(), value.strip()])
        elif pairs:  # continuation of a comma list value
            pairs[-1][1] += "," + piece
        else:
            raise ValueError(f"malformed hparams '{text}': expected key=value, got '{piece}'")
    return [tuple(p) for p in pairs]


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _coerce(key: str, value, kind: type):
    if isinstance(value, str):
        text = value.strip()
        if kind is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
        elif kind is int:
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        elif kind is float:
            try:
                return float(text)
            except ValueError:
                pass
        else:
            return text
    elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"hparam '{key}' expects {kind.__name__}, got {value!r}")
