"""The seed's TED-LIUM training commands as users run them, on one GPU: throughput, where a step's time goes, the
microbenchmark beside it, and what the recipe costs.

Usage (a GPU machine; bench/NOTES.md, "Seed throughput"):
    python bench/seed_throughput.py                                   # every command: table + results JSONL
    python bench/seed_throughput.py --commands std target hybrid --root output/seed_throughput_a --code 1a2b3c4
    python bench/seed_throughput.py --time_limit 560 --pack $OUT      # stop starting runs in time; pack the record
    python bench/seed_throughput.py --report --root bench/results/seed_throughput_a   # rows again from a record
    python bench/seed_throughput.py --root output/st_b --share output/st_a --commands target \
        --hparams student_graph_frames=16384      # an A/B's other side: st_a's corpus, model and Std run
    python bench/seed_throughput.py --preset tiny --warmup 1 --steps 2 --profile_steps 1 --talks 2 1 --segments 3

The commands are the seed README's (utils/seed_commands.py): Std, Unguided, Target guided, Waypoint guided, and
Hybrid's second phase (the Target-guided command rerun on its run dir with alpha_layer_distill_loss=0). Four things
change: the run and data dirs (under ``--root``), ``--max_steps`` and the "pretrained" model (``asr_model_name``, a
random model of a models/presets.py size: ``large`` is wav2vec2-large-lv60's; ``tiny``, for a CPU check, also gets
the Mamba2 shape its hidden size needs). Target guided and Hybrid learn from the Std run's last checkpoint; Waypoint
follows a teacher dir whose snapshots at 1, 2 and 3 times teacher_snapshot_cycle are that same checkpoint.

Where a run starts. The seed runs 40k to 90k steps; the bench measures a few dozen of them at the steps that matter,
by starting each run from a checkpoint of its own command: the command run with ``--max_steps 0`` saves
model.ckpt-0, which is moved to model.ckpt-<start> with its step, schedule and learning rate set to that step
(``restamp``), and the command, rerun with ``--max_steps`` past it, resumes there as any rerun does.
- Std, Unguided, Target guided start just past the data warm-up (data_warmup_steps + 1): their batches hold
  TED-LIUM's whole length range, not only the warm-up's short utterances.
- Hybrid resumes the Target-guided run where it ended, as the seed's Hybrid resumes it at 40k.
- Waypoint guided starts ``warmup + steps/2`` steps before 2 x teacher_snapshot_cycle (the seed's 10000): within
  its measured steps it switches teacher snapshots and evaluates the new one on dev, as it does every cycle.
Each measured run takes ``--warmup`` steps (left out), ``--steps`` measured steps and ``--profile_steps`` under
torch.profiler (CALD_PROFILE, utils/profiling.py), then the final evaluation and checkpoint of every run.

The corpus is a synthetic TED-LIUM 3 (corpora/synth.py, spoken by espeak-ng, prepared by corpora/tedlium.py) whose
segment lengths are drawn from corpora.synth.TEDLIUM3_TRAIN_DURATIONS (the distribution and the corpus's measured
mean, median, 90th percentile and maximum are printed and recorded). Its dev set has the training distribution; the
dev evaluation's time is scaled to TED-LIUM 3's dev (1.6 hours) by audio length.

Results: a table on stdout, one JSON row per command in bench/results/seed_throughput_<gpu>.jsonl (fields: bench/
NOTES.md, "Seed throughput") and the recipe estimate in bench/results/seed_throughput_<gpu>_recipe.jsonl. The run
root keeps what ``--report`` needs (plan.json, env.json, corpus.json, microbench.json, logs/, runs/*/metrics.jsonl,
profiles/*/profile.json); ``--pack DIR`` writes those files as DIR/<root name>.tar.gz beside the results.
"""
import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from utils.profiling import COMPILE_LINE  # noqa: E402
from utils.seed_commands import hparams_string, seed_argv, set_flag  # noqa: E402

COMMANDS = ("std", "unguided", "target", "hybrid", "waypoint")  # in the order they run: teachers first
SEED_STRATEGY = {"std": "std", "unguided": "unguided", "target": "target", "hybrid": "target", "waypoint": "waypoint"}
NEEDS = {"target": "std", "hybrid": "target", "waypoint": "std"}  # the run a command learns from or resumes
MODEL_OF = {"std": "teacher"}  # bench/speed.py's model for the microbenchmark; the others train the student
PRESET_HPARAMS = {"tiny": "mamba_headdim=16,mamba_d_state=16,mamba_chunk_size=16"}  # hidden 32 needs a smaller Mamba2
TEDLIUM3_DEV_HOURS = 1.6  # TED-LIUM 3 legacy dev: 8 talks, 507 segments
# the seed's TED-LIUM recipe: Std 90k steps; Target guided 40k, then Hybrid resumes it to 90k
RECIPE = (("std", 90000), ("target", 40000), ("hybrid", 50000))
CONVERSION = ("target", "hybrid")
AUTOTUNE_LINE = "Triton autotuning for function"  # what TRITON_PRINT_AUTOTUNING=1 prints
# utils/profiling.py's marks as each step starts and when the loop ends; a progress bar may share their line
STEP_MARK = re.compile(r"\[cald step (\d+|end)\]")
RECORD_FILES = ("plan.json", "env.json", "corpus.json", "microbench.json", "logs/*.log", "runs/*/metrics.jsonl",
                "runs/*/hparams.json", "profiles/*/profile.json")
# the issue's targets: (what, row field or ratio, bound, at least (True) / at most)
TARGETS = (
    ("Std loop / microbenchmark", ("std", "loop_vs_microbench"), 0.85, True),
    ("Target guided / Std", ("target", "vs_std"), 0.65, True),
    ("Hybrid / Std", ("hybrid", "vs_std"), 0.65, True),
    ("Unguided / Std", ("unguided", "vs_std"), 0.8, True),
    ("Waypoint switches at the seed's cycle", ("waypoint", "switch_share"), 0.05, False),
)
GPU_BUSY_TARGET = 0.9  # in every command, judged on gpu_busy_unprofiled


