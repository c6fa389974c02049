"""mamba_ssm's SSD scan replayed as CUDA graphs: the same kernels without the host's cost of launching them.

One eager ``mamba_chunk_scan_combined`` launches 5 Triton kernels forward and 19 backward (the backward recomputes
the forward's), most of them through Triton's autotuner, and its Python takes ~5 ms of host time a call forward +
backward (``bench/launch_overhead.py``): more than the GPU needs for the call at paper-typical lengths (16 x 10 s
of audio), so there the eager student waits on its host. A CUDA graph of the forward and one of the backward,
captured once per input shape and replayed, cost one launch each.

    y = graphed_chunk_scan(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True, max_frames=16384)

takes ``mamba_chunk_scan_combined``'s arguments (without a gate z, initial states or seq_idx) and gives its
output and gradients. ``PaddedGraphs`` does the replaying for any function of tensors with a time axis:

- A graph replays fixed addresses, so each shape gets static input buffers; a call copies its tensors in, replays,
  and copies the outputs out (the next call, the next layer's, overwrites them).
- The time axis is padded with zeros to a multiple of ``multiple`` (the scan's chunk): a causal scan's outputs at
  the real frames do not depend on the frames after them, and the zero output gradient there adds nothing to any
  input's gradient, so lengths that round up alike share a graph, at no extra work (the kernels compute whole
  chunks anyway). Every encoder layer of a batch shares its graphs.
- A new shape runs once eagerly on its buffers (Triton compiles and autotunes there, outside the capture), is
  captured and replayed. The ``max_graphs`` shapes used last are kept; their graphs share one memory pool, which
  is safe because each replay's outputs are copied out before any other graph replays.
- Calls too large for graphs (more than ``max_frames`` frames: the GPU's time dominates there and the copies and
  buffers would cost), calls during another capture (bench/speed.py's whole-model graphs) and calls off CUDA run
  mamba_ssm's eager scan, which is also the reference of the GPU tests.
"""
import dataclasses
import functools
from typing import Callable

import torch

# Calls of up to this many frames (batch x length padded to the chunk) replay graphs by default (Mamba2's and the
# hparams' mamba_scan_graph_frames): 16 x 10 s (16 x 512 padded frames) to 4 x 60 s (4 x 3072), where the eager
# scan's host time exceeds its GPU time; 1 x 600 s (30208) stays eager, where the GPU's time dominates the step.
SCAN_GRAPH_FRAMES = 16384
# Shapes kept per function. The scan's forward and backward buffers of one shape at 16384 frames of the large
# model's mixer (32 heads of 64, d_state 128, bf16) take ~370 MiB, besides the intermediates in the shared pool.
MAX_GRAPHS = 8


def capture_cuda_graph(fn: Callable, inputs: list[torch.Tensor], pool) -> tuple[Callable[[], None], tuple]:
    """fn(*inputs) captured as a CUDA graph in memory pool ``pool``: (its replay, the outputs each replay writes).
    One eager call first, on a side stream as the capture: Triton compiles and autotunes there, which it cannot
    do during a capture. ``thread_local``: autograd captures the backward on its own thread while others run."""
    stream = _capture_stream(inputs[0].device)
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        fn(*inputs)
        graph.capture_begin(pool=pool, capture_error_mode="thread_local")
        try:
            outputs = fn(*inputs)
        finally:
            graph.capture_end()
    torch.cuda.current_stream().wait_stream(stream)
    return graph.replay, outputs


@functools.cache  # one per device: the allocator keeps what the warm-up calls freed for this stream's next ones
def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def rerun_eagerly(fn: Callable, inputs: list[torch.Tensor], pool=None) -> tuple[Callable[[], None], tuple]:
    """What a replay of ``capture_cuda_graph`` does, on any device: fn on the same inputs, into the same outputs.
    The CPU tests run ``PaddedGraphs`` with it."""
    outputs = fn(*inputs)

    def replay():
        for static, new in zip(outputs, fn(*inputs)):
            static.copy_(new)

    return replay, outputs


