"""Configuration of a Wav2Vec2 whose encoder self-attention is replaced by a bidirectional Mamba2 (BiMamba2).

Every field of ``Wav2Vec2Config`` keeps its meaning (the CNN front end, the encoder's size, norms, dropout and
SpecAugment, the CTC head); the ``mamba_*`` fields shape the mixer that stands where each attention was, and the
``classifier_*`` fields describe the optional pooled classifier heads (intent or speaker) and their label names.
"""
from huggingface_hub.dataclasses import strict
from transformers import Wav2Vec2Config


@strict
class Wav2Vec2BiMamba2Config(Wav2Vec2Config):
    r"""
    mamba_d_state (`int`, defaults to 128): SSM state size N of each Mamba2 direction.
    mamba_d_conv (`int`, defaults to 4): width of the causal depthwise convolution before the scan.
    mamba_expand (`int`, defaults to 1): inner width = expand * hidden_size.
    mamba_headdim (`int`, defaults to 64): head dimension P; hidden_size * expand must divide by it.
    mamba_chunk_size (`int`, defaults to 256): chunk length of mamba_ssm's Triton scan (CUDA).
    mamba_residual_inside (`bool`, defaults to True): the mixer adds its input to the sum of both directions (on
        top of the encoder layer's own residual).
    feature_encoder_chunk_frames (`int`, defaults to 15000): in eval mode a layer-norm CNN front end runs over
        longer inputs in pieces of this many output frames (5 minutes at 16 kHz); 0 runs it whole.
    ctc_head_trained (`bool`, defaults to True): False when the model was trained for its classifier heads alone
        (the CTC head then holds its initial weights and its transcripts mean nothing).
    classifier_num_targets (`list[int]`, *optional*): classes of each pooled classifier head; None: no heads.
    classifier_head_names (`list[str]`, *optional*): what each head predicts, e.g. ["scenario", "action"].
    classifier_labels (`list[list[str]]`, *optional*): each head's class names, by class index.
    converted_from (`dict`, *optional*): where the export came from (checkpoint, step, vocabulary, labels).
    """

    model_type = "wav2vec2_bimamba2"

    mamba_d_state: int = 128
    mamba_d_conv: int = 4
    mamba_expand: int = 1
    mamba_headdim: int = 64
    mamba_chunk_size: int = 256
    mamba_residual_inside: bool = True
    feature_encoder_chunk_frames: int = 15000
    ctc_head_trained: bool = True
    classifier_num_targets: list[int] | None = None
    classifier_head_names: list[str] | None = None
    classifier_labels: list[list[str]] | None = None
    converted_from: dict | None = None

    def validate_architecture(self):
        super().validate_architecture()
        if self.hidden_size * self.mamba_expand % self.mamba_headdim:
            raise ValueError(f"hidden_size {self.hidden_size} x mamba_expand {self.mamba_expand} is not divisible "
                             f"by mamba_headdim {self.mamba_headdim}")
        heads = self.classifier_num_targets or []
        for name, values in (("classifier_head_names", self.classifier_head_names),
                             ("classifier_labels", self.classifier_labels)):
            if values is not None and len(values) != len(heads):
                raise ValueError(f"{name} has {len(values)} entries for {len(heads)} classifier heads")
        for i, (labels, targets) in enumerate(zip(self.classifier_labels or [], heads)):
            if len(labels) != targets:
                raise ValueError(f"classifier head {i}: {len(labels)} label names for {targets} classes")


Wav2Vec2BiMamba2Config.register_for_auto_class()