# ---------------------------------------------------------------------------------------------------------
# 1. the plan: commands, their steps and command lines


@dataclasses.dataclass
class Plan:
    """One measured run: it resumes at ``start`` and trains ``warmup`` + ``steps`` + ``profile_steps`` steps;
    ``hparams`` are added to its command's (``--hparams``: an A/B of a lever)."""

    command: str
    start: int
    warmup: int
    steps: int
    profile_steps: int
    hparams: str = ""

    @property
    def end(self) -> int:
        return self.start + self.warmup + self.steps + self.profile_steps

    @property
    def first_measured(self) -> int:
        """The step counter as the first measured step starts (its metrics row has the step after it)."""
        return self.start + self.warmup

    @property
    def profile_first(self) -> int:
        return self.start + self.warmup + self.steps


def with_dependencies(commands: list[str]) -> list[str]:
    """``commands`` and the runs they need (Std for Target guided and Waypoint, Target guided for Hybrid), in the
    order they run."""
    wanted = set(commands)
    while any(NEEDS.get(c) and NEEDS[c] not in wanted for c in wanted):
        wanted |= {NEEDS[c] for c in wanted if c in NEEDS}
    return [c for c in COMMANDS if c in wanted]


def seed_hparams(command: str):
    from hparams import create_hparams

    _, argv = seed_argv("asr", SEED_STRATEGY[command])
    return create_hparams(hparams_string(" ".join(argv)))


def make_plans(commands: list[str], warmup: int, steps: int, profile_steps: int, hparams: str = "",
               hparams_for: tuple[str, ...] = ()) -> dict[str, Plan]:
    """Where each run starts (see the module's docstring); the commands of ``hparams_for`` get ``hparams``."""
    plans = {}
    for command in commands:
        hp = seed_hparams(command)
        if command == "hybrid":
            start = plans["target"].end
        elif command == "waypoint":
            start = 2 * hp.teacher_snapshot_cycle - warmup - math.ceil(steps / 2)
        else:
            start = hp.data_warmup_steps + 1
        plans[command] = Plan(command, start, warmup, steps, profile_steps,
                              hparams if command in hparams_for else "")
    return plans


def run_dir(root: Path, command: str) -> Path:
    return root / "runs" / ("target" if command == "hybrid" else command)


def snapshot_dir(root: Path) -> Path:
    return root / "teachers" / "std_snapshots"


def model_dir(root: Path, preset: str) -> Path:
    return root / "models" / preset


def flag_value(argv: list[str], flag: str, default: str | None = None) -> str | None:
    for i, word in enumerate(argv):
        if word == flag:
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return default


def command_argv(command: str, root: Path, max_steps: int, preset: str, plans: dict[str, Plan]) -> list[str]:
    """The seed command of ``command`` with the four changes (and Hybrid's alpha_layer_distill_loss=0)."""
    script, argv = seed_argv("asr", SEED_STRATEGY[command])
    argv = set_flag(argv, "--model-dir", str(run_dir(root, command)))
    argv = set_flag(argv, "--data-dir", str(root / "data"))
    argv = set_flag(argv, "--max_steps", str(max_steps))
    hp = hparams_string(" ".join(argv))
    if command == "hybrid":
        hp, replaced = re.subn(r"\balpha_layer_distill_loss=[^,]*", "alpha_layer_distill_loss=0", hp)
        assert replaced == 1, f"the Target-guided command's --hparams has no alpha_layer_distill_loss: {hp}"
    extra = ",".join(filter(None, [f"asr_model_name={model_dir(root, preset)}", PRESET_HPARAMS.get(preset),
                                   plans[command].hparams]))
    argv = set_flag(argv, "--hparams", f"{hp},{extra}")
    if command in ("target", "hybrid"):
        argv = set_flag(argv, "--teacher_path", str(run_dir(root, "std") / f"model.ckpt-{plans['std'].end}"))
    if command == "waypoint":
        argv = set_flag(argv, "--teacher_path", str(snapshot_dir(root)))
    return [sys.executable, str(REPO / script), *argv]


# ---------------------------------------------------------------------------------------------------------
# 2. corpus and model


def segment_stats(seconds: list[float]) -> dict:
    x = np.asarray(seconds, dtype=float)
    return {"segments": len(x), "hours": float(x.sum() / 3600), "mean_s": float(x.mean()),
            "median_s": float(np.median(x)), "p90_s": float(np.percentile(x, 90)), "max_s": float(x.max()),
            "min_s": float(x.min())}


def meta_seconds(meta: Path, sr: int = 16000) -> list[float]:
    """Each utterance's length in seconds from a ``name|num_samples|text`` meta file."""
    return [int(line.split("|")[1]) / sr for line in meta.read_text().splitlines() if line.strip()]


def prepare(root: Path, preset: str, talks: tuple[int, int], segments: int, workers: int) -> dict:
    """The synthetic TED-LIUM 3 (raw layout, then corpora/tedlium.py's data dir) and the random model, each made
    once per root; returns (and records in corpus.json) the distribution and the corpus's measured lengths."""
    from corpora import tedlium
    from corpora.synth import TEDLIUM3_TRAIN_DURATIONS, synth_tedlium
    from models.presets import save_preset

    durations = TEDLIUM3_TRAIN_DURATIONS
    if not (root / "data" / "meta.test.txt").is_file():
        synth_tedlium(root / "raw", talks=(talks[0], talks[1], 1), segments_per_talk=(segments, segments),
                      text="common", durations=durations, force=True, workers=workers)
        tedlium.main(["--src", str(root / "raw"), "--out", str(root / "data"), "--jobs", str(workers)])
    if not (model_dir(root, preset) / "config.json").is_file():
        save_preset(preset, model_dir(root, preset))
    corpus = {"distribution": durations.describe(), "parameters": {**dataclasses.asdict(durations), "mu": durations.mu},
              "train": segment_stats(meta_seconds(root / "data" / "meta.train.txt")),
              "dev": segment_stats(meta_seconds(root / "data" / "meta.dev.txt"))}
    (root / "corpus.json").write_text(json.dumps(corpus, indent=1) + "\n")
    return corpus


