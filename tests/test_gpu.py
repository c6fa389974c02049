"""GPU tier (``pytest -m gpu``; skipped without CUDA): mamba_ssm's Triton kernels against the PyTorch reference.

Tolerances, relative to the output's scale, forward and backward: fp32 inputs agree to 1e-2 (mamba_ssm's Triton
dots run in TF32, 10 mantissa bits: 1.9e-3 was seen); bf16 inputs are compared with the fp32 reference at 5e-2.
"""
import pytest
import torch
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Attention

from bench import speed
from models.build import build_asr_model, forward_model, student_layer_graphs, teacher_layer_graphs
from models.kernels.backend import mixer_kernels
from models.kernels.conv import causal_conv_silu_ref
from models.kernels.ssd import ssd_chunked, ssd_ref
from models.mamba2 import Mamba2
from tests.conftest import relative_error

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def scan_inputs(seqlen, batch=2, nheads=16, headdim=64, d_state=128, dtype=torch.float32):
    g = torch.Generator(device="cuda").manual_seed(0)
    make = lambda *shape: torch.randn(*shape, generator=g, device=CUDA)  # noqa: E731
    x, dt = make(batch, seqlen, nheads, headdim), make(batch, seqlen, nheads) - 2
    A = -torch.rand(nheads, generator=g, device=CUDA) * 8 - 0.5
    B, C = make(batch, seqlen, 1, d_state), make(batch, seqlen, 1, d_state)
    D, dt_bias = make(nheads), make(nheads)
    return [t.to(dtype) for t in (x, dt, B, C)], A, D, dt_bias


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("seqlen", [1, 255, 257, 1000])
def test_triton_scan_matches_the_reference(seqlen, dtype, tolerance):
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    (x, dt, B, C), A, D, dt_bias = scan_inputs(seqlen, dtype=dtype)
    leaves = [t.requires_grad_() for t in (x, dt, B, C)]
    results = []
    for scan in (mamba_chunk_scan_combined, ssd_chunked):
        y = scan(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias, dt_softplus=True)
        weights = torch.linspace(-1, 1, y.numel(), device=CUDA).view_as(y)
        results.append((y, torch.autograd.grad((y.float() * weights).sum(), leaves)))
    (y_kernel, g_kernel), (y_torch, g_torch) = results
    assert relative_error(y_kernel, y_torch) < tolerance
    for a, b in zip(g_kernel, g_torch):
        assert relative_error(a, b) < tolerance
    if seqlen <= 257:  # the sequential recurrence is the specification (both outputs rounded to the input dtype)
        reference = ssd_ref(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias, dt_softplus=True)
        assert relative_error(y_torch, reference) < (1e-4 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphed_scan_replays_mamba_ssm_eager_scan(dtype):
    """models/kernels/scan_graphs.py: the SSD scan's forward and backward replayed as CUDA graphs give mamba_ssm's eager
    output and gradients, with both directions' groups as the mixer runs it (ngroups 2), for lengths that share a
    graph (padded to 512 frames) in an order where a shorter call follows a longer one; one capture each for
    forward and backward. The same kernels run both ways: only the padded last chunk's tiles can round otherwise."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from models.kernels.scan_graphs import _cuda_scan_graphs, graphed_chunk_scan

    forward_graphs, backward_graphs = _cuda_scan_graphs(256, True)
    captured = forward_graphs.captures, backward_graphs.captures
    for seqlen in (500, 300, 257, 500):
        (x, dt, _, _), A, D, dt_bias = scan_inputs(seqlen, nheads=32, dtype=dtype)
        BC = torch.randn(2, seqlen, 4, 128, device=CUDA).to(dtype)  # B and C strided views, as the mixer's are
        leaves = [t.requires_grad_() for t in (x, dt, A, BC, D, dt_bias)]
        B, C = BC.split(2, dim=2)
        dout = torch.randn_like(x)
        results = []
        for scan in (graphed_chunk_scan, mamba_chunk_scan_combined):
            y = scan(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias, dt_softplus=True)
            results.append((y, torch.autograd.grad(y, leaves, dout)))
        (y_graph, g_graph), (y_eager, g_eager) = results
        assert y_graph.shape == y_eager.shape and y_graph.dtype == y_eager.dtype
        assert relative_error(y_graph, y_eager) < 1e-3, seqlen
        for name, a, b in zip(("x", "dt", "A", "B and C", "D", "dt_bias"), g_graph, g_eager):
            assert relative_error(a, b) < 1e-3, (seqlen, name)
    assert (forward_graphs.captures - captured[0], backward_graphs.captures - captured[1]) == (1, 1)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_triton_causal_conv_matches_the_reference(dtype, tolerance):
    """models/kernels/conv_triton.py at the fused mixer's size (both directions' x, B, C of a large model: 2560
    channels), forward and gradients, against nn.functional.conv1d in fp32 on the same (rounded) inputs."""
    from models.kernels.conv_triton import causal_conv_silu_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(3, 1000, 2 * (1024 + 256), generator=g, device=CUDA).to(dtype).requires_grad_()
    weight = (torch.randn(x.shape[-1], 1, 4, generator=g, device=CUDA) / 2).requires_grad_()
    bias = torch.randn(x.shape[-1], generator=g, device=CUDA).requires_grad_()
    dout = torch.randn(x.shape, generator=g, device=CUDA).to(dtype)
    with torch.backends.cudnn.flags(allow_tf32=False):
        reference = causal_conv_silu_ref(x.float(), weight, bias)
        reference_grads = torch.autograd.grad(reference, [x, weight, bias], dout.float())
    out = causal_conv_silu_triton(x, weight, bias)
    assert out.dtype == dtype
    assert relative_error(out, reference) < tolerance
    for kernel, ref in zip(torch.autograd.grad(out, [x, weight, bias], dout), reference_grads):
        assert relative_error(kernel, ref) < tolerance


@pytest.mark.parametrize("autocast", [False, True])
def test_mamba2_triton_backend_matches_torch_backend(autocast):
    torch.manual_seed(0)
    mamba = Mamba2(1024, backend="torch").to(CUDA)
    u = torch.randn(2, 700, 1024, device=CUDA, requires_grad=True)
    results = []
    for backend in ("triton", "torch"):
        mamba.kernels = mixer_kernels(backend, "cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            y = mamba(u)
        grads = torch.autograd.grad(y.float().square().mean(), [u, mamba.in_proj.weight, mamba.A_log])
        results.append((y, grads))
    tolerance = 5e-2 if autocast else 1e-2
    assert relative_error(results[0][0], results[1][0]) < tolerance
    for a, b in zip(results[0][1], results[1][1]):
        assert relative_error(a, b) < tolerance


def test_our_kernels_compile_once_whatever_the_lengths(monkeypatch):
    """The conv, gated norm, front-end norm and CTC kernels at lengths of 1 to 117 frames (1, multiples of 16 and
    others) and 9 to 15 labels (the same block sizes) compile one specialisation each: their length arguments are
    not specialised, so a run meeting a new length mid-way compiles nothing. Triton's jit_cache_hook runs before
    every compile or disk-cache load; the kernels' in-memory caches are emptied first so that it sees them all."""
    import collections

    from triton import knobs

    from models.kernels import conv_triton, ctc_triton, gated_norm_triton, norm_gelu_triton

    kernels = [conv_triton._conv_silu_fwd, conv_triton._conv_silu_bwd_g, conv_triton._conv_bwd_dx,
               gated_norm_triton._gated_norm_fwd, gated_norm_triton._gated_norm_bwd, norm_gelu_triton._layer_norm_gelu,
               ctc_triton._ctc_alpha, ctc_triton._ctc_beta_occupancy, ctc_triton._ctc_grad]
    for kernel in kernels:
        kernel.device_caches.clear()
    compiled = collections.Counter()
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", lambda *, fn, **_: compiled.update([fn.name]))
    torch.manual_seed(0)
    channels, d = 256, 64
    conv_weight, conv_bias = torch.randn(channels, 1, 4, device=CUDA), torch.randn(channels, device=CUDA)
    norm_weight = torch.randn(2 * d, device=CUDA, requires_grad=True)
    for frames, labels in ((37, 9), (48, 15), (64, 12), (101, 13), (1, 9)):
        x = torch.randn(2, frames, channels, device=CUDA, requires_grad=True)
        conv_triton.causal_conv_silu_triton(x, conv_weight, conv_bias).sum().backward()
        y, z = (torch.randn(2, frames, 2 * d, device=CUDA, requires_grad=True) for _ in range(2))
        gated_norm_triton.bidirectional_gated_rms_norm(y, z, norm_weight, 1e-5, None).sum().backward()
        norm_gelu_triton.layer_norm_gelu(torch.randn(2 * frames, 512, device=CUDA), torch.ones(512, device=CUDA),
                                         torch.zeros(512, device=CUDA), 1e-5)
        log_probs = torch.randn(frames + 16, 2, 32, device=CUDA).log_softmax(-1).requires_grad_()
        targets = torch.randint(1, 32, (2, labels), device=CUDA)
        lengths = torch.full((2,), frames + 16, device=CUDA)
        label_lengths = torch.full((2,), labels, device=CUDA)
        ctc_triton.ctc_loss_triton(log_probs, targets, lengths, label_lengths, 0).sum().backward()
    assert compiled == {kernel.fn.__name__: 1 for kernel in kernels}, compiled


