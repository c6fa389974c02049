"""Evaluate a checkpoint: greedy CTC transcripts and/or classifier predictions, and their metrics.

Usage:
    python infer.py --model-path output/tedlium/target_guided/model.ckpt-90000 --output-path output/tedlium/test \\
        --data-dir=data/tedlium --eval_meta meta.test.txt --hparams asr_use_flash_attn=False

The model is rebuilt from the ``hparams.json`` beside the checkpoint (overridden by --hparams) and its weights
from the checkpoint; no pretrained weights are downloaded. The original code's checkpoints and run dirs (its
hparams.json, ``asr_model.*`` keys, best-named ``model.ckpt-<step>-<metric>-<value>`` files) are read too, through
models/original.py. Writes ``<output-path>/preds.jsonl`` (one line per utterance: name, label, pred, and
clf_label / clf_pred for classifiers) and ``<output-path>/metrics.json`` (wer, cer, clf_acc, intent_acc as they
apply, utterances, audio hours, parameters, device, and the real-time factor: wall seconds per audio second, timed
after one warm-up batch so that kernel compilation and autotuning are left out).
"""
import argparse
import json
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from models.build import (CNN_CHUNK_FRAMES, SpeechModel, build_asr_model, chunked_feature_encoder, count_parameters,
                          load_weights)
from utils import checkpoint as ckpt
from utils import training
from utils.data import check_audio, check_same_vocab, eval_batches, load_corpus

logger = logging.getLogger("infer")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model-path", "--model_path", dest="model_path", required=True,
        help="a model.ckpt-<step> file, or a run dir (its latest checkpoint); hparams.json must lie beside it "
             "(this code's or the original code's)")
    add("--output-path", "--output_path", dest="output_path", required=True, help="directory for the results")
    training.add_data_flags(parser, eval_split="meta.test.txt; 'test' with --use_hf_dataset")
    return training.parse_args(parser)


def main():
    args = parse_args()

    # 1. checkpoint and its hparams
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=not torch.cuda.is_available())
    out_dir = Path(args.output_path)
    training.setup_logging(out_dir, accelerator.is_main_process)
    checkpoint = ckpt.resolve_checkpoint(args.model_path)
    saved = checkpoint.parent / "hparams.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: infer.py rebuilds the model from the hparams.json that "
                                f"train.py writes beside its checkpoints")
    hparams = training.hparams_of_run(saved, args.hparams)
    logger.info("checkpoint %s (step %d), hparams from %s", checkpoint, ckpt.checkpoint_step(checkpoint), saved)
    vocab_path = args.vocab_path or (None if args.use_hf_dataset else str(Path(args.data_dir) / "vocab.json"))
    if vocab_path is not None:  # transcripts decode with the checkpoint's alphabet or not at all
        check_same_vocab(vocab_path, checkpoint.parent / training.VOCAB_JSON, f"the run of {checkpoint}",
                         matters=hparams.ctc_weight > 0)

    # 2. model
    model = build_asr_model(hparams, pretrained=False)
    load_weights(model, ckpt.load_model_weights(checkpoint), str(checkpoint))
    parameters = count_parameters(model)
    model = accelerator.prepare(SpeechModel(model))

    # 3. data
    default_split = "test" if args.use_hf_dataset else "meta.test.txt"
    utts = load_corpus(args.data_dir, args.eval_meta or default_split, hparams, args.use_hf_dataset)
    check_audio(utts, hparams.sr, f"eval data {args.eval_meta or default_split}")  # every file, before the first batch
    tokenizer = training.load_tokenizer(vocab_path, hparams) if vocab_path else None
    batches = eval_batches(utts, hparams, tokenizer, rank=accelerator.process_index,
                           world_size=accelerator.num_processes, max_batches=0)

    # 4. predict, timed after one warm-up batch (kernel compilation and autotuning stay out of the real-time factor)
    with chunked_feature_encoder(accelerator.unwrap_model(model).model, CNN_CHUNK_FRAMES):
        warmup = eval_batches(utts, hparams, tokenizer, rank=accelerator.process_index,
                              world_size=accelerator.num_processes, max_batches=1)
        training.predict(model, warmup, tokenizer, hparams, accelerator)
        tic = time.time()
        rows = training.predict(model, batches, tokenizer, hparams, accelerator, progress="infer")
        seconds = time.time() - tic

    # 5. write predictions and metrics
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "preds.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        audio_seconds = sum(r["seconds"] for r in rows)
        metrics = {**training.summarise(rows, hparams), "audio_hours": audio_seconds / 3600,
                   "real_time_factor": seconds / max(audio_seconds, 1e-9), "checkpoint": str(checkpoint),
                   "parameters": parameters, "device": str(accelerator.device),
                   "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        logger.info("%s: %s", out_dir / "metrics.json", json.dumps(metrics))
    accelerator.end_training()  # several processes: leave the process group cleanly


if __name__ == "__main__":
    training.run_script(main)
