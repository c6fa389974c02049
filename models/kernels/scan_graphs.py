"""mamba_ssm's SSD scan replayed as CUDA graphs: the same kernels without the host's cost of launching them.

One eager ``mamba_chunk_scan_combined`` launches 5 Triton kernels forward and 19 backward (the backward recomputes
the forward's), most of them through Triton's autotuner; at paper-typical lengths (16 x 10 s of audio) its Python
and launches take the host longer than the GPU takes to run them (bench/NOTES.md, "Scan graphs"). A CUDA graph of
the forward and one of the backward, captured once per input shape (``graphs.PaddedGraphs``) and replayed, cost
one launch each.

    y = graphed_chunk_scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True, max_frames=16384)

takes ``mamba_chunk_scan_combined``'s arguments (without a gate z, initial states or seq_idx) and gives its
output and gradients. Calls too large for graphs (more than ``max_frames`` frames: the GPU's time dominates there
and the copies and buffers would cost), calls during another capture (bench/speed.py's whole-model graphs) and
calls off CUDA run mamba_ssm's eager scan, which is also the reference of the GPU tests. ``triton_scan`` gives the
scan the triton backend runs.
"""
import functools
import logging
from typing import Callable

import torch

from models.kernels.graphs import MAX_GRAPHS, PaddedGraphs, capture_cuda_graph, round_up

logger = logging.getLogger(__name__)

# Calls of up to this many frames (batch x length padded to the chunk) replay graphs by default (the hparam
# mamba_scan_graph_frames): 16 x 10 s (16 x 512 padded frames) to 4 x 60 s (4 x 3072), where the eager scan's host
# time exceeds its GPU time; 1 x 600 s (30208) stays eager, where the GPU's time dominates the step.
SCAN_GRAPH_FRAMES = 16384


@functools.cache  # once per process: the import, and the line that explains a long first step
def eager_triton_scan() -> Callable:
    """mamba_ssm's ``mamba_chunk_scan_combined``."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    logger.info("Mamba2 triton backend: mamba_ssm's kernels compile on their first use on a machine (every autotune "
                "configuration, fp32 and bf16 apart: minutes), later runs load them from Triton's cache "
                "(TRITON_CACHE_DIR, default ~/.triton/cache)")
    return mamba_chunk_scan_combined


def triton_scan(graph_frames: int) -> Callable:
    """The triton backend's scan: mamba_ssm's, replayed as CUDA graphs for calls of up to ``graph_frames`` frames
    (0: always launched eagerly)."""
    eager = eager_triton_scan()
    return functools.partial(graphed_chunk_scan, max_frames=graph_frames) if graph_frames > 0 else eager


def _scan_forward(x, dt, A, B, C, D, dt_bias, *, chunk_size: int, dt_softplus: bool) -> tuple[torch.Tensor]:
    from mamba_ssm.ops.triton.ssd_combined import _mamba_chunk_scan_combined_fwd

    out = _mamba_chunk_scan_combined_fwd(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias,
                                         dt_softplus=dt_softplus)[0]
    return (out,)


def _scan_backward(dout, x, dt, A, B, C, D, dt_bias, *, chunk_size: int, dt_softplus: bool) -> tuple:
    from mamba_ssm.ops.triton.ssd_combined import _mamba_chunk_scan_combined_bwd

    # its ``out`` (after C) is read only with a gate z, which this scan has not: x stands in for its shape
    dx, ddt, dA, dB, dC, dD, _, ddt_bias, _ = _mamba_chunk_scan_combined_bwd(
        dout, x, dt, A, B, C, x, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus)
    return dx, ddt, dA, dB, dC, dD, ddt_bias


#                    x     dt    A      B     C     D      dt_bias  (and their gradients, in the same order)
SCAN_TIMED_INPUTS = (True, True, False, True, True, False, False)


def scan_graphs(chunk_size: int, dt_softplus: bool, capture: Callable = capture_cuda_graph,
                forward: Callable = _scan_forward, backward: Callable = _scan_backward,
                max_graphs: int = MAX_GRAPHS) -> tuple[PaddedGraphs, PaddedGraphs]:
    """The forward's and the backward's PaddedGraphs of one (chunk_size, dt_softplus), sharing a memory pool."""
    pool = torch.cuda.graph_pool_handle() if capture is capture_cuda_graph else None
    fixed = dict(chunk_size=chunk_size, dt_softplus=dt_softplus)
    return (PaddedGraphs(functools.partial(forward, **fixed), SCAN_TIMED_INPUTS, (True,), chunk_size, max_graphs,
                         capture, pool),
            PaddedGraphs(functools.partial(backward, **fixed), (True,) + SCAN_TIMED_INPUTS, SCAN_TIMED_INPUTS,
                         chunk_size, max_graphs, capture, pool))


class GraphedChunkScan(torch.autograd.Function):
    """The SSD scan whose forward and backward replay ``graphs`` (``scan_graphs``'s pair)."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, dt_bias, graphs):
        ctx.save_for_backward(x, dt, A, B, C, D, dt_bias)
        ctx.backward_graphs = graphs[1]
        return graphs[0](x, dt, A, B, C, D, dt_bias)[0]

    @staticmethod
    def backward(ctx, dout):
        return *ctx.backward_graphs(dout, *ctx.saved_tensors), None


_cuda_scan_graphs = functools.cache(scan_graphs)  # one pair per (chunk_size, dt_softplus) in a process


def release_scan_graphs() -> None:
    """Drop every graph and buffer ``graphed_chunk_scan`` keeps (they live until the process ends otherwise)."""
    _cuda_scan_graphs.cache_clear()


def graphed_chunk_scan(x, dt, A, B, C, chunk_size, D=None, dt_bias=None, dt_softplus=False,
                       max_frames: int = SCAN_GRAPH_FRAMES):
    """``mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus)``,
    forward and backward replayed as CUDA graphs when batch x (seqlen padded to chunk_size) <= max_frames;
    otherwise (or without D or dt_bias, off CUDA, or while another graph is being captured) that eager call.
    x (batch, seqlen, nheads, headdim), dt (batch, seqlen, nheads), A (nheads,), B, C (batch, seqlen, ngroups,
    d_state), D, dt_bias (nheads,) -> y like x"""
    frames = x.shape[0] * round_up(x.shape[1], chunk_size)
    if (D is None or dt_bias is None or not x.is_cuda or frames > max_frames
            or torch.cuda.is_current_stream_capturing()):
        return eager_triton_scan()(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus)
    return GraphedChunkScan.apply(x, dt, A, B, C, D, dt_bias, _cuda_scan_graphs(chunk_size, dt_softplus))
