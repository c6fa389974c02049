"""Shared fixtures: a tiny local Wav2Vec2 checkpoint and hparams sized for it (hidden 32, 2 layers).

Without CUDA, Triton kernels (models/kernels/*_triton.py) run in Triton's CPU interpreter, on CPU tensors: the variable
is read when a kernel is defined, so it is set here, before any test imports one.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hparams import create_hparams
from models.presets import save_preset

TINY_MAMBA = "mamba_headdim=16,mamba_d_state=16,mamba_chunk_size=16"
# no dropout, SpecAugment or data warm-up: a step depends on its data and weights alone
QUIET = "hidden_dropout=0,activation_dropout=0,feat_proj_dropout=0,mask_time_prob=0,data_warmup_steps=0"


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: a difference measured against the tensor's scale, not element by element."""
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-6)).item()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return save_preset("tiny", tmp_path_factory.mktemp("tiny_w2v2"))


@pytest.fixture
def tiny_hparams(tiny_model_dir):
    def make(extra: str = ""):
        return create_hparams(f"asr_model_name={tiny_model_dir},{TINY_MAMBA},{extra}")

    return make


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A tiny TED-LIUM data dir (corpora/synth.py's raw layout, prepared by corpora/tedlium.py): 2 training talks of
    3 segments, a dev and a test talk. Shared by every test that reads it: none writes into it."""
    from corpora import tedlium
    from corpora.synth import synth_tedlium

    root = tmp_path_factory.mktemp("tedlium")
    synth_tedlium(root / "raw", talks=(2, 1, 1), segments_per_talk=(3, 3), progress=False)
    tedlium.main(["--src", str(root / "raw"), "--out", str(root / "data")])
    return root / "data"
