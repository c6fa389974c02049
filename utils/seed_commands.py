"""The shell commands of the user's specification (seed README), verbatim: read by the end-to-end tests, the README
check, bench/ddp_scaling.py and the mini-CALD recipe (scripts/mini_cald.py), which run them with a few flags and
hparams changed (set_flag, parse_hparams).

Each entry: (task, strategy, script, arguments). ``{BEST_CKPT}``/``{EXP_NAME}``/``{CHECKPOINT_PATH}`` are the
placeholders the seed asks users to fill in.
"""
import shlex

SEED_COMMANDS = [
    ("asr", "std", "train.py", "--model-dir=output/tedlium/direct --data-dir=data/tedlium --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=2.5e6,batch_quad_frame_limit=4e11,batch_size=24,data_warmup_steps=10000,loss_normalize_type=sample --accumulation_steps 3 --checkpoint_interval 2000 --project_name tedlium  --max_steps 90000"),
    ("ic", "std", "train.py", "--model-dir output/slurp/direct --data-dir data/slurp_full --train_meta data/slurp_full/meta.train.syn.txt --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=4e6,batch_quad_frame_limit=6e11,batch_size=72,loss_normalize_type=sample,data_format=nltLa,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000 --accumulation_steps 1 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name slurp_uptrain  --max_steps 90000"),
    ("sid", "std", "train.py", "--model-dir output/superb_si/direct --data-dir s3prl/superb--si--data/VoxCeleb1 --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=3e6,batch_quad_frame_limit=4e11,batch_size=24,loss_normalize_type=sample,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,classifier_num_targets=1251 --accumulation_steps 3 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name si_uptrain --use_hf_dataset  --max_steps 90000"),
    ("asr", "target", "train_distill.py", "--model-dir=output/tedlium/target_guided --data-dir=data/tedlium --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=1.9e6,batch_quad_frame_limit=3e11,batch_size=18,data_warmup_steps=10000,asr_use_mamba=True,alpha_layer_distill_loss=15,alpha_logits_distill_loss=1,loss_normalize_type=sample,asr_mamba_residual_inside=False --accumulation_steps 4 --checkpoint_interval 2000 --teacher_path output/tedlium/direct/{BEST_CKPT} --project_name tedlium --max_steps 90000"),
    ("ic", "target", "train_distill.py", "--model-dir=output/slurp/target_guided --data-dir data/slurp_full --train_meta data/slurp_full/meta.train.syn.txt --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=2e6,batch_quad_frame_limit=2e11,batch_size=36,asr_use_mamba=True,alpha_layer_distill_loss=15,alpha_logits_distill_loss=0,loss_normalize_type=sample,data_format=nltLa,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,asr_mamba_residual_inside=False --accumulation_steps 2 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name slurp_uptrain --teacher_path output/slurp/direct/{BEST_CKPT} --max_steps 90000"),
    ("sid", "target", "train_distill.py", "--model-dir=output/superb_si/target_guided --data-dir s3prl/superb--si--data/VoxCeleb1 --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=2.25e6,batch_quad_frame_limit=3e11,batch_size=18,asr_use_mamba=True,alpha_layer_distill_loss=30,alpha_logits_distill_loss=0,loss_normalize_type=sample,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,classifier_num_targets=1251,asr_mamba_residual_inside=False --accumulation_steps 4 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name si_uptrain --use_hf_dataset --teacher_path output/superb_si/direct/{BEST_CKPT} --max_steps 90000"),
    ("asr", "waypoint", "train_distill.py", "--model-dir=output/tedlium/waypoint_guided --data-dir=data/tedlium --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=1.9e6,batch_quad_frame_limit=3e11,batch_size=18,data_warmup_steps=10000,asr_use_mamba=True,alpha_layer_distill_loss=15,alpha_logits_distill_loss=1,loss_normalize_type=sample,asr_mamba_residual_inside=False --accumulation_steps 4 --checkpoint_interval 2000 --teacher_path output/tedlium/direct/ --use_teacher_snapshots  --project_name tedlium --max_steps 90000"),
    ("ic", "waypoint", "train_distill.py", "--model-dir=output/slurp/waypoint_guided --data-dir data/slurp_full --train_meta data/slurp_full/meta.train.syn.txt --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=2e6,batch_quad_frame_limit=2e11,batch_size=36,asr_use_mamba=True,alpha_layer_distill_loss=15,alpha_logits_distill_loss=0,loss_normalize_type=sample,data_format=nltLa,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,asr_mamba_residual_inside=False --accumulation_steps 2 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name slurp_uptrain --teacher_path output/slurp/direct/ --use_teacher_snapshots --max_steps 90000"),
    ("sid", "waypoint", "train_distill.py", "--model-dir=output/superb_si/waypoint_guided --data-dir s3prl/superb--si--data/VoxCeleb1 --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=2.25e6,batch_quad_frame_limit=3e11,batch_size=18,asr_use_mamba=True,alpha_layer_distill_loss=30,alpha_logits_distill_loss=0,loss_normalize_type=sample,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,classifier_num_targets=1251,asr_mamba_residual_inside=False --accumulation_steps 4 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name si_uptrain --use_hf_dataset --teacher_path output/superb_si/direct/ --max_steps 90000 --use_teacher_snapshots"),
    ("asr", "unguided", "train.py", "--model-dir=output/tedlium/unguided --data-dir=data/tedlium --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=2.5e6,batch_quad_frame_limit=4e11,batch_size=24,data_warmup_steps=10000,asr_use_mamba=True,loss_normalize_type=sample --accumulation_steps 3 --project_name tedlium --max_steps 90000"),
    ("ic", "unguided", "train.py", "--model-dir output/slurp/unguided --data-dir data/slurp_full --train_meta data/slurp_full/meta.train.syn.txt --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=5e6,batch_quad_frame_limit=5e10,batch_size=24,loss_normalize_type=sample,data_format=nltLa,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,asr_use_mamba=True --accumulation_steps 3 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name slurp_uptrain --max_steps 90000"),
    ("sid", "unguided", "train.py", "--model-dir output/superb_si/unguided --data-dir s3prl/superb--si--data/VoxCeleb1 --vocab-path data/slurp_full/vocab.json --mixed_precision bf16 --hparams=asr_use_flash_attn=True,batch_frame_limit=3e6,batch_quad_frame_limit=4e11,batch_size=24,use_classifier=True,asr_vocab_size=300,ctc_weight=0,warmup_steps=5000,classifier_num_targets=1251,asr_use_mamba=True --accumulation_steps 3 --checkpoint_interval 5000 --eval_interval 5000 --use_tf32 --project_name si_uptrain --use_hf_dataset --max_steps 90000"),
    ("asr", "eval", "infer.py", "--model-path output/tedlium/{EXP_NAME}/{CHECKPOINT_PATH} --output-path output/tedlium/test --data-dir=data/tedlium --eval_meta meta.test.txt --hparams asr_use_flash_attn=False"),
    ("ic", "eval", "infer.py", "--model-path output/slurp/{EXP_NAME}/{CHECKPOINT_PATH} --output-path output/slurp/test --data-dir=data/slurp_full --eval_meta meta.test.txt --hparams asr_use_flash_attn=False"),
    ("sid", "eval", "infer.py", "--model-path output/superb_si/{EXP_NAME}/{CHECKPOINT_PATH} --output-path output/superb_si/test --data-dir s3prl/superb--si--data/VoxCeleb1 --use_hf_dataset --eval_meta test --hparams asr_use_flash_attn=False --vocab-path data/slurp_full/vocab.json"),
]


