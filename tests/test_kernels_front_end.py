"""models/kernels/front_end.py: the channels-last CNN front end against Hugging Face's, its Triton LayerNorm + GELU
against the reference, and the front end in pieces (infer.py's long-audio path) against the whole."""
import copy

import pytest
import torch
from transformers import Wav2Vec2ForCTC

from models.build import chunked_feature_encoder
from models.kernels.front_end import (ChannelsLastConvLayer, ChannelsLastFeatureEncoder, layer_norm_gelu_ref,
                                      use_channels_last_feature_encoder)
from models.presets import preset_config


def hugging_face_and_channels_last_models(preset: str = "tiny"):
    """A random Wav2Vec2ForCTC of ``preset``'s size with Hugging Face's front end, and a copy with the channels-last
    one; the CNN left trainable."""
    torch.manual_seed(0)
    reference = Wav2Vec2ForCTC(preset_config(preset, vocab_size=8, mask_time_prob=0.0, layerdrop=0.0))
    model = copy.deepcopy(reference)
    use_channels_last_feature_encoder(model)
    return reference, model


def test_channels_last_front_end_equals_hugging_faces_and_keeps_its_weights():
    reference, model = hugging_face_and_channels_last_models()
    assert isinstance(model.wav2vec2.feature_extractor, ChannelsLastFeatureEncoder)
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 5000)
    outputs, grads = [], []
    for m in (reference, model):
        features = m.wav2vec2.feature_extractor.train()(x)  # (batch, channels, frames)
        outputs.append(features)
        grads.append(torch.autograd.grad((features * features.detach().cos()).sum(),
                                         list(m.wav2vec2.feature_extractor.parameters())))
    assert outputs[1].shape == outputs[0].shape and outputs[1].transpose(1, 2).is_contiguous()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for kernel, ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(kernel, ref, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).logits, reference.eval()(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows,channels,dtype", [(37, 512, torch.float32), (5, 200, torch.float32),
                                                 (20, 512, torch.bfloat16)])
def test_triton_layer_norm_gelu_matches_its_reference(rows, channels, dtype):
    """models/kernels/norm_gelu_triton.py (Triton's interpreter without CUDA): rows past a program's 8, channels not a
    power of two, bf16 input (the front end's conv output under autocast); fp32 out either way."""
    from models.kernels.norm_gelu_triton import layer_norm_gelu

    torch.manual_seed(0)
    x = (torch.randn(2, rows, channels) * 3 + 1).to(dtype)
    weight, bias = torch.randn(channels), torch.randn(channels)
    out = layer_norm_gelu(x, weight, bias, 1e-5)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, layer_norm_gelu_ref(x, weight, bias, 1e-5), rtol=1e-5, atol=1e-5)


def test_front_end_with_the_fused_norm_equals_hugging_faces(monkeypatch):
    """The Triton LayerNorm + GELU in the channels-last layers (taken on CUDA without gradients; forced here, in
    Triton's interpreter): the same features as Hugging Face's front end."""
    reference, model = hugging_face_and_channels_last_models()
    monkeypatch.setattr(ChannelsLastConvLayer, "_norm_and_gelu_fused", lambda self, rows: True)
    x = torch.randn(2, 5000)
    with torch.no_grad():
        fused, plain = model.wav2vec2.feature_extractor(x), reference.wav2vec2.feature_extractor(x)
    assert fused.shape == plain.shape
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_front_end_in_pieces_equals_the_whole(channels_last):
    """chunked_feature_encoder (infer.py's long-audio path): pieces that each read their frames' receptive field."""
    reference, model = hugging_face_and_channels_last_models()
    model = model if channels_last else reference
    x = torch.randn(1, 20000)  # 62 frames at the tiny preset's stride of 320
    with torch.no_grad():
        whole = model.wav2vec2.feature_extractor(x)
        with chunked_feature_encoder(model, max_frames=25):  # 25 + 25 + 12
            pieces = model.wav2vec2.feature_extractor(x)
    assert pieces.shape == whole.shape == (1, 32, 62)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)

