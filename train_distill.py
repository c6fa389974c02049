"""Distil an attention teacher into its BiMamba2 conversion: Target guided, Waypoint guided and Hybrid.

Usage (Target guided: the student starts from the fine-tuned teacher, attention swapped for BiMamba2):
    python train_distill.py --model-dir=output/tedlium/target_guided --data-dir=data/tedlium --mixed_precision bf16 \\
        --hparams=asr_use_mamba=True,alpha_layer_distill_loss=15,alpha_logits_distill_loss=1,asr_mamba_residual_inside=False \\
        --accumulation_steps 4 --checkpoint_interval 2000 --teacher_path output/tedlium/direct/model.ckpt-90000

Waypoint guided: --use_teacher_snapshots with --teacher_path=<the teacher's run dir>; the student starts from the
pretrained asr_model_name and, at step s, follows the teacher's checkpoint at the next multiple of
teacher_snapshot_cycle after s. Hybrid: rerun a Target-guided --model-dir (or --restore_from one of its
checkpoints into a new dir) with alpha_layer_distill_loss=0.

Loss = task + alpha_layer * layer MSE + alpha_logits * logits KL (models/heads.py), each distillation term weighted
as the original weights it under gradient accumulation (utils/training.py, distill_scale); the teacher runs
without gradients, in train mode as the original (its dropout, SpecAugment, LayerDrop drawn independently) unless
teacher_eval_mode=True, and not at all when both alphas are 0; on CUDA its layers replay CUDA graphs
(teacher_graph_frames, models/kernels/layer_graphs.py). --teacher_path also takes the original code's checkpoints
and run dirs (models/original.py).
"""
import logging
import time
from pathlib import Path

import torch
from torch.profiler import record_function

from models.build import SpeechModel, build_asr_model, forward_model, load_weights, teacher_layer_graphs
from models.heads import layer_distill_loss, logits_distill_loss
from utils import checkpoint as ckpt
from utils import training
from utils.data import check_same_vocab

logger = logging.getLogger("train_distill")


class Teacher:
    """The frozen attention model; ``losses`` gives the distillation terms of one micro-batch."""

    def __init__(self, hparams, state_dict: dict, source: Path, device, autocast):
        teacher_hparams = type(hparams)(**{**hparams.values(), "asr_use_mamba": False})
        self.model = build_asr_model(teacher_hparams, pretrained=False, init_state_dict=state_dict,
                                     init_source=str(source)).to(device)
        self.model.requires_grad_(False)
        self.model.train(not hparams.teacher_eval_mode)
        self.layer_graphs = teacher_layer_graphs(self.model, hparams.teacher_graph_frames)
        self.hparams, self.autocast, self.path = hparams, autocast, None

    def load(self, path: Path) -> None:
        load_weights(self.model, ckpt.load_model_weights(path), str(path))
        self.path = path

    def evaluate(self, dev_batches, tokenizer, accelerator) -> dict:
        """Dev metrics of the current teacher; it stays in its mode (train, or eval with teacher_eval_mode)."""
        model = SpeechModel(self.model).train(self.model.training)  # predict() restores this mode afterwards
        rows = training.predict(model, dev_batches, tokenizer, self.hparams, accelerator, progress="teacher eval")
        return training.summarise(rows, self.hparams)

    @torch.no_grad()
    def outputs(self, batch):
        with self.autocast(), record_function("cald/teacher"):
            return forward_model(self.model, batch["input_values"], batch["attention_mask"],
                                 record_hidden_states=self.hparams.alpha_layer_distill_loss > 0,
                                 sample_lengths=batch["sample_lengths"], layer_graphs=self.layer_graphs)

    def losses(self, batch, student) -> dict:
        """{term: loss summed over valid frames} against the student's outputs; frame_mask is the student's
        (padding and infinite-CTC utterances excluded)."""
        hp, teacher = self.hparams, self.outputs(batch)
        terms = {}
        if hp.alpha_layer_distill_loss > 0:
            terms["layer_distill_loss"] = layer_distill_loss(
                student.hidden_states, teacher.hidden_states, student.frame_mask, hp.loss_normalize_type)
        if hp.alpha_logits_distill_loss > 0:
            terms["logits_distill_loss"] = logits_distill_loss(
                student.logits, teacher.logits, student.frame_mask, hp.loss_normalize_type, hp.distill_temperature)
        return terms


