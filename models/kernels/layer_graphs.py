"""A stack of identical encoder layers replayed as CUDA graphs where no gradient is taken: one graph per padded
(batch, frames) shape, shared by every layer of the stack, each layer's parameters copied into the graph's template
layer in one launch before its replay. The distillation teacher (train_distill.py) runs its attention layers so:
launching a layer's ~25 kernels costs the host more time than the GPU needs to run them at the seed's batch shapes,
and a training step issues the teacher's forward once per micro-batch.

    graphs = LayerGraphs(encoder.layers[0], multiple=32)
    with graphs.replaying(encoder.layers, frame_mask):   # layer(hidden) now replays, its hooks still run
        hidden = encoder.layers[3](hidden)               # == layer(hidden, attention_mask=<keep-mask of frame_mask>)

- A layer is a module ``layer(hidden (batch, frames, d), attention_mask=(batch, 1, frames, frames) bool keep-mask)``
  -> (batch, frames, d), as Hugging Face's Wav2Vec2 encoder layers under SDPA, whose outputs at an utterance's frames
  do not depend on the frames after its end: attention masks them as keys, everything else works per frame. So
  the time axis is padded to a multiple of ``multiple`` (``graphs.PaddedGraphs``) and lengths that round up alike
  share a graph; the padding is masked like any other.
- The template is a copy of the first layer, made once; its parameters and buffers are the graphs' static inputs,
  so every shape shares one copy of them. Its train/eval mode follows the layer called (dropout inside a graph
  draws new values at every replay: CUDA graphs advance the generator's offset), and the autocast dtype at the call
  picks the graphs, one ``PaddedGraphs`` per (mode, autocast dtype).
- ``capture``: ``graphs.capture_cuda_graph``, or ``graphs.rerun_eagerly`` (the CPU tests: what a replay does).
"""
import contextlib
import copy
import functools
from typing import Callable

import torch
from torch import nn

from models.kernels.graphs import MAX_GRAPHS, PaddedGraphs, capture_cuda_graph, graphs_apply

# The teacher's layers replay graphs at up to this many frames (batch x length padded to TIME_MULTIPLE; the hparam
# teacher_graph_frames): the seed's distillation micro-batches hold at most ~6000 frames (batch_frame_limit 1.9e6
# samples). Larger batches (evaluation) stay eager: their launches cost little beside their GPU time.
LAYER_GRAPH_FRAMES = 16384
# 32 frames (0.64 s of audio): ~5% padding on TED-LIUM's ~6 s segments; SDPA's mask rows stay 16-aligned
TIME_MULTIPLE = 32


class LayerGraphs:
    """Replays of ``layer``'s structure, shared by every layer of its stack (see the module docstring)."""

    def __init__(self, layer: nn.Module, multiple: int = TIME_MULTIPLE, max_frames: int = LAYER_GRAPH_FRAMES,
                 max_graphs: int = MAX_GRAPHS, capture: Callable = capture_cuda_graph):
        with torch.inference_mode(False), torch.no_grad():
            self.template = copy.deepcopy(layer).requires_grad_(False)
        self.template_tensors = [*self.template.parameters(), *self.template.buffers()]
        self.multiple, self.max_frames, self.max_graphs, self.capture = multiple, max_frames, max_graphs, capture
        self.pool = torch.cuda.graph_pool_handle() if capture is capture_cuda_graph else None
        self.graphs: dict[tuple, PaddedGraphs] = {}  # (training, autocast dtype) -> graphs of its shapes

    @property
    def captures(self) -> int:
        return sum(g.captures for g in self.graphs.values())

    def applies(self, hidden: torch.Tensor) -> bool:
        """Whether a call on ``hidden`` (batch, frames, d) replays: at most ``max_frames`` frames once padded, no
        gradient, and no other graph being captured (bench/speed.py captures whole models). A ``rerun_eagerly``
        capture applies on any device (the CPU tests)."""
        return not torch.is_grad_enabled() and graphs_apply(hidden, self.multiple, self.max_frames,
                                                            any_device=self.capture is not capture_cuda_graph)

    def _run_template(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor]:
        batch, frames = frame_mask.shape
        keep = frame_mask[:, None, None, :].expand(batch, 1, frames, frames)  # SDPA's boolean keep-mask, a view
        return (self.template(hidden, attention_mask=keep),)

    def __call__(self, layer: nn.Module, hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``layer`` on hidden (batch, frames, d) with frame_mask (batch, frames) bool, True on each utterance's
        frames: (batch, frames, d), from the graph of this padded shape."""
        device_type = hidden.device.type
        autocast = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        key = (layer.training, autocast)
        if key not in self.graphs:
            self.graphs[key] = PaddedGraphs(self._run_template, (True, True), (True,), self.multiple,
                                            self.max_graphs, self.capture, self.pool)
        self.template.train(layer.training)
        torch._foreach_copy_(self.template_tensors, [*layer.parameters(), *layer.buffers()])
        return self.graphs[key](hidden, frame_mask)[0]

    @contextlib.contextmanager
    def replaying(self, layers, frame_mask: torch.Tensor):
        """Within it, calling any of ``layers`` replays its graph with ``frame_mask`` (batch, frames) instead of
        running its forward; forward hooks on the layers (``models.build.record_layer_outputs``) still run."""
        def replay(layer, hidden_states, attention_mask=None):  # the layer's own mask form is frame_mask's
            return self(layer, hidden_states, frame_mask)

        for layer in layers:
            layer.forward = functools.partial(replay, layer)
        try:
            yield
        finally:
            for layer in layers:
                del layer.forward  # the class's forward again
