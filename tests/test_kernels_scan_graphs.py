"""models/kernels/graphs.py and scan_graphs.py on CPU: the static buffers, padding and shape cache of the graphed SSD
scan, with each "graph" rerun eagerly (``rerun_eagerly``, what a replay does) and the chunked PyTorch scan standing in
for mamba_ssm's kernels. The CUDA graphs of mamba_ssm's scan themselves are tests/test_gpu.py's."""
import pytest
import torch

from models.kernels.graphs import PaddedGraphs, rerun_eagerly, round_up
from models.kernels.scan_graphs import GraphedChunkScan, scan_graphs
from models.kernels.ssd import ssd_chunked
from tests.conftest import relative_error

CHUNK = 64


def torch_forward(x, dt, A, B, C, D, dt_bias, *, chunk_size, dt_softplus):
    return (ssd_chunked(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus),)


def torch_backward(dout, x, dt, A, B, C, D, dt_bias, *, chunk_size, dt_softplus):
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (x, dt, A, B, C, D, dt_bias)]
        y = ssd_chunked(*leaves[:5], chunk_size, D=leaves[5], dt_bias=leaves[6], dt_softplus=dt_softplus)
        return torch.autograd.grad(y, leaves, dout)


def scan_inputs(seqlen, batch=2, nheads=4, headdim=8, d_state=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    x, dt = make(batch, seqlen, nheads, headdim), make(batch, seqlen, nheads) - 2
    A = -torch.rand(nheads, generator=g) * 4 - 0.5
    B, C = make(batch, seqlen, 2, d_state), make(batch, seqlen, 2, d_state)
    D, dt_bias = make(nheads), make(nheads)
    return [t.requires_grad_() for t in (x, dt, A, B, C, D, dt_bias)]


def output_and_grads(scan, inputs, seed):
    y = scan(*inputs)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return y, torch.autograd.grad((y * weights).sum(), inputs)


def test_round_up():
    assert [round_up(n, 64) for n in (1, 63, 64, 65, 128)] == [64, 64, 64, 128, 128]


def test_graphed_scan_agrees_with_the_eager_scan_across_lengths_of_one_graph():
    """Lengths that round up to one chunk multiple share a graph; a shorter call after a longer one finds zeros
    again past its end (else the longer one's frames would reach the short one's gradients of A, D and dt_bias)."""
    graphs = scan_graphs(CHUNK, True, capture=rerun_eagerly, forward=torch_forward, backward=torch_backward)
    eager = lambda x, dt, A, B, C, D, dt_bias: ssd_chunked(x, dt, A, B, C, CHUNK, D=D, dt_bias=dt_bias,  # noqa: E731
                                                           dt_softplus=True)
    graphed = lambda *inputs: GraphedChunkScan.apply(*inputs, graphs)  # noqa: E731
    for seed, seqlen in enumerate((100, 70, 128, 70)):  # all pad to 128
        inputs = scan_inputs(seqlen, seed=seed)
        (y_graph, g_graph), (y_eager, g_eager) = (output_and_grads(scan, inputs, seed) for scan in (graphed, eager))
        assert y_graph.shape == y_eager.shape
        assert relative_error(y_graph, y_eager) < 1e-5, seqlen
        for name, a, b in zip(("x", "dt", "A", "B", "C", "D", "dt_bias"), g_graph, g_eager):
            assert a.shape == b.shape and relative_error(a, b) < 1e-5, (seqlen, name)
    assert graphs[0].captures == graphs[1].captures == 1
    assert next(iter(graphs[0].graphs))[0][0] == (2, 128, 4, 8)  # x's static buffer: the padded length


def test_padded_graphs_keep_the_shapes_used_last():
    cumsum = lambda x, w: (x.cumsum(1) * w, w * 2)  # noqa: E731  a causal function of time, and an untimed output
    graphs = PaddedGraphs(cumsum, timed_inputs=(True, False), timed_outputs=(True, False), multiple=8, max_graphs=2,
                          capture=rerun_eagerly)
    w = torch.tensor(3.0)
    calls = [(1, 5), (2, 5), (1, 7), (3, 9), (2, 3)]  # (batch, frames): keys (1, 8), (2, 8), (1, 8), (3, 16), (2, 8)
    for i, (batch, frames) in enumerate(calls):
        x = torch.randn(batch, frames, 2)
        with torch.inference_mode(i == 0):  # buffers made in inference mode take later calls' tensors too
            out, doubled = graphs(x, w)
        torch.testing.assert_close(out, x.cumsum(1) * w)
        assert out.shape == (batch, frames, 2) and doubled == 6
    # (3, 16) pushed out (2, 8), used before (1, 8)'s second call; (2, 8) then pushed out (1, 8) and was made again
    assert graphs.captures == 4
    assert [key[0][0] for key in graphs.graphs] == [(3, 16, 2), (2, 8, 2)]
    with pytest.raises(ValueError, match="3 tensors for 2 inputs"):
        graphs(x, w, w)