def seed_argv(task: str, strategy: str) -> tuple[str, list[str]]:
    """The seed's command of (task, strategy): (script, its arguments split as the shell splits them)."""
    found = [(script, arguments) for t, s, script, arguments in SEED_COMMANDS if (t, s) == (task, strategy)]
    if len(found) != 1:
        raise KeyError(f"no seed command for task {task!r}, strategy {strategy!r}")
    script, arguments = found[0]
    return script, shlex.split(arguments)


def set_flag(argv: list[str], flag: str, value: str, add: bool = False) -> list[str]:
    """``argv`` with ``flag``'s value replaced (``--flag=v`` or ``--flag v``, the form kept); a flag that is not
    there is an error, or with ``add`` appended as ``flag value``."""
    for i, word in enumerate(argv):
        if word == flag:
            return [*argv[:i + 1], value, *argv[i + 2:]]
        if word.startswith(flag + "="):
            return [*argv[:i], f"{flag}={value}", *argv[i + 1:]]
    if add:
        return [*argv, flag, value]
    raise ValueError(f"{flag} is not in the seed command {' '.join(argv)}")


def parse_hparams(text: str) -> dict[str, str]:
    """'a=1,b=x' -> {'a': '1', 'b': 'x'}: a seed command's --hparams as written (each value a single item)."""
    return dict(piece.split("=", 1) for piece in text.split(",") if piece)


def hparams_string(arguments: str) -> str:
    """The value of --hparams in an argument string (either --hparams=X or --hparams X)."""
    words = arguments.split()
    for i, word in enumerate(words):
        if word.startswith("--hparams="):
            return word.split("=", 1)[1]
        if word == "--hparams":
            return words[i + 1]
    return ""
