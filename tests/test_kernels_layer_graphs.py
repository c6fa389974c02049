"""The encoder's layers replayed as CUDA graphs (models/kernels/layer_graphs.py) on CPU, each "graph" rerun eagerly
(``rerun_eagerly``, what a replay does) against Hugging Face's forward: the template takes each layer's parameters,
the time padding is masked, hooks still record the layers' outputs, and the graphs apply only without a gradient.
The CUDA replays are tests/test_gpu.py's."""
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2ForCTC

from models.build import forward_model, teacher_layer_graphs
from models.kernels.graphs import rerun_eagerly
from models.kernels.layer_graphs import GivenMaskDropout, LayerGraphs, TrainingLayerGraphs
from models.wav2vec2_forward import wav2vec2_forward
from tests.conftest import relative_error
from tests.test_wav2vec2_forward import LENGTHS, padded_batch, tiny_wav2vec2


def without_dropout(stable: bool):
    """tiny_wav2vec2 with LayerDrop and SpecAugment drawn but no dropout: train mode is then deterministic given
    the RNG states, so that a replay (which draws its dropout inside the graph) can be held to the reference."""
    model = tiny_wav2vec2(stable, mamba=False)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.config.attention_dropout = 0.0
    for layer in model.encoder.layers:
        layer.attention.dropout = 0.0
    return model


def seeded(forward, seed: int):
    np.random.seed(seed)  # SpecAugment's draws
    torch.manual_seed(seed)  # LayerDrop's
    with torch.no_grad():
        return forward()


