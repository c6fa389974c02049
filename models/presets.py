"""Wav2Vec2 configurations to run offline: a randomly initialised "pretrained" model saved to a local directory.

No hub is reachable in tests, CI or the demo, so ``asr_model_name`` points at a directory written here:

    python -m models.presets tiny --out output/models/tiny     # 2 layers, hidden 32: unit tests
    python -m models.presets demo --out output/models/demo     # 4 layers, hidden 192: the CPU demo
    python -m models.presets base --out output/models/base     # wav2vec2-base's encoder size: CPU benchmark
    python -m models.presets large --out output/models/large   # wav2vec2-large-lv60's shape: GPU benchmarks

``from_pretrained(dir)`` then works exactly as with ``facebook/wav2vec2-large-lv60``. The front end mirrors
large-lv60 (layer-norm CNN, stable layer norm); tiny and demo shorten it for speed. The weights are random: to
train one of these from scratch, pass ``freeze_feature_encoder=False`` (a frozen random CNN front end caps what the
encoder can learn: README, Troubleshooting).
"""
import argparse
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

_LARGE_CNN = dict(
    conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2)
)  # 320x downsampling: 50 frames per second at 16 kHz

PRESETS = {
    "tiny": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8),  # 320x as large's, 3 layers
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    ),
    "demo": dict(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=4, intermediate_size=768,
        conv_dim=(128, 128, 128, 128), conv_kernel=(10, 4, 4, 4), conv_stride=(5, 4, 4, 4),  # 320x
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=16,
    ),
    "base": dict(  # wav2vec2-base's 12 x 768 encoder, with large-lv60's front end (as every preset's norms)
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, **_LARGE_CNN,
    ),
    "large": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, **_LARGE_CNN,
    ),
}


def preset_config(name: str, **overrides) -> Wav2Vec2Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}': expected one of {', '.join(PRESETS)}")
    values = dict(
        feat_extract_norm="layer", do_stable_layer_norm=True, feat_extract_activation="gelu", conv_bias=True,
        layerdrop=0.0, vocab_size=32, pad_token_id=0, mask_time_prob=0.05,
    )
    values.update(PRESETS[name])
    values.update(overrides)
    return Wav2Vec2Config(**values)


def save_preset(name: str, out_dir, seed: int = 0, **overrides) -> Path:
    """Write a randomly initialised Wav2Vec2ForCTC of a preset shape; returns the directory."""
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(preset_config(name, **overrides))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    return out_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("--out", required=True, help="directory to write config.json and model.safetensors to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {save_preset(args.preset, args.out, args.seed)}")


if __name__ == "__main__":
    main()
