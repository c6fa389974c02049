"""CUDA graphs per input shape, with the time axis padded: a function of tensors replayed without the host's cost
of launching its kernels (``PaddedGraphs``). mamba_ssm's SSD scan (``scan_graphs.py``) and the whole fused mixer
(``mixer_graphs.py``) replay through it.

- A graph replays fixed addresses, so each shape gets static input buffers; a call copies its tensors in, replays,
  and copies the outputs out (the next call, the next layer's, overwrites them).
- The time axis is padded with zeros to a multiple of ``multiple`` (the scan's chunk): a causal scan's outputs at
  the real frames do not depend on the frames after them, and the zero output gradient there adds nothing to any
  input's gradient, so lengths that round up alike share a graph, at no extra work (the kernels compute whole
  chunks anyway). Every encoder layer of a batch shares its graphs.
- A new shape runs once eagerly on its buffers (Triton compiles and autotunes there, outside the capture), is
  captured and replayed. The ``max_graphs`` shapes used last are kept; their graphs share one memory pool, which
  is safe because each replay's outputs are copied out before any other graph replays.
- ``rerun_eagerly`` does what a replay does on any device: the CPU tests run ``PaddedGraphs`` with it, and it is
  the reference of the replays.
"""
import dataclasses
import functools
from typing import Callable

import torch

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


def current_autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force on ``device_type``, None without autocast: a graph captures the casts of its
    call, so each dtype needs graphs of its own."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def graphs_apply(hidden: torch.Tensor, multiple: int, max_frames: int, any_device: bool = False) -> bool:
    """Whether a call on ``hidden`` (batch, frames, ...) replays graphs: at most ``max_frames`` frames (batch x
    length padded to ``multiple``), on CUDA, and no other graph being captured (bench/speed.py captures whole
    models). ``any_device``: graphs rerun eagerly (``rerun_eagerly``, the CPU tests), where only the frames count."""
    frames = hidden.shape[0] * round_up(hidden.shape[1], multiple)
    if not 0 < frames <= max_frames:
        return False
    return any_device or (hidden.is_cuda and not torch.cuda.is_current_stream_capturing())


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
