"""The fused mixer replayed as CUDA graphs (models/kernels/mixer_graphs.py; models/mamba_utils.py's mixer_graphs) on
CPU: static buffers padded in time and shared by every length that rounds up alike, padded batches through their
lengths, the forward recomputed in backward, and BiMamba2Wrapper's dispatch to it, with each "graph" rerun eagerly
(``rerun_eagerly``, what a replay does) on the torch backend. The CUDA graphs of the triton mixer are
tests/test_gpu.py's."""
import dataclasses
import functools

import pytest
import torch

from models import mamba_utils
from models.build import build_asr_model
from models.kernels.backend import MixerKernels, mixer_kernels
from models.kernels.graphs import rerun_eagerly
from models.kernels.mixer_graphs import GraphedRecompute
from models.mamba_utils import BiMamba2Wrapper, bimamba2_fused, mixer_graphs, padded_reverse_index
from tests.conftest import relative_error

CHUNK = 16
D_MODEL = 32


def small_wrapper(**kwargs) -> BiMamba2Wrapper:
    torch.manual_seed(0)
    return BiMamba2Wrapper(D_MODEL, d_state=8, headdim=16, chunk_size=CHUNK, backend="torch", **kwargs)


def output_and_grads(run, hidden, wrapper, valid, seed):
    """run() on hidden, padded frames zeroed as the wrapper does, and the gradients of a random weighting of it."""
    out = run() * valid
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return out, torch.autograd.grad((out.float() * weights).sum(), [hidden, *wrapper.parameters()])


