"""What train.py and train_distill.py share: flags, run directory and hparams, optimiser and schedule, the loss
of one step, evaluation, checkpoints and the training loop itself.

Loss scale (the original's, speech/models/model.py compute_loss and train_distill.py): every term is summed over a
micro-batch. The step's normaliser N (transcript characters under ``loss_normalize_type=sample``, utterances under
``utterance``; see ``models.heads.normaliser``) is summed over the step's micro-batches and all ranks before any
backward, so each micro-batch's loss is divided by the final N directly. Utterances whose CTC loss is infinite
are zeroed and left out of N and of distillation: once the step's finite N is known, the gradients are rescaled by
N_all / N_finite. A distillation term S_b (summed over micro-batch b's valid frames) enters as
``alpha * distill_scale * S_b``: under ``sample`` the original weights it by n_b / F, b's share n_b of N over the
step's valid frames F, so the step's gradient holds ``alpha * sum_b (n_b / N) * S_b / F``, about alpha / k of a mean
per frame at ``--accumulation_steps k`` (``distill_frame_mean=True``: N / F, the mean per frame); under
``utterance`` S_b is already a sum of per-utterance means and is weighted 1. n_b, N and F are sums over all ranks
(the original normalised each rank alone and averaged the ranks' gradients). accelerate's averaging over ranks is
undone by multiplying each loss by the number of processes. The logged terms are the step's summed terms (each
distillation term with its weight) over N_finite, and ``loss`` their weighted sum, as the original logs them.
"""
import argparse
import contextlib
import dataclasses
import gc
import json
import logging
import math
import signal
import threading
import time
from collections import deque
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
from torch.profiler import record_function
from tqdm import tqdm

from hparams import ARCHITECTURE_KEYS, create_hparams
from models import original
from models.build import SpeechModel, build_asr_model, load_weights
from models.heads import classifier_loss, ctc_loss_per_utterance, normaliser
from models.wav2vec2_forward import upload
from utils import checkpoint as ckpt
from utils.data import (BatchFeeder, DataError, build_tokenizer, check_audio, check_same_vocab, clean_transcript,
                        eval_batches, load_corpus, vocab_file)
from utils.metrics import (METRICS_JSONL, MetricsLogger, asr_metrics, classification_metrics, ctc_greedy_decode,
                           read_rows)
from utils.profiling import StepProfiler

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_FAILURES, FAILURE_WINDOW = 10, 20  # this many failed steps within this many steps stop the run
# this many steps in a row with a non-finite gradient norm stop the run (a skipped step does not count as one)
MAX_NONFINITE_IN_A_ROW = 50
VOCAB_JSON = "vocab.json"  # the run dir's copy of the vocabulary it was trained with
# errors in what the user gave, whose message names the culprit (file:line, flag, key, path): one line on the console
ONE_LINE_ERRORS = (ValueError, KeyError, OSError, EOFError)
RESUME_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "step", "feeder", "rng")


# ---------------------------------------------------------------------------------------------------------
# 1. flags, run directory, hparams


def add_data_flags(parser: argparse.ArgumentParser, eval_split: str) -> None:
    """The flags train.py, train_distill.py and infer.py share; ``eval_split`` names the default eval data."""
    add = parser.add_argument
    add("--data-dir", "--data_dir", dest="data_dir", required=True,
        help="prepared data dir (corpora/*.py), or s3prl/superb--si--<VoxCeleb1 dir> with --use_hf_dataset")
    add("--eval_meta", "--eval-meta", dest="eval_meta", default=None,
        help=f"eval meta file: a bare file name is taken from --data-dir, a path (./meta.x.txt) as given "
             f"(default {eval_split})")
    add("--vocab-path", "--vocab_path", dest="vocab_path", default=None,
        help="CTC vocab.json (default <data-dir>/vocab.json)")
    add("--use_hf_dataset", action="store_true", help="read VoxCeleb1 SI as the SUPERB HF dataset (see README)")
    add("--hparams", default="", help="comma-separated key=value overrides of hparams.py, e.g. batch_size=24")
    add("--mixed_precision", choices=("no", "fp16", "bf16"), default="no", help="autocast precision (accelerate)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser``'s arguments with ``--hparams`` checked on its own first: an unknown key or a bad value is a usage
    error (one line naming the key, exit status 2) before anything is written."""
    args = parser.parse_args(argv)
    try:
        create_hparams(args.hparams)
    except (KeyError, ValueError) as err:
        parser.error(f"--hparams: {err.args[0]}")
    return args


def build_arg_parser(description: str, distill: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--model-dir", "--model_dir", dest="model_dir", required=True,
        help="run directory: hparams.json, model.ckpt-<step>, metrics.jsonl; an existing one is resumed")
    add_data_flags(parser, eval_split="meta.dev.txt; 'validation' with --use_hf_dataset")
    add("--train_meta", "--train-meta", dest="train_meta", default=None,
        help="training meta file: a bare file name is taken from --data-dir, a path as given (default "
             "meta.train.txt; 'train' with --use_hf_dataset)")
    add("--use_tf32", action="store_true", help="allow TF32 matmuls on Ampere+ GPUs (no-op on CPU)")
    add("--accumulation_steps", type=positive_int, default=1, help="micro-batches per optimiser step")
    add("--data_workers", type=positive_int, default=2,
        help="threads building training batches (reading audio, normalising) per process; the batches are the "
             "same for any number (default 2)")
    add("--max_steps", type=non_negative_int, default=90000, help="optimiser steps to train to")
    add("--checkpoint_interval", type=positive_int, default=5000,
        help="save model.ckpt-<step> (and evaluate on dev) every this many steps")
    add("--eval_interval", type=positive_int, default=2000, help="evaluate on dev (and save) every this many steps")
    add("--project_name", default="cald", help="wandb project; the run is named after --model-dir")
    add("--restore_from", default=None,
        help="start this new run from a checkpoint (file or run dir): model, optimiser, schedule and step, and "
             "the data position and RNG when it was trained on the same data")
    add("--reset_training", action="store_true", help="with --restore_from: take the weights only, step 0")
    if distill:
        add("--teacher_path", required=True,
            help="teacher checkpoint (Target guided), or the teacher's run dir with --use_teacher_snapshots")
        add("--use_teacher_snapshots", action="store_true",
            help="Waypoint guided: follow the teacher's checkpoints every teacher_snapshot_cycle steps")
    return parser


class ConsoleFormatter(logging.Formatter):
    """LOG_FORMAT; a record logged with ``extra={"brief": True}`` shows its message without the traceback, which
    train.log keeps."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "brief", False) and record.exc_info:
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


def setup_logging(run_dir: Path | None, is_main: bool) -> None:
    console = logging.StreamHandler()
    console.setFormatter(ConsoleFormatter(LOG_FORMAT))
    handlers = [console]
    if run_dir is not None and is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(run_dir / "train.log")
        log_file.setFormatter(logging.Formatter(LOG_FORMAT))
        handlers.append(log_file)
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, handlers=handlers, force=True)
    for noisy in ("transformers.modeling_utils", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def one_line(error: BaseException) -> str:
    """An error's message on one line (a KeyError's without the quotes ``str`` adds, an OSError's without the
    ``[Errno N]`` it adds)."""
    if isinstance(error, KeyError) and error.args:
        text = error.args[0]
    elif isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error)
    return " ".join(str(text).split()) or type(error).__name__


