"""Model core: Mamba2 and its backends, the fused bidirectional mixer against two separate Mamba2, the padded
reversal, and the attention -> BiMamba2 surgery."""
import copy
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2ForCTC
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Attention

from models.build import build_asr_model, forward_model, load_weights
from models.kernels.backend import mixer_kernels
from models.mamba2 import Mamba2
from models.mamba_utils import (BIMAMBA2_ATTENTION, BiMamba2Wrapper, PaddingLayout, bimamba2_fused,
                                padded_reverse_index, replace_attention, reverse_padded, reverse_padded_ref,
                                substitute_layer, valid_lengths)
from tests.conftest import relative_error

CHUNK = 16
MAMBA_SSM_KEYS = {"in_proj.weight", "conv1d.weight", "conv1d.bias", "dt_bias", "A_log", "D", "norm.weight",
                  "out_proj.weight"}


def test_mamba2_module_backends_agree_and_names_match_mamba_ssm():
    torch.manual_seed(0)
    mamba = Mamba2(64, d_state=16, headdim=16, chunk_size=CHUNK)
    assert set(mamba.state_dict()) == MAMBA_SSM_KEYS
    shapes = {k: tuple(v.shape) for k, v in mamba.state_dict().items()}
    assert shapes["in_proj.weight"] == (2 * 64 + 2 * 16 + 4, 64) and shapes["conv1d.weight"] == (64 + 32, 1, 4)
    u = torch.randn(2, 3 * CHUNK + 3, 64)
    chunked = mamba(u)
    mamba.kernels = mixer_kernels("ref", "cpu")  # the sequential recurrence
    torch.testing.assert_close(chunked, mamba(u), rtol=1e-5, atol=1e-5)