@pytest.mark.parametrize("autocast", [False, True])
def test_graphed_mixer_agrees_with_the_eager_mixer_across_lengths_of_one_graph(autocast):
    """Every call pads to 48 frames and shares one graph each way: padded batches (through their lengths) and
    unpadded ones; a shorter call after a longer one finds zeros again past its end (else the longer call's output
    gradient there would reach the shorter one's gradients through both scans)."""
    wrapper = small_wrapper()
    dims, fw, bw = wrapper.fused_arguments()
    dtype = torch.bfloat16 if autocast else None
    graphs = mixer_graphs(dims, wrapper.kernels, dtype, capture=rerun_eagerly)
    for seed, (seqlen, lengths) in enumerate(((40, [40, 40]), (37, [37, 20]), (48, [48, 3]), (33, [33, 33]))):
        hidden = torch.randn(2, seqlen, D_MODEL, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        lengths = torch.tensor(lengths)
        index = padded_reverse_index(lengths, seqlen)
        valid = (torch.arange(seqlen)[None, :] < lengths[:, None])[..., None]  # (batch, seqlen, 1)
        results = []
        for run in (lambda: GraphedRecompute.apply(hidden, graphs, 1, lengths, *fw, *bw),
                    lambda: bimamba2_fused(dims, fw, bw, hidden, index, wrapper.kernels)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                results.append(output_and_grads(run, hidden, wrapper, valid, seed))
        (out_graph, grads_graph), (out_eager, grads_eager) = results
        tolerance = 2e-2 if autocast else 1e-5  # bf16: GEMMs of 48 frames against 40 may round apart
        assert out_graph.dtype == out_eager.dtype and out_graph.shape == out_eager.shape
        assert relative_error(out_graph, out_eager) < tolerance, seqlen
        names = ["hidden", *(name for name, _ in wrapper.named_parameters())]
        for name, a, b in zip(names, grads_graph, grads_eager):
            assert a.shape == b.shape and a.dtype == b.dtype and relative_error(a, b) < tolerance, (seqlen, name)
    assert graphs[0].captures == graphs[1].captures == 1
    assert next(iter(graphs[0].graphs))[0][0] == (2, 48, D_MODEL)  # hidden's static buffer: the padded length


@pytest.fixture
def cpu_mixer_graphs(monkeypatch):
    """BiMamba2Wrapper's graphed path on CPU: graphs rerun eagerly, wherever mixer_graph_frames allows them (the
    torch kernels given the triton backend's policy)."""
    graphs = functools.cache(functools.partial(mixer_graphs, capture=rerun_eagerly))
    monkeypatch.setattr(mamba_utils, "_cuda_mixer_graphs", graphs)
    monkeypatch.setattr(MixerKernels, "replays_mixer", lambda self, hidden, multiple: self.mixer_graph_frames > 0)
    return graphs


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_wrapper_replays_the_mixer_graphs_and_gives_the_eager_outputs_and_gradients(cpu_mixer_graphs, padded,
                                                                                  recompute):
    """The wrapper with graphs against itself with mixer_graph_frames=0, through the Hugging Face mask forms it
    gets (none for an unpadded batch, 2-D for a converted encoder): outputs, padded frames zero, every gradient.
    With a gradient it replays only where it recomputes the forward anyway (``recompute``); without one, always."""
    graphed, eager = small_wrapper(recompute=recompute), small_wrapper(recompute=recompute, mixer_graph_frames=0)
    hidden = torch.randn(3, 30, D_MODEL, requires_grad=True)
    mask = (torch.arange(30)[None, :] < torch.tensor([[30], [17], [4]])).long() if padded else None
    results = []
    for wrapper in (graphed, eager):
        out, _ = wrapper(hidden, attention_mask=mask)
        grads = torch.autograd.grad(out.square().sum(), [hidden, *wrapper.parameters()])
        with torch.no_grad():
            results.append((out, grads, wrapper(hidden, attention_mask=mask)[0]))
    assert relative_error(results[0][0], results[1][0]) < 1e-5
    assert relative_error(results[0][2], results[1][2]) < 1e-5  # without a gradient
    for a, b in zip(results[0][1], results[1][1]):
        assert relative_error(a, b) < 1e-5
    if padded:
        assert results[0][0][2, 4:].abs().max() == results[0][2][2, 4:].abs().max() == 0
    forward, backward = cpu_mixer_graphs(graphed.fused_arguments()[0], graphed.kernels, None)
    # the eager wrapper made none; the forward without a gradient replays the forward graph
    assert (forward.captures, backward.captures) == (1, 1 if recompute else 0)


def test_wrapper_graphs_in_inference_mode(cpu_mixer_graphs):
    """infer.py's forward: no gradient, buffers made in inference mode usable later outside it."""
    wrapper, eager = small_wrapper(recompute=True), small_wrapper(mixer_graph_frames=0)
    hidden = torch.randn(2, 20, D_MODEL)
    with torch.inference_mode():
        out, _ = wrapper(hidden)
        reference, _ = eager(hidden)
    assert relative_error(out, reference) < 1e-5
    out, _ = wrapper(hidden.requires_grad_())  # the same forward graph, now with a gradient
    out.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    graphs = cpu_mixer_graphs(wrapper.fused_arguments()[0], wrapper.kernels, None)
    assert [g.captures for g in graphs] == [1, 1]


def test_graphs_apply_to_triton_mixers_on_cuda_up_to_their_frames():
    hidden = torch.zeros(2, 40, D_MODEL)  # 2 x 48 frames padded to the chunk
    assert not small_wrapper().kernels.replays_mixer(hidden, CHUNK)  # the torch backend
    triton_policy = dataclasses.replace(mixer_kernels("torch", "cpu"), backend="triton", mixer_graph_frames=16384)
    assert not triton_policy.replays_mixer(hidden, CHUNK)  # not on CUDA
    with pytest.raises(ValueError, match="mamba_mixer_graph_frames"):
        small_wrapper(mixer_graph_frames=-1)


def test_mixer_graph_frames_reaches_every_wrapper_from_the_hparams(tiny_hparams):
    model = build_asr_model(tiny_hparams("asr_use_mamba=True,mamba_mixer_graph_frames=4096"))
    wrappers = [m for m in model.modules() if isinstance(m, BiMamba2Wrapper)]
    assert wrappers and all(w.kernels.mixer_graph_frames == 4096 for w in wrappers)
