"""mini-CALD: the paper's strategy comparison at toy scale, on synthetic ASR, intent and speaker-id corpora; the CPU
demo is its demo profile.

Usage:
    python scripts/mini_cald.py --jobs 4                     # every stage of every task, under output/mini_cald
    python scripts/mini_cald.py --tasks asr --budget 480     # start no stage after 480 s; rerun to go on
    python scripts/mini_cald.py --profile demo --root output/demo   # the CPU demo (scripts/demo.sh runs it)
    python scripts/mini_cald.py --profile smoke --root /tmp/mc   # tiny sizes, a few steps: the recipe on CPU
    python scripts/mini_cald.py --jobs 4 --budget 480 --pack results.zip   # a remote GPU: bring back the results
    python scripts/mini_cald.py --jobs 8 --no-test_alone     # sooner; inference throughput measured with neighbours
    python scripts/mini_cald.py --jobs 8 --keep_going        # a failed stage stops only what builds on it
    python scripts/mini_cald_report.py --root output/mini_cald --out results   # table, JSON and plots

For each task (asr: TED-LIUM 3 layout, ic: SLURP, sid: VoxCeleb1) the stages are

    corpus     corpora/synth.py writes the official raw layout
    prep       the real prep script reads it (corpora/tedlium.py, slurp.py; voxceleb1.py checks the tree)
    pretrained asr only: a random Wav2Vec2 dir, the asr runs' asr_model_name (models/presets.py)
    export     asr only, for ic and sid: the asr teacher as a Hugging Face model dir, their asr_model_name
    std        train.py, attention (the teacher)                      -- the seed's Std command; a teacher
               whose best dev metric misses the profile's teacher_bound fails the stage (it has not learnt)
    unguided   train.py, asr_use_mamba=True                           -- the seed's Unguided command
    target     train_distill.py from the teacher                      -- the seed's Target guided command
    hybrid     Target's command with alpha_layer_distill_loss=0, a new run dir restored from Target's checkpoint
               at the switch step (--restore_from: the same optimiser, schedule, data order and RNG, so it goes on
               exactly as Target would have); it starts as soon as Target has written that checkpoint
    waypoint   train_distill.py --use_teacher_snapshots over std's run dir  -- the seed's Waypoint command
    target_attn_init  Target's command with asr_mamba_init=attention
    test_*     infer.py on the test split (as the seed's evaluation command), alone on its GPU (--no-test_alone:
               alongside the other stages)
    export_hybrid, long_form   asr, profiles with long_form_minutes (demo): Hybrid exported as a Hugging Face model
               dir (scripts/export_hf_model.py), then scripts/long_form.py: minutes of the test voices joined into
               one recording, transcribed in one pass, against the same utterances one at a time

Every run is the seed README's command (utils/seed_commands.py) with only what the toy scale needs changed
(tests/test_mini_cald.py holds each run to this):
- flags: --model-dir, --data-dir, --train_meta, --vocab-path and infer.py's --model-path, --output-path (this
  recipe's dirs), --teacher_path, --max_steps, --eval_interval and --checkpoint_interval, --mixed_precision (bf16
  with CUDA, else no) and --accumulation_steps 1 (the profile's batch is the whole batch);
- hparams: asr_model_name (the profile's preset, or the exported asr teacher), the Mamba2 shape for its hidden
  size, the batch limits, the learning rate schedule (max_lr, warmup_steps, decay_steps, final_lr) and
  freeze_feature_encoder (a random front end must learn), data_warmup_steps=0 and for asr no dropout or
  SpecAugment (too few steps to need them), asr_use_flash_attn=False (SDPA, as the seed's evaluation),
  classifier_num_targets (the synthetic speakers) and Waypoint's teacher_snapshot_cycle (the teacher's checkpoint
  interval); Hybrid and target_attn_init add their one hparam (STRATEGY_HPARAMS).

Profiles (PROFILES; the sizes, steps and schedules of each are its fields):

    gpu    every task and strategy on one GPU, every stage under 10 minutes. Every run of a task trains for the
           same steps; Hybrid branches off Target at the paper's switch point (40k, 30k, 50k of 90k steps for asr,
           ic, sid), rounded to an evaluation step, and ends at the same step as Target. The teacher and every
           test take a run's best dev checkpoint.
    smoke  the gpu profile's recipe at tiny sizes and a few steps: a CPU check of every stage (tests).
    demo   the CPU demo (scripts/demo.sh): asr only, Std, Unguided, Target guided and Hybrid, each with its own
           steps. Hybrid continues Target after Target's last step: it restores Target's final checkpoint and goes
           on with alpha_layer_distill_loss=0 up to its own steps, Target and Hybrid sharing one schedule that
           decays over Hybrid's steps. The teacher and every test take a run's last checkpoint. The report is the
           demo's table and plots (scripts/mini_cald_report.py).

Each stage is resumable: a finished one is skipped (a run at its max_steps, an evaluation of the right checkpoint),
an interrupted run resumes from its latest checkpoint. A failed stage stops the others; with --keep_going the
stages that do not build on it run on, and the failures are named at the end. With --jobs N, up to N independent
stages run at once, spread over the visible GPUs (a run of this size leaves most of a GPU idle), so training
throughput is measured with neighbours; the stages that others wait for start first. Wall seconds per stage go to
``<root>/timings.json`` and, with the invocation that ran them, to ``stages.jsonl``; the machine, libraries,
settings and wall time of each invocation to ``info.json``; logs to ``logs/``.

No self-supervised checkpoint exists offline, so "pretrained" means: for asr a randomly initialised Wav2Vec2
(``models/presets.py``: Std, Unguided and Waypoint train from scratch, front end included), for ic and sid the
asr teacher exported as a Hugging Face model dir (scripts/export_hf_model.py): an encoder that already knows
(synthetic) speech, the role wav2vec2-large-lv60 plays in the paper. ic and sid therefore run asr up to its
teacher first.
"""
import argparse
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.results import pack  # noqa: E402
from utils.seed_commands import hparams_string, parse_hparams, seed_argv, set_flag  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASKS = ("asr", "ic", "sid")
STRATEGIES = ("std", "unguided", "target", "hybrid", "waypoint", "target_attn_init")
SELECT_METRIC = {"asr": "wer", "ic": "intent_acc", "sid": "clf_acc"}  # dev metric that picks the checkpoint
# the paper's Hybrid switch from Target to alpha_layer_distill_loss=0: at 40k, 30k, 50k of 90k steps
HYBRID_SWITCH = {"asr": 40 / 90, "ic": 30 / 90, "sid": 50 / 90}
# the seed command each strategy runs, and the hparams it adds (the seed has no Hybrid or attention-init command)
SEED_STRATEGY = {"std": "std", "unguided": "unguided", "target": "target", "hybrid": "target",
                 "waypoint": "waypoint", "target_attn_init": "target"}