def test_triton_layer_norm_gelu_matches_its_reference_on_gpu():
    """models/kernels/norm_gelu_triton.py on the front end's first activation: 2 x 2 s at 3200 frames a second,
    512 channels, bf16 in."""
    from models.kernels.front_end import layer_norm_gelu_ref
    from models.kernels.norm_gelu_triton import layer_norm_gelu

    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(2, 6400, 512, generator=g, device=CUDA) * 3 + 1).to(torch.bfloat16)
    weight, bias = torch.randn(512, generator=g, device=CUDA), torch.randn(512, generator=g, device=CUDA)
    torch.testing.assert_close(layer_norm_gelu(x, weight, bias, 1e-5), layer_norm_gelu_ref(x, weight, bias, 1e-5),
                               rtol=1e-5, atol=1e-5)


def test_front_end_takes_the_fused_norm_without_gradients_and_agrees_on_gpu(monkeypatch):
    """wav2vec2-large's front end as build_asr_model makes it, under bf16 autocast: without gradients (the fused
    LayerNorm + GELU, once per layer) against with them (PyTorch's), the same convolutions either way."""
    from transformers import Wav2Vec2ForCTC

    from models.kernels import norm_gelu_triton
    from models.kernels.front_end import use_channels_last_feature_encoder
    from models.presets import preset_config

    calls = []
    fused_pass = norm_gelu_triton.layer_norm_gelu
    monkeypatch.setattr(norm_gelu_triton, "layer_norm_gelu", lambda *args: calls.append(1) or fused_pass(*args))
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(preset_config("large", vocab_size=8)).to(CUDA)
    use_channels_last_feature_encoder(model)
    encoder = model.wav2vec2.feature_extractor
    x = torch.randn(2, 32000, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with torch.no_grad():
            fused = encoder(x)
        assert len(calls) == len(encoder.conv_layers)
        plain = encoder(x).detach()  # the parameters want gradients: PyTorch's norm and GELU
    assert len(calls) == len(encoder.conv_layers) and fused.dtype == plain.dtype == torch.float32
    assert relative_error(fused, plain) < 1e-2  # bf16 re-rounding of the norm's last digits, through 7 layers


def test_padding_invariance_on_gpu(tiny_hparams):
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True,mamba_backend=triton")).to(CUDA).eval()
    alone = torch.randn(1, 6400, device=CUDA)
    batch = torch.zeros(2, 16000, device=CUDA)
    batch[0, :6400], batch[1] = alone[0], torch.randn(16000, device=CUDA)
    mask = torch.ones(2, 16000, dtype=torch.long, device=CUDA)
    mask[0, 6400:] = 0
    with torch.no_grad():
        out_alone = forward_model(model, alone, torch.ones(1, 6400, dtype=torch.long, device=CUDA))
        out_batch = forward_model(model, batch, mask)
    n = out_alone.output_lengths[0]
    torch.testing.assert_close(out_batch.logits[0, :n], out_alone.logits[0], rtol=1e-4, atol=1e-4)


def test_whole_model_triton_matches_torch(tiny_hparams):
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True,mamba_backend=torch")).to(CUDA).eval()
    x = torch.randn(2, 32000, device=CUDA)
    mask = torch.ones(2, 32000, dtype=torch.long, device=CUDA)
    mask[1, 20000:] = 0
    logits = {}
    for backend in ("torch", "triton"):
        for layer in model.wav2vec2.encoder.layers:
            layer.attention.kernels = mixer_kernels(backend, "cuda", 16384, 16384)
        with torch.no_grad():
            logits[backend] = forward_model(model, x, mask).logits
    assert relative_error(logits["triton"], logits["torch"]) < 1e-2



@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("padded", [False, True])  # unpadded: the reversal is a flip (index None)
def test_fused_bidirectional_kernels_match_two_separate_mamba2(autocast, padded):
    from models.mamba_utils import BiMamba2Wrapper, bimamba2_fused, padded_reverse_index

    torch.manual_seed(0)
    wrapper = BiMamba2Wrapper(1024, backend="triton").to(CUDA)
    hidden = torch.randn(3, 600, 1024, device=CUDA, requires_grad=True)
    lengths = torch.tensor([600, 417, 33] if padded else [600] * 3, device=CUDA)
    index = padded_reverse_index(lengths, 600) if padded else None
    valid = (torch.arange(600, device=CUDA)[None, :] < lengths[:, None])[..., None]
    results = []
    for run in (lambda: bimamba2_fused(*wrapper.fused_arguments(), hidden, index, wrapper.kernels),
                lambda: wrapper.forward_separate(hidden, index)):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            out = run() * valid
        results.append((out, torch.autograd.grad(out.float().square().mean(), [hidden, *wrapper.parameters()])))
    tolerance = 5e-2 if autocast else 1e-2
    assert relative_error(results[0][0], results[1][0]) < tolerance
    for fused, separate in zip(results[0][1], results[1][1]):
        assert relative_error(fused, separate) < tolerance


@pytest.mark.parametrize("autocast", [False, True])
def test_graphed_mixer_replays_the_eager_fused_mixer(autocast):
    """BiMamba2Wrapper's fused mixer replayed as CUDA graphs (graphed_bimamba2_fused; with a gradient where it
    recomputes, mamba_recompute=True) at the large model's size against its eager kernels, output and every
    gradient, with the mask forms the encoder passes: unpadded and padded batches whose lengths share one graph
    each way (padded to 768 frames), a shorter call after a longer one; one capture each way. The graphs run the
    same kernels (the backward after recomputing the forward): only GEMMs over the padded frames can tile, and
    so round, otherwise."""
    import copy

    from models.mamba_utils import BiMamba2Wrapper, _cuda_mixer_graphs

    torch.manual_seed(0)
    graphed = BiMamba2Wrapper(1024, backend="triton", recompute=True).to(CUDA)
    eager = copy.deepcopy(graphed)
    eager.kernels, eager.recompute = mixer_kernels("triton", "cuda", graphed.kernels.scan_graph_frames, 0), False
    graphs = _cuda_mixer_graphs(graphed.fused_arguments()[0], graphed.kernels, torch.bfloat16 if autocast else None)
    captured = [g.captures for g in graphs]
    for seqlen, lengths in ((700, None), (600, [600, 417, 33]), (520, None), (700, [700, 650, 100])):
        hidden = torch.randn(3, seqlen, 1024, device=CUDA, requires_grad=True)
        lengths = torch.tensor(lengths or [seqlen] * 3, device=CUDA)
        valid = torch.arange(seqlen, device=CUDA)[None, :] < lengths[:, None]  # (batch, seqlen)
        mask = None if bool(valid.all()) else valid.long()
        dout = torch.randn(3, seqlen, 1024, device=CUDA)
        results = []
        for wrapper in (graphed, eager):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                out, _ = wrapper(hidden, attention_mask=mask)
            results.append((out, torch.autograd.grad(out, [hidden, *wrapper.parameters()], dout.to(out.dtype))))
        (out_graph, grads_graph), (out_eager, grads_eager) = results
        tolerance = 2e-2 if autocast else 1e-3
        assert out_graph.dtype == out_eager.dtype
        assert relative_error(out_graph, out_eager) < tolerance, seqlen
        names = ["hidden", *(name for name, _ in graphed.named_parameters())]
        for name, a, b in zip(names, grads_graph, grads_eager):
            assert relative_error(a, b) < tolerance, (seqlen, name)
    assert [g.captures - n for g, n in zip(graphs, captured)] == [1, 1]


@pytest.mark.parametrize("mamba", [False, True])
def test_cuda_graph_replays_equal_eager(tiny_hparams, mamba):
    """bench/speed.py's cuda_graph execution: a captured forward of an unpadded batch, as the bench runs it,
    replays the eager logits for new inputs, and the graphed training step gives the eager step's gradients.
    (A padded batch cannot be captured: Hugging Face builds the frame mask with an index_put of a host scalar.)
    The teacher's SDPA runs without a mask and the student's mixers without graphs of their own, as the bench's
    (graph_safe_attention, eager_mixers). Every dropout is off, the attention's too (the config's 0.1): the two
    steps would draw different masks, and two draws alone put the tiny teacher's gradients up to 6% apart (seen on
    CPU)."""
    torch.manual_seed(0)
    hparams = tiny_hparams(f"asr_use_mamba={mamba},mamba_backend=triton,mask_time_prob=0.0,hidden_dropout=0.0,"
                           "activation_dropout=0.0,feat_proj_dropout=0.0")
    model = build_asr_model(hparams).to(CUDA)
    for module in model.modules():
        if isinstance(module, Wav2Vec2Attention):
            module.dropout = 0.0
    speed.graph_safe_attention(model)
    speed.eager_mixers(model)
    x = torch.randn(2, 16000, device=CUDA)

    model.eval()
    captured = {}

    def infer():
        with torch.no_grad():
            captured["logits"] = speed.ctc_logits(model, x)

    replay = speed.graphed(infer)
    x.copy_(torch.randn_like(x))  # a new input in the static buffer: the replay must see it
    replay()
    with torch.no_grad():
        eager = speed.ctc_logits(model, x)
    torch.testing.assert_close(captured["logits"], eager, rtol=1e-4, atol=1e-4)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)  # lr 0: the steps leave the weights as they are
    labels = torch.randint(1, hparams.asr_vocab_size, (2, 12), device=CUDA)
    batch = speed.Batch(x, labels, torch.full((2,), 12, device=CUDA), attention_mask=None)
    graphed_step = speed.graphed_train_step(model, optimizer, batch)
    grads = {}  # run -> {parameter index: gradient}
    for run, step in (("eager", lambda: speed.train_step(model, optimizer, batch)), ("graph", graphed_step)):
        grads[run] = {}
        hooks = [p.register_post_accumulate_grad_hook(lambda p, i=i, g=grads[run]: g.update({i: p.grad.clone()}))
                 for i, p in enumerate(params)]
        step()
        for hook in hooks:
            hook.remove()
    assert grads["eager"].keys() == grads["graph"].keys() and grads["eager"]
    for i in grads["eager"]:
        assert relative_error(grads["graph"][i], grads["eager"][i]) < 2e-2, i  # bf16 autocast in both


