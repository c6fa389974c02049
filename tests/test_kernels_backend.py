"""models/kernels/backend.py: mamba_backend resolved once into the mixer's kernels, its names hparams.py's."""
import pytest
import torch

from hparams import CHOICES, create_hparams
from models.kernels import backend, conv, gated_norm, ssd
from models.kernels.backend import mixer_kernels, resolve_backend
from models.mamba_utils import BiMamba2Wrapper


def test_auto_resolves_by_device_and_mamba_ssm(monkeypatch):
    monkeypatch.setattr(backend, "mamba_ssm_available", lambda: True)
    assert resolve_backend("auto", "cuda") == "triton"
    assert resolve_backend("auto", "cpu") == "torch"
    monkeypatch.setattr(backend, "mamba_ssm_available", lambda: False)
    assert resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(RuntimeError, match="install_gpu.sh"):
        resolve_backend("triton", "cuda")
    with pytest.raises(ValueError, match="unknown Mamba2 backend 'cuda'.*mamba_backend"):
        resolve_backend("cuda", "cpu")


def test_the_allowed_names_are_the_hparams_and_each_resolves():
    assert backend.BACKENDS is CHOICES["mamba_backend"]
    with pytest.raises(ValueError, match="mamba_backend"):
        create_hparams("mamba_backend=cuda")
    for name in ("auto", "torch", "ref"):
        create_hparams(f"mamba_backend={name}")  # accepted by the parser, and resolved here
        assert mixer_kernels(name, "cpu").backend in ("torch", "ref")


def test_the_cpu_kernels_are_the_pytorch_references():
    torch_kernels, ref_kernels = mixer_kernels("torch", "cpu"), mixer_kernels("ref", "cpu")
    assert torch_kernels.scan is ssd.ssd_torch and ref_kernels.scan is ssd.ssd_ref
    for kernels in (torch_kernels, ref_kernels):
        assert kernels.conv is conv.causal_conv_silu_ref
        assert kernels.bidirectional_norm is gated_norm.bidirectional_gated_rms_norm_ref
        assert not kernels.replays_mixer(torch.zeros(2, 40, 32), 16)


def test_kernels_are_made_once_and_follow_a_module_to_another_device():
    kernels = mixer_kernels("auto", "cpu", 16384, 16384)
    assert mixer_kernels("auto", "cpu", 16384, 16384) is kernels
    assert kernels.for_device(torch.device("cpu")) is kernels
    moved = kernels.for_device(torch.device("meta"))
    assert (moved.device_type, moved.name, moved.mixer_graph_frames) == ("meta", "auto", 16384)
    assert kernels.without_graphs().scan_graph_frames == kernels.without_graphs().mixer_graph_frames == 0
    with pytest.raises(ValueError, match="mamba_scan_graph_frames=-1"):
        mixer_kernels("torch", "cpu", -1)


def test_a_wrapper_resolves_its_kernels_at_construction_not_per_call(monkeypatch):
    wrapper = BiMamba2Wrapper(32, d_state=8, headdim=16, chunk_size=16, backend="torch")
    assert wrapper.kernels is mixer_kernels("torch", "cpu", wrapper.kernels.scan_graph_frames,
                                            wrapper.kernels.mixer_graph_frames)
    calls = []
    monkeypatch.setattr(backend, "resolve_backend", lambda *args: calls.append(args))
    wrapper(torch.randn(2, 20, 32))
    assert calls == []
