"""Export a checkpoint of train.py / train_distill.py as a Hugging Face model directory.

Usage:
    python scripts/export_hf_model.py --checkpoint output/tedlium/target_guided --out output/models/ted-bimamba2 \\
        --vocab data/tedlium
    python scripts/export_hf_model.py --checkpoint output/slurp/hybrid/model.ckpt-90000 --out output/models/slurp \\
        --vocab data/slurp_full/vocab.json --labels data/slurp_full
    python scripts/export_hf_model.py --checkpoint output/tedlium/direct/model.ckpt-90000 --out output/models/ted

A BiMamba2 checkpoint (any strategy) becomes a directory that transformers loads without this repository
(models/hf.py): config.json with its model type and auto_map, the modelling code, model.safetensors and a
Wav2Vec2Processor; classifier models (SLURP intents, VoxCeleb1 speakers) carry their heads and class names. Then:

    model = AutoModelForCTC.from_pretrained(out, trust_remote_code=True)
    asr = pipeline("automatic-speech-recognition", model=out, trust_remote_code=True)

An attention checkpoint becomes a plain Wav2Vec2ForCTC directory (classifier heads left out), which also serves as
``asr_model_name`` of another run, as ``facebook/wav2vec2-large-lv60`` does: mini-CALD (scripts/mini_cald.py) starts
its intent and speaker-id runs from its ASR teacher this way.

The model is rebuilt from the ``hparams.json`` beside the checkpoint. The vocabulary is ``--vocab`` (the run's
--vocab-path, or its data dir), by default ``<run dir>/vocab.json`` when the run recorded one; a BiMamba2 export
needs it (its processor), an attention export writes the processor only when it is known. Class names are read from
``--labels`` (SLURP: the data dir or its categories.json, by default the one beside the vocabulary; VoxCeleb1: the
dir holding iden_split.txt). config.json's ``converted_from`` records the checkpoint, vocabulary and labels used.
"""
import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corpora import CorpusError  # noqa: E402
from models.hf import make_processor, save_model_dir, to_hf_model  # noqa: E402
from utils.trained_model import load_trained  # noqa: E402


def export(checkpoint, out_dir, vocab=None, labels=None) -> Path:
    """Write the export of ``checkpoint`` (a model.ckpt-* or a run dir) into ``out_dir``; returns it."""
    trained = load_trained(checkpoint, vocab, labels)
    processor = None
    if trained.tokenizer is not None:
        processor = make_processor(trained.feature_extractor, trained.tokenizer)
    if not trained.hparams.asr_use_mamba:
        model = trained.model
        if hasattr(model, "classifier_heads"):
            del model.classifier_heads
        if processor is None:
            logging.info("no vocabulary (--vocab, <run dir>/vocab.json): the export has no processor files")
        return save_model_dir(out_dir, model, processor)
    if processor is None:
        raise FileNotFoundError(f"{trained.checkpoint}: no vocabulary for the exported processor: pass --vocab, the "
                                f"run's --vocab-path or its data dir (<run dir>/vocab.json is not there)")
    if trained.hparams.use_classifier and trained.classifier is None:
        raise FileNotFoundError(f"{trained.checkpoint}: a classifier model; pass --labels with its class names (a "
                                f"SLURP data dir or its categories.json, or the VoxCeleb1 dir holding iden_split.txt)")
    hf_model = to_hf_model(trained.model, trained.hparams, trained.classifier, trained.converted_from)
    return save_model_dir(out_dir, hf_model, processor)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a model.ckpt-<step> file, or a run dir (its latest)")
    parser.add_argument("--out", required=True, help="the model directory to write")
    parser.add_argument("--vocab", default=None,
                        help="the run's vocab.json or its data dir (default: <run dir>/vocab.json when present)")
    parser.add_argument("--labels", default=None,
                        help="classifier class names: a SLURP data dir or its categories.json, or a VoxCeleb1 dir "
                             "(default: the categories.json beside the vocabulary, for SLURP)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = export(args.checkpoint, args.out, args.vocab, args.labels)
    except (FileNotFoundError, ValueError, CorpusError) as error:
        sys.exit(f"error: {error}")
    print(f"exported {args.checkpoint} -> {out}")


if __name__ == "__main__":
    main()
