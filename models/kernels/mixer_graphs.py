"""A whole mixer (or encoder layer) replayed as CUDA graphs: its forward as one graph, its backward as one graph that
runs the forward again and differentiates it, captured once per padded shape (``graphs.PaddedGraphs``) and shared
by every layer of that shape, the layer's parameters copied into the graphs' buffers in one launch.

    forward, backward = recompute_graph_pair(mixer_fn, num_params=16, multiple=256)
    out = GraphedRecompute.apply(hidden, (forward, backward), 1, lengths, *params)

``mixer_fn(hidden, *constants, *params) -> (out,)`` is any function of a (batch, frames, d_model) input, tensors it
takes no gradient of (``constants``: the mixer's (batch,) valid lengths; a layer's frame mask and dropout masks,
``layer_graphs.TrainingLayerGraphs``) and parameter tensors, whose outputs at the real frames do not depend on the
frames past them (the padding the graphs add). A graph shared by every layer can keep no layer's activations, so
the backward recomputes the forward (as activation checkpointing does): it saves only its inputs. Where the launches
of a mixer's kernels cost the host more than the GPU needs to run them (short utterances), one graph launch each way
is faster.
"""
import functools
from typing import Callable

import torch

from models.kernels.graphs import MAX_GRAPHS, PaddedGraphs, capture_cuda_graph

# Fused mixers of up to this many frames (batch x length padded to the chunk) replay CUDA graphs by default where
# no gradient is taken or the forward is recomputed anyway (the hparam mamba_mixer_graph_frames): 16 x 10 s to
# 4 x 60 s of audio, where launching a layer's kernels costs the host more time than the GPU needs to run them;
# 1 x 600 s (30208) stays eager.
MIXER_GRAPH_FRAMES = 16384


def _recompute_backward(mixer_fn: Callable, num_constants: int, grad_out, hidden, *inputs
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``mixer_fn`` again, with autograd, then its backward: (the gradient of hidden, the parameters' gradients
    flattened into one tensor: one copy out of the graph instead of one a parameter)."""
    constants, params = inputs[:num_constants], inputs[num_constants:]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (hidden, *params)]
        (out,) = mixer_fn(leaves[0], *constants, *leaves[1:])
        grad_hidden, *grad_params = torch.autograd.grad(out, leaves, grad_out)
    return grad_hidden, torch.cat([g.flatten() for g in grad_params])


def recompute_graph_pair(mixer_fn: Callable, num_params: int, multiple: int, capture: Callable = capture_cuda_graph,
                         max_graphs: int = MAX_GRAPHS, timed_constants: tuple[bool, ...] = (False,)
                         ) -> tuple[PaddedGraphs, PaddedGraphs]:
    """The forward and backward ``PaddedGraphs`` of ``mixer_fn`` (sharing a memory pool), time padded to
    ``multiple``. ``timed_constants`` flags the constants whose dim 1 is time (default: one, the mixer's lengths,
    without). ``capture``: ``graphs.capture_cuda_graph``, or ``graphs.rerun_eagerly`` (the CPU tests)."""
    pool = torch.cuda.graph_pool_handle() if capture is capture_cuda_graph else None
    timed_inputs = (True, *timed_constants) + (False,) * num_params  # hidden, the constants, the parameters
    backward = functools.partial(_recompute_backward, mixer_fn, len(timed_constants))
    return (PaddedGraphs(mixer_fn, timed_inputs, (True,), multiple, max_graphs, capture, pool),
            PaddedGraphs(backward, (True,) + timed_inputs, (True, False), multiple, max_graphs, capture, pool))


class GraphedRecompute(torch.autograd.Function):
    """A mixer or layer whose forward and backward replay ``graphs`` (``recompute_graph_pair``'s pair): saves only
    its inputs. hidden (batch, frames, d_model), ``num_constants`` tensors without gradient, then the parameters ->
    (batch, frames, d_model)."""

    @staticmethod
    def forward(ctx, hidden, graphs, num_constants, *inputs):
        ctx.save_for_backward(hidden, *inputs)
        ctx.backward_graphs, ctx.num_constants = graphs[1], num_constants
        return graphs[0](hidden, *inputs)[0]

    @staticmethod
    def backward(ctx, grad_out):
        hidden, *inputs = ctx.saved_tensors
        grad_hidden, grad_params = ctx.backward_graphs(grad_out, hidden, *inputs)
        params = inputs[ctx.num_constants:]
        pieces = grad_params.split([p.numel() for p in params])
        return (grad_hidden, None, None, *[None] * ctx.num_constants,
                *(g.view(p.shape).to(p.dtype) for g, p in zip(pieces, params)))


@functools.lru_cache(maxsize=1)  # made once per forward of an unpadded batch, not once per layer
def full_lengths(batch: int, seqlen: int, device: torch.device) -> torch.Tensor:
    """(batch,) int64 lengths of an unpadded batch (read only). Made outside inference mode: a later training step
    may save it for backward."""
    with torch.inference_mode(False):
        return torch.full((batch,), seqlen, dtype=torch.long, device=device)
