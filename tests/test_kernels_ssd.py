"""models/kernels/ssd.py: the chunked SSD scan against the sequential recurrence, values and gradients."""
import pytest
import torch

from models.kernels.ssd import ssd_chunked, ssd_ref

CHUNK = 16


def scan_inputs(seqlen, batch=2, nheads=4, headdim=8, d_state=16, seed=0, ngroups=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seqlen, nheads, headdim, generator=g)
    dt = torch.randn(batch, seqlen, nheads, generator=g)
    A = -torch.rand(nheads, generator=g) * 8 - 0.5
    B = torch.randn(batch, seqlen, ngroups, d_state, generator=g)
    C = torch.randn(batch, seqlen, ngroups, d_state, generator=g)
    return x, dt, A, B, C, torch.randn(nheads, generator=g), torch.randn(nheads, generator=g)


@pytest.mark.parametrize("ngroups", [1, 2])  # 2: the fused bidirectional path, one group per direction
@pytest.mark.parametrize("seqlen", [1, 7, CHUNK - 1, CHUNK + 1, 3 * CHUNK + 5])
def test_chunked_ssd_matches_sequential_reference(seqlen, ngroups):
    x, dt, A, B, C, D, dt_bias = scan_inputs(seqlen, ngroups=ngroups)
    leaves = [t.requires_grad_() for t in (x, dt, B, C, D, dt_bias)]
    outs, grads = [], []
    for scan in (ssd_chunked, ssd_ref):
        y = scan(x, dt, A, B, C, CHUNK, D=D, dt_bias=dt_bias, dt_softplus=True)
        outs.append(y)
        grads.append(torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), leaves))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)  # fp32
    for g_chunked, g_ref in zip(*grads):
        torch.testing.assert_close(g_chunked, g_ref, rtol=1e-4, atol=1e-4)