def run_script(main) -> None:
    """Run a script's ``main``; exit status 1 on an error. One of ``ONE_LINE_ERRORS`` (a bad file, flag, key or
    checkpoint, which its message names) ends the output in one line, its traceback kept in train.log; any other
    exception, a bug, is logged with its traceback. A Ctrl-C outside the training loop ends with status 130."""
    try:
        main()
    except KeyboardInterrupt:
        logger.warning("interrupted")
        raise SystemExit(130) from None
    except ONE_LINE_ERRORS as error:
        logger.error("%s", one_line(error), exc_info=True, extra={"brief": True})
        raise SystemExit(1) from None
    except Exception:
        logger.exception("stopped by an unexpected error")
        raise SystemExit(1) from None


@dataclasses.dataclass
class RunStart:
    hparams: object
    resume: Path | None  # the run's own latest checkpoint: continue it
    restore: Path | None  # --restore_from: a new run starting from another run's checkpoint


def resolve_run(args, is_main: bool = True) -> RunStart:
    """Hparams with precedence defaults < saved hparams.json < --hparams, and where the run starts from: the run
    dir's latest readable checkpoint (a damaged later one is skipped with a warning), else --restore_from.

    Nothing is written: a resume or restore that would change what the checkpoint was built with
    (``ARCHITECTURE_KEYS``) is an error naming the key. ``is_main`` removes the temp files a killed write left."""
    run_dir = Path(args.model_dir)
    if is_main:
        for leftover in ckpt.remove_temp_files(run_dir):
            logger.info("removed %s, left by a write that was cut short", leftover)
    resume = ckpt.latest_usable_checkpoint(run_dir) if run_dir.is_dir() else None
    if resume is None and ckpt.latest_checkpoint(run_dir) is not None:
        raise ckpt.CheckpointError(f"{run_dir}: none of its checkpoints can be read (see above): move them away to "
                                   f"start afresh, or use another --model-dir")
    restore = None
    if resume is None and args.restore_from:
        restore = ckpt.resolve_checkpoint(args.restore_from)
    base_json = None
    if resume is not None:
        base_json = run_dir / "hparams.json"
    elif restore is not None and (restore.parent / "hparams.json").is_file():
        base_json = restore.parent / "hparams.json"
    if resume is not None and not base_json.is_file():
        raise FileNotFoundError(f"{base_json} not found: {resume} cannot be resumed without the hparams.json it was "
                                f"trained with (restore its copy, or use another --model-dir)")
    values = original.read_hparams_json(base_json) if base_json is not None else None  # read (and logged) once
    hparams = create_hparams(args.hparams, json_path=base_json, saved=values)
    if base_json is not None:
        saved = create_hparams(json_path=base_json, saved=values)
        changed = hparams.diff(saved)
        origin = "resuming" if resume else "restoring"
        # a key the saved file does not record (an original-code hparams.json has no Mamba2 shape) cannot conflict
        rebuilt = [k for k in ARCHITECTURE_KEYS if k in changed and k in values]
        if rebuilt:
            key, (new, old) = rebuilt[0], changed[rebuilt[0]]
            raise ValueError(f"--hparams {key}={new}: {base_json} says {key}={old}, and {origin} from "
                             f"{resume or restore} cannot change what its weights were built with "
                             f"({', '.join(ARCHITECTURE_KEYS)}); train such a model in a new --model-dir")
        logger.info("%s from %s with hparams of %s; changed: %s", origin, resume or restore, base_json,
                    ", ".join(f"{k} {old!r} -> {new!r}" for k, (new, old) in changed.items()) or "none")
    return RunStart(hparams, resume, restore)