def share(root: Path, other: Path, commands: list[str], asked: list[str]) -> None:
    """``root`` takes ``other``'s corpus and model, and its Std run where a command asked for learns from Std
    (symbolic links; nothing under ``other`` is written): one side of an A/B whose other side ran in ``other``.
    Hybrid resumes Target guided's run dir, which therefore cannot be shared."""
    if "hybrid" in asked and "target" not in asked:
        raise SystemExit("error: --share: Hybrid resumes Target guided's run dir and would write into the shared "
                         "root's: ask for --commands target hybrid")
    wanted = ["raw", "data", "models"] + (["runs/std"] if "std" in commands and "std" not in asked else [])
    for name in wanted:
        source, link = other.resolve() / name, root / name
        if not source.exists():
            raise SystemExit(f"error: --share: {source} is missing: run the bench on {other} first")
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source, target_is_directory=True)


def corpus_line(corpus: dict) -> str:
    t = corpus["train"]
    return (f"corpus: segment lengths {corpus['distribution']}; training set as made: {t['segments']} segments, "
            f"{t['hours']:.2f} h, mean {t['mean_s']:.2f} s, median {t['median_s']:.2f} s, 90th percentile "
            f"{t['p90_s']:.2f} s, max {t['max_s']:.2f} s; dev {corpus['dev']['segments']} segments, "
            f"{corpus['dev']['hours']:.2f} h")


# ---------------------------------------------------------------------------------------------------------
# 3. the runs


def restamp(run: Path, step: int) -> None:
    """Move ``run``'s model.ckpt-0 (and its best-metric copies) to model.ckpt-<step>: the step, the schedule's
    position and the learning rate set to ``step``'s, as a run that trained to there would hold them."""
    from utils import checkpoint as ckpt
    from utils.training import hparams_of_run, lr_factor

    state = ckpt.load_checkpoint(run / f"{ckpt.CKPT_PREFIX}0")
    factor = lr_factor(step, hparams_of_run(run / "hparams.json"))
    scheduler = state["scheduler"]
    scheduler.update(last_epoch=step, _step_count=step + 1, _last_lr=[lr * factor for lr in scheduler["base_lrs"]])
    for group, lr in zip(state["optimizer"]["param_groups"], scheduler["_last_lr"]):
        group["lr"] = lr
    state["step"] = step
    ckpt.save_checkpoint(run / f"{ckpt.CKPT_PREFIX}{step}", state)
    for path in run.iterdir():
        if path.name == f"{ckpt.CKPT_PREFIX}0" or path.name.startswith(f"{ckpt.CKPT_PREFIX}0-"):
            path.unlink()


def link_snapshots(root: Path, teacher: Path, cycle: int) -> None:
    """Waypoint's teacher dir: snapshots at 1, 2 and 3 x ``cycle`` steps, each a link to ``teacher``."""
    snapshots = snapshot_dir(root)
    snapshots.mkdir(parents=True, exist_ok=True)
    for name, target in [(f"model.ckpt-{k * cycle}", teacher) for k in (1, 2, 3)] + [
            (name, teacher.parent / name) for name in ("hparams.json", "vocab.json")]:
        link = snapshots / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())


def launch(argv: list[str], log: Path, env: dict, timeout: float | None) -> bool:
    """Run one command, its output appended to ``log``; False when it ran past ``timeout`` (stopped there)."""
    print(f"$ {shlex.join(argv)}\n  (log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    tic = time.monotonic()
    with open(log, "a") as f:
        try:
            result = subprocess.run(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  stopped after {time.monotonic() - tic:.0f} s: past the time limit", flush=True)
            return False
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"error: {argv[1]} failed (exit {result.returncode}); end of {log}:\n{tail}")
    print(f"  done in {time.monotonic() - tic:.0f} s", flush=True)
    return True


def run_env(profile: Path | None = None, first: int = 0, steps: int = 0) -> dict:
    """A run's environment: Triton reports each autotuning; TRITON_CACHE_AUTOTUNING is dropped, so that a run tunes
    every new shape as a user's process does (a tuning read from disk prints nothing); compiled kernels still come
    from TRITON_CACHE_DIR when set. CALD_PROFILE profiles ``steps`` steps from ``first`` (``profile``: its dir)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRITON_PRINT_AUTOTUNING": "1"}
    env.pop("CALD_PROFILE", None)
    env.pop("TRITON_CACHE_AUTOTUNING", None)
    if profile is not None:
        env["CALD_PROFILE"] = f"{profile}:{first}:{steps}"
    return env


def train(command: str, root: Path, preset: str, plans: dict[str, Plan], deadline: float | None) -> bool:
    """The start checkpoint (unless Hybrid, or already there), then the measured run; skipped when its last
    checkpoint exists. False when the time limit stopped it."""
    from utils import checkpoint as ckpt

    plan, run = plans[command], run_dir(root, command)
    if (run / f"model.ckpt-{plan.end}").is_file():
        return True
    remaining = lambda: None if deadline is None else max(1.0, deadline - time.monotonic())  # noqa: E731
    if command == "waypoint":
        link_snapshots(root, run_dir(root, "std") / f"model.ckpt-{plans['std'].end}",
                       seed_hparams("waypoint").teacher_snapshot_cycle)
    if command != "hybrid" and ckpt.latest_checkpoint(run) is None:
        if not launch(command_argv(command, root, 0, preset, plans), root / "logs" / f"{command}_start.log",
                      run_env(), remaining()):
            return False
    if command != "hybrid" and (run / "model.ckpt-0").is_file():
        restamp(run, plan.start)
    env = run_env(root / "profiles" / command, plan.profile_first, plan.profile_steps)
    return launch(command_argv(command, root, plan.end, preset, plans), root / "logs" / f"{command}.log", env,
                  remaining())


# ---------------------------------------------------------------------------------------------------------
# 4. the microbenchmark at the loop's batch shape


def median_shape(rows: list[dict], micro_batches: int) -> tuple[int, float]:
    """(utterances, padded seconds) of the loop's median micro-batch: the median over steps of the utterances per
    micro-batch and of the padded length per utterance."""
    batch = statistics.median(r["utterances"] / micro_batches for r in rows)
    seconds = statistics.median(r["padded_s"] / r["utterances"] for r in rows)
    return max(1, round(batch)), seconds


def time_step(run, device) -> tuple[float, float | None]:
    """(median ms, peak GiB) of ``run``: bench/speed.py's measure on a GPU; on a CPU the median of 3 after 1."""
    from bench import speed

    if device.type == "cuda":
        return speed.measure(run)
    run()
    times = []
    for _ in range(3):
        tic = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - tic))
    return statistics.median(times), None


