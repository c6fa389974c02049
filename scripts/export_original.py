"""Export a checkpoint of this code as one the original code loads (idiap linearize-distill-pretrained-transformers,
``speech/``): ``<out>/model.ckpt-<step>`` holding ``{'model': Model.state_dict(), 'step'}`` in the original's key
names, and ``<out>/hparams.json`` with the original's full key set.

Usage:
    python scripts/export_original.py --checkpoint output/tedlium/target_guided/model.ckpt-90000 \\
        --out output/original/tedlium_target_guided

The original's ``infer.py --model-path <out>/model.ckpt-<step>``, ``train_distill.py --teacher_path`` and
``--restore_from ... --reset_training`` then take it. It holds the weights and the step only: the original restores
no optimiser or schedule from it (continuing its training from there would restart both). This code's hparams
that the original has no key for are listed when they differ from their defaults; a BiMamba2 shape other than
mamba_ssm's defaults is refused, as the original builds ``Mamba2(d_model, expand=1)`` with them.
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import original  # noqa: E402
from utils.checkpoint import checkpoint_step, load_checkpoint, resolve_checkpoint, save_checkpoint  # noqa: E402
from utils.training import hparams_of_run  # noqa: E402


def export(checkpoint, out_dir) -> Path:
    """Write the original-format checkpoint and hparams.json of ``checkpoint`` (a file or a run dir) into
    ``out_dir``; returns the checkpoint written."""
    checkpoint = resolve_checkpoint(checkpoint)
    saved = checkpoint.parent / "hparams.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: the export reads the run's hparams.json")
    state = load_checkpoint(checkpoint)
    if original.is_original_checkpoint(state):
        raise ValueError(f"{checkpoint} is already an original-code checkpoint")
    hparams = hparams_of_run(saved)
    values, unexpressed = original.hparams_to_original(hparams)
    shape = {k: v for k, v in unexpressed.items() if k in original.ORIGINAL_MAMBA_SHAPE}
    if hparams.asr_use_mamba and shape:
        theirs = ", ".join(f"{k}={v}" for k, v in original.ORIGINAL_MAMBA_SHAPE.items())
        raise ValueError(f"{saved}: {', '.join(f'{k}={v}' for k, v in shape.items())}: the original code builds "
                         f"mamba_ssm's Mamba2 with {theirs}")
    if unexpressed:
        print(f"not in the original's hparams (left out): {', '.join(f'{k}={v!r}' for k, v in unexpressed.items())}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    step = int(state.get("step", checkpoint_step(checkpoint)))
    path = save_checkpoint(out_dir / f"model.ckpt-{step}", original.checkpoint_to_original({**state, "step": step}))
    (out_dir / "hparams.json").write_text(json.dumps(values, indent=1) + "\n")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a model.ckpt-<step> file, or a run dir (its latest)")
    parser.add_argument("--out", required=True, help="directory to write model.ckpt-<step> and hparams.json to")
    args = parser.parse_args(argv)
    try:
        path = export(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"exported {args.checkpoint} -> {path}")


if __name__ == "__main__":
    main()