def round_up(frames: int, multiple: int) -> int:
    return -(-frames // multiple) * multiple


@dataclasses.dataclass
class _Graph:
    inputs: list[torch.Tensor]  # static inputs; along the time axis zero past ``frames``
    outputs: tuple[torch.Tensor, ...]  # what each replay writes
    replay: Callable[[], None]
    frames: int = 0  # frames of the last call copied in


class PaddedGraphs:
    """fn(*tensors) -> tuple of tensors, replayed from a graph per input shape with the time axis padded.

    ``timed_inputs`` / ``timed_outputs`` flag the tensors whose dim 1 is time (all of one length); the others
    (parameters, per-head gradients) are copied whole. ``capture``: ``capture_cuda_graph``, or ``rerun_eagerly``.
    """

    def __init__(self, fn: Callable, timed_inputs: tuple[bool, ...], timed_outputs: tuple[bool, ...], multiple: int,
                 max_graphs: int = MAX_GRAPHS, capture: Callable = capture_cuda_graph, pool=None):
        if multiple < 1 or max_graphs < 1:
            raise ValueError(f"PaddedGraphs: multiple {multiple} and max_graphs {max_graphs} must be at least 1")
        self.fn, self.timed_inputs, self.timed_outputs = fn, timed_inputs, timed_outputs
        self.multiple, self.max_graphs, self.capture, self.pool = multiple, max_graphs, capture, pool
        self.graphs: dict[tuple, _Graph] = {}  # shape key -> graph, the one used last at the end
        self.captures = 0

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(tensors) != len(self.timed_inputs):
            raise ValueError(f"PaddedGraphs: {len(tensors)} tensors for {len(self.timed_inputs)} inputs")
        frames = next(t.shape[1] for t, timed in zip(tensors, self.timed_inputs) if timed)
        padded = round_up(frames, self.multiple)
        shapes = [(t.shape[0], padded, *t.shape[2:]) if timed else tuple(t.shape)
                  for t, timed in zip(tensors, self.timed_inputs)]
        key = tuple((shape, t.dtype, t.device) for shape, t in zip(shapes, tensors))
        graph = self.graphs.pop(key, None)
        if graph is None:
            while len(self.graphs) >= self.max_graphs:  # the least recently used shape goes
                del self.graphs[next(iter(self.graphs))]
            with torch.inference_mode(False):  # buffers that later calls outside inference mode may write too
                inputs = [torch.zeros(shape, dtype=t.dtype, device=t.device) for shape, t in zip(shapes, tensors)]
                replay, outputs = self.capture(self.fn, inputs, self.pool)
            graph = _Graph(inputs, outputs, replay)
            self.captures += 1
        self.graphs[key] = graph

        untimed = [(static, t) for static, t, timed in zip(graph.inputs, tensors, self.timed_inputs) if not timed]
        if untimed:  # parameters: one launch for all of them
            torch._foreach_copy_([static for static, _ in untimed], [t for _, t in untimed])
        for static, t, timed in zip(graph.inputs, tensors, self.timed_inputs):
            if timed:
                static[:, :frames].copy_(t)
                if frames < graph.frames:  # a longer call's frames are left there: zeros again
                    static[:, frames:graph.frames].zero_()
        graph.frames = frames
        graph.replay()
        return tuple(out[:, :frames].clone() if timed else out.clone()
                     for out, timed in zip(graph.outputs, self.timed_outputs))


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
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    frames = x.shape[0] * round_up(x.shape[1], chunk_size)
    if (D is None or dt_bias is None or not x.is_cuda or frames > max_frames
            or torch.cuda.is_current_stream_capturing()):
        return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus)
    return GraphedChunkScan.apply(x, dt, A, B, C, D, dt_bias, _cuda_scan_graphs(chunk_size, dt_softplus))