@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("lengths", [LENGTHS, [9600, 9600, 9600], [4001]])
def test_replayed_layers_give_hugging_faces_outputs(stable, training, lengths):
    """Three layers through one template (each its own weights), padded batches and unpadded ones (their keep-mask
    all True), lengths of 49 to 119 frames padded to multiples of 32; in train mode LayerDrop and SpecAugment on."""
    model = without_dropout(stable).train(training)
    graphs = LayerGraphs(model.encoder.layers[0], capture=rerun_eagerly)
    x, mask = padded_batch(lengths)
    for seed in (0, 1):
        ours = seeded(lambda: wav2vec2_forward(model, x, mask, lengths, layer_graphs=graphs), seed)
        reference = seeded(lambda: model(x, attention_mask=mask).last_hidden_state, seed)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert graphs.captures == 1  # one padded shape, one mode
    (shape_key,) = graphs.graphs[(training, None)].graphs
    assert shape_key[0][0] == (len(lengths), 32 * -(-reference.shape[1] // 32), 32)  # hidden's static buffer
    assert all("forward" not in vars(layer) for layer in model.encoder.layers)  # the class's forward again


def test_lengths_that_round_up_alike_share_a_graph_and_a_shorter_call_sees_no_longer_ones_frames():
    """69 and 67 frames both pad to 96: one graph; the second call's padding holds zeros again (its keep-mask
    False there), so its output is the eager one."""
    model = without_dropout(True).eval()
    graphs = LayerGraphs(model.encoder.layers[0], capture=rerun_eagerly)
    for samples in ([5600, 3000], [5400, 5400], [5600, 5600]):
        x, mask = padded_batch(samples)
        with torch.no_grad():
            ours = wav2vec2_forward(model, x, mask, samples, layer_graphs=graphs)
            torch.testing.assert_close(ours, model(x, attention_mask=mask).last_hidden_state, rtol=1e-5, atol=1e-5)
    assert graphs.captures == 1


def test_hooks_record_the_replayed_layers_outputs():
    """forward_model's hidden states (the layer-distillation term's input) come through the layers' hooks."""
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(without_dropout(True).config).eval()
    graphs = LayerGraphs(model.wav2vec2.encoder.layers[0], capture=rerun_eagerly)
    x, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        ours = forward_model(model, x, mask, record_hidden_states=True, sample_lengths=LENGTHS, layer_graphs=graphs)
        reference = forward_model(model, x, mask, record_hidden_states=True, sample_lengths=LENGTHS)
    assert len(ours.hidden_states) == len(reference.hidden_states) == 3
    for a, b in zip(ours.hidden_states + [ours.logits], reference.hidden_states + [reference.logits]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert graphs.captures == 1


def test_graphs_apply_only_without_a_gradient_and_up_to_their_frames():
    model = without_dropout(True).eval()
    x, mask = padded_batch(LENGTHS)  # 3 x 119 frames: 3 x 128 padded
    graphs = LayerGraphs(model.encoder.layers[0], capture=rerun_eagerly)
    wav2vec2_forward(model, x, mask, LENGTHS, layer_graphs=graphs)  # with a gradient
    assert graphs.captures == 0
    small = LayerGraphs(model.encoder.layers[0], max_frames=3 * 128 - 1, capture=rerun_eagerly)
    with torch.no_grad():
        wav2vec2_forward(model, x, mask, LENGTHS, layer_graphs=small)
        assert small.captures == 0
        wav2vec2_forward(model, x[:2], mask[:2], LENGTHS[:2], layer_graphs=small)
        assert small.captures == 1


def test_a_layer_error_inside_the_replays_leaves_the_layers_forward_restored():
    model = without_dropout(True).eval()
    graphs = LayerGraphs(model.encoder.layers[0], capture=rerun_eagerly)
    with pytest.raises(RuntimeError), torch.no_grad():
        with graphs.replaying(model.encoder.layers, torch.ones(1, 8, dtype=torch.bool)):
            model.encoder.layers[0](torch.zeros(1, 8, 31))  # hidden size 32 expected
    assert all("forward" not in vars(layer) for layer in model.encoder.layers)


def test_teacher_layer_graphs_only_for_sdpa_on_cuda():
    model = Wav2Vec2ForCTC(tiny_wav2vec2(True, mamba=False).config)
    assert teacher_layer_graphs(model, 16384) is None  # on CPU
    assert teacher_layer_graphs(model, 0) is None


def test_given_mask_dropout_is_nn_dropout_with_its_mask():
    x = torch.randn(4, 7, 16)
    torch.manual_seed(3)
    dropped = torch.nn.functional.dropout(x, p=0.3, training=True)
    given = GivenMaskDropout(0.3)
    given.mask = dropped != 0
    torch.testing.assert_close(given(x), dropped)


def replaying_masks(model, recorded):
    """model's layers with each nn.Dropout applying, in the order the layers run, the masks of ``recorded``."""
    calls = iter(recorded)
    for layer in model.encoder.layers:
        dropouts = []
        for name, module in list(layer.named_modules()):
            if isinstance(module, torch.nn.Dropout) and module.p > 0:
                dropouts.append(GivenMaskDropout(module.p))
                layer.set_submodule(name, dropouts[-1])

        def take(module, args, dropouts=dropouts):
            for dropout, mask in zip(dropouts, next(calls)):
                dropout.mask = mask[:, :args[0].shape[1]]

        layer.register_forward_pre_hook(take)


@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize("lengths", [LENGTHS, [9600, 9600, 9600]])
def test_training_layer_graphs_give_the_eager_layers_outputs_and_gradients(stable, lengths):
    """BiMamba2 layers in training (dropout 0.1, LayerDrop and SpecAugment on) through one forward and one
    recomputing backward "graph" per padded shape: the output and every parameter's gradient are those of Hugging
    Face's layers applying the same dropout masks, padded batches and unpadded ones."""
    x, mask = padded_batch(lengths)
    results = []
    for graphed in (True, False):
        model = tiny_wav2vec2(stable, mamba=True).train()
        model.config.layerdrop = 0.2  # seed 0: two of the three layers run
        graphs = TrainingLayerGraphs(model.encoder.layers[0], capture=rerun_eagerly) if graphed else None
        if graphed:
            recorded, generator = [], torch.Generator().manual_seed(7)

            def draw_masks(batch, frames, device):  # as draw_masks, from a generator of their own
                masks = [torch.rand(batch, frames, width, generator=generator) > 0.1 for width in graphs.widths]
                recorded.append(masks)
                return masks

            graphs.draw_masks = draw_masks
        else:
            replaying_masks(model, recorded)
        np.random.seed(0)
        torch.manual_seed(0)
        out = wav2vec2_forward(model, x, mask, lengths, layer_graphs=graphs)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
        if graphed:
            assert graphs.captures == 2 and len(recorded) == 2  # one shape each way; LayerDrop skipped a layer
            assert all(len(masks) == 3 for masks in recorded)  # the layer's dropout, the feed-forward's two
    (ours, our_grads), (reference, reference_grads) = results
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert our_grads.keys() == reference_grads.keys()
    for name, grad in reference_grads.items():
        # fp32 sums in another order
        assert our_grads[name].shape == grad.shape and relative_error(our_grads[name], grad) < 1e-4, name


def test_training_layer_graphs_apply_only_to_a_training_stack_with_a_gradient():
    """Also: the dropouts' widths come from a CPU probe on the torch kernels, whatever kernels the layer's mixers
    hold (here ones that cannot run on a CPU, as mamba_ssm's Triton kernels cannot)."""
    import dataclasses

    def unrunnable(*args, **kwargs):
        raise RuntimeError("not on this device")

    model = tiny_wav2vec2(True, mamba=True).train()
    for module in model.encoder.layers[0].modules():
        if hasattr(module, "kernels"):
            module.kernels = dataclasses.replace(module.kernels, scan=unrunnable, conv=unrunnable,
                                                 bidirectional_conv=unrunnable)
    graphs = TrainingLayerGraphs(model.encoder.layers[0], capture=rerun_eagerly)
    torch.manual_seed(0)
    masks = graphs.draw_masks(4, 50, torch.device("cpu"))
    assert graphs.widths == [32, 64, 32] and [m.shape for m in masks] == [(4, 50, w) for w in graphs.widths]
    assert all(m.dtype == torch.bool and 0.85 < m.float().mean() < 0.95 for m in masks)  # kept: 1 - p = 0.9
    hidden = torch.randn(2, 40, 32)
    assert graphs.applies(hidden)
    with torch.no_grad():
        assert not graphs.applies(hidden)
    model.eval()
    assert not graphs.applies(hidden)
    assert TrainingLayerGraphs(model.encoder.layers[0], capture=rerun_eagerly, max_frames=64).applies(hidden) is False


def test_the_training_model_replays_the_students_layers_where_student_graph_frames_allows(tiny_hparams,
                                                                                            monkeypatch):
    """SpeechModel makes the student's graphs at its first forward (student_layer_graphs: only a BiMamba2 encoder
    on CUDA, here rerun eagerly on CPU) and a training step runs through them; encoder_recompute with them is an
    error naming both."""
    from models import build

    hparams = tiny_hparams("asr_use_mamba=True,student_graph_frames=16384")
    model = build.build_asr_model(hparams).train()
    assert build.student_layer_graphs(model, 16384) is None  # off CUDA
    made = []

    def cpu_graphs(model, max_frames):
        made.append(TrainingLayerGraphs(model.wav2vec2.encoder.layers[0], max_frames=max_frames,
                                        capture=rerun_eagerly))
        return made[-1]

    monkeypatch.setattr(build, "student_layer_graphs", cpu_graphs)
    speech_model = build.SpeechModel(model, hparams.student_graph_frames)
    x, mask = padded_batch(LENGTHS)
    torch.manual_seed(0)  # LayerDrop's draws
    out = speech_model(x, mask, sample_lengths=LENGTHS)
    out.logits.float().pow(2).mean().backward()
    assert len(made) == 1 and made[0].captures > 0
    assert all(p.grad is not None for p in model.wav2vec2.encoder.layers[-1].parameters())
    speech_model(x, mask, sample_lengths=LENGTHS)
    assert len(made) == 1  # made once
    with pytest.raises(ValueError, match="student_graph_frames.*encoder_recompute"):
        build.build_asr_model(tiny_hparams("asr_use_mamba=True,student_graph_frames=16384,encoder_recompute=True"))