def microbench(root: Path, plans: dict[str, Plan], preset: str) -> dict:
    """bench/speed.py's training step (teacher for Std, student for the others, built with the run's Mamba2 shape)
    at each run's median micro-batch shape, unpadded; recorded in microbench.json."""
    import warnings

    import torch

    from bench import speed

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results, models = {}, {}
    for command, plan in plans.items():
        rows = measured_rows(root, plan)
        if not rows:
            continue
        hp = json.loads((run_dir(root, command) / "hparams.json").read_text())
        micro_batches = int(flag_value(command_argv(command, root, 0, preset, plans), "--accumulation_steps", "1"))
        batch, seconds = median_shape(rows, micro_batches)
        name = MODEL_OF.get(command, "student")
        mixer = {} if name == "teacher" else dict(
            residual_inside=hp["asr_mamba_residual_inside"], d_state=hp["mamba_d_state"], d_conv=hp["mamba_d_conv"],
            expand=hp["mamba_expand"], headdim=hp["mamba_headdim"], chunk_size=hp["mamba_chunk_size"],
            scan_graph_frames=hp["mamba_scan_graph_frames"], mixer_graph_frames=hp["mamba_mixer_graph_frames"])
        key = (name, json.dumps(mixer, sort_keys=True))
        if key not in models:
            models.clear()  # one model at a time on the device, its graphs gone with it
            speed.release_scan_graphs()
            speed.release_mixer_graphs()
            torch.manual_seed(0)
            model = speed.build(name, device, preset=preset, **mixer)
            parameters = [p for p in model.parameters() if p.requires_grad]
            models[key] = model, torch.optim.AdamW(parameters, lr=1e-5, fused=device.type == "cuda")  # speed.py's
        model, optimizer = models[key]
        inputs = speed.make_batch(batch, seconds, device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # autocast("cuda") on a CPU
            ms, peak = time_step(lambda: speed.train_step(model.train(), optimizer, inputs), device)
        results[command] = {"model": name, "batch": batch, "seconds": seconds, "ms": ms,
                            "audio_s_per_s": batch * seconds / (ms / 1000), "peak_gib": peak}
        print(f"microbenchmark {command}: {name} train {batch}x{seconds:.2f} s: {ms:.1f} ms", flush=True)
    (root / "microbench.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


# ---------------------------------------------------------------------------------------------------------
# 5. rows: throughput, breakdown, evaluation and checkpoint, switches, autotuning


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def measured_rows(root: Path, plan: Plan) -> list[dict]:
    """The training rows of the measured steps, each ``step_s`` less a teacher switch made as it started."""
    rows = read_jsonl(run_dir(root, plan.command) / "metrics.jsonl")
    switches = {r["step"]: r["teacher_switch_s"] for r in rows if "teacher_switch_s" in r}
    return [{**r, "step_s": r["step_s"] - switches.get(r["step"] - 1, 0.0)} for r in rows
            if "loss" in r and plan.first_measured < r["step"] <= plan.profile_first]


def gpu_bound(rows: list[dict], plan: Plan, gpu_ms: float | None) -> float | None:
    """Audio-s/s of a loop that took only its kernels' GPU time: the profiled steps' mean audio over ``gpu_ms``,
    their mean GPU time a step (utils/profiling.py's ``gpu_ms``); None without GPU time."""
    audio = [r["audio_s"] for r in rows
             if "loss" in r and plan.profile_first < r["step"] <= plan.profile_first + plan.profile_steps]
    return statistics.mean(audio) / (gpu_ms / 1000) if audio and gpu_ms else None


def busy_unprofiled(audio_s_per_s: float, bound_audio_s_per_s: float | None) -> float | None:
    """The GPU's busy share of the measured steps' wall time, estimated without the profiler's own cost (which
    slows a launch-bound host, and so lowers ``gpu_busy``): their audio-s/s over the profiled steps' GPU-bound
    ceiling, which assumes the measured and profiled steps take the same GPU time per audio second."""
    return audio_s_per_s / bound_audio_s_per_s if bound_audio_s_per_s else None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def throughput(rows: list[dict]) -> dict:
    """Audio seconds per wall second over the measured steps (their audio over their ``step_s``), the padded
    audio's, and the step time's median, 90th percentile and mean."""
    seconds = [r["step_s"] for r in rows]
    return {"measured_steps": len(rows), "audio_s_per_s": sum(r["audio_s"] for r in rows) / sum(seconds),
            "padded_audio_s_per_s": sum(r["padded_s"] for r in rows) / sum(seconds),
            "step_ms_median": 1000 * statistics.median(seconds), "step_ms_p90": 1000 * percentile(seconds, 90),
            "step_ms_mean": 1000 * statistics.mean(seconds),
            "audio_s_per_step": statistics.mean(r["audio_s"] for r in rows),
            "padding": 1 - sum(r["audio_s"] for r in rows) / sum(r["padded_s"] for r in rows),
            "peak_gib": max((r["peak_gib"] for r in rows if "peak_gib" in r), default=None)}


def printed_per_step(log: Path, text: str) -> dict[int, int]:
    """{step counter N: how often ``text`` was printed in the training step that starts with its ``[cald step N]``
    mark} (``[cald step end]`` ends the loop: what follows is no step's); {} without the log."""
    if not log.is_file():
        return {}
    pieces = STEP_MARK.split(log.read_text(errors="replace"))  # [before, N, what step N printed, N', ...]
    counts: dict[int, int] = {}
    for n, printed in zip(pieces[1::2], pieces[2::2]):
        if n != "end":
            counts[int(n)] = counts.get(int(n), 0) + printed.count(text)
    return counts


def printed_after(per_step: dict[int, int], step: int) -> int | None:
    """How often a line was printed in the training steps whose counter is ``step`` or more (``per_step``:
    ``printed_per_step``'s counts); None when the log has no such step."""
    counts = [c for n, c in per_step.items() if n >= step]
    return sum(counts) if counts else None


def steady_step_ms(rows: list[dict], compiles: dict[int, int]) -> tuple[float | None, int]:
    """(mean ms, count) of the measured steps that compiled no kernel (``compiles``: per step counter; a metrics row
    has the counter after its step). A step that meets a new shape compiles its kernels once per process, so a run
    of tens of thousands of steps is made of steps that do not."""
    steady = [r["step_s"] for r in rows if not compiles.get(r["step"] - 1)]
    return (1000 * statistics.mean(steady) if steady else None), len(steady)


def switch_share(switch_s: float, step_s: float, cycle: int) -> float:
    """The share of Waypoint's wall time its teacher switches take at one switch every ``cycle`` steps."""
    return switch_s / (switch_s + cycle * step_s)


def at_last_step(rows: list[dict], step: int, key: str) -> float | None:
    return next((r[key] for r in rows if r.get("step") == step and key in r), None)


def command_row(root: Path, plan: Plan, preset: str, plans: dict, corpus: dict, micro: dict | None) -> dict | None:
    rows = measured_rows(root, plan)
    if not rows:
        print(f"no measured steps of {plan.command} under {root}: left out", file=sys.stderr)
        return None
    argv = command_argv(plan.command, root, plan.end, preset, plans)
    all_rows = read_jsonl(run_dir(root, plan.command) / "metrics.jsonl")
    row = {"command": plan.command, "run": root.name, "start_step": plan.start, "warmup": plan.warmup,
           "profile_steps": plan.profile_steps, "hparams": plan.hparams, **throughput(rows),
           "micro_batch": dict(zip(("batch", "seconds"), median_shape(
               rows, int(flag_value(argv, "--accumulation_steps", "1")))))}
    micro = (micro or {}).get(plan.command)
    row["microbench_audio_s_per_s"] = micro["audio_s_per_s"] if micro else None
    row["microbench_ms"] = micro["ms"] if micro else None
    row["loop_vs_microbench"] = row["audio_s_per_s"] / micro["audio_s_per_s"] if micro else None
    row["padded_loop_vs_microbench"] = row["padded_audio_s_per_s"] / micro["audio_s_per_s"] if micro else None

    profile_path = root / "profiles" / plan.command / "profile.json"
    profile = json.loads(profile_path.read_text()) if profile_path.is_file() else {}
    row.update(gpu_busy=profile.get("gpu_busy"), profiled_step_ms=profile.get("step_ms"),
               breakdown=profile.get("ranges"), syncs_per_step=profile.get("syncs"),
               sync_wait_ms=profile.get("sync_wait_ms"), scalar_reads_per_step=profile.get("scalar_reads"),
               graph_captures_per_step=profile.get("graph_captures"), kernels_per_step=profile.get("kernels"),
               cudnn_benchmark=profile.get("cudnn_benchmark"), host_ops=profile.get("host_ops"))
    row["gpu_bound_audio_s_per_s"] = gpu_bound(all_rows, plan, profile.get("gpu_ms"))
    row["gpu_busy_unprofiled"] = busy_unprofiled(row["audio_s_per_s"], row["gpu_bound_audio_s_per_s"])

    eval_s = at_last_step(all_rows, plan.end, "eval_s")
    row.update(eval_s=eval_s, checkpoint_s=at_last_step(all_rows, plan.end, "checkpoint_s"),
               dev_hours=corpus["dev"]["hours"],
               eval_s_tedlium_dev=eval_s * TEDLIUM3_DEV_HOURS / corpus["dev"]["hours"] if eval_s else None,
               eval_interval=int(flag_value(argv, "--eval_interval", "2000")),
               checkpoint_interval=int(flag_value(argv, "--checkpoint_interval", "5000")))
    if plan.command == "waypoint":
        switches = [r["teacher_switch_s"] for r in all_rows
                    if "teacher_switch_s" in r and plan.first_measured <= r["step"] < plan.profile_first]
        cycle = json.loads((run_dir(root, "waypoint") / "hparams.json").read_text())["teacher_snapshot_cycle"]
        row.update(teacher_switch_s=switches[-1] if switches else None, teacher_snapshot_cycle=cycle,
                   switch_share=switch_share(switches[-1], row["step_ms_mean"] / 1000, cycle) if switches else None)
    log = root / "logs" / f"{plan.command}.log"
    compiles = printed_per_step(log, COMPILE_LINE)
    row["autotunes_after_warmup"] = printed_after(printed_per_step(log, AUTOTUNE_LINE), plan.first_measured)
    row["compiles_after_warmup"] = printed_after(compiles, plan.first_measured)
    row["steady_step_ms_mean"], row["steady_steps"] = steady_step_ms(rows, compiles)
    row["corpus"] = corpus
    return row


def report(root: Path) -> tuple[list[dict], dict]:
    """The rows of the runs under ``root`` (as plan.json lists them) and its recorded machine."""
    for name in ("plan.json", "env.json", "corpus.json"):
        if not (root / name).is_file():
            raise SystemExit(f"error: {root / name} is missing: it is written when the runs start (without --report)")
    saved = json.loads((root / "plan.json").read_text())
    plans = {c: Plan(**p) for c, p in saved["plans"].items()}
    env = json.loads((root / "env.json").read_text())
    corpus = json.loads((root / "corpus.json").read_text())
    micro = json.loads((root / "microbench.json").read_text()) if (root / "microbench.json").is_file() else None
    rows = [row for plan in plans.values()
            if (row := command_row(root, plan, saved["preset"], plans, corpus, micro)) is not None]
    std = next((r for r in rows if r["command"] == "std"), {})
    for row in rows:
        for key, of in (("vs_std", "audio_s_per_s"), ("gpu_bound_vs_std", "gpu_bound_audio_s_per_s")):
            row[key] = row[of] / std[of] if std.get(of) and row[of] else None
        row.update(env)
    return rows, env


# ---------------------------------------------------------------------------------------------------------
# 6. the recipe's wall clock


def evaluations(steps: int, eval_interval: int, checkpoint_interval: int) -> int:
    """Dev evaluations (each after a checkpoint) over ``steps`` steps: at every multiple of either interval."""
    both = eval_interval * checkpoint_interval // math.gcd(eval_interval, checkpoint_interval)
    return steps // eval_interval + steps // checkpoint_interval - steps // both


def ddp_efficiencies(path: Path | None) -> dict[str, float]:
    """{strategy: 2-GPU scaling efficiency} from bench/ddp_scaling.py's rows (std, target), if any."""
    if path is None or not path.is_file():
        return {}
    return {r["strategy"]: r["efficiency"] for r in read_jsonl(path) if r["gpus"] == 2 and r.get("efficiency")}


def recipe_estimate(rows: list[dict], efficiency: dict[str, float], gpu_counts: list[int]) -> dict:
    """Hours of the seed's TED-LIUM recipe at the measured mean step times (of the steps that compiled no kernel,
    where the row has them: ``steady_step_ms_mean``), plus its dev evaluations and checkpoints
    (the evaluation scaled to TED-LIUM 3's dev); with N GPUs the same audio (each rank the seed's batch, 1/N of
    the steps) at N x the 2-GPU efficiency: hours / (N x efficiency). Hybrid takes Target guided's efficiency."""
    by_command = {r["command"]: r for r in rows}
    parts = {}
    for command, steps in RECIPE:
        row = by_command.get(command)
        if row is None:
            continue
        evals = evaluations(steps, row["eval_interval"], row["checkpoint_interval"])
        per_eval = (row["eval_s_tedlium_dev"] or 0.0) + (row["checkpoint_s"] or 0.0)
        step_ms = row.get("steady_step_ms_mean") or row["step_ms_mean"]
        train_h = steps * step_ms / 1000 / 3600
        parts[command] = {"steps": steps, "step_ms_mean": step_ms, "train_h": train_h,
                          "evaluations": evals, "eval_and_checkpoint_h": evals * per_eval / 3600,
                          "hours": train_h + evals * per_eval / 3600}
    estimate = {"parts": parts,
                "conversion_h": sum(parts[c]["hours"] for c in CONVERSION) if all(c in parts for c in CONVERSION)
                else None,
                "recipe_h": sum(p["hours"] for p in parts.values()) if len(parts) == len(RECIPE) else None,
                "ddp_efficiency_2gpu": efficiency, "gpus": {}}
    for n in gpu_counts:
        strategy = {"std": "std", "target": "target", "hybrid": "target"}
        hours = {c: p["hours"] / (n * efficiency[strategy[c]]) for c, p in parts.items() if strategy[c] in efficiency}
        estimate["gpus"][str(n)] = {**hours, "conversion_h": sum(hours[c] for c in CONVERSION)
                                    if all(c in hours for c in CONVERSION) else None}
    return estimate


# ---------------------------------------------------------------------------------------------------------
# 7. environment, output


def environment(code: str | None) -> dict:
    import torch

    from bench import speed

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu {platform.machine()}"
    versions = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda}
    for name in ("transformers", "accelerate", "mamba_ssm", "triton", "flash_attn", "causal_conv1d"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"gpu": gpu, "code": code or speed.code_version(), "versions": versions, "host": platform.node(),
            "date": time.strftime("%Y-%m-%d")}


def fmt(value, spec: str) -> str:
    """``value`` formatted by ``spec``; None as '-' in the same width."""
    if value is not None:
        return format(value, spec)
    width = re.match(r"\d*", spec).group()
    return "-".rjust(int(width) if width else 1)


def verdict(value: float | None, bound: float, at_least: bool = True) -> str:
    """'met' or 'not met' for ``value`` against a target of at least (else at most) ``bound``; '-' without one."""
    if value is None:
        return "-"
    return "met" if (value >= bound if at_least else value <= bound) else "not met"


def print_tables(rows: list[dict], estimate: dict, corpus: dict) -> None:
    print(f"\n{rows[0]['gpu']} ({rows[0]['code']}); {corpus_line(corpus)}")
    print("\nbusy: the GPU's share of the measured steps' wall time, estimated without the profiler's cost; "
          "(prof): under the profiler")
    print(f"{'command':<9}{'steps':>6}{'audio-s/s':>10}{'vs Std':>8}{'ms med':>8}{'ms p90':>8}{'busy':>6}{'(prof)':>7}"
          f"{'peak GiB':>9}{'micro':>8}{'loop/micro':>11}{'batch':>12}{'eval s':>8}{'ckpt s':>8}{'tunes':>6}"
          f"{'compiles':>9}")
    for r in rows:
        shape = f"{r['micro_batch']['batch']}x{r['micro_batch']['seconds']:.1f}s"
        print(f"{r['command']:<9}{r['measured_steps']:>6}{r['audio_s_per_s']:>10.0f}{fmt(r['vs_std'], '7.2f')}x"
              f"{r['step_ms_median']:>8.0f}{r['step_ms_p90']:>8.0f}{fmt(r['gpu_busy_unprofiled'], '6.0%')}"
              f"{fmt(r['gpu_busy'], '7.0%')}"
              f"{fmt(r['peak_gib'], '9.1f')}{fmt(r['microbench_audio_s_per_s'], '8.0f')}"
              f"{fmt(r['loop_vs_microbench'], '10.2f')}x{shape:>12}{fmt(r['eval_s'], '8.1f')}"
              f"{fmt(r['checkpoint_s'], '8.1f')}{fmt(r['autotunes_after_warmup'], '6d')}"
              f"{fmt(r['compiles_after_warmup'], '9d')}")
    names = list(dict.fromkeys(name for r in rows for name in (r["breakdown"] or {})))
    if names:
        print("\nper profiled step, ms: CPU (own time) / GPU (kernels launched there)")
        print(f"{'':<22}" + "".join(f"{r['command']:>17}" for r in rows))
        for name in names:
            cells = [(r["breakdown"] or {}).get(name) for r in rows]
            print(f"{name:<22}" + "".join(f"{c['cpu_ms']:>8.1f} /{c['gpu_ms']:>7.1f}" if c else f"{'-':>17}"
                                          for c in cells))
        for label, key in (("step (profiled)", "profiled_step_ms"), ("host syncs", "syncs_per_step"),
                           ("host sync wait", "sync_wait_ms"), ("scalar reads", "scalar_reads_per_step"),
                           ("graph captures", "graph_captures_per_step")):
            print(f"{label:<22}" + "".join(f"{fmt(r[key], '17.1f')}" for r in rows))
    print_host_ops(rows)
    for r in rows:
        if r["command"] == "waypoint":
            print(f"\nWaypoint: a teacher switch (load + dev evaluation) took {fmt(r['teacher_switch_s'], '.1f')} s; "
                  f"at one switch every {r['teacher_snapshot_cycle']} steps of {r['step_ms_mean']:.0f} ms: "
                  f"{fmt(r['switch_share'], '.2%')} of the wall time (switch / (switch + cycle x mean step))")
    by_command = {r["command"]: r for r in rows}
    print("\ntargets (one process):")
    for what, (command, key), bound, at_least in TARGETS:
        value = by_command.get(command, {}).get(key)
        print(f"  {what}: {fmt(value, '.2f')} ({'≥' if at_least else '≤'} {bound:g}): "
              f"{verdict(value, bound, at_least)}")
    busy = [r["gpu_busy_unprofiled"] for r in rows if r["gpu_busy_unprofiled"] is not None]
    profiled = [r["gpu_busy"] for r in rows if r["gpu_busy"] is not None]
    least = min(busy) if busy else None
    print(f"  GPU busy in every command, estimated without the profiler: min {fmt(least, '.0%')} "
          f"(≥ {GPU_BUSY_TARGET:.0%}): {verdict(least, GPU_BUSY_TARGET)}; under the profiler: min "
          f"{fmt(min(profiled) if profiled else None, '.0%')}")
    for what, key in (("autotuning", "autotunes_after_warmup"), ("kernel compiles", "compiles_after_warmup")):
        counts = [r[key] for r in rows if r[key] is not None]
        print(f"  {what} after warm-up: {sum(counts) if counts else '-'} (0)")
    bound = [f"{r['command']} {r['gpu_bound_audio_s_per_s']:.0f} ({fmt(r['gpu_bound_vs_std'], '.2f')}x Std)"
             for r in rows if r["gpu_bound_audio_s_per_s"]]
    if bound:
        print("  the ceiling if every step took only its kernels' GPU time (profiled steps, audio-s/s): "
              + ", ".join(bound))
    parts = estimate["parts"]
    print("\nthe seed's TED-LIUM recipe on this GPU (mean time of the measured steps that compiled no kernel; "
          "evaluations and checkpoints every eval/checkpoint interval):")
    for command, p in parts.items():
        print(f"  {command:<7} {p['steps']:>6} steps x {p['step_ms_mean']:.0f} ms = {p['train_h']:.2f} h "
              f"+ {p['evaluations']} evaluations and checkpoints {p['eval_and_checkpoint_h']:.2f} h "
              f"= {p['hours']:.2f} h")
    print(f"  conversion (Target 40k + Hybrid 50k): {fmt(estimate['conversion_h'], '.2f')} h; with Std: "
          f"{fmt(estimate['recipe_h'], '.2f')} h")
    for n, hours in estimate["gpus"].items():
        print(f"  on {n} GPUs at the 2-GPU efficiency {estimate['ddp_efficiency_2gpu']}: conversion "
              f"{fmt(hours['conversion_h'], '.2f')} h")


def print_host_ops(rows: list[dict], ranges: tuple[str, ...] = ("teacher", "forward", "backward"),
                   top: int = 5) -> None:
    """Per command and range, the host time spent inside PyTorch's operators and the operators taking most of it
    (utils/profiling.py ``host_ops``); the rest of the range's own time is Python's and its Triton launches."""
    lines = []
    for r in rows:
        for name in ranges:
            ops, cell = (r.get("host_ops") or {}).get(name), (r["breakdown"] or {}).get(name)
            if ops and cell:
                named = ", ".join(f"{op.removeprefix('autograd::engine::evaluate_function: ')} {ms:.1f}"
                                  f" ({calls:g})" for op, calls, ms in ops["top"][:top])
                lines.append(f"  {r['command']:<9}{name:<9}{ops['ops_ms']:>7.1f} of {cell['cpu_ms']:>6.1f}: {named}")
    if lines:
        print("\nhost ms per profiled step inside PyTorch operators, of the range's own; the operators taking most "
              "(ms, calls):")
        print("\n".join(lines))


def pack(root: Path, out_dir: Path) -> Path:
    """``root``'s record (RECORD_FILES) as ``out_dir/<root name>.tar.gz``, paths under ``<root name>/``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{root.name}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for pattern in RECORD_FILES:
            for file in sorted(root.glob(pattern)):
                tar.add(file, arcname=str(Path(root.name) / file.relative_to(root)))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS),
                        help="commands to measure (with the runs they learn from)")
    parser.add_argument("--warmup", type=int, default=10, help="steps of each run left out first")
    parser.add_argument("--steps", type=int, default=30, help="measured steps of each run")
    parser.add_argument("--profile_steps", type=int, default=3, help="steps profiled after the measured ones")
    parser.add_argument("--preset", default="large", help="models/presets.py size of the random model")
    parser.add_argument("--hparams", default="",
                        help="hparams added to the --commands' own (not to the runs they learn from): one side of an "
                             "A/B, e.g. teacher_graph_frames=0 with --share <the other side's root>")
    parser.add_argument("--talks", type=int, nargs=2, default=(176, 64), metavar=("TRAIN", "DEV"),
                        help="synthetic talks in the training and dev sets (16 talks a corpus worker)")
    parser.add_argument("--segments", type=int, default=4, help="segments per talk")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes making the corpus")
    parser.add_argument("--root", nargs="+", default=["output/seed_throughput"],
                        help="run root (several with --report: their rows together)")
    parser.add_argument("--share", default=None, metavar="ROOT",
                        help="take ROOT's corpus, model and Std run (the other side of an A/B, with --hparams)")
    parser.add_argument("--report", action="store_true", help="run nothing: the rows from the record under --root")
    parser.add_argument("--time_limit", type=float, default=None,
                        help="seconds: no run starts after time_limit - reserve, and a run still going then is "
                             "stopped, so that the microbenchmark and the report finish in time")
    parser.add_argument("--reserve", type=float, default=120.0, help="seconds kept for them (with --time_limit)")
    parser.add_argument("--out", default=None, help="rows JSONL (default bench/results/seed_throughput_<gpu>.jsonl)")
    parser.add_argument("--pack", default=None, help="also write the record of --root as PACK/<root name>.tar.gz")
    parser.add_argument("--code", default=None, help="the commit measured (default: git's HEAD)")
    parser.add_argument("--ddp_rows", default=None,
                        help="bench/ddp_scaling.py rows for the N-GPU estimate (default: this GPU's, if committed)")
    parser.add_argument("--gpus_estimate", type=int, nargs="+", default=[2], help="GPU counts of the estimate")
    args = parser.parse_args(argv)
    roots = [Path(r).resolve() for r in args.root]
    if not args.report and len(roots) > 1:
        parser.error("several --root only with --report")
    if args.steps < 1 or args.warmup < 0 or args.profile_steps < 1:
        parser.error("--steps and --profile_steps must be at least 1, --warmup at least 0")

    if not args.report:
        tic, root = time.monotonic(), roots[0]
        deadline = None if args.time_limit is None else tic + args.time_limit - args.reserve
        commands = with_dependencies(args.commands)
        plans = make_plans(commands, args.warmup, args.steps, args.profile_steps, args.hparams,
                           tuple(args.commands))
        root.mkdir(parents=True, exist_ok=True)
        if args.share:
            share(root, Path(args.share), commands, args.commands)
        (root / "plan.json").write_text(json.dumps({"preset": args.preset, "plans": {
            c: dataclasses.asdict(p) for c, p in plans.items()}}, indent=1) + "\n")
        # 1. corpus and model
        corpus = prepare(root, args.preset, tuple(args.talks), args.segments, args.workers)
        print(f"{corpus_line(corpus)} (ready after {time.monotonic() - tic:.0f} s)", flush=True)
        # 2. the runs, one at a time, teachers first
        for command in commands:
            if deadline is not None and time.monotonic() > deadline:
                print(f"{command}: not started, past the time limit", flush=True)
                continue
            if not train(command, root, args.preset, plans, deadline):
                break
        # 3. the machine, and the microbenchmark in this process
        (root / "env.json").write_text(json.dumps(environment(args.code), indent=1) + "\n")
        microbench(root, plans, args.preset)
        print(f"runs and microbenchmark: {time.monotonic() - tic:.0f} s", flush=True)

    # 4. rows, recipe estimate, tables
    rows, estimates = [], []
    for root in roots:
        root_rows, env = report(root)
        gpu_file = env["gpu"].replace(" ", "_")
        ddp = Path(args.ddp_rows) if args.ddp_rows else REPO / "bench" / "results" / f"ddp_scaling_{gpu_file}.jsonl"
        estimate = {"run": root.name, "gpu": env["gpu"], "code": env["code"],
                    **recipe_estimate(root_rows, ddp_efficiencies(ddp), args.gpus_estimate)}
        if root_rows:
            print_tables(root_rows, estimate, root_rows[0]["corpus"])
        rows += root_rows
        estimates.append(estimate)
    if not rows:
        raise SystemExit(f"error: no measured steps under {', '.join(map(str, roots))}")
    out = Path(args.out or REPO / "bench" / "results" / f"seed_throughput_{rows[0]['gpu'].replace(' ', '_')}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = out.with_name(out.stem + "_recipe.jsonl")
    recipe.write_text("".join(json.dumps(e) + "\n" for e in estimates))
    print(f"\nwrote {out} and {recipe}")
    if args.pack:
        for root in roots:
            print(f"packed {pack(root, Path(args.pack))}")


if __name__ == "__main__":
    main()
