"""Export an attention checkpoint of train.py as a Hugging Face Wav2Vec2ForCTC directory (config + safetensors).

Usage:
    python scripts/export_hf_model.py --checkpoint output/tedlium/direct/model.ckpt-90000 --out output/models/ted

The directory then serves as ``asr_model_name`` of another run, as ``facebook/wav2vec2-large-lv60`` does: mini-CALD
(scripts/mini_cald.py) starts its intent and speaker-id runs from its ASR teacher this way. The model is rebuilt
from the ``hparams.json`` beside the checkpoint; classifier heads are not part of Wav2Vec2ForCTC and are left out.
A BiMamba2 checkpoint cannot be exported: a Wav2Vec2Config cannot describe its mixers.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hparams import create_hparams  # noqa: E402
from models.build import build_asr_model  # noqa: E402
from utils.checkpoint import load_checkpoint, resolve_checkpoint  # noqa: E402


def export(checkpoint, out_dir) -> Path:
    checkpoint = resolve_checkpoint(checkpoint)
    saved = checkpoint.parent / "hparams.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: the model is rebuilt from the run's hparams.json")
    hparams = create_hparams("", json_path=saved)
    if hparams.asr_use_mamba:
        raise ValueError(f"{checkpoint}: a BiMamba2 model (asr_use_mamba=True in {saved}); only attention "
                         f"checkpoints can be exported as Wav2Vec2ForCTC")
    model = build_asr_model(hparams, pretrained=False)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    if hasattr(model, "classifier_heads"):
        del model.classifier_heads
    model.save_pretrained(out_dir)
    return Path(out_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a model.ckpt-<step> file, or a run dir (its latest)")
    parser.add_argument("--out", required=True, help="directory to write config.json and model.safetensors to")
    args = parser.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"exported {args.checkpoint} -> {out}")


if __name__ == "__main__":
    main()
