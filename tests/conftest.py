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