def hparams_of_run(json_path, hparams_string: str = ""):
    """Defaults < the run's saved hparams.json (an original-code one converted: models/original.py) <
    ``hparams_string``; ``json_path`` None: defaults < ``hparams_string``."""
    saved = original.read_hparams_json(json_path) if json_path is not None else None
    return create_hparams(hparams_string, json_path=json_path, saved=saved)


def make_accelerator(args) -> Accelerator:
    precision = args.mixed_precision
    if precision == "fp16" and not torch.cuda.is_available():
        logging.getLogger(__name__).warning("--mixed_precision fp16 needs a GPU: running in fp32 on CPU")
        precision = "no"
    # LayerDrop skips whole layers: DDP must then tolerate parameters without gradients
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    if args.use_tf32:
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:
            logger.info("--use_tf32 is a no-op on CPU")
    return accelerator


def seed_everything(hparams) -> None:
    """Seed every RNG from the hparams: new modules start the same way each run."""
    set_seed(hparams.seed)


def write_run_files(args, hparams, accelerator) -> None:
    """Rank 0 writes the resolved ``hparams.json`` and a copy of the vocabulary (``vocab.json``, which infer.py and
    resumes check theirs against) into the run dir, each atomically; an original-code ``hparams.json`` there is kept
    as ``hparams.original.json`` first. Called once the configuration has passed every check (data, model, the
    checkpoint it resumes from), so that a refused rerun leaves the run's files as they were."""
    if not accelerator.is_main_process:
        return
    run_dir = Path(args.model_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keep_original_hparams(run_dir / "hparams.json")
    ckpt.atomic_write_text(run_dir / "hparams.json", hparams.to_json() + "\n")
    vocab_path = data_paths(args)[2]
    if vocab_path is not None:
        ckpt.atomic_write_text(run_dir / VOCAB_JSON, vocab_file(vocab_path).read_text(encoding="utf-8"))
    logger.info("hparams:\n%s", hparams.to_json())


def keep_original_hparams(path: Path) -> None:
    """An original-code run dir continued here: its hparams.json moves to hparams.original.json (this code's
    takes its place; the original code reads its own keys only)."""
    if path.is_file() and original.is_original_hparams(json.loads(path.read_text())):
        path.rename(path.with_name("hparams.original.json"))
        logger.info("%s is the original code's: kept as %s", path, path.with_name("hparams.original.json"))


def data_paths(args):
    """(train split, dev split, vocab path) from the flags and their defaults."""
    if args.use_hf_dataset:
        return args.train_meta or "train", args.eval_meta or "validation", args.vocab_path
    vocab = args.vocab_path or str(Path(args.data_dir) / "vocab.json")
    return args.train_meta or "meta.train.txt", args.eval_meta or "meta.dev.txt", vocab


def load_tokenizer(vocab_path, hparams):
    tokenizer = build_tokenizer(vocab_path)
    if len(tokenizer) > hparams.asr_vocab_size:
        raise ValueError(f"{vocab_path}: {len(tokenizer)} tokens do not fit asr_vocab_size={hparams.asr_vocab_size}")
    if tokenizer.pad_token_id != hparams.pad_token_id:
        raise ValueError(f"{vocab_path}: [PAD] is {tokenizer.pad_token_id}, hparams.pad_token_id is "
                         f"{hparams.pad_token_id}")
    return tokenizer


# ---------------------------------------------------------------------------------------------------------
# 2. optimiser and schedule (the original's)


def is_weight_decayed(name: str) -> bool:
    """The original's rule: everything but biases (names ending in '.bias') and the weights of modules named
    'layer_norm'. Mamba2's dt_bias, A_log, D and norm.weight and the layers' final_layer_norm are decayed."""
    parts = name.split(".")
    return parts[-1] != "bias" and not (len(parts) > 1 and parts[-2] == "layer_norm")


def make_optimizer(model, hparams) -> torch.optim.AdamW:
    """The original's AdamW, in its fused implementation (one kernel a step for all parameters, no host read of
    the step counts; the same update as the default's up to rounding)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decayed = [p for n, p in named if is_weight_decayed(n)]
    others = [p for n, p in named if not is_weight_decayed(n)]
    return torch.optim.AdamW([{"params": decayed, "weight_decay": hparams.reg_weight},
                              {"params": others, "weight_decay": 0.0}],
                             lr=hparams.max_lr, betas=(0.9, 0.999), eps=hparams.adam_eps, fused=True)


IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` keeping this optimiser's implementation: torch would take the saved
    groups' flags (a checkpoint of the default AdamW, or of the original code, would turn fused off) and keep the
    step counts where that implementation had them."""
    groups = state["param_groups"]
    if len(groups) == len(optimizer.param_groups):  # else load_state_dict names the mismatch
        groups = [{**saved, **{k: group[k] for k in IMPLEMENTATION_FLAGS if k in group}}
                  for saved, group in zip(groups, optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})


def lr_factor(step: int, hparams) -> float:
    """Linear warm-up 0 -> max_lr over warmup_steps, exponential decay to final_lr over decay_steps, then flat."""
    if step < hparams.warmup_steps:
        return step / hparams.warmup_steps
    decayed = step - hparams.warmup_steps
    if decayed < hparams.decay_steps:
        return (hparams.final_lr / hparams.max_lr) ** (decayed / hparams.decay_steps)
    return hparams.final_lr / hparams.max_lr


def make_scheduler(optimizer, hparams):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, hparams))


