"""scripts/export_hf_model.py: an attention checkpoint becomes a Hugging Face model dir that a new run loads as its
``asr_model_name`` (mini-CALD's IC and SID start from the ASR teacher this way); a BiMamba2 checkpoint is refused."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hparams import create_hparams
from models.build import build_asr_model
from scripts import export_hf_model
from tests.conftest import TINY_MAMBA
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


def test_a_bimamba2_checkpoint_is_refused(tiny_model_dir, tmp_path):
    checkpoint = run_dir_with_checkpoint(tmp_path / "run", f"asr_model_name={tiny_model_dir},asr_use_mamba=True,"
                                                           f"{TINY_MAMBA}")
    with pytest.raises(ValueError, match="asr_use_mamba=True"):
        export_hf_model.export(checkpoint, tmp_path / "exported")
    with pytest.raises(SystemExit, match="only attention checkpoints"):
        export_hf_model.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "exported")])