STRATEGY_HPARAMS = {"hybrid": {"alpha_layer_distill_loss": "0"}, "target_attn_init": {"asr_mamba_init": "attention"}}

logger = logging.getLogger("mini_cald")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning rate schedule (hparams.py): linear warm-up to max_lr, exponential decay to final_lr."""

    max_lr: float
    warmup_steps: int
    decay_steps: int | None = None  # None: 1.5 x the run's steps (Target's: Hybrid's, the schedule they share)
    final_lr: float = 1e-4


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes, steps and schedules of one recipe profile (the module docstring says what each profile is)."""

    corpus: dict  # task -> corpora/synth.py kwargs; its keys are the profile's tasks
    steps: dict  # task -> optimiser steps of every run, or {strategy: steps}
    eval_interval: dict  # task -> dev evaluation and checkpoint interval, or {strategy: interval}
    batch: str  # hparams: batch size and limits
    mamba: str  # hparams: the Mamba2 shape for the preset's hidden size
    # runs from the random "pretrained" model (asr Std, Unguided, Waypoint; the front end learns too), and runs
    # from a trained encoder (the distilled asr students, everything of ic and sid; the front end frozen)
    scratch: Schedule
    distill: Schedule
    preset: str = "demo"  # models/presets.py: the random "pretrained" asr model
    strategies: tuple = STRATEGIES
    pick: str = "best"  # the checkpoint that teaches (Std's) and is tested: "best" (dev metric) or "last"
    # task -> Target's step where Hybrid starts; default: the paper's point (HYBRID_SWITCH) rounded to an evaluation
    hybrid_switch: dict = dataclasses.field(default_factory=dict)
    # task -> the worst best-dev SELECT_METRIC a Std run may end with (a WER ceiling, an accuracy floor): a teacher
    # that has not learnt fails its stage, instead of every strategy distilling from it or being compared with it
    teacher_bound: dict = dataclasses.field(default_factory=dict)
    report: str = "comparison"  # scripts/mini_cald_report.py's output: "comparison" (mini_cald.*) or "demo"
    # asr: minutes of the held-out test voices joined into one recording, transcribed in one pass by the exported
    # Hybrid model (scripts/long_form.py) against one utterance at a time; 0: no such stages
    long_form_minutes: float = 0.0

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(task for task in TASKS if task in self.corpus)

    def run_steps(self, task: str, strategy: str) -> int:
        steps = self.steps[task]
        return steps if isinstance(steps, int) else steps[strategy]

    def interval(self, task: str, strategy: str) -> int:
        interval = self.eval_interval[task]
        return interval if isinstance(interval, int) else interval[strategy]

    def switch(self, task: str) -> int:
        """Target's step where Hybrid starts."""
        if task in self.hybrid_switch:
            return self.hybrid_switch[task]
        interval = self.interval(task, "target")
        return round(HYBRID_SWITCH[task] * self.run_steps(task, "target") / interval) * interval

    def schedule_hparams(self, task: str, strategy: str) -> dict[str, str]:
        """The learning rate schedule and front end of a run (from the random model or from a trained encoder)."""
        from_random = task == "asr" and strategy in ("std", "unguided", "waypoint")
        schedule = self.scratch if from_random else self.distill
        decay = schedule.decay_steps or 3 * self.run_steps(task, "hybrid" if strategy == "target" else strategy) // 2
        return {"max_lr": str(schedule.max_lr), "warmup_steps": str(schedule.warmup_steps),
                "decay_steps": str(decay), "final_lr": str(schedule.final_lr),
                "freeze_feature_encoder": str(not from_random)}


