"""models/wav2vec2_forward.py against its reference, Hugging Face's Wav2Vec2Model.forward: the same outputs and
gradients with SpecAugment, dropout and LayerDrop on (their draws come from the same RNG states), for both encoder
variants, padded or not, attention or BiMamba2 (tests/test_training.py checks that a training step reads nothing
back from the device before its end)."""
import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from models.mamba_utils import substitute_layer
from models.wav2vec2_forward import wav2vec2_forward

LENGTHS = [9600, 5000, 7013]  # samples; padded to the first


def tiny_wav2vec2(stable: bool, mamba: bool) -> Wav2Vec2Model:
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=stable, feat_extract_norm="layer" if stable else "group", layerdrop=0.3,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, feat_proj_dropout=0.1,
        mask_time_prob=0.3, mask_time_length=2, mask_feature_prob=0.2, mask_feature_length=3,
        attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Wav2Vec2Model(config)
    model.masked_spec_embed.data.uniform_()  # Hugging Face draws it uniform too; made non-zero for certain
    if mamba:
        substitute_layer(model.encoder, config, d_state=16, headdim=16, chunk_size=16, backend="torch")
    return model


def padded_batch(lengths):
    torch.manual_seed(1)
    x = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n], mask[i, :n] = torch.randn(n), 1
    return x, mask


def run(forward, model, seed: int):
    np.random.seed(seed)  # SpecAugment's draws (numpy), dropout's and LayerDrop's (torch)
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    out = forward()
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("stable", [True, False])  # pre-norm (wav2vec2-large-lv60) and post-norm (base) encoders
@pytest.mark.parametrize("mamba", [False, True])
@pytest.mark.parametrize("lengths", [LENGTHS, [9600, 9600, 9600]])
def test_training_forward_and_gradients_are_hugging_faces(stable, mamba, lengths):
    model = tiny_wav2vec2(stable, mamba).train()
    x, mask = padded_batch(lengths)
    for seed in (0, 1):  # two draws: the masks and dropped layers change with the seed, both sides alike
        ours, our_grads = run(lambda: wav2vec2_forward(model, x, mask, lengths), model, seed)
        reference, reference_grads = run(lambda: model(x, attention_mask=mask).last_hidden_state, model, seed)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
        assert our_grads.keys() == reference_grads.keys() and "masked_spec_embed" in our_grads
        for name, grad in reference_grads.items():
            torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("mamba", [False, True])
def test_evaluation_forward_is_hugging_faces_with_or_without_host_lengths(mamba):
    model = tiny_wav2vec2(True, mamba).eval()
    x, mask = padded_batch(LENGTHS)
    with torch.no_grad():
        reference = model(x, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(wav2vec2_forward(model, x, mask, LENGTHS), reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(wav2vec2_forward(model, x, mask), reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(wav2vec2_forward(model, x[:1], None), model(x[:1]).last_hidden_state)


def test_an_adapter_model_is_refused_by_name():
    model = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, conv_dim=(32,), conv_stride=(5,), conv_kernel=(10,),
                                         add_adapter=True, num_conv_pos_embedding_groups=4,
                                         num_conv_pos_embeddings=16))
    with pytest.raises(ValueError, match="adapter"):
        wav2vec2_forward(model, torch.randn(1, 800), None)
