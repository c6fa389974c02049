"""models/kernels/gated_norm_triton.py against its reference: the bidirectional mixer's gated RMSNorm, the backward
direction's half of y read in padded-reverse time. Without CUDA the kernels run in Triton's interpreter
(tests/conftest.py), at tiny sizes; the GPU test runs the large model's."""
import pytest
import torch

from models.kernels.gated_norm import bidirectional_gated_rms_norm_ref, gated_rms_norm
from models.mamba_utils import padded_reverse_index
from tests.conftest import relative_error

SEQLEN = 37  # not a multiple of a program's frames (forward or backward)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: Triton's interpreter


def norm_inputs(d, lengths, batch=2, seqlen=SEQLEN, dtype=torch.float32, device=DEVICE):
    """y (batch, seqlen, 2 d) as the scan writes it, z a strided slice of a wider tensor (as of in_proj's output),
    weight (2 d,) fp32, index (None without lengths) and the output's gradient."""
    g = torch.Generator(device=device).manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=g, device=device)  # noqa: E731
    wide = make(batch, seqlen, 4 * d + 7).to(dtype)
    z = wide[..., 3:3 + 2 * d].requires_grad_()  # (batch, seqlen, 2 d), frame stride 4 d + 7
    y = make(batch, seqlen, 2 * d).to(dtype).requires_grad_()
    weight = (1 + make(2 * d) / 2).requires_grad_()
    index = padded_reverse_index(torch.tensor(lengths, device=device), seqlen) if lengths else None
    return y, z, weight, index, make(batch, seqlen, 2 * d).to(dtype)


def output_and_grads(norm, y, z, weight, index, dout):
    out = norm(y, z, weight, 1e-5, index)
    return out, *torch.autograd.grad(out, [y, z, weight], dout)


@pytest.mark.parametrize("lengths", [None, [SEQLEN, 20]])  # None: no padding, the whole sequence reversed
@pytest.mark.parametrize("d", [16, 24, 40])
def test_triton_gated_norm_matches_the_reference(d, lengths):
    """Forward and the gradients of y (in y's layout: the backward half at the reversed rows), z (read in place
    from a strided slice) and weight, fp32; channels not a power of two, frames past a program's edge."""
    from models.kernels.gated_norm_triton import bidirectional_gated_rms_norm

    y, z, weight, index, dout = norm_inputs(d, lengths)
    results = [output_and_grads(norm, y, z, weight, index, dout)
               for norm in (bidirectional_gated_rms_norm, bidirectional_gated_rms_norm_ref)]
    assert results[0][0].is_contiguous() and results[0][2].is_contiguous()  # out, dz
    for triton_result, reference in zip(*results):
        assert triton_result.dtype == reference.dtype
        torch.testing.assert_close(triton_result, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths", [None, [SEQLEN, 20]])
def test_triton_gated_norm_takes_bf16_activations_with_an_fp32_weight(lengths):
    """As under autocast: the scan's bf16 y, bf16 z, the fp32 parameter; out, dy, dz bf16 and dweight fp32, against
    the reference in fp32 on the same (rounded) inputs."""
    from models.kernels.gated_norm_triton import bidirectional_gated_rms_norm

    y, z, weight, index, dout = norm_inputs(40, lengths, dtype=torch.bfloat16)
    out, *grads = output_and_grads(bidirectional_gated_rms_norm, y, z, weight, index, dout)
    assert [t.dtype for t in (out, *grads)] == [torch.bfloat16] * 3 + [torch.float32]
    y32, z32 = (t.detach().float().requires_grad_() for t in (y, z))
    reference = output_and_grads(bidirectional_gated_rms_norm_ref, y32, z32, weight, index, dout.float())
    for kernel, ref in zip((out, *grads), reference):
        torch.testing.assert_close(kernel.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("lengths", [None, [SEQLEN, 20]])
def test_triton_gated_norm_reads_the_backward_half_reversed(lengths):
    """The backward group's output is the norm of y's reversed rows, not of y as it lies: a kernel ignoring the
    reversal (or the index) fails here; the forward group is y as it lies."""
    from models.kernels.gated_norm_triton import bidirectional_gated_rms_norm

    d = 24
    y, z, weight, index, _ = norm_inputs(d, lengths)
    out = bidirectional_gated_rms_norm(y, z, weight, 1e-5, index).detach()
    unreversed = gated_rms_norm(y.unflatten(-1, (2, d)), z.unflatten(-1, (2, d)), weight.view(2, d),
                                1e-5).flatten(-2).detach()  # (batch, seqlen, 2 d), both halves read as they lie
    torch.testing.assert_close(out[..., :d], unreversed[..., :d], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[..., d:], unreversed[..., d:], rtol=1e-2, atol=1e-2)
    if lengths:  # the padded frames of the second item map to themselves
        torch.testing.assert_close(out[1, 20:], unreversed[1, 20:], rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("lengths", [None, [3000, 1700]])
def test_triton_gated_norm_matches_the_reference_at_the_large_models_size_on_gpu(lengths):
    """The large mixer's norm: d 1024 a direction, 2 x 3000 frames, bf16 y and z, fp32 weight; forward and
    gradients against the reference in fp32 on the same (rounded) inputs."""
    from models.kernels.gated_norm_triton import bidirectional_gated_rms_norm

    y, z, weight, index, dout = norm_inputs(1024, lengths, seqlen=3000, dtype=torch.bfloat16)
    out, *grads = output_and_grads(bidirectional_gated_rms_norm, y, z, weight, index, dout)
    y32, z32 = (t.detach().float().requires_grad_() for t in (y, z))
    reference = output_and_grads(bidirectional_gated_rms_norm_ref, y32, z32, weight, index, dout.float())
    for kernel, ref in zip((out, *grads), reference):
        assert relative_error(kernel, ref) < 1e-2