# asr corpus of the demo preset's runs: about 50 words (text "closed") or an open vocabulary ("common"), spoken by
# the voices of synth's demo profile with a little noise
ASR_VOICES = dict(ignore_prob=0.05, snr_db=(30, 45), voices=dict(langs=("en", "en-us"),
                                                                 variants=("m1", "m3", "m7", "f2", "f4")))

PROFILES = {
    # One H100: every stage under 10 minutes. The demo preset (4 layers, hidden 192) at a GPU batch. ASR text
    # "common" (open vocabulary): with "closed" (50 words) the teacher needs no attention and every strategy
    # ends within a few words of it. The runs from the random model warm up over 400 steps: over 100, a
    # teacher can diverge near the peak rate.
    "gpu": Profile(
        corpus={
            "asr": dict(talks=(600, 20, 20), segments_per_talk=(10, 10), text="common", **ASR_VOICES),
            "ic": dict(utterances=(3000, 300, 300), synthetic=2000),
            "sid": dict(speakers=100, videos_per_speaker=(3, 4), utterances_per_video=(4, 6)),
        },
        steps={"asr": 1800, "ic": 900, "sid": 900},
        eval_interval={"asr": 200, "ic": 100, "sid": 100},
        batch="batch_size=32,batch_frame_limit=3.5e6,batch_quad_frame_limit=1e13",
        mamba="mamba_headdim=64,mamba_d_state=64,mamba_chunk_size=64",
        scratch=Schedule(max_lr=5e-3, warmup_steps=400),
        distill=Schedule(max_lr=2e-3, warmup_steps=50),
        # asr: healthy teachers end at dev WER 0.08-0.13, a diverged one at 1.0 (every word deleted); ic and sid:
        # about 6x and 5x chance (60 intents, 100 speakers)
        teacher_bound={"asr": 0.5, "ic": 0.1, "sid": 0.05},
    ),
    # CPU check of the whole recipe (tests/test_mini_cald.py): tiny corpora, a few steps, the tiny preset.
    "smoke": Profile(
        corpus={
            "asr": dict(talks=(3, 1, 1), segments_per_talk=(3, 4), text="closed"),
            "ic": dict(utterances=(8, 3, 3), synthetic=4),
            "sid": dict(speakers=3, videos_per_speaker=(2, 2), utterances_per_video=(2, 3)),
        },
        steps={"asr": 4, "ic": 4, "sid": 4},
        eval_interval={"asr": 2, "ic": 2, "sid": 2},
        batch="batch_size=4,batch_frame_limit=1e7,batch_quad_frame_limit=1e13",
        mamba="mamba_headdim=16,mamba_d_state=16,mamba_chunk_size=16",
        scratch=Schedule(max_lr=5e-3, warmup_steps=400),
        distill=Schedule(max_lr=2e-3, warmup_steps=50),
        preset="tiny",
    ),
    # The CPU demo, small enough for 2 cores. 3000 training utterances of ~2 s from 300 voices (one a talk), 100 test
    # utterances of 10 unseen voices. Mamba2 chunks of 64 frames: a 256 chunk pads each ~100-frame utterance to 256
    # frames and makes the BiMamba2 layers several times slower on CPU. Unguided gets fewer steps than the teacher (its
    # steps are slower on CPU); Target 150, then Hybrid to 250 under one schedule (warm-up 50, decay over the 200 steps
    # after it), as the paper's 40k of 90k steps.
    "demo": Profile(
        corpus={"asr": dict(talks=(300, 10, 10), segments_per_talk=(10, 10), text="closed", **ASR_VOICES)},
        steps={"asr": {"std": 550, "unguided": 250, "target": 150, "hybrid": 250}},
        eval_interval={"asr": {"std": 100, "unguided": 50, "target": 50, "hybrid": 50}},
        batch="batch_size=12,batch_frame_limit=1.2e6,batch_quad_frame_limit=1e12",
        mamba="mamba_headdim=64,mamba_d_state=64,mamba_chunk_size=64",
        scratch=Schedule(max_lr=5e-3, warmup_steps=100),
        distill=Schedule(max_lr=2e-3, warmup_steps=50, decay_steps=200),
        strategies=("std", "unguided", "target", "hybrid"),
        pick="last",
        hybrid_switch={"asr": 150},
        report="demo",
        long_form_minutes=3.0,  # about 85 of the 100 test utterances (~2 s each, 0.3 s gaps)
    ),
}


# --------------------------------------------------------------------------------------------------------------
# 1. where things live


@dataclasses.dataclass(frozen=True)
class Layout:
    root: Path

    def raw(self, task):  # the synthetic corpus in its official layout
        return self.root / "database" / {"asr": "TEDLIUM_release-3", "ic": "SLURP", "sid": "VoxCeleb1"}[task]

    def data_dir(self, task):
        return self.root / "data" / {"asr": "tedlium", "ic": "slurp_full", "sid": "slurp_full"}[task]

    def pretrained(self, task):
        return self.root / "models" / ("w2v2_random" if task == "asr" else "w2v2_asr")

    def run(self, task, strategy):
        return self.root / "runs" / task / strategy

    def eval(self, task, strategy):
        return self.root / "eval" / task / strategy

    def exported(self, task, strategy):  # a run's checkpoint as a Hugging Face model dir
        return self.root / "models" / f"{task}_{strategy}_hf"

    def log(self, task, stage):
        return self.root / "logs" / f"{task}_{stage}.log"


