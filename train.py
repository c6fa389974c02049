"""Fine-tune a Wav2Vec2 on ASR (CTC), intent classification or speaker ID: Std (attention) and Unguided
(``asr_use_mamba=True``: converted to BiMamba2, trained without a teacher).

Usage:
    python train.py --model-dir=output/tedlium/direct --data-dir=data/tedlium --mixed_precision bf16 \\
        --hparams=batch_frame_limit=2.5e6,batch_quad_frame_limit=4e11,batch_size=24,data_warmup_steps=10000 \\
        --accumulation_steps 3 --checkpoint_interval 2000 --project_name tedlium --max_steps 90000

Rerunning on an existing --model-dir resumes it from its latest checkpoint (its hparams.json, overridden by
--hparams); --restore_from starts a new run from another run's checkpoint. See README, "Replicating the paper".
"""
import logging
from pathlib import Path

from utils import training

logger = logging.getLogger("train")


def main():
    args = training.parse_args(training.build_arg_parser(__doc__))

    # 1. hparams and run dir
    accelerator = training.make_accelerator(args)
    training.setup_logging(Path(args.model_dir), accelerator.is_main_process)
    start = training.resolve_run(args)
    training.write_hparams(Path(args.model_dir), start.hparams, accelerator)

    # 2. model: pretrained Wav2Vec2 (converted to BiMamba2 when asr_use_mamba)
    model = training.build_model_for_run(start.hparams, start)

    # 3. data, 4. optimiser and schedule, 5. resume
    trainer = training.build_trainer(args, start, accelerator, model)

    # 6. train loop (evaluates and saves every eval_interval / checkpoint_interval steps)
    trainer.fit()

    # 7. final eval: done by fit() at max_steps; the best checkpoints are listed in best_metrics.json
    logger.info("done at step %d; best: %s", trainer.step, trainer.best.best if trainer.best else "")


if __name__ == "__main__":
    main()