def padded_cuda_batch(samples: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random audio (batch, max samples) on CUDA and its attention mask, 1 on each utterance's samples."""
    x = torch.randn(len(samples), max(samples), device=CUDA)
    mask = torch.zeros(x.shape, dtype=torch.long, device=CUDA)
    for i, n in enumerate(samples):
        mask[i, :n] = 1
    return x, mask


@pytest.mark.parametrize("autocast", [False, True])
def test_teacher_layer_graphs_replay_the_eager_layers(tiny_hparams, autocast):
    """The distillation teacher's layers replayed as CUDA graphs (models/kernels/layer_graphs.py) give the eager
    layers' logits and hidden states in eval mode, padded or not, two lengths sharing one graph; in train mode each
    replay draws new dropout masks."""
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("mask_time_prob=0.0")).to(CUDA).eval()
    graphs = teacher_layer_graphs(model, 16384)
    assert graphs is not None
    tolerance = 2e-2 if autocast else 1e-4
    for samples in ([16000, 9000], [15000, 15000]):  # 49 and 46 frames: one graph of 64
        x, mask = padded_cuda_batch(samples)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            replayed = forward_model(model, x * mask, mask, True, samples, layer_graphs=graphs)
            eager = forward_model(model, x * mask, mask, True, samples)
        valid = eager.frame_mask[..., None]
        for a, b in zip(replayed.hidden_states + [replayed.logits], eager.hidden_states + [eager.logits]):
            assert relative_error(a * valid, b * valid) < tolerance
    assert graphs.captures == 1

    model.train()
    with torch.no_grad():
        first, second = (forward_model(model, x, mask, sample_lengths=samples, layer_graphs=graphs).logits
                         for _ in range(2))
    assert graphs.captures == 2 and torch.isfinite(first).all() and not torch.equal(first, second)


