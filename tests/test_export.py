"""scripts/export_hf_model.py: an attention checkpoint becomes a Hugging Face model dir that a new run loads as its
``asr_model_name`` (mini-CALD's IC and SID start from the ASR teacher this way). BiMamba2 exports: tests/test_hf.py."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hparams import create_hparams
from models.build import build_asr_model
from scripts import export_hf_model
from utils.checkpoint import save_checkpoint


def run_dir_with_checkpoint(root: Path, hparams_string: str) -> Path:
    """A run dir as train.py leaves it: hparams.json and model.ckpt-7 holding the model's weights."""
    hparams = create_hparams(hparams_string)
    torch.manual_seed(0)
    model = build_asr_model(hparams)
    for p in model.parameters():  # weights unlike the pretrained dir's: the export must carry these
        p.data.add_(torch.randn_like(p) * 0.01)
    root.mkdir(parents=True)
    hparams.save_json(root / "hparams.json")
    save_checkpoint(root / "model.ckpt-7", {"model": model.state_dict(), "step": 7})
    return root / "model.ckpt-7"


def test_export_then_load_as_the_pretrained_model(tiny_model_dir, tmp_path):
    checkpoint = run_dir_with_checkpoint(tmp_path / "run", f"asr_model_name={tiny_model_dir},use_classifier=True,"
                                                           f"classifier_num_targets=3")
    out = export_hf_model.export(checkpoint, tmp_path / "exported")
    saved = torch.load(checkpoint, weights_only=True)["model"]
    exported = load_file(out / "model.safetensors")
    assert any(k.startswith("classifier_heads") for k in saved) and not any("classifier" in k for k in exported)
    # a new IC-like run from the export: every Wav2Vec2 weight is the checkpoint's, the new CTC head size aside
    model = build_asr_model(create_hparams(f"asr_model_name={out},asr_vocab_size=300"))
    for name, tensor in model.state_dict().items():
        if not name.startswith("lm_head"):
            torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0, msg=name)


def test_export_without_mask_embedding_loads_with_specaugment_on(tiny_model_dir, tmp_path, monkeypatch):
    """mini-CALD's first GPU run: the ASR teacher trains with mask_time_prob=0 (no ``masked_spec_embed`` in its
    export); IC and SID load it with mask_time_prob=0.1, and transformers 5.17 left the new embedding
    uninitialised: NaN gradients at every step. Simulated here by an _init_weights that leaves NaN in it."""
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Model, Wav2Vec2PreTrainedModel

    checkpoint = run_dir_with_checkpoint(tmp_path / "run", f"asr_model_name={tiny_model_dir},mask_time_prob=0")
    out = export_hf_model.export(checkpoint, tmp_path / "exported")
    assert "wav2vec2.masked_spec_embed" not in load_file(out / "model.safetensors")
    init_weights = Wav2Vec2PreTrainedModel._init_weights

    def init_weights_of_transformers_5_17(self, module):
        init_weights(self, module)
        if isinstance(module, Wav2Vec2Model) and hasattr(module, "masked_spec_embed"):
            module.masked_spec_embed.data.fill_(float("nan"))  # what uninitialised memory may hold

    monkeypatch.setattr(Wav2Vec2PreTrainedModel, "_init_weights", init_weights_of_transformers_5_17)
    model = build_asr_model(create_hparams(f"asr_model_name={out},mask_time_prob=0.1"))
    embedding = model.wav2vec2.masked_spec_embed
    assert torch.isfinite(embedding).all() and 0 <= embedding.min() and embedding.max() < 1


def test_non_finite_pretrained_weights_are_an_error_naming_them(tiny_model_dir, tmp_path):
    from transformers import Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.wav2vec2.encoder.layers[1].feed_forward.output_dense.weight[0, 0] = float("inf")
    model.save_pretrained(tmp_path / "broken")
    with pytest.raises(ValueError, match=r"broken: non-finite values in 1 parameter\(s\).*"
                                         r"encoder\.layers\.1\.feed_forward\.output_dense\.weight"):
        build_asr_model(create_hparams(f"asr_model_name={tmp_path / 'broken'}"))


def test_an_attention_export_with_its_vocabulary_carries_the_processor(tiny_model_dir, tmp_path):
    from transformers import Wav2Vec2Processor

    from tests.test_hf import TINY_VOCAB, write_vocab

    checkpoint = run_dir_with_checkpoint(tmp_path / "run", f"asr_model_name={tiny_model_dir}")
    out = export_hf_model.export(checkpoint, tmp_path / "exported", vocab=write_vocab(tmp_path / "data"))
    processor = Wav2Vec2Processor.from_pretrained(out)
    assert processor.tokenizer.get_vocab() == TINY_VOCAB and processor.feature_extractor.return_attention_mask
    assert not (tmp_path / "exported" / "modeling_wav2vec2_bimamba2.py").exists()