def data_flags(task: str, layout: Layout, training: bool = True) -> dict[str, str]:
    """The seed commands' data flags (training or infer.py's), pointed at this recipe's corpora."""
    if task == "asr":
        return {"--data-dir": str(layout.data_dir("asr"))}
    slurp = layout.data_dir("ic")
    if task == "ic":  # infer.py reads the data dir's vocab.json, the same file
        training_flags = {"--train_meta": str(slurp / "meta.train.syn.txt"), "--vocab-path": str(slurp / "vocab.json")}
        return {"--data-dir": str(slurp), **(training_flags if training else {})}
    return {"--data-dir": f"s3prl/superb--si--{layout.raw('sid')}", "--vocab-path": str(slurp / "vocab.json")}


# --------------------------------------------------------------------------------------------------------------
# 2. the command of each run: the seed's, at toy scale


def toy_hparams(task: str, strategy: str, profile: Profile, layout: Layout, num_speakers: int) -> dict[str, str]:
    """What a run sets on top of its seed command's --hparams (see the module docstring)."""
    hparams = {"asr_model_name": str(layout.pretrained(task)), **parse_hparams(profile.batch),
               "data_warmup_steps": "0", "asr_use_flash_attn": "False", **profile.schedule_hparams(task, strategy)}
    # asr, trained from random weights in few steps, goes without dropout and SpecAugment; ic and sid keep the
    # seed's (hparams.py defaults): without them their teachers fit the training set
    if task == "asr":
        hparams.update(hidden_dropout="0.0", activation_dropout="0.0", feat_proj_dropout="0.0", mask_time_prob="0.0")
    if strategy != "std":
        hparams.update(parse_hparams(profile.mamba))
    if task == "sid":
        hparams["classifier_num_targets"] = str(num_speakers)
    if strategy == "waypoint":  # the teacher's checkpoints it follows
        hparams["teacher_snapshot_cycle"] = str(profile.interval(task, "std"))
    return {**hparams, **STRATEGY_HPARAMS.get(strategy, {})}


# flags a seed command may lack: infer.py's precision, the training commands' intervals, Hybrid's start
ADDED_FLAGS = ("--mixed_precision", "--eval_interval", "--checkpoint_interval", "--restore_from")


def seed_run_argv(task: str, seed_strategy: str, flags: dict[str, str], hparams: dict | None = None) -> list[str]:
    """[script, *arguments]: the seed command of (task, seed_strategy) with ``flags`` and ``hparams`` set."""
    script, argv = seed_argv(task, seed_strategy)
    if hparams:
        merged = {**parse_hparams(hparams_string(" ".join(argv))), **hparams}  # the seed's keys keep their order
        flags = {**flags, "--hparams": ",".join(f"{key}={value}" for key, value in merged.items())}
    for flag, value in flags.items():
        argv = set_flag(argv, flag, str(value), add=flag in ADDED_FLAGS)
    return [script, *argv]


# 3. running stages


class StageFailed(RuntimeError):
    pass


@dataclasses.dataclass
class Stage:
    """One step of the recipe: a command (built when its dependencies are done; None when already done)."""

    task: str
    name: str  # corpus | prep | pretrained | <strategy> | test_<strategy>
    needs: tuple[str, ...]  # keys of the stages that must finish first
    command: Callable[[], list[str] | None]
    exclusive: bool = False  # runs alone on its GPU: infer.py's throughput is measured without neighbours
    waits_for: Callable[[], Path] | None = None  # and a file that must exist (written atomically by another stage)
    check: Callable[[], None] | None = None  # run once the stage is done (or found done); raises StageFailed

    def ready(self, done: set) -> bool:
        return all(need in done for need in self.needs) and (self.waits_for is None or self.waits_for().is_file())

    @property
    def key(self) -> str:
        return f"{self.task}/{self.name}"


# stages that others wait for start first when more are ready than --jobs allows, tests last
GATING = ("corpus", "prep", "pretrained", "std", "export", "target")


def start_order(stage: Stage) -> int:
    return 0 if stage.name in GATING else 2 if stage.name.startswith("test_") else 1


def drop_dependents(pending: list[Stage], failed) -> list[str]:
    """Remove from ``pending`` the stages that need a failed one, directly or through others; their keys."""
    dropped, lost = [], set(failed)
    while True:
        doomed = [stage for stage in pending if lost & set(stage.needs)]
        if not doomed:
            return dropped
        for stage in doomed:
            pending.remove(stage)
            lost.add(stage.key)
            dropped.append(stage.key)


def describe_wait(stage: Stage) -> str:
    waits = [*stage.needs, *([str(stage.waits_for())] if stage.waits_for else [])]
    return f"{stage.key} (needs {', '.join(waits)})"