@pytest.mark.parametrize("autocast", [False, True])
def test_student_layer_graphs_replay_the_eager_layers_in_training(tiny_hparams, autocast):
    """The BiMamba2 student's layers in training replayed as CUDA graphs (TrainingLayerGraphs, a forward and a
    recomputing backward) against the same graphs rerun eagerly with the same dropout masks: outputs and gradients
    of a padded batch, two lengths sharing one graph each way."""
    from models.kernels.graphs import rerun_eagerly
    from models.kernels.layer_graphs import TrainingLayerGraphs

    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True,mamba_backend=triton,mask_time_prob=0.0")).to(CUDA)
    model.train()
    replayed = student_layer_graphs(model, 16384)
    assert replayed is not None
    masks = replayed.draw_masks(2, 49, CUDA)  # the masks a run draws, on the GPU
    assert [(m.dtype, m.shape) for m in masks] == [(torch.bool, (2, 49, w)) for w in replayed.widths]
    eager = TrainingLayerGraphs(model.wav2vec2.encoder.layers[0], capture=rerun_eagerly)
    tolerance = 2e-2 if autocast else 1e-4
    for samples in ([16000, 9000], [15000, 15000]):  # 49 and 46 frames: one graph of 64
        x, mask = padded_cuda_batch(samples)
        results = []
        for graphs in (replayed, eager):
            generator = torch.Generator(CUDA).manual_seed(1)
            graphs.draw_masks = lambda b, t, device: [
                torch.rand(b, t, w, device=device, generator=generator) > 0.2 for w in replayed.widths]
            torch.manual_seed(2)  # the front end's dropout
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                out = forward_model(model, x * mask, mask, sample_lengths=samples, layer_graphs=graphs)
            logits = out.logits.float() * out.frame_mask[..., None]
            (logits * torch.linspace(-1, 1, logits.numel(), device=CUDA).view_as(logits)).sum().backward()
            results.append((logits.detach(), [p.grad.clone() for p in model.wav2vec2.encoder.layers.parameters()]))
        (a, grads_a), (b, grads_b) = results
        assert relative_error(a, b) < tolerance
        for i, (ga, gb) in enumerate(zip(grads_a, grads_b)):
            assert relative_error(ga, gb) < tolerance, i
    assert replayed.captures == 2


@pytest.mark.parametrize("hparams", ["mask_time_prob=0.3", "asr_use_mamba=True,mask_time_prob=0.3"])
def test_a_training_step_synchronises_host_and_gpu_once(corpus, tiny_model_dir, tmp_path, hparams):
    """torch.cuda's sync debug mode reports every host-device synchronisation: a step of the training loop has one,
    the read of its logged values (the padded batches' SpecAugment, padding and attention masks are made without
    reading the device, models/wav2vec2_forward.py). The step repeats the first one's micro-batches, so that no
    kernel is compiled or tuned in it."""
    import warnings

    from tests.test_training import build

    trainer = build(tmp_path / "run", corpus, tiny_model_dir, f"batch_size=2,{hparams}", accumulation_steps=2)
    assert trainer.accelerator.device.type == "cuda"
    state = trainer.feeder.state_dict()
    trainer.train_step()
    trainer.feeder.load_state_dict(state)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            row = trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            trainer.feeder.close()
    syncs = [str(w.message) for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
    assert row is not None and len(syncs) == 1, syncs
