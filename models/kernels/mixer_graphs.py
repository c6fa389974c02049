"""A whole mixer replayed as CUDA graphs: its forward as one graph, its backward as one graph that runs the forward
again and differentiates it, captured once per padded shape (``graphs.PaddedGraphs``) and shared by every layer of
that shape, the layer's parameters copied into the graphs' buffers in one launch.

    forward, backward = mixer_graph_pair(mixer_fn, num_params=16, multiple=256)
    out = GraphedMixer.apply(hidden, lengths, (forward, backward), *params)

``mixer_fn(hidden, lengths, *params) -> (out,)`` is any function of a (batch, frames, d_model) input, its (batch,)
valid lengths and parameter tensors whose outputs at the real frames do not depend on the frames past them (the
padding the graphs add). A graph shared by every layer can keep no layer's activations, so the backward recomputes
the forward (as activation checkpointing does): it saves only its inputs. Where the launches of a mixer's kernels
cost the host more than the GPU needs to run them (short utterances), one graph launch each way is faster.
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


def _recompute_backward(mixer_fn: Callable, grad_out, hidden, lengths, *params) -> tuple[torch.Tensor, torch.Tensor]:
    """``mixer_fn`` again, with autograd, then its backward: (the gradient of hidden, the parameters' gradients
    flattened into one tensor: one copy out of the graph instead of one a parameter)."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in (hidden, *params)]
        (out,) = mixer_fn(leaves[0], lengths, *leaves[1:])
        grad_hidden, *grad_params = torch.autograd.grad(out, leaves, grad_out)
    return grad_hidden, torch.cat([g.flatten() for g in grad_params])


def mixer_graph_pair(mixer_fn: Callable, num_params: int, multiple: int, capture: Callable = capture_cuda_graph,
                     max_graphs: int = MAX_GRAPHS) -> tuple[PaddedGraphs, PaddedGraphs]:
    """The forward and backward ``PaddedGraphs`` of ``mixer_fn`` (sharing a memory pool), time padded to
    ``multiple``. ``capture``: ``graphs.capture_cuda_graph``, or ``graphs.rerun_eagerly`` (the CPU tests)."""
    pool = torch.cuda.graph_pool_handle() if capture is capture_cuda_graph else None
    timed_inputs = (True, False) + (False,) * num_params  # hidden, lengths, the parameters
    return (PaddedGraphs(mixer_fn, timed_inputs, (True,), multiple, max_graphs, capture, pool),
            PaddedGraphs(functools.partial(_recompute_backward, mixer_fn), (True,) + timed_inputs, (True, False),
                         multiple, max_graphs, capture, pool))


class GraphedMixer(torch.autograd.Function):
    """A mixer whose forward and backward replay ``graphs`` (``mixer_graph_pair``'s pair): saves only its inputs.
    hidden (batch, frames, d_model), lengths (batch,) -> (batch, frames, d_model)."""

    @staticmethod
    def forward(ctx, hidden, lengths, graphs, *params):
        ctx.save_for_backward(hidden, lengths, *params)
        ctx.backward_graphs = graphs[1]
        return graphs[0](hidden, lengths, *params)[0]

    @staticmethod
    def backward(ctx, grad_out):
        hidden, lengths, *params = ctx.saved_tensors
        grad_hidden, grad_params = ctx.backward_graphs(grad_out, hidden, lengths, *params)
        pieces = grad_params.split([p.numel() for p in params])
        return grad_hidden, None, None, *(g.view(p.shape).to(p.dtype) for g, p in zip(pieces, params))


@functools.lru_cache(maxsize=1)  # made once per forward of an unpadded batch, not once per layer
def full_lengths(batch: int, seqlen: int, device: torch.device) -> torch.Tensor:
    """(batch,) int64 lengths of an unpadded batch (read only). Made outside inference mode: a later training step
    may save it for backward."""
    with torch.inference_mode(False):
        return torch.full((batch,), seqlen, dtype=torch.long, device=device)
