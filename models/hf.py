"""The converted model as a Hugging Face model directory, which transformers loads without this repository.

    hf_model = to_hf_model(model, hparams, classifier, converted_from)  # this project's BiMamba2 model, same weights
    save_model_dir(out, hf_model, make_processor(feature_extractor, tokenizer))
    model, processor = load_model_dir(out)                              # either kind of exported directory

A BiMamba2 directory holds:

    config.json                           model_type wav2vec2_bimamba2; auto_map (AutoConfig, AutoModelForCTC) and
                                          custom_pipelines (automatic-speech-recognition) naming the code files; the
                                          Mamba2 shape; classifier heads and their label names; converted_from
    configuration_wav2vec2_bimamba2.py    the code of models/hf_code/, copied by save_pretrained (both classes are
    modeling_wav2vec2_bimamba2.py         registered for their auto class), so push_to_hub uploads it too
    model.safetensors                     the checkpoint's weights, under this project's parameter names
    processor_config.json, preprocessor_config.json, tokenizer_config.json, vocab.json    a Wav2Vec2Processor

and then ``AutoModelForCTC.from_pretrained(dir, trust_remote_code=True)`` and ``pipeline("automatic-speech-
recognition", model=dir, trust_remote_code=True)`` work with torch and transformers alone. An attention checkpoint
exports as a plain Wav2Vec2ForCTC directory: no code of its own. ``load_model_dir`` reads both with this
repository's classes (no code from the directory runs).
"""
import copy
import dataclasses
import json
from pathlib import Path

import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

from models.hf_code.configuration_wav2vec2_bimamba2 import Wav2Vec2BiMamba2Config
from models.hf_code.modeling_wav2vec2_bimamba2 import Wav2Vec2BiMamba2ForCTC

# config.custom_pipelines: the automatic-speech-recognition pipeline of the exported code (reads audio files with
# libsndfile, where the stock one needs ffmpeg)
ASR_PIPELINE = {"automatic-speech-recognition": {
    "impl": "modeling_wav2vec2_bimamba2.Wav2Vec2BiMamba2SpeechRecognitionPipeline",
    "pt": ["AutoModelForCTC"], "tf": [], "type": "audio"}}
# Wav2Vec2Config entries that describe a saved file rather than the model
_NOT_CARRIED = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path", "custom_pipelines")


@dataclasses.dataclass
class ClassifierLabels:
    """What a model's classifier heads predict: one name per head (``scenario``, ``action``; ``speaker``) and each
    head's class names by class index; ``source``: the file they were read from."""

    head_names: list[str]
    labels: list[list[str]]
    source: str

    def for_targets(self, num_targets: list[int]) -> list[list[str]]:
        """Each head's names, one per output: outputs past the named classes (a head sized for more classes than
        the data had) are named ``LABEL_<i>``, as transformers names unnamed classes."""
        if len(num_targets) != len(self.labels):
            raise ValueError(f"{self.source}: {len(self.labels)} classifier head(s), the model has {len(num_targets)}")
        named = []
        for head, (labels, targets) in enumerate(zip(self.labels, num_targets)):
            if len(labels) > targets:
                raise ValueError(f"{self.source}: head {head} ({self.head_names[head]}) names {len(labels)} classes, "
                                 f"the model's head has {targets} outputs")
            named.append(list(labels) + [f"LABEL_{i}" for i in range(len(labels), targets)])
        return named


def hf_config(model_config, hparams, classifier: ClassifierLabels | None = None,
              converted_from: dict | None = None) -> Wav2Vec2BiMamba2Config:
    """The exported model's config: the converted model's Wav2Vec2Config (as the run built it: vocabulary size,
    dropout, SpecAugment, CTC settings) plus the Mamba2 shape of ``hparams`` and the classifier heads."""
    base = {k: v for k, v in model_config.to_dict().items() if k not in _NOT_CARRIED}
    heads = {}
    if hparams.use_classifier:
        if classifier is None:
            raise ValueError("the model has classifier heads (use_classifier=True): their class names are needed")
        heads = dict(classifier_num_targets=hparams.classifier_targets, classifier_head_names=classifier.head_names,
                     classifier_labels=classifier.for_targets(hparams.classifier_targets))
    config = Wav2Vec2BiMamba2Config(
        **base, mamba_d_state=hparams.mamba_d_state, mamba_d_conv=hparams.mamba_d_conv,
        mamba_expand=hparams.mamba_expand, mamba_headdim=hparams.mamba_headdim,
        mamba_chunk_size=hparams.mamba_chunk_size, mamba_residual_inside=hparams.asr_mamba_residual_inside,
        ctc_head_trained=hparams.ctc_weight > 0, converted_from=converted_from, **heads)
    config.architectures = [Wav2Vec2BiMamba2ForCTC.__name__]
    config.custom_pipelines = copy.deepcopy(ASR_PIPELINE)
    return config


@torch.no_grad()
def to_hf_model(model, hparams, classifier: ClassifierLabels | None = None,
                converted_from: dict | None = None) -> Wav2Vec2BiMamba2ForCTC:
    """This project's converted model (``build_asr_model`` with asr_use_mamba=True, weights loaded) as a
    ``Wav2Vec2BiMamba2ForCTC`` holding the same weights under the same names, in eval mode on the CPU."""
    if not hparams.asr_use_mamba:
        raise ValueError("to_hf_model converts a BiMamba2 model (asr_use_mamba=True); an attention model is a "
                         "Wav2Vec2ForCTC already")
    hf_model = Wav2Vec2BiMamba2ForCTC(hf_config(model.config, hparams, classifier, converted_from))
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


def make_processor(feature_extractor, tokenizer) -> Wav2Vec2Processor:
    """The Wav2Vec2Processor of a model: the feature extractor the run normalised its audio with, and its CTC
    tokenizer."""
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def save_model_dir(out_dir, model, processor: Wav2Vec2Processor | None = None) -> Path:
    """Write the model (config.json, model.safetensors and, for a BiMamba2 model, its code files) and the processor
    into ``out_dir``: processor_config.json as transformers 5 writes a processor, and the feature extractor's own
    preprocessor_config.json too, which tools reading the older layout look for."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    if processor is not None:
        processor.save_pretrained(out_dir)
        processor.feature_extractor.save_pretrained(out_dir)
    return out_dir


def load_model_dir(path, device="cpu") -> tuple:
    """(model in eval mode, Wav2Vec2Processor or None) of an exported directory: a BiMamba2 one through this
    repository's ``Wav2Vec2BiMamba2ForCTC``, an attention one as ``Wav2Vec2ForCTC``. The processor is None where
    the directory has no vocab.json."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: not a Hugging Face model directory")
    model_type = json.loads(config_file.read_text()).get("model_type")
    classes = {Wav2Vec2BiMamba2Config.model_type: Wav2Vec2BiMamba2ForCTC, "wav2vec2": Wav2Vec2ForCTC}
    if model_type not in classes:
        raise ValueError(f"{config_file}: model_type {model_type!r}, expected one of {', '.join(classes)}")
    model = classes[model_type].from_pretrained(path).to(device).eval()
    if not (path / "vocab.json").is_file():
        return model, None
    # the parts by their own classes: the auto classes would first ask to run the directory's code
    processor = Wav2Vec2Processor(feature_extractor=Wav2Vec2FeatureExtractor.from_pretrained(path),
                                  tokenizer=Wav2Vec2CTCTokenizer.from_pretrained(path))
    return model, processor