def test_mamba2_reproduces_mamba_ssm_initialisation():
    torch.manual_seed(0)
    mamba = Mamba2(1024)  # 16 heads of 64
    dt = torch.nn.functional.softplus(mamba.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    A = torch.exp(mamba.A_log)
    assert A.min() >= 1 and A.max() <= 16
    assert torch.equal(mamba.D, torch.ones(16)) and torch.equal(mamba.norm.weight, torch.ones(1024))
    bound = 1 / math.sqrt(1024)  # nn.Linear's default kaiming-uniform bound
    assert mamba.in_proj.weight.abs().max() <= bound and mamba.in_proj.weight.std() > bound / 3


def test_mamba2_is_causal():
    torch.manual_seed(0)
    mamba = Mamba2(32, d_state=8, headdim=16, chunk_size=CHUNK)
    u = torch.randn(1, 40, 32)
    v = u.clone()
    v[:, 30:] += 1
    torch.testing.assert_close(mamba(u)[:, :30], mamba(v)[:, :30])


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("lengths", [None, [40, 40], [40, 13]])  # None: no padding, reversal by flip
def test_fused_bidirectional_path_matches_two_separate_mamba2(lengths, autocast):
    """The fused path against the two-module reference, forward and every gradient, at each tensor's scale: in fp32
    they differ by the order of sums alone (one GEMM for both directions' projections: 3e-6 was seen); under bf16
    autocast they round differently (one rounding of the summed out_proj instead of two: 1.9e-2 was seen), and are
    held to the GPU tier's bf16 bound."""
    torch.manual_seed(0)
    wrapper = BiMamba2Wrapper(32, d_state=8, headdim=16, chunk_size=CHUNK)
    hidden = torch.randn(2, 40, 32, requires_grad=True)
    index = padded_reverse_index(torch.tensor(lengths), 40) if lengths else None
    valid = torch.arange(40)[None, :, None] < torch.tensor(lengths or [40, 40])[:, None, None]
    results = []
    for run in (lambda: bimamba2_fused(*wrapper.fused_arguments(), hidden, index, wrapper.kernels),
                lambda: wrapper.forward_separate(hidden, index)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = run() * valid
        results.append((out, torch.autograd.grad(out.float().square().sum(), [hidden, *wrapper.parameters()])))
    tolerance = 5e-2 if autocast else 2e-5
    assert relative_error(results[0][0], results[1][0]) < tolerance
    for fused, separate in zip(results[0][1], results[1][1]):
        assert relative_error(fused, separate) < tolerance


def test_fused_path_projects_both_directions_in_one_gemm_each_way():
    """bimamba2_fused's point is fewer launches: one in_proj and one out_proj GEMM for both directions (the
    two-module reference needs four), each with its two GEMMs in backward; counted as dispatched aten matmuls."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountMatmuls(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm)
            return func(*args, **(kwargs or {}))

    wrapper = BiMamba2Wrapper(32, d_state=8, headdim=16, chunk_size=CHUNK)
    hidden = torch.randn(2, 40, 32, requires_grad=True)
    counts = []
    for fused in (True, False):
        wrapper.fused = fused
        with CountMatmuls() as forward:
            out, _ = wrapper(hidden)
        with CountMatmuls() as backward:
            out.sum().backward()
        counts.append((forward.count, backward.count))
    assert counts == [(2, 4), (4, 8)]  # the torch backend's scan runs its einsums as bmm, not counted here


def test_recomputed_mixer_gives_the_same_gradients():
    torch.manual_seed(0)
    wrapper = BiMamba2Wrapper(32, d_state=8, headdim=16, chunk_size=CHUNK)
    hidden = torch.randn(2, 40, 32, requires_grad=True)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 25:] = 0
    grads = []
    for recompute in (False, True):
        wrapper.recompute = recompute
        out, _ = wrapper(hidden, attention_mask=mask)
        grads.append(torch.autograd.grad(out.square().sum(), [hidden, *wrapper.parameters()]))
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(plain, recomputed)


def test_padded_reverse_matches_reference_and_is_an_involution():
    x = torch.randn(3, 9, 5)
    lengths = torch.tensor([9, 4, 1])
    index = padded_reverse_index(lengths, 9)
    reversed_x = reverse_padded(x, index)
    assert torch.equal(reversed_x, reverse_padded_ref(x, lengths))
    assert torch.equal(reverse_padded(reversed_x, index), x)
    unpadded = padded_reverse_index(torch.tensor([9, 9, 9]), 9)
    assert torch.equal(reverse_padded(x, None), reverse_padded(x, unpadded))  # the flip of a batch without padding


@pytest.mark.parametrize("autocast", [False, True])
def test_wrapper_without_a_mask_equals_an_all_valid_mask(autocast):
    """attention_mask=None (Hugging Face's unpadded batch) takes the flip and skips the masking: same result."""
    torch.manual_seed(0)
    wrapper = BiMamba2Wrapper(32, d_state=8, headdim=16, chunk_size=CHUNK)
    hidden = torch.randn(2, 40, 32, requires_grad=True)
    results = []
    for mask in (None, torch.ones(2, 40, dtype=torch.long)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, _ = wrapper(hidden, attention_mask=mask)
        results.append((out, torch.autograd.grad(out.float().square().sum(), [hidden, *wrapper.parameters()])))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for unmasked, masked in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(unmasked, masked, rtol=0, atol=0)


def test_valid_lengths_from_every_mask_form():
    keep = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    bool4d = keep.bool()[:, None, None, :].expand(2, 1, 4, 4)
    additive4d = (1.0 - bool4d.float()) * torch.finfo(torch.float32).min
    expected = torch.tensor([4, 2])
    for mask in (keep, bool4d, additive4d):
        assert torch.equal(valid_lengths(mask), expected)


@pytest.fixture
def source_and_converted(tiny_hparams):
    torch.manual_seed(0)
    source = build_asr_model(tiny_hparams())
    torch.manual_seed(0)
    converted = build_asr_model(tiny_hparams("asr_use_mamba=True"))
    return source, converted


def test_surgery_keeps_every_other_parameter_and_adds_exactly_mamba_keys(source_and_converted):
    source, converted = source_and_converted
    src, dst = source.state_dict(), converted.state_dict()
    attention_keys = {k for k in src if ".attention." in k}
    projections = ("q_proj", "k_proj", "v_proj", "out_proj")
    assert attention_keys and all(k.split(".")[-2] in projections for k in attention_keys)
    for key in set(src) - attention_keys:
        assert torch.equal(src[key], dst[key]), key
    layers = source.config.num_hidden_layers
    expected_new = {f"wav2vec2.encoder.layers.{i}.attention.{d}_mamba.{name}"
                    for i in range(layers) for d in ("fw", "bw") for name in MAMBA_SSM_KEYS}
    assert set(dst) - set(src) == expected_new
    assert set(src) - set(dst) == attention_keys
    assert not any(isinstance(m, Wav2Vec2Attention) for m in converted.modules())
    assert sum(isinstance(m, BiMamba2Wrapper) for m in converted.modules()) == layers


def test_swapping_attention_for_an_identical_attention_changes_nothing(tiny_hparams):
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams()).eval()
    x, mask = torch.randn(2, 8000), torch.ones(2, 8000, dtype=torch.long)
    mask[1, 5000:] = 0
    before = forward_model(model, x, mask).logits
    replace_attention(model.wav2vec2.encoder, copy.deepcopy)
    assert torch.equal(forward_model(model, x, mask).logits, before)


def test_padding_invariance(tiny_hparams):
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True,asr_mamba_residual_inside=False")).eval()
    alone = torch.randn(1, 6400)
    batch = torch.zeros(2, 16000)
    batch[0, :6400], batch[1] = alone[0], torch.randn(16000)
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[0, 6400:] = 0
    with torch.no_grad():
        out_alone = forward_model(model, alone, torch.ones(1, 6400, dtype=torch.long))
        out_batch = forward_model(model, batch, mask)
    n = out_alone.output_lengths[0]
    assert out_batch.output_lengths[0] == n
    torch.testing.assert_close(out_batch.logits[0, :n], out_alone.logits[0], rtol=1e-5, atol=1e-5)


def test_a_padded_forward_makes_the_padding_layout_once_for_every_layer(tiny_hparams, monkeypatch):
    """Each layer's mixer gets the same mask tensor: its lengths, reversal index and padded frames are made once per
    forward and shared, and made again for a new mask, or for the same one changed in place."""
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True")).eval()
    assert len(model.wav2vec2.encoder.layers) > 1
    made = []
    original_init = PaddingLayout.__init__
    monkeypatch.setattr(PaddingLayout, "__init__", lambda self, *args: made.append(1) or original_init(self, *args))
    x, mask = torch.randn(2, 9600), torch.ones(2, 9600, dtype=torch.long)
    mask[1, 4000:] = 0
    with torch.no_grad():
        first = forward_model(model, x, mask).logits
        assert len(made) == 1
        assert torch.equal(forward_model(model, x, mask.clone()).logits, first) and len(made) == 2
        layouts = []
        hook = model.wav2vec2.encoder.layers[0].attention.register_forward_pre_hook(
            lambda module, args, kwargs: layouts.append(kwargs["attention_mask"]), with_kwargs=True)
        forward_model(model, x, mask)
        hook.remove()
        encoder_mask = layouts[0]
        layout = PaddingLayout.of(encoder_mask, encoder_mask.shape[1])
        assert PaddingLayout.of(encoder_mask, encoder_mask.shape[1]) is layout
        encoder_mask[0, -1] = False  # changed in place: its _version moves on
        changed = PaddingLayout.of(encoder_mask, encoder_mask.shape[1])
    assert changed is not layout and changed.lengths[0] == layout.lengths[0] - 1


def test_bidirectional_a_late_change_reaches_the_first_frames(tiny_hparams):
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True")).eval()
    x = torch.randn(1, 16000)
    y = x.clone()
    y[:, -6400:] += 3 * torch.randn(6400)  # the last 20 of 50 frames; the positional conv reaches 8 frames
    mask = torch.ones(1, 16000, dtype=torch.long)
    with torch.no_grad():
        first = lambda v: forward_model(model, v, mask).logits[0, :5]  # noqa: E731
        bidirectional_change = (first(x) - first(y)).abs().max()
        for layer in model.wav2vec2.encoder.layers:  # forward-only ablation: the future cannot reach frame 0
            layer.attention.bw_mamba.out_proj.weight.zero_()
        forward_only_change = (first(x) - first(y)).abs().max()
    assert bidirectional_change > 1e-5 and forward_only_change < 1e-7


def test_a_converted_encoder_hands_its_mixers_the_2d_padding_mask_and_every_mask_form_agrees(tiny_hparams):
    """After the surgery the encoder builds its mixers the (batch, frames) padding mask, not a (frames, frames) one,
    and none for a batch without padding (the host knows its lengths: models/wav2vec2_forward.py); the 4-D forms an
    SDPA or eager encoder would pass give the same output."""
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True")).eval()
    assert model.config._attn_implementation == BIMAMBA2_ATTENTION
    x, mask = torch.randn(2, 9600), torch.ones(2, 9600, dtype=torch.long)
    mask[1, 4000:] = 0
    seen = []
    hook = model.wav2vec2.encoder.layers[0].attention.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    outputs = []
    for implementation in (BIMAMBA2_ATTENTION, "eager", "sdpa"):  # 2-D; additive float 4-D; boolean 4-D
        model.config._attn_implementation = implementation
        with torch.no_grad():
            outputs.append(forward_model(model, x, mask).logits)
    model.config._attn_implementation = BIMAMBA2_ATTENTION
    with torch.no_grad():
        forward_model(model, x, torch.ones_like(mask))
    hook.remove()
    frames = outputs[0].shape[1]
    assert seen[0].shape == (2, frames) and seen[0].dtype == torch.bool and seen[0][1].sum() < frames
    assert [m.dim() for m in seen[1:3]] == [4, 4] and seen[3] is None
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0])


def test_state_dict_round_trip_between_backends(tiny_hparams):
    torch.manual_seed(0)
    torch_model = build_asr_model(tiny_hparams("asr_use_mamba=True,mamba_backend=torch")).eval()
    torch.manual_seed(1)
    other = build_asr_model(tiny_hparams("asr_use_mamba=True,mamba_backend=auto")).eval()
    other.load_state_dict(torch_model.state_dict())
    for layer in other.wav2vec2.encoder.layers:
        layer.attention.kernels = mixer_kernels("ref", "cpu")
    x, mask = torch.randn(2, 6400), torch.ones(2, 6400, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(forward_model(other, x, mask).logits, forward_model(torch_model, x, mask).logits,
                                   rtol=1e-5, atol=1e-5)


def test_attention_init_copies_v_k_q_o(tiny_hparams):
    torch.manual_seed(0)
    source = build_asr_model(tiny_hparams())
    converted = build_asr_model(tiny_hparams("asr_use_mamba=True,asr_mamba_init=attention"),
                                init_state_dict=source.state_dict())
    attention = source.wav2vec2.encoder.layers[1].attention
    mamba = converted.wav2vec2.encoder.layers[1].attention.bw_mamba
    d, n = mamba.d_inner, mamba.d_state  # hidden 32, d_state 16
    rows = mamba.in_proj.weight
    assert torch.equal(rows[d:2 * d], attention.v_proj.weight)
    assert torch.equal(rows[2 * d:2 * d + n], attention.k_proj.weight[:n])
    assert torch.equal(rows[2 * d + n:2 * d + 2 * n], attention.q_proj.weight[:n])
    assert torch.equal(mamba.out_proj.weight, attention.out_proj.weight)


@pytest.mark.parametrize("teacher_masks,student_masks", [(False, True), (True, False)])
def test_a_teacher_seeds_a_student_whatever_their_specaugment(tiny_hparams, teacher_masks, student_masks):
    """SpecAugment's mask embedding exists only with mask_time_prob > 0: it is kept as drawn when the teacher has
    none and dropped when the student has none; every other weight of the teacher is loaded."""
    prob = lambda masks: f"mask_time_prob={0.05 if masks else 0.0}"  # noqa: E731
    torch.manual_seed(0)
    teacher = build_asr_model(tiny_hparams(prob(teacher_masks)))
    student = build_asr_model(tiny_hparams(f"asr_use_mamba=True,{prob(student_masks)}"),
                              init_state_dict=teacher.state_dict())
    assert hasattr(student.wav2vec2, "masked_spec_embed") == student_masks
    student_weights = student.state_dict()
    for key, value in teacher.state_dict().items():
        if key != "wav2vec2.masked_spec_embed" and ".attention." not in key:
            assert torch.equal(student_weights[key], value), key
    if student_masks:
        assert torch.isfinite(student.wav2vec2.masked_spec_embed).all()


def test_weights_of_another_model_are_refused_naming_their_source(tiny_hparams):
    student = build_asr_model(tiny_hparams("asr_use_mamba=True"))
    with pytest.raises(ValueError, match=r"teacher\.ckpt does not fit the model: .* missing key"):
        load_weights(build_asr_model(tiny_hparams()), student.state_dict(), "teacher.ckpt")
    with pytest.raises(ValueError, match=r"runs/std/model\.ckpt-4 does not fit the model"):  # train_distill's path
        build_asr_model(tiny_hparams(), init_state_dict=student.state_dict(), init_source="runs/std/model.ckpt-4")


def test_weights_of_another_size_are_refused_in_one_line(tiny_hparams):
    """A checkpoint of another vocabulary size: one line naming the source and a tensor, not one line per tensor."""
    other = build_asr_model(tiny_hparams("asr_vocab_size=40"))
    with pytest.raises(ValueError) as raised:
        load_weights(build_asr_model(tiny_hparams()), other.state_dict(), "runs/x/model.ckpt-4")
    assert re.fullmatch(r"runs/x/model\.ckpt-4 does not fit the model: 2 tensor\(s\) of another shape, e\.g\. "
                        r"lm_head\.weight \(40, \d+\) where the model has \(32, \d+\); was it saved by a model of "
                        r"another size .*", str(raised.value))


def test_gradient_checkpointing_runs_through_the_wrapper(tiny_hparams):
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True")).train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    x, mask = torch.randn(2, 6400), torch.ones(2, 6400, dtype=torch.long)
    forward_model(model, x, mask).logits.square().mean().backward()
    grad = model.wav2vec2.encoder.layers[0].attention.fw_mamba.in_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("mamba", [False, True])
def test_recomputed_encoder_layers_give_the_same_gradients(tiny_hparams, mamba):
    """encoder_recompute=True: each layer is run again in backward, with the dropout masks of its first run."""
    extra = f"asr_use_mamba={mamba},mamba_backend=torch"
    x, mask = torch.randn(2, 6400), torch.ones(2, 6400, dtype=torch.long)
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = build_asr_model(tiny_hparams(f"{extra},encoder_recompute={recompute}")).train()
        assert model.wav2vec2.encoder.gradient_checkpointing == recompute
        torch.manual_seed(1), np.random.seed(1)  # dropout; SpecAugment's mask (numpy's)
        forward_model(model, x, mask).logits.square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(".layers.0." in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="drop mamba_recompute=True"):
        build_asr_model(tiny_hparams(f"{extra},encoder_recompute=True,mamba_recompute=True"))


def test_clear_errors_on_bad_input(tiny_model_dir, tiny_hparams):
    model = Wav2Vec2ForCTC.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="headdim"):
        substitute_layer(model.wav2vec2.encoder, model.config, headdim=24)
    with pytest.raises(TypeError, match="Wav2Vec2 encoder"):
        substitute_layer(model.wav2vec2, model.config, headdim=16)
    with pytest.raises(ValueError, match="unknown Mamba2 backend"):
        substitute_layer(model.wav2vec2.encoder, model.config, headdim=16, backend="cuda")
    with pytest.raises(ValueError, match="unknown Mamba init"):
        substitute_layer(model.wav2vec2.encoder, model.config, init="zeros")
    with pytest.raises(ValueError, match="mamba_chunk_size"):
        substitute_layer(model.wav2vec2.encoder, model.config, headdim=16, chunk_size=0)
    substitute_layer(model.wav2vec2.encoder, model.config, headdim=16, d_state=8)
    with pytest.raises(TypeError, match="already converted"):
        substitute_layer(model.wav2vec2.encoder, model.config, headdim=16)


def test_the_cpu_path_needs_no_triton():
    """requirements.txt has no Triton (a CPU-only torch brings none): the scripts and models import, and a CPU CTC
    loss runs, with it missing; only the GPU paths import the Triton kernels."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, train, train_distill, infer, models.build, models.mamba_utils\n"
            "from models.heads import ctc_loss_per_utterance\n"
            "losses, ok = ctc_loss_per_utterance(torch.randn(1, 6, 5), torch.tensor([6]), torch.tensor([[1, 2]]),\n"
            "                                    torch.tensor([2]), blank=0)\n"
            "assert ok.all() and losses.isfinite().all()\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