class Recipe:
    """The stages of the requested tasks and their order; runs up to ``jobs`` of them at once (training runs of
    this size leave most of a GPU idle), each a subprocess of this interpreter from the repo root, spread over
    the GPUs (each stage sees one: the least busy)."""

    def __init__(self, layout: Layout, profile_name: str, python: str, mixed_precision: str, invocation: int = 0,
                 gpus: tuple[str, ...] = (), test_alone: bool = True):
        self.layout, self.profile_name, self.profile = layout, profile_name, PROFILES[profile_name]
        self.python, self.mixed_precision = python, mixed_precision
        self.invocation = invocation  # index into info.json's invocations: which machine ran what
        self.gpus = gpus  # CUDA_VISIBLE_DEVICES values the stages are spread over; () runs them all on one device
        self.test_alone = test_alone  # test stages exclusive (clean infer throughput) or alongside training
        self.timings_path = layout.root / "timings.json"

    # -- the stages ----------------------------------------------------------------------------------------
    def stages(self, tasks) -> list[Stage]:
        """The stages of ``tasks`` and of what they build on, in a valid order: ic and sid start from asr's
        teacher exported once (asr/export), and sid takes SLURP's vocab.json (as the seed commands do)."""
        keep = {task: None for task in tasks}  # None: every stage of the task
        if {"ic", "sid"} & set(tasks):
            keep.setdefault("asr", {"corpus", "prep", "pretrained", "std", "export"})
        else:
            keep["asr"] = {stage.name for stage in self.task_stages("asr")} - {"export"}
        if "sid" in tasks:
            keep.setdefault("ic", {"corpus", "prep"})
        return [stage for task in TASKS if task in keep for stage in self.task_stages(task)
                if keep[task] is None or stage.name in keep[task]]

    def task_stages(self, task: str) -> list[Stage]:
        strategies = self.profile.strategies
        stages = [
            Stage(task, "corpus", (), lambda: self.synthesise_command(task)),
            Stage(task, "prep", (f"{task}/corpus", "ic/prep") if task == "sid" else (f"{task}/corpus",),
                  lambda: self.prep_command(task)),
        ]
        if task == "asr":
            stages.append(Stage(task, "pretrained", (), self.random_model_command))
        start = (f"{task}/prep", "asr/pretrained" if task == "asr" else "asr/export")
        for strategy in strategies:
            needs = {"std": start, "unguided": start}.get(strategy, (f"{task}/std",))
            # Hybrid starts as soon as Target has written its checkpoint at the switch step
            waits_for = (lambda: self.hybrid_start(task)) if strategy == "hybrid" else None
            check = (lambda: self.check_teacher(task)) if strategy == "std" else None
            stages.append(Stage(task, strategy, needs, lambda s=strategy: self.train_command(task, s),
                                waits_for=waits_for, check=check))
        if task == "asr":
            stages.append(Stage(task, "export", ("asr/std",), self.export_command))
        stages += [Stage(task, f"test_{s}", (f"{task}/{s}",), lambda s=s: self.test_command(task, s),
                         exclusive=self.test_alone) for s in strategies]
        if task == "asr" and self.profile.long_form_minutes and "hybrid" in strategies:
            stages += [Stage(task, "export_hybrid", (f"{task}/hybrid",), lambda: self.export_hybrid_command(task)),
                       Stage(task, "long_form", (f"{task}/export_hybrid",), lambda: self.long_form_command(task),
                             exclusive=self.test_alone)]
        return stages

    def synthesise_command(self, task: str) -> list[str] | None:
        if (self.layout.raw(task) / "synth.json").is_file():
            return None
        return [str(Path(__file__).relative_to(REPO)), "--profile", self.profile_name, "--root", str(self.layout.root),
                "--synthesise", task]

    def synthesise(self, task: str) -> None:
        from corpora import synth

        parallel = {"workers": os.cpu_count() or 1} if task == "asr" else {}  # the corpus the first stages wait for
        {"asr": synth.synth_tedlium, "ic": synth.synth_slurp, "sid": synth.synth_voxceleb1}[task](
            self.layout.raw(task), seed=TASKS.index(task), force=True, progress=False, **self.profile.corpus[task],
            **parallel)

    def prep_command(self, task: str) -> list[str] | None:
        raw, out = self.layout.raw(task), self.layout.data_dir(task)
        if task == "sid":  # VoxCeleb1 is read in place: the check names any bad line or missing file
            return ["corpora/voxceleb1.py", "--src", str(raw), "--quick"]
        if (out / "meta.test.txt").is_file():
            return None
        return [{"asr": "corpora/tedlium.py", "ic": "corpora/slurp.py"}[task], "--src", str(raw), "--out", str(out)]

    def random_model_command(self) -> list[str] | None:
        out = self.layout.pretrained("asr")
        return None if (out / "config.json").is_file() else ["-m", "models.presets", self.profile.preset, "--out",
                                                             str(out)]

    def export_command(self) -> list[str] | None:
        out = self.layout.pretrained("ic")  # shared by ic and sid
        if (out / "config.json").is_file():
            return None
        return ["scripts/export_hf_model.py", "--checkpoint", str(self.picked_checkpoint("asr", "std")),
                "--out", str(out)]

    def export_hybrid_command(self, task: str) -> list[str] | None:
        """Hybrid's tested checkpoint as a Hugging Face model dir, with the data's vocabulary."""
        checkpoint, out = self.picked_checkpoint(task, "hybrid"), self.layout.exported(task, "hybrid")
        config = out / "config.json"
        if config.is_file() and json.loads(config.read_text()).get("converted_from", {}).get("checkpoint") == str(
                checkpoint):
            return None
        return ["scripts/export_hf_model.py", "--checkpoint", str(checkpoint), "--out", str(out), "--vocab",
                str(self.layout.data_dir(task) / "vocab.json")]

    def long_form_command(self, task: str) -> list[str] | None:
        """scripts/long_form.py: the exported Hybrid model on the test voices as one recording and one by one."""
        model, out = self.layout.exported(task, "hybrid"), self.layout.eval(task, "long_form")
        result = out / "long_form.json"
        if result.is_file() and json.loads(result.read_text()).get("model") == str(model):
            return None
        return ["scripts/long_form.py", "--model", str(model), "--data-dir", str(self.layout.data_dir(task)),
                "--minutes", str(self.profile.long_form_minutes), "--out", str(out), "--mixed_precision",
                self.mixed_precision]

    def num_speakers(self, task: str) -> int:
        """The classifier's classes: 1 + the highest SUPERB class index among the speakers (id10001 -> 0)."""
        if task != "sid":
            return 0
        from utils.data import read_iden_split, speaker_labels

        return 1 + max(speaker_labels(path for _, path in read_iden_split(self.layout.raw("sid"))).values())

    def best(self, task: str, strategy: str) -> tuple[float, int]:
        """The run's best dev SELECT_METRIC and its step (its best_metrics.json)."""
        path = self.layout.run(task, strategy) / "best_metrics.json"
        best = json.loads(path.read_text()).get(SELECT_METRIC[task]) if path.is_file() else None
        if best is None:
            raise StageFailed(f"no best {SELECT_METRIC[task]} in {path}: the run has not been evaluated on dev")
        return best[0], best[1]

    def picked_checkpoint(self, task: str, strategy: str) -> Path:
        """The run's checkpoint that teaches (Std's) and is tested: its best dev SELECT_METRIC one, or with the
        profile's pick "last" its last one."""
        last = self.profile.pick == "last"
        step = self.profile.run_steps(task, strategy) if last else self.best(task, strategy)[1]
        return self.layout.run(task, strategy) / f"model.ckpt-{step}"

    def check_teacher(self, task: str) -> None:
        """Std's best dev SELECT_METRIC within the profile's teacher_bound, or StageFailed naming both."""
        from utils.checkpoint import metric_direction

        bound = self.profile.teacher_bound.get(task)
        if bound is None:
            return
        metric, path = SELECT_METRIC[task], self.layout.run(task, "std") / "best_metrics.json"
        value, step = self.best(task, "std")
        lower_is_better = metric_direction(metric) == "min"
        if value > bound if lower_is_better else value < bound:
            relation = "above the ceiling" if lower_is_better else "below the floor"
            raise StageFailed(
                f"the teacher has not learnt: best dev {metric} {value:.3f} (step {step}, {path}) is {relation} of "
                f"{bound} (teacher_bound of the {self.profile_name} profile); every other strategy of {task} builds "
                f"on it. Its log: {self.layout.root / 'logs' / f'{task}_std.log'}; delete {path.parent} to retrain")

    def train_argv(self, task: str, strategy: str) -> list[str]:
        """[script, *arguments] of a training run: its seed command at this profile's scale."""
        steps, interval = self.profile.run_steps(task, strategy), self.profile.interval(task, strategy)
        flags = {"--model-dir": self.layout.run(task, strategy), **data_flags(task, self.layout),
                 "--mixed_precision": self.mixed_precision, "--accumulation_steps": 1, "--max_steps": steps,
                 "--eval_interval": interval, "--checkpoint_interval": interval}
        if strategy in ("target", "target_attn_init", "hybrid"):
            flags["--teacher_path"] = self.picked_checkpoint(task, "std")
        if strategy == "waypoint":
            flags["--teacher_path"] = self.layout.run(task, "std")
        if strategy == "hybrid":  # a new dir from Target's checkpoint at the switch: it goes on exactly as Target
            flags["--restore_from"] = self.hybrid_start(task)  # would have, with alpha_layer_distill_loss 0
        hparams = toy_hparams(task, strategy, self.profile, self.layout, self.num_speakers(task))
        return seed_run_argv(task, SEED_STRATEGY[strategy], flags, hparams)

    def train_command(self, task: str, strategy: str) -> list[str] | None:
        steps = self.profile.run_steps(task, strategy)
        if (self.layout.run(task, strategy) / f"model.ckpt-{steps}").is_file():
            return None
        return self.train_argv(task, strategy)

    def hybrid_start(self, task: str) -> Path:
        """Target's checkpoint at the switch step, where Hybrid starts."""
        return self.layout.run(task, "target") / f"model.ckpt-{self.profile.switch(task)}"

    def test_command(self, task: str, strategy: str) -> list[str] | None:
        checkpoint = self.picked_checkpoint(task, strategy)
        out = self.layout.eval(task, strategy)
        metrics = out / "metrics.json"
        if metrics.is_file() and json.loads(metrics.read_text()).get("checkpoint") == str(checkpoint):
            return None
        flags = {"--model-path": checkpoint, "--output-path": out, **data_flags(task, self.layout, training=False),
                 "--mixed_precision": self.mixed_precision}
        return seed_run_argv(task, "eval", flags)

    # -- running them --------------------------------------------------------------------------------------
    def run(self, tasks, jobs: int = 1, budget: float | None = None, keep_going: bool = False) -> bool:
        """Run the stages; False when the budget ran out first. A failed stage raises StageFailed and stops the
        others; with ``keep_going`` only the stages that build on it are dropped, the rest run on, and
        StageFailed names every failure at the end."""
        start = time.time()
        pending, done, running = self.stages(tasks), set(), {}  # running: key -> (stage, Popen, log, tic, device)
        failures = {}  # key -> what went wrong
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false",
               # autotune once, not per stage
               "TRITON_CACHE_AUTOTUNING": os.environ.get("TRITON_CACHE_AUTOTUNING", "1")}

        def fail(key: str, message: str) -> None:
            if not keep_going:
                raise StageFailed(message)
            logger.error("%s", message)
            failures[key] = message
            dropped = drop_dependents(pending, failures)
            if dropped:
                logger.error("not started, they build on %s: %s", key, ", ".join(dropped))

        def finish(stage: Stage) -> None:
            try:
                if stage.check is not None:
                    stage.check()
            except StageFailed as error:
                fail(stage.key, f"{stage.key}: {error}")
                return
            done.add(stage.key)

        try:
            while pending or running:
                out_of_time = budget is not None and time.time() - start > budget
                ready = sorted((stage for stage in pending if stage.ready(done)), key=start_order)
                shared = [stage for stage in ready if not stage.exclusive]
                # stages that share a device first; an exclusive one when no other can start, on an idle device
                for stage in [] if out_of_time else shared or ready:
                    device = self.idle_enough_device(stage, running.values())
                    if len(running) >= jobs or device is None:
                        continue
                    pending.remove(stage)
                    try:
                        argv = stage.command()
                    except StageFailed as error:
                        fail(stage.key, f"{stage.key}: {error}")
                        continue
                    if argv is None:
                        finish(stage)
                        continue
                    running[stage.key] = self.launch(stage, argv, env, device)
                if pending and not running and not ready and not out_of_time:
                    if failures:  # e.g. Hybrid waiting for the checkpoint of a Target that failed
                        failures.update({stage.key: f"{describe_wait(stage)}: never ready after the failures"
                                         for stage in pending})
                        break
                    raise StageFailed("stages wait on others that are not in the recipe, or on files that no "
                                      "stage wrote: " + ", ".join(map(describe_wait, pending)))
                if out_of_time and not running:
                    logger.warning("budget of %.0f s spent: %d stages not started (first: %s); rerun to go on",
                                   budget, len(pending), pending[0].key)
                    if not failures:
                        return False
                    break
                for key, (stage, process, log_path, tic, running_device) in list(running.items()):
                    if process.poll() is None:
                        continue
                    del running[key]
                    self.record(key, time.time() - tic, running_device)
                    if process.returncode != 0:
                        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
                        fail(key, f"{key} failed (exit {process.returncode}) after {time.time() - tic:.0f} s; the "
                                  f"end of {log_path}:\n{tail}")
                        continue
                    logger.info("%s: done in %.0f s", key, time.time() - tic)
                    finish(stage)
                time.sleep(0.2)
        finally:
            for stage, process, _, tic, device in running.values():  # a failure or Ctrl-C: stop the others
                process.terminate()
                process.wait()
                self.record(stage.key, time.time() - tic, device)
        if failures:
            raise StageFailed(f"{len(failures)} stage(s) failed ({', '.join(failures)}); every other stage "
                              "finished:\n\n" + "\n\n".join(failures.values()))
        return True

    def idle_enough_device(self, stage: Stage, running) -> int | None:
        """The least busy device (index into ``gpus``; 0 without GPUs) that ``stage`` may start on, or None: no
        stage joins an exclusive one, and an exclusive stage needs a device with nothing on it."""
        busy, reserved = [0] * max(len(self.gpus), 1), set()
        for stage_running, *_, device in running:
            busy[device] += 1
            if stage_running.exclusive:
                reserved.add(device)
        allowed = [d for d in range(len(busy)) if d not in reserved and not (stage.exclusive and busy[d])]
        return min(allowed, key=busy.__getitem__, default=None)

    def launch(self, stage: Stage, argv: list[str], env: dict, device: int):
        log_path = self.layout.log(stage.task, stage.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.gpus:
            env = {**env, "CUDA_VISIBLE_DEVICES": self.gpus[device]}
        where = f" on GPU {self.gpus[device]}" if self.gpus else ""
        logger.info("%s%s: %s %s  (log: %s)", stage.key, where, Path(self.python).name, " ".join(argv), log_path)
        with open(log_path, "a") as log:
            log.write(f"\n$ {self.python} {' '.join(argv)}{where}\n")
            log.flush()
            process = subprocess.Popen([self.python, *argv], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        return stage, process, log_path, time.time(), device

    def record(self, key: str, seconds: float, device: int) -> None:
        """Add a stage's wall seconds to timings.json (a resumed stage adds up over invocations) and a line to
        stages.jsonl naming the invocation (and GPU) that ran it."""
        timings = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}
        timings[key] = timings.get(key, 0.0) + seconds
        self.timings_path.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
        line = {"stage": key, "seconds": round(seconds, 3), "invocation": self.invocation}
        if self.gpus:
            line["gpu"] = self.gpus[device]
        with open(self.layout.root / "stages.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")




# the small files of a root, what mini_cald_report.py reads and the logs: no audio, no checkpoints
PACKED = ("info.json", "timings.json", "stages.jsonl", "logs/*.log", "runs/*/*/metrics.jsonl", "runs/*/*/hparams.json",
          "runs/*/*/best_metrics.json", "eval/*/*/metrics.json", "eval/*/*/preds.jsonl")


def visible_gpus() -> tuple[str, ...]:
    """The CUDA_VISIBLE_DEVICES entries of the GPUs this process sees (all of them without that variable)."""
    import torch

    if not torch.cuda.is_available():
        return ()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return tuple(listed or map(str, range(torch.cuda.device_count())))[:torch.cuda.device_count()]




def write_info(layout: Layout, profile_name: str, jobs: int, gpus: tuple[str, ...], test_alone: bool) -> int:
    """Add this invocation's machine, libraries and settings to info.json (one entry per invocation); its index."""
    import torch
    import transformers

    path = layout.root / "info.json"
    info = json.loads(path.read_text()) if path.is_file() else {"profile": profile_name, "invocations": []}
    if info["profile"] != profile_name:
        raise SystemExit(f"error: {layout.root} holds a {info['profile']!r} recipe; this is --profile "
                         f"{profile_name} (use another --root)")
    try:
        import mamba_ssm
        mamba_version = mamba_ssm.__version__
    except ImportError:
        mamba_version = None
    info["invocations"].append({
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
        "mamba_ssm": mamba_version, "settings": dataclasses.asdict(PROFILES[profile_name]), "jobs": jobs,
        "gpus": len(gpus), "test_alone": test_alone,
    })
    path.write_text(json.dumps(info, indent=1) + "\n")
    return len(info["invocations"]) - 1


def record_wall_time(layout: Layout, invocation: int, seconds: float) -> None:
    """The invocation's wall seconds, however it ended, in its info.json entry."""
    path = layout.root / "info.json"
    info = json.loads(path.read_text())
    info["invocations"][invocation]["seconds"] = round(seconds, 1)
    path.write_text(json.dumps(info, indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="output/mini_cald", help="everything is written under this directory")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None, help="default: the profile's tasks")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu")
    parser.add_argument("--jobs", type=int, default=1, help="stages run at once (default 1)")
    parser.add_argument("--test_alone", action=argparse.BooleanOptionalAction, default=True,
                        help="run each test stage alone on its GPU, so that infer.py's real-time factor is measured "
                             "without neighbours (default); --no-test_alone runs them alongside training: the "
                             "recipe ends minutes sooner, the inference throughput is measured with neighbours")
    parser.add_argument("--keep_going", action="store_true",
                        help="after a failed stage, run every stage that does not build on it (as make -k), then "
                             "name the failures; default: a failure stops the recipe")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds after which no new stage starts (running ones finish); rerun to go on")
    parser.add_argument("--mixed_precision", default=None, choices=("no", "bf16", "fp16"),
                        help="default: bf16 with CUDA, else no")
    parser.add_argument("--pack", metavar="FILE.zip", default=None,
                        help="at the end (also after a failure or the budget) pack the result files into FILE.zip, "
                             "which mini_cald_report.py reads as it reads --root")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the scripts")
    parser.add_argument("--synthesise", choices=TASKS, help=argparse.SUPPRESS)  # the corpus stage of a task
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    tasks = args.tasks or list(profile.tasks)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if not set(tasks) <= set(profile.tasks):
        parser.error(f"--tasks {' '.join(tasks)}: the {args.profile} profile has corpora for "
                     f"{', '.join(profile.tasks)} only")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    layout = Layout(Path(args.root).resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    if args.synthesise:
        Recipe(layout, args.profile, args.python, "no").synthesise(args.synthesise)
        return
    gpus = visible_gpus()
    invocation = write_info(layout, args.profile, args.jobs, gpus, args.test_alone)
    mixed_precision = args.mixed_precision or ("bf16" if gpus else "no")
    recipe = Recipe(layout, args.profile, args.python, mixed_precision, invocation, gpus, args.test_alone)
    tic = time.time()
    try:
        finished = recipe.run(tasks, jobs=args.jobs, budget=args.budget, keep_going=args.keep_going)
    except StageFailed as error:
        sys.exit(f"error: {error}")
    finally:
        record_wall_time(layout, invocation, time.time() - tic)
        if args.pack:
            pack(layout.root, args.pack, PACKED)
    if not finished:
        sys.exit(3)
    logger.info("all stages done in %.0f s: python scripts/mini_cald_report.py --root %s", time.time() - tic,
                args.root)


if __name__ == "__main__":
    main()