def main():
    args = training.parse_args(training.build_arg_parser(__doc__, distill=True))

    # 1. hparams and run dir (its hparams.json and vocab.json are written once every check below has passed)
    accelerator = training.make_accelerator(args)
    training.setup_logging(Path(args.model_dir), accelerator.is_main_process)
    start = training.resolve_run(args, accelerator.is_main_process)
    hparams = start.hparams
    if not hparams.asr_use_mamba:
        raise ValueError("train_distill.py trains a BiMamba2 student: add asr_use_mamba=True to --hparams")
    training.seed_everything(hparams)

    # 2. teacher / student
    if args.use_teacher_snapshots:
        first_teacher = ckpt.teacher_snapshot(args.teacher_path, 0, hparams.teacher_snapshot_cycle)
    else:
        first_teacher = ckpt.resolve_checkpoint(args.teacher_path)
    fresh_run = start.resume is None and start.restore is None
    starts_from_teacher = fresh_run and not args.use_teacher_snapshots  # Target guided's first run
    uses_teacher = hparams.alpha_layer_distill_loss > 0 or hparams.alpha_logits_distill_loss > 0
    vocab_path = training.data_paths(args)[2]
    if vocab_path is not None and (starts_from_teacher or uses_teacher):  # its CTC head and logits index this vocab
        check_same_vocab(vocab_path, first_teacher.parent / training.VOCAB_JSON, f"the teacher {first_teacher}",
                         matters=hparams.ctc_weight > 0 or hparams.alpha_logits_distill_loss > 0)
    teacher_weights = ckpt.load_model_weights(first_teacher) if starts_from_teacher or uses_teacher else None
    student = training.build_model_for_run(hparams, start, init_state_dict=teacher_weights if starts_from_teacher
                                           else None, init_source=str(first_teacher))
    teacher = Teacher(hparams, teacher_weights, first_teacher, accelerator.device,
                      accelerator.autocast) if uses_teacher else None
    if teacher is not None:
        teacher.path = None if args.use_teacher_snapshots else first_teacher  # snapshots: loaded at step start
        logger.info("teacher: %s (%s mode)", first_teacher, "eval" if hparams.teacher_eval_mode else "train")
    else:
        logger.info("both distillation weights are 0: training the student alone (Hybrid's second phase)")

    # 3. data, 4. optimiser and schedule, 5. resume; then the checked configuration goes into the run dir
    weights = {"layer_distill_loss": hparams.alpha_layer_distill_loss,
               "logits_distill_loss": hparams.alpha_logits_distill_loss}
    trainer = training.build_trainer(
        args, start, accelerator, student,
        extra_losses=teacher.losses if teacher else None, extra_weights=weights,
        record_hidden_states=teacher is not None and hparams.alpha_layer_distill_loss > 0,
    )
    training.write_run_files(args, hparams, accelerator)

    # Waypoint guidance: switch to the teacher snapshot ahead of the student, evaluating each new one on dev
    def follow_teacher(step: int) -> None:
        path = ckpt.teacher_snapshot(args.teacher_path, step, hparams.teacher_snapshot_cycle)
        if teacher.path != path:
            tic = time.perf_counter()
            with record_function("cald/teacher_switch"):
                teacher.load(path)
                metrics = teacher.evaluate(trainer.dev_batches(), trainer.tokenizer, accelerator)
            logger.info("step %d: teacher snapshot %s, dev %s", step, path.name, metrics)
            trainer.metrics.log(step, {"teacher_step": ckpt.checkpoint_step(path),
                                       **{f"teacher/dev/{k}": v for k, v in metrics.items()},
                                       "teacher_switch_s": time.perf_counter() - tic})

    if args.use_teacher_snapshots and teacher is not None:
        trainer.on_step_start = follow_teacher

    # 6. train loop
    trainer.fit()

    # 7. final eval: done by fit() at max_steps
    logger.info("done at step %d; best: %s", trainer.step, trainer.best.best if trainer.best else "")


if __name__ == "__main__":
    training.run_script(main)
