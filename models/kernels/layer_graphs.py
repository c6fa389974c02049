"""A stack of identical encoder layers replayed as CUDA graphs: one graph per padded (batch, frames) shape, shared by
every layer of the stack, each layer's parameters copied into the graph's template layer in one launch before its
replay. Where no gradient is taken, ``LayerGraphs``: the distillation teacher (train_distill.py) runs its attention
layers so: launching a layer's ~25 kernels costs the host more time than the GPU needs to run them at the seed's
batch shapes, and a training step issues the teacher's forward once per micro-batch. In training,
``TrainingLayerGraphs`` (the student's, hparam ``student_graph_frames``): a forward graph and a backward graph that
recomputes the layer, with the layer's dropout masks drawn outside the graphs so that both apply the same ones.

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

from models.kernels.backend import MixerKernels, mixer_kernels
from models.kernels.graphs import MAX_GRAPHS, PaddedGraphs, capture_cuda_graph, current_autocast_dtype, graphs_apply
from models.kernels.mixer_graphs import GraphedRecompute, recompute_graph_pair

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
        key = (layer.training, current_autocast_dtype(hidden.device.type))
        if key not in self.graphs:
            self.graphs[key] = PaddedGraphs(self._run_template, (True, True), (True,), self.multiple,
                                            self.max_graphs, self.capture, self.pool)
        self.template.train(layer.training)
        torch._foreach_copy_(self.template_tensors, [*layer.parameters(), *layer.buffers()])
        return self.graphs[key](hidden, frame_mask)[0]

    def replaying(self, layers, frame_mask: torch.Tensor):
        return replaying(self, layers, frame_mask)


@contextlib.contextmanager
def replaying(graphs: Callable, layers, frame_mask: torch.Tensor):
    """Within it, calling any of ``layers`` runs ``graphs(layer, hidden, frame_mask)`` with ``frame_mask`` (batch,
    frames) instead of its forward; forward hooks on the layers (``models.build.record_layer_outputs``) still run."""
    def replay(layer, hidden_states, attention_mask=None):  # the layer's own mask form is frame_mask's
        return graphs(layer, hidden_states, frame_mask)

    for layer in layers:
        layer.forward = functools.partial(replay, layer)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward  # the class's forward again


class GivenMaskDropout(nn.Module):
    """nn.Dropout applying a mask drawn outside it: x (..., width) kept where ``mask`` (..., width) bool is True,
    scaled by 1 / (1 - p) as nn.Dropout does. ``mask`` is set before each call (``TrainingLayerGraphs``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.mask = p, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(self.mask, x * (1.0 / (1.0 - self.p)), 0.0)


class TrainingLayerGraphs:
    """Replays of ``layer``'s structure with gradients, shared by every layer of its stack: a graph of the forward
    and one of the backward, which recomputes the layer (``mixer_graphs.recompute_graph_pair``), per padded shape
    and autocast dtype. A layer is a BiMamba2 encoder layer, ``layer(hidden (batch, frames, d), attention_mask=
    (batch, frames) bool keep-mask) -> (batch, frames, d)``, whose outputs at an utterance's frames do not depend on
    the frames after its end.

    - The template is a copy of the first layer whose nn.Dropout modules become ``GivenMaskDropout``: each call
      draws the layer's masks (one ``bernoulli_`` each, ``draw_masks``) and passes them to both graphs, so the
      backward's recomputation drops what the forward dropped. A mixer's own recomputation is switched off in the
      template: the backward graph recomputes the whole layer.
    - Each layer's parameters are the graphs' static inputs, copied in before each replay (one launch), and its
      gradients come out flattened in one tensor; nothing is kept between a layer's forward and backward but its
      inputs and masks, as with activation checkpointing: one more forward of each layer on the GPU, for one graph
      launch each way (and the copies in and out) on the host.
    """

    def __init__(self, layer: nn.Module, multiple: int = TIME_MULTIPLE, max_frames: int = LAYER_GRAPH_FRAMES,
                 max_graphs: int = MAX_GRAPHS, capture: Callable = capture_cuda_graph):
        with torch.inference_mode(False), torch.no_grad():
            self.template = copy.deepcopy(layer).requires_grad_(False).train()
        self.dropouts = []  # the template's GivenMaskDropout modules; self.widths: their inputs' last dims
        for name, module in list(self.template.named_modules()):
            if isinstance(module, nn.Dropout) and module.p > 0:
                given = GivenMaskDropout(module.p)
                self.template.set_submodule(name, given)
                self.dropouts.append(given)
            if getattr(module, "recompute", False):  # BiMamba2Wrapper's checkpointing: the graphs recompute
                module.recompute = False
        self.widths = self._dropout_widths()
        self.source = layer  # its train/eval mode is the stack's
        self.names = [name for name, _ in self.template.named_parameters()]
        self.multiple, self.max_frames, self.max_graphs, self.capture = multiple, max_frames, max_graphs, capture
        self.graphs: dict = {}  # autocast dtype -> (forward, backward) PaddedGraphs

    def _dropout_widths(self) -> list[int]:
        """The last dim of each dropout's input (the layer's model or feed-forward dim), from one call of a CPU copy
        of the template on one frame, its mixers on the torch backend (whatever backend the layer runs)."""
        probe = copy.deepcopy(self.template).cpu().float()
        for module in probe.modules():
            if isinstance(getattr(module, "kernels", None), MixerKernels):
                module.kernels = mixer_kernels("torch", "cpu")
        dropouts = [m for m in probe.modules() if isinstance(m, GivenMaskDropout)]
        widths = [0] * len(dropouts)

        def record(index, module, args):
            widths[index] = args[0].shape[-1]

        for i, d in enumerate(dropouts):  # the probe is thrown away with its hooks
            d.register_forward_pre_hook(functools.partial(record, i))
            d.mask = torch.ones((), dtype=torch.bool)
        d_model = next(m for m in probe.modules() if isinstance(m, nn.LayerNorm)).normalized_shape[0]
        with torch.no_grad():
            probe(torch.zeros(1, 1, d_model), attention_mask=torch.ones(1, 1, dtype=torch.bool))
        return widths

    @property
    def captures(self) -> int:
        return sum(g.captures for pair in self.graphs.values() for g in pair)

    def applies(self, hidden: torch.Tensor) -> bool:
        """Whether a call on ``hidden`` (batch, frames, d) replays: the stack training with a gradient, at most
        ``max_frames`` frames once padded, and no other graph being captured. A ``rerun_eagerly`` capture applies on
        any device (the CPU tests)."""
        return (self.source.training and torch.is_grad_enabled()
                and graphs_apply(hidden, self.multiple, self.max_frames,
                                 any_device=self.capture is not capture_cuda_graph))

    def draw_masks(self, batch: int, frames: int, device: torch.device) -> list[torch.Tensor]:
        """One call's dropout masks, (batch, frames, width) bool each, True where kept."""
        return [torch.empty(batch, frames, width, dtype=torch.bool, device=device).bernoulli_(1.0 - d.p)
                for d, width in zip(self.dropouts, self.widths)]

    def _run_template(self, hidden, frame_mask, *masks_and_params, autocast_dtype) -> tuple[torch.Tensor]:
        masks, params = masks_and_params[:len(self.dropouts)], masks_and_params[len(self.dropouts):]
        for dropout, mask in zip(self.dropouts, masks):  # mask (batch, frames, width) bool
            dropout.mask = mask
        # no cache of cast weights: a graph must cast the parameters each replay copies in. A new view of the frame
        # mask each call: BiMamba2's PaddingLayout caches its layout per mask tensor, which a capture must compute
        # from the static buffer, not take from the eager call before it.
        with torch.autocast(hidden.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None,
                            cache_enabled=False):
            out = torch.func.functional_call(self.template, dict(zip(self.names, params)), (hidden,),
                                             {"attention_mask": frame_mask.view(frame_mask.shape)})
        return (out,)

    def __call__(self, layer: nn.Module, hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``layer`` on hidden (batch, frames, d) with frame_mask (batch, frames) bool, True on each utterance's
        frames: (batch, frames, d), from the graphs of this padded shape; its backward replays the other graph."""
        autocast = current_autocast_dtype(hidden.device.type)
        if autocast not in self.graphs:
            run = functools.partial(self._run_template, autocast_dtype=autocast)
            self.graphs[autocast] = recompute_graph_pair(
                run, len(self.names), self.multiple, self.capture, self.max_graphs,
                timed_constants=(True,) * (1 + len(self.dropouts)))
        masks = self.draw_masks(*frame_mask.shape, hidden.device)
        params = [p for _, p in layer.named_parameters()]
        return GraphedRecompute.apply(hidden, self.graphs[autocast], 1 + len(masks), frame_mask, *masks, *params)

    def replaying(self, layers, frame_mask: torch.Tensor):
        return replaying(self, layers, frame_mask)
