"""Fine-tune a Wav2Vec2 on ASR (CTC), intent classification or speaker ID: Std (attention) and Unguided
(``asr_use_mamba=True``: converted to BiMamba2, trained without a teacher).

Usage:
    python train.py --model-dir=output/tedlium/direct --data-dir=data/tedlium --mixed_precision bf16 \\
        --hparams=batch_frame_limit=2.5e6,batch_quad_frame_limit=4e11,batch_size=24,data_warmup_steps=10000 \\
        --accumulation_steps 3 --checkpoint_interval 2000 --project_name tedlium --max_steps 90000

Rerunning on an existing --model-dir resumes it from its latest checkpoint (its hparams.json, overridden by
--hparams); --restore_from starts a new run from another run's checkpoint. See README, "Replicating the paper".
SIGINT (Ctrl-C) and SIGTERM save a checkpoint at the next step boundary and exit (130, 143) naming it; an error in
the input ends in one line naming the culprit (exit status 1; train.log keeps the traceback).
"""
import logging
from pathlib import Path

from utils import training

logger = logging.getLogger("train")


def main():
    args = training.parse_args(training.build_arg_parser(__doc__))

    # 1. hparams and run dir (its hparams.json and vocab.json are written once every check below has passed)
    accelerator = training.make_accelerator(args)
    training.setup_logging(Path(args.model_dir), accelerator.is_main_process)
    start = training.resolve_run(args, accelerator.is_main_process)
    training.seed_everything(start.hparams)

    # 2. model: pretrained Wav2Vec2 (converted to BiMamba2 when asr_use_mamba)
    model = training.build_model_for_run(start.hparams, start)

    # 3. data, 4. optimiser and schedule, 5. resume; then the checked configuration goes into the run dir
    trainer = training.build_trainer(args, start, accelerator, model)
    training.write_run_files(args, start.hparams, accelerator)

    # 6. train loop (evaluates and saves every eval_interval / checkpoint_interval steps)
    trainer.fit()

    # 7. final eval: done by fit() at max_steps; the best checkpoints are listed in best_metrics.json
    logger.info("done at step %d; best: %s", trainer.step, trainer.best.best if trainer.best else "")


if __name__ == "__main__":
    training.run_script(main)
