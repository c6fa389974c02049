"""The encoder's layers replayed as CUDA graphs (models/kernels/layer_graphs.py) on CPU, each "graph" rerun eagerly
(``rerun_eagerly``, what a replay does) against Hugging Face's forward: the template takes each layer's parameters,
the time padding is masked, hooks still record the layers' outputs, and the graphs apply only without a gradient.
The CUDA replays are tests/test_gpu.py's."""
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2ForCTC

from models.build import encoder_layer_graphs, forward_model
from models.kernels.graphs import rerun_eagerly
from models.kernels.layer_graphs import LayerGraphs
from models.wav2vec2_forward import wav2vec2_forward
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


def test_encoder_layer_graphs_only_for_sdpa_on_cuda():
    model = Wav2Vec2ForCTC(tiny_wav2vec2(True, mamba=False).config)
    assert encoder_layer_graphs(model, 16384) is None  # on CPU
    assert encoder_layer_graphs(model, 0) is None