# ---------------------------------------------------------------------------------------------------------
# 3. the loss of one micro-batch


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def task_loss_sums(out, batch, hparams, has_transcripts: bool) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """({term: summed loss}, n of this micro-batch (finite utterances only), finite mask (batch,))."""
    terms = {}
    finite = torch.ones_like(batch["label_lengths"], dtype=torch.bool)
    if hparams.ctc_weight > 0:
        losses, finite = ctc_loss_per_utterance(out.logits, out.output_lengths, batch["labels"],
                                                batch["label_lengths"], blank=hparams.pad_token_id)
        if hparams.loss_normalize_type == "utterance":
            losses = losses / batch["label_lengths"].clamp(min=1)
        terms["ctc_loss"] = losses.sum()
    if hparams.use_classifier:
        terms["classifier_loss"] = classifier_loss(out.head_logits, batch["classifier_labels"])
    n = normaliser(batch["label_lengths"], finite, hparams.loss_normalize_type, has_transcripts)
    return terms, n, finite


def weighted_total(terms: dict, weights: dict) -> torch.Tensor:
    return sum(weights[k] * v for k, v in terms.items())


def distill_scale(hparams, n: torch.Tensor, n_all: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | float:
    """The factor of a micro-batch's distillation sums before the step's division by N (see the module's
    docstring): n / F (the original's ``scale_factor``), N / F with ``distill_frame_mean``, 1 under ``utterance``.
    n: this micro-batch's finite normaliser; n_all (N) and frames (F): the step's, over all ranks."""
    if hparams.loss_normalize_type == "utterance":
        return 1.0
    return (n_all if hparams.distill_frame_mean else n) / frames


# ---------------------------------------------------------------------------------------------------------
# 4. evaluation


@torch.no_grad()
def predict(model, batches, tokenizer, hparams, accelerator, progress: str | None = None):
    """Per-utterance predictions over ``batches`` (this rank's), gathered from all ranks, sorted by name:
    dicts with name, label (reference text), pred (greedy CTC text) and clf_label / clf_pred for classifiers."""
    was_training = model.training
    model.eval()
    rows = []
    bar = tqdm(batches, desc=progress, disable=progress is None or not accelerator.is_main_process, leave=False)
    for batch in bar:
        batch = to_device(batch, accelerator.device)
        with accelerator.autocast():
            out = model(batch["input_values"], batch["attention_mask"], sample_lengths=batch["sample_lengths"])
        heads = out.head_logits if hparams.use_classifier else None
        texts = [""] * len(batch["names"])
        if hparams.ctc_weight > 0:  # hypotheses cleaned as the references are ([UNK] dropped, apostrophes joined)
            texts = [clean_transcript(t, hparams.remove_unk, hparams.replace_apos)
                     for t in ctc_greedy_decode(out.logits.float(), out.output_lengths, tokenizer)]
        if heads is not None:  # read once a batch: (batch, heads) each
            clf_labels = batch["classifier_labels"].tolist()
            clf_preds = torch.stack([h.argmax(-1) for h in heads], dim=1).tolist()
        for i, name in enumerate(batch["names"]):
            row = {"name": name, "label": batch["texts"][i], "pred": texts[i],
                   "seconds": batch["sample_lengths"][i] / hparams.sr}
            if heads is not None:
                row["clf_label"], row["clf_pred"] = clf_labels[i], clf_preds[i]
            rows.append(row)
    model.train(was_training)
    rows = gather_object(rows) if accelerator.num_processes > 1 else rows
    return sorted(rows, key=lambda r: r["name"])


def summarise(rows: list[dict], hparams) -> dict:
    """Metrics of a list of predictions (as ``predict`` returns and preds.jsonl holds)."""
    metrics = {"utterances": len(rows)}
    if hparams.ctc_weight > 0 and any(r["label"] for r in rows):
        metrics.update(asr_metrics([r["label"] for r in rows], [r["pred"] for r in rows]))
    if hparams.use_classifier:
        metrics.update(classification_metrics([r["clf_pred"] for r in rows], [r["clf_label"] for r in rows]))
    return metrics


# ---------------------------------------------------------------------------------------------------------
# 5. the training loop


@dataclasses.dataclass
class Trainer:
    """One run: the Wav2Vec2ForCTC being trained and its SpeechModel as prepared by accelerate, data, optimiser,
    schedule, logging; ``extra_losses`` adds the distillation terms (train_distill.py)."""

    args: argparse.Namespace
    hparams: object
    accelerator: Accelerator
    asr_model: torch.nn.Module  # the Wav2Vec2ForCTC (+ heads): what checkpoints hold
    model: torch.nn.Module  # SpeechModel(asr_model), possibly DDP-wrapped: what the loop calls
    optimizer: torch.optim.Optimizer
    scheduler: object
    feeder: BatchFeeder
    dev_utts: list
    tokenizer: object
    step: int = 0
    extra_losses: object = None  # callable(batch, student_out) -> {term: loss summed over valid frames}
    extra_weights: dict = dataclasses.field(default_factory=dict)
    on_step_start: object = None  # callable(step), e.g. switching teacher snapshots
    record_hidden_states: bool = False

    def __post_init__(self):
        self.run_dir = Path(self.args.model_dir)
        self.best = ckpt.BestTracker(self.run_dir) if self.accelerator.is_main_process else None
        self.metrics = MetricsLogger(self.run_dir, self.args.project_name, self.run_dir.name,
                                     self.hparams.values(), enabled=self.accelerator.is_main_process)
        self.weights = {"ctc_loss": self.hparams.ctc_weight, "classifier_loss": self.hparams.classifier_weight,
                        **self.extra_weights}
        self.failures = deque(maxlen=MAX_FAILURES)
        self.has_transcripts = self.feeder.has_transcripts
        self.last_checkpoint: Path | None = None  # of this run dir: what a rerun resumes from
        self.saved_step = self.step  # the step whose state is safe (saved, or where the run started)
        self.stop_signal: int | None = None  # SIGINT / SIGTERM received: stop at the next step boundary
        self.evaluate_first = False  # a resumed checkpoint that missed its dev evaluation

    # -- state ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resume needs; the feeder state of every rank (each skips its own warm-up batches)."""
        feeders = [self.feeder.state_dict()]
        if self.accelerator.num_processes > 1:
            feeders = gather_object(feeders)
        return {"model": self.asr_model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "feeder": feeders, "rng": ckpt.rng_state(), "step": self.step}

    def load(self, path: Path, weights_only: bool = False) -> None:
        state = ckpt.load_checkpoint(path)
        from_original = original.is_original_checkpoint(state)
        if not (weights_only or from_original):  # a resume of this code's checkpoint takes every part of its state
            ckpt.require_entries(state, RESUME_CHECKPOINT_KEYS, path)
        load_weights(self.asr_model, original.model_from_original(state["model"], path) if from_original
                     else state["model"], str(path))
        if weights_only:
            logger.info("loaded weights of %s (training state reset)", path)
            return
        if from_original:
            state = self._from_original(state, path)
        if state["optimizer"] is not None:
            load_optimizer_state(self.optimizer, state["optimizer"])
        if state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if "feeder" not in state:
            logger.info("%s is an original-code checkpoint: no data position or RNG state, the data order starts "
                        "afresh", path)
        elif Path(path).parent.resolve() == self.run_dir.resolve() or self.feeder.same_data(state["feeder"]):
            # our own run, or another on the same data (Hybrid from a Target checkpoint): continue exactly
            self.feeder.load_state_dict(state["feeder"], strict=False)
            ckpt.set_rng_state(state["rng"])
        else:
            logger.info("%s was trained on other data (or another seed): the data order starts afresh", path)
        logger.info("restored %s at step %d", path, self.step)
        self.saved_step = self.step
        if Path(path).parent.resolve() == self.run_dir.resolve():
            self.last_checkpoint = Path(path)

    def _from_original(self, state: dict, path: Path) -> dict:
        """An original-code checkpoint as this code's (models/original.py), its optimiser state re-indexed by
        parameter name for this optimiser."""
        named = list(self.asr_model.named_parameters())
        name_of = {id(p): n for n, p in named}
        groups = [[name_of[id(p)] for p in group["params"]] for group in self.optimizer.param_groups]
        logger.info("%s: an original-code checkpoint, converted", path)
        return original.checkpoint_from_original(state, [n for n, _ in named], groups, is_weight_decayed, path)

    def save(self) -> Path:
        """Write model.ckpt-<step>. A full disk (or any other failed write) stops the run in one line naming the
        checkpoint a rerun resumes from; the earlier checkpoints are left as they were."""
        path = self.run_dir / f"{ckpt.CKPT_PREFIX}{self.step}"
        with record_function("cald/checkpoint"):
            state = self.state_dict()  # on every rank: it gathers the feeder states
            if self.accelerator.is_main_process:
                try:
                    ckpt.save_checkpoint(path, state)
                except OSError as error:
                    raise OSError(error.errno, f"{one_line(error)}; the earlier checkpoints are intact: "
                                               f"{self.resume_hint()}") from None
                logger.info("saved %s", path)
            self.accelerator.wait_for_everyone()
        self.last_checkpoint, self.saved_step = path, self.step
        return path

    def resume_hint(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint saved yet, a rerun starts afresh"
        return (f"rerun the same command to resume from {self.last_checkpoint} "
                f"(step {ckpt.checkpoint_step(self.last_checkpoint)})")

    def drop_metrics_after_start(self, resumed: bool) -> None:
        """metrics.jsonl keeps what the checkpoint the run resumes from had seen: rows past its step go, and so do
        the rows of its step that the resumed run logs again (a teacher switch); a run that does not resume its own
        dir starts the file afresh. A resumed checkpoint at an evaluation step without its dev row (an evaluation
        that failed after the save) is evaluated first."""
        start = self.step if resumed else -1
        rows = read_rows(self.run_dir / METRICS_JSONL)  # on every rank: the evaluation is collective
        at_start = [r for r in rows if r.get("step") == start]
        schedule = (self.args.eval_interval, self.args.checkpoint_interval)
        self.evaluate_first = resumed and any(start % interval == 0 for interval in schedule) and not any(
            key.startswith("dev/") for row in at_start for key in row)
        dropped = self.metrics.keep_rows(lambda row: isinstance(row.get("step"), int) and (
            row["step"] < start or row["step"] == start and "teacher_step" not in row))
        if dropped:
            logger.info("%s: dropped %d line(s) logged after step %d, where this run starts", METRICS_JSONL, dropped,
                        start)

    # -- one optimiser step --------------------------------------------------------------------------------
    def _step_normalisers(self, batches) -> tuple[torch.Tensor, torch.Tensor]:
        """(n over all utterances, valid output frames) of the step, summed over micro-batches and ranks."""
        model = self.asr_model
        n, frames = torch.zeros((), device=self.accelerator.device), torch.zeros((), device=self.accelerator.device)
        for batch in batches:
            all_finite = torch.ones_like(batch["label_lengths"], dtype=torch.bool)
            n += normaliser(batch["label_lengths"], all_finite, self.hparams.loss_normalize_type,
                            self.has_transcripts)
            frames += model._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1)).sum()
        return self.accelerator.reduce(n, "sum"), self.accelerator.reduce(frames, "sum")

    def train_step(self) -> dict | None:
        """One optimiser step over --accumulation_steps micro-batches; the logged values, or None when a non-finite
        gradient norm skipped it. Its phases are ``cald/*`` profiler ranges (utils/profiling.py)."""
        hp, acc = self.hparams, self.accelerator
        tic = time.time()
        with record_function("cald/data"):
            batches = [to_device(self.feeder.next(self.step), acc.device)
                       for _ in range(self.args.accumulation_steps)]
        with record_function("cald/normalisers"):
            n_all, frames = self._step_normalisers(batches)
        sums, n_finite, n_inf = {}, torch.zeros((), device=acc.device), 0
        for i, batch in enumerate(batches):
            sync = contextlib.nullcontext() if i == len(batches) - 1 else acc.no_sync(self.model)
            with sync:
                with acc.autocast():
                    with record_function("cald/forward"):
                        out = self.model(batch["input_values"], batch["attention_mask"],
                                         record_hidden_states=self.record_hidden_states,
                                         sample_lengths=batch["sample_lengths"])
                    with record_function("cald/loss"):
                        terms, n, finite = task_loss_sums(out, batch, hp, self.has_transcripts)
                        if self.extra_losses is not None:
                            out.frame_mask = out.frame_mask & finite[:, None]  # infinite CTC: no distillation either
                            scale = distill_scale(hp, n, n_all, frames)
                            terms.update({k: v * scale for k, v in self.extra_losses(batch, out).items()})
                        loss = weighted_total(terms, self.weights) / n_all
                with record_function("cald/backward"):
                    acc.backward(loss * acc.num_processes)  # DDP averages over ranks; n is already a global sum
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            n_finite += n
            n_inf = n_inf + (~finite).sum()  # a tensor: no host sync per micro-batch
        with record_function("cald/optimizer"):
            # the step's sums and counts, all ranks', in one collective; read to the host once, after clipping
            names = list(sums)
            counts = [sum(sum(b["sample_lengths"]) for b in batches),  # audio, padded samples and utterances
                      sum(b["input_values"].numel() for b in batches), sum(len(b["input_values"]) for b in batches)]
            device_values = torch.stack([t.double() for t in (*(sums[k] for k in names), n_finite, n_inf)])
            host_values = upload(torch.tensor(counts, dtype=torch.float64), acc.device)
            totals = acc.reduce(torch.cat([device_values, host_values]), "sum")
            n_finite = totals[len(names)]
            # infinite CTC losses were zeroed: renormalise by the finite utterances' n (a factor of exactly 1 when
            # all are finite; applied on the device either way, so that no host read decides it)
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, (n_all / n_finite.clamp(min=1)).to(grads[0].dtype))
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), hp.max_grad_norm)
            *sum_values, n_finite, n_inf, audio, padded, utterances, grad_norm = torch.cat(
                [totals, grad_norm.double()[None]]).tolist()  # the step's one host synchronisation
            if not math.isfinite(grad_norm):
                logger.warning("step %d: non-finite gradient norm %s, step skipped", self.step, grad_norm)
                if acc.scaler is not None:  # fp16: the scaler skips the update itself, lowers its scale and resets
                    self.optimizer.step()  # (without this, the next step's unscale_ would raise)
                self.optimizer.zero_grad(set_to_none=True)
                return None
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        with record_function("cald/log"):
            reduced = {k: v / max(n_finite, 1) for k, v in zip(names, sum_values)}
            row = {**reduced, "loss": weighted_total(reduced, self.weights), "lr": lr, "grad_norm": grad_norm,
                   "n": n_finite, "n_inf": int(n_inf), "audio_s": audio / hp.sr, "padded_s": padded / hp.sr,
                   "utterances": int(utterances),
                   "audio_s_per_s": audio / hp.sr / (time.time() - tic)}  # audio of all ranks per wall second
            if acc.device.type == "cuda":  # this rank's high-water mark so far
                row["peak_gib"] = torch.cuda.max_memory_allocated(acc.device) / 2**30
        return row

    def _record_failure(self, error: Exception) -> None:
        logger.error("step %d failed (%s: %s); its micro-batches are skipped", self.step, type(error).__name__,
                     error, exc_info=not self.failures)  # the first failure's traceback; then one line each
        self.optimizer.zero_grad(set_to_none=True)
        self.failures.append(self.step)
        if len(self.failures) == MAX_FAILURES and self.failures[0] > self.step - FAILURE_WINDOW:
            raise RuntimeError(f"{MAX_FAILURES} failed steps within {FAILURE_WINDOW} steps (last at step "
                               f"{self.step}): stopping; see the errors above") from error

    # -- evaluation and checkpoints ------------------------------------------------------------------------
    def dev_batches(self):
        acc = self.accelerator
        return eval_batches(self.dev_utts, self.hparams, self.tokenizer, rank=acc.process_index,
                            world_size=acc.num_processes)

    def evaluate(self) -> dict:
        rows = predict(self.model, self.dev_batches(), self.tokenizer, self.hparams, self.accelerator,
                       progress=f"eval @{self.step}")
        metrics = summarise(rows, self.hparams)
        logger.info("step %d dev: %s", self.step, json.dumps(metrics))
        return metrics

    def eval_and_save(self) -> None:
        tic = time.perf_counter()
        path = self.save()  # saved first: a failing evaluation loses no training
        self.evaluate_checkpoint(path, checkpoint_s=time.perf_counter() - tic)

    def evaluate_checkpoint(self, path: Path, checkpoint_s: float | None = None) -> None:
        """Evaluate the model (saved as ``path``) on dev; log it with ``eval_s``, the evaluation's seconds (and
        ``checkpoint_s``, the save's, when given) and keep the best copies. A failing evaluation stops the run with a
        line naming its culprit and the checkpoint a rerun resumes from (and evaluates)."""
        tic = time.perf_counter()
        try:
            with record_function("cald/eval"):
                metrics = self.evaluate()
        except ONE_LINE_ERRORS as error:
            raise ValueError(f"step {self.step}: the dev evaluation failed: {one_line(error)}; {path} is saved: fix "
                             f"the dev data, then {self.resume_hint()} (its evaluation comes first)") from error
        except Exception:
            logger.error("step %d: the dev evaluation failed; %s is saved: %s", self.step, path, self.resume_hint())
            raise
        if self.accelerator.is_main_process:
            improved = self.best.update({k: v for k, v in metrics.items() if k != "utterances"}, self.step, path)
            if improved:
                logger.info("new best %s at step %d", ", ".join(improved), self.step)
            seconds = {"eval_s": time.perf_counter() - tic, "checkpoint_s": checkpoint_s}
            self.metrics.log(self.step, {**{f"dev/{k}": v for k, v in metrics.items()},
                                         **{k: v for k, v in seconds.items() if v is not None}})

    def fit(self) -> None:
        """Train to --max_steps. SIGINT (Ctrl-C) or SIGTERM (a scheduler's) stops the run at the next step boundary:
        it saves a checkpoint there, unless the state is already saved, then exits with a line naming the checkpoint
        a rerun resumes from and status 128 + the signal (130, 143). A second signal, or one that arrives while
        nothing is unsaved, stops it at once (the step under way is dropped: it may be half done)."""
        bar = tqdm(total=self.args.max_steps, initial=self.step, desc=self.run_dir.name,
                   disable=not self.accelerator.is_main_process, dynamic_ncols=True)
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, self._on_signal) for s in handled} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            if self.evaluate_first:
                self.evaluate_checkpoint(self.last_checkpoint)
            self._train_to_max_steps(bar)
            bar.close()
            if not (self.run_dir / f"{ckpt.CKPT_PREFIX}{self.step}").exists():
                self.eval_and_save()
        except KeyboardInterrupt:
            bar.close()
            signum = self.stop_signal or signal.SIGINT
            if self.saved_step == self.step:
                logger.warning("%s: stopped after step %d: %s", signal.Signals(signum).name, self.step,
                               self.resume_hint())
            else:
                logger.warning("interrupted after step %d, which is not saved: %s", self.step, self.resume_hint())
            raise SystemExit(128 + signum) from None
        finally:  # the feeder's loader threads and the metrics file, however the run ends
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.feeder.close()
            self.metrics.close()
        self.leave_process_group()

    def _on_signal(self, signum, frame) -> None:
        """SIGINT / SIGTERM: stop at the next step boundary; at once on a second one, or if nothing is unsaved."""
        first, self.stop_signal = self.stop_signal is None, signum
        if not first or self.saved_step == self.step:
            raise KeyboardInterrupt
        logger.warning("%s received: the run stops at the next step boundary with a checkpoint (send it again to "
                       "stop at once, without one)", signal.Signals(signum).name)

    def _stop_requested(self) -> bool:
        """Whether a signal asked the run to stop; with several processes, whether it reached any (all stop at the
        same step boundary, as saving is collective)."""
        if self.accelerator.num_processes == 1:
            return self.stop_signal is not None
        flag = torch.tensor(self.stop_signal or 0, device=self.accelerator.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.stop_signal = self.stop_signal or int(flag.item()) or None
        return self.stop_signal is not None

    def _stop_for_signal(self) -> None:
        """Save the state at this step boundary (unless it is saved), then stop as a second signal would."""
        if self.saved_step != self.step:
            self.save()
        raise KeyboardInterrupt

    def _train_to_max_steps(self, bar) -> None:
        """The loop. Each step's row holds ``step_s``, the wall seconds from the end of the previous step (or of the
        evaluation and save after it: their rows hold ``eval_s`` and ``checkpoint_s``) to this step's logging."""
        args = self.args
        self.model.train()
        nonfinite_in_a_row = 0
        profiler = StepProfiler.from_env()  # None unless CALD_PROFILE asks for a profile (bench/seed_throughput.py)
        tic = time.perf_counter()
        try:
            while self.step < args.max_steps:
                if self._stop_requested():
                    self._stop_for_signal()
                if profiler is not None:
                    profiler.at_step(self.step)
                with record_function("cald/step"):
                    if self.on_step_start is not None:
                        self.on_step_start(self.step)
                    try:
                        logged = self.train_step()
                    except DataError:  # the data cannot go on: not a failed step to retry
                        raise
                    except (RuntimeError, ValueError) as error:
                        self._record_failure(error)
                        continue
                    if logged is None:  # non-finite gradient norm: skipped, the step does not advance
                        nonfinite_in_a_row += 1
                        if nonfinite_in_a_row == MAX_NONFINITE_IN_A_ROW:
                            raise RuntimeError(
                                f"{MAX_NONFINITE_IN_A_ROW} batches in a row gave a non-finite gradient norm at step "
                                f"{self.step}: the loss or the weights are not finite (the weights of "
                                f"{self.hparams.asr_model_name} or of the checkpoint this run starts from, max_lr, "
                                f"mixed precision?)")
                        continue
                    nonfinite_in_a_row = 0
                    with record_function("cald/log"):
                        step_end = time.perf_counter()
                        self.metrics.log(self.step, {**logged, "step_s": step_end - tic})
                        bar.update(1)
                        bar.set_postfix(loss=f"{logged['loss']:.3f}", lr=f"{logged['lr']:.2e}")
                    tic = step_end
                if self.step % args.eval_interval == 0 or self.step % args.checkpoint_interval == 0:
                    self.eval_and_save()
                    tic = time.perf_counter()
        finally:
            if profiler is not None:
                profiler.finish()

    def leave_process_group(self) -> None:
        """Free the DDP wrapper, then leave the process group (NCCL warns when a process exits without).

        In this order because DDP's Reducer holds the group. Freed after the group has been destroyed, the Reducer
        is its last owner, and its destructor runs ProcessGroupGloo's, which joins gloo's threads holding the GIL.
        A gloo thread still releasing a barrier's tensor then waits for the GIL: the process hangs at exit (seen
        once in tests/test_distributed.py; pytorch/pytorch#56297). Freed first, the Reducer leaves the group to
        end_training, whose destructor releases the GIL."""
        self.model = self.accelerator.unwrap_model(self.model)
        self.accelerator.free_memory()  # accelerate's own references to the wrapper, the optimiser, ...
        gc.collect()  # and any reference cycle through the wrapper
        self.accelerator.end_training()


def build_trainer(args, start: RunStart, accelerator, model, **trainer_kwargs) -> Trainer:
    """Data, optimiser, schedule around a built model; then resume or restore. Shared by both scripts."""
    hparams = start.hparams
    train_split, dev_split, vocab_path = data_paths(args)
    tokenizer = load_tokenizer(vocab_path, hparams)
    checkpoint = start.resume or start.restore
    if checkpoint is not None:
        uses_ctc = hparams.ctc_weight > 0 or trainer_kwargs.get("extra_weights", {}).get("logits_distill_loss", 0) > 0
        check_same_vocab(vocab_path, checkpoint.parent / VOCAB_JSON, f"the run in {checkpoint.parent}", uses_ctc)
    train_utts = load_corpus(args.data_dir, train_split, hparams, args.use_hf_dataset)
    dev_utts = load_corpus(args.data_dir, dev_split, hparams, args.use_hf_dataset)
    # every audio header, before any training: a bad training file is left out, a bad dev file stops the run here
    train_utts = check_audio(train_utts, hparams.sr, f"training data {train_split}", drop=True)
    check_audio(dev_utts, hparams.sr, f"dev data {dev_split}")
    feeder = BatchFeeder(train_utts, hparams, tokenizer, rank=accelerator.process_index,
                         world_size=accelerator.num_processes, workers=args.data_workers)
    if hparams.ctc_weight == 0 and not trainer_kwargs.get("extra_weights", {}).get("logits_distill_loss"):
        model.lm_head.requires_grad_(False)  # no loss reaches the CTC head: keep it out of the optimiser
    optimizer = make_optimizer(model, hparams)
    scheduler = make_scheduler(optimizer, hparams)
    speech_model, optimizer = accelerator.prepare(SpeechModel(model, hparams.student_graph_frames), optimizer)
    trainer = Trainer(args, hparams, accelerator, model, speech_model, optimizer, scheduler, feeder, dev_utts,
                      tokenizer, **trainer_kwargs)
    if start.resume is not None:
        trainer.load(start.resume)
    elif start.restore is not None:
        trainer.load(start.restore, weights_only=args.reset_training)
    feeder.check_warmup(trainer.step)  # a filter that keeps nothing stops the start, before any file is written
    trainer.drop_metrics_after_start(resumed=start.resume is not None)
    return trainer


def build_model_for_run(hparams, start: RunStart, init_state_dict=None, init_source: str = "init_state_dict"):
    """A run resumed or restored from a checkpoint takes its weights from there: no pretrained weights needed."""
    from_checkpoint = start.resume is not None or start.restore is not None
    return build_asr_model(hparams, pretrained=not from_checkpoint and init_state_dict is None,
                           init_state_dict=init_state_dict, init_source=init_source)
