"""Multi-GPU scaling of the seed's TED-LIUM Std and Target-guided training: 1 GPU vs ``accelerate launch``.

Usage (a machine with 2 or more GPUs; see README "Several GPUs"):
    python bench/ddp_scaling.py                         # 1 and 2 GPUs, 200 steps each: table + results JSONL
    python bench/ddp_scaling.py --gpus 1 2 4 --steps 300 --root output/ddp_scaling

The training commands are the seed README's, verbatim (utils/seed_commands.py), with four things changed: the
output and data dirs point under ``--root``, ``--max_steps`` is ``--steps``, the "pretrained" model is a random
wav2vec2-large-lv60-shaped one (``asr_model_name``, models/presets.py large; no download) and Target guided's
teacher is the 1-GPU Std run's last checkpoint. The corpus is a synthetic TED-LIUM 3 (corpora/synth.py) read by
the real prep script; the feeder repeats its epochs, so its size does not limit the steps.

A run on N GPUs is ``accelerate launch --multi_gpu --num_processes N``; a 1-GPU run is plain ``python``, as
users start it. Every rank keeps the seed's per-GPU batch, so N GPUs take N times the audio per step. Throughput
is the audio of all ranks over the wall time of the steps after the first ``--skip`` (Triton autotuning, cuDNN
choices and the allocator settle there), from the runs' metrics.jsonl; scaling efficiency is
throughput(N) / (N x throughput(1)). Runs go one at a time, each alone on the machine.

Results: a table on stdout and one JSON object per run in bench/results/ddp_scaling_<gpu>.jsonl, with the
machine and library versions that ``<root>/env.json`` recorded when the runs started. ``--report`` recomputes
them from the runs' metrics.jsonl alone, e.g. after copying a cut-short set of runs back from the GPU machine;
its ``--root`` may be a zip of the root (bench/results/ddp_scaling_run.zip holds the committed rows' runs).
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from utils.results import results_root  # noqa: E402
from utils.seed_commands import hparams_string, seed_argv, set_flag  # noqa: E402

STRATEGIES = ("std", "target")


def run_argv(strategy: str, gpus: int, steps: int, root: Path, teacher_steps: int | None = None) -> list[str]:
    """The full command line of one run: launcher, script and the seed's arguments with the four changes."""
    script, argv = seed_argv("asr", strategy)
    argv = set_flag(argv, "--model-dir", str(run_dir(root, strategy, gpus)))
    argv = set_flag(argv, "--data-dir", str(root / "data"))
    argv = set_flag(argv, "--max_steps", str(steps))
    argv = set_flag(argv, "--hparams", f"{hparams_string(' '.join(argv))},asr_model_name={root / 'models' / 'large'}")
    if strategy == "target":
        argv = set_flag(argv, "--teacher_path", str(run_dir(root, "std", 1) / f"model.ckpt-{teacher_steps or steps}"))
    launcher = [sys.executable]
    if gpus > 1:  # the launcher's own --mixed_precision only silences its warning: the script's flag decides
        precision = argv[argv.index("--mixed_precision") + 1]
        launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                     "--num_machines", "1", "--mixed_precision", precision, "--dynamo_backend", "no"]
    return [*launcher, str(REPO / script), *argv]


def run_dir(root: Path, strategy: str, gpus: int) -> Path:
    return root / "runs" / f"{strategy}_{gpus}gpu"


def prepare(root: Path, talks: int) -> None:
    """The synthetic corpus in TED-LIUM 3's layout, prepared by corpora/tedlium.py, and the random large model."""
    from corpora import tedlium
    from corpora.synth import synth_tedlium
    from models.presets import save_preset

    if not (root / "data" / "meta.test.txt").is_file():
        synth_tedlium(root / "raw", talks=(talks, 2, 2), segments_per_talk=(10, 10), text="common", force=True)
        tedlium.main(["--src", str(root / "raw"), "--out", str(root / "data")])
    if not (root / "models" / "large" / "config.json").is_file():
        save_preset("large", root / "models" / "large")


def train(strategy: str, gpus: int, steps: int, root: Path, log: Path, teacher_steps: int | None = None) -> None:
    """One run, skipped when its last checkpoint exists (the seed's checkpoint interval is longer than a run)."""
    if (run_dir(root, strategy, gpus) / f"model.ckpt-{steps}").is_file():
        return
    argv = run_argv(strategy, gpus, steps, root, teacher_steps)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": ",".join(map(str, range(gpus)))}
    print(f"$ {shlex.join(argv)}\n  (log: {log})", flush=True)
    with open(log, "a") as f:
        result = subprocess.run(argv, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"error: {strategy} on {gpus} GPU(s) failed (exit {result.returncode}); end of {log}:\n{tail}")


def throughput(metrics_path: Path, skip: int) -> dict:
    """Audio-seconds per wall second over the training steps after the first ``skip`` (``steps``: the last step
    the run reached), with the median step time, peak memory and the loss at the start and end."""
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    steps = [r for r in rows if "audio_s" in r and r["step"] > skip]
    if not steps:
        raise SystemExit(f"error: {metrics_path} has no training step after step {skip}")
    seconds = [r["audio_s"] / r["audio_s_per_s"] for r in steps]
    return {"steps": steps[-1]["step"], "measured_steps": len(steps),
            "audio_s_per_s": sum(r["audio_s"] for r in steps) / sum(seconds),
            "step_ms": 1000 * statistics.median(seconds),
            "audio_s_per_step": statistics.mean(r["audio_s"] for r in steps),
            "peak_gib": max((r["peak_gib"] for r in steps if "peak_gib" in r), default=None),
            "first_loss": rows[0].get("loss"),
            "last_loss": steps[-1]["loss"]}


def environment() -> dict:
    import accelerate
    import torch
    import transformers

    try:
        import mamba_ssm
        mamba = mamba_ssm.__version__
    except ImportError:
        mamba = None
    return {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "host": platform.node(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "mamba_ssm": mamba}


def report(root: Path, gpu_counts: list[int], skip: int) -> list[dict]:
    """One row per run found under ``root``: throughput, speed-up and efficiency against the run on one GPU,
    and the machine the runs were made on (``<root>/env.json``, written when they started)."""
    env_path = root / "env.json"
    if not env_path.is_file():
        raise SystemExit(f"error: {env_path} is missing: it is written when the runs start (without --report)")
    env = json.loads(env_path.read_text())
    rows = []
    for strategy in STRATEGIES:
        base = None
        for gpus in sorted(gpu_counts):
            metrics = run_dir(root, strategy, gpus) / "metrics.jsonl"
            if not metrics.is_file():
                print(f"no run {metrics.parent.name}: left out", file=sys.stderr)
                continue
            row = {"strategy": strategy, "gpus": gpus, "skip": skip, **throughput(metrics, skip)}
            base = base or (row["audio_s_per_s"] if gpus == 1 else None)
            row["speedup"] = row["audio_s_per_s"] / base if base else None
            row["efficiency"] = row["speedup"] / gpus if base else None
            rows.append({**row, **env})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2], help="GPU counts to run (1 must be one)")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps of every run")
    parser.add_argument("--target_steps", type=int, default=None, help="Target guided's steps (default --steps)")
    parser.add_argument("--skip", type=int, default=None, help="first steps left out of the throughput "
                        "(default: a quarter of --steps)")
    parser.add_argument("--talks", type=int, default=150, help="synthetic training talks (10 segments each)")
    parser.add_argument("--root", default="output/ddp_scaling", help="runs dir (with --report: or a zip of one)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: the table and JSONL from the runs already under --root")
    parser.add_argument("--out", default=None, help="results JSONL (default bench/results/ddp_scaling_<gpu>.jsonl)")
    args = parser.parse_args(argv)
    if 1 not in args.gpus:
        parser.error("--gpus must include 1: efficiency is measured against one GPU")
    skip = args.steps // 4 if args.skip is None else args.skip
    root = results_root(args.root) if args.report else Path(args.root).resolve()

    if not args.report:
        import torch

        if max(args.gpus) > torch.cuda.device_count():
            parser.error(f"--gpus {max(args.gpus)} but this machine has {torch.cuda.device_count()} GPU(s)")
        (root / "logs").mkdir(parents=True, exist_ok=True)
        (root / "env.json").write_text(json.dumps(environment(), indent=1) + "\n")
        # 1. data and model
        prepare(root, args.talks)
        # 2. the runs, one at a time (Std on 1 GPU first: it is Target guided's teacher)
        steps = {"std": args.steps, "target": args.target_steps or args.steps}
        for strategy in STRATEGIES:
            for gpus in sorted(args.gpus):
                train(strategy, gpus, steps[strategy], root, root / "logs" / f"{strategy}_{gpus}gpu.log", args.steps)

    # 3. throughput and efficiency
    rows = report(root, args.gpus, skip)
    if not rows:
        raise SystemExit(f"error: no runs under {root / 'runs'}")
    out = Path(args.out or REPO / "bench" / "results" / f"ddp_scaling_{rows[0]['gpu'].replace(' ', '_')}.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"\n{'strategy':<9}{'GPUs':>5}{'steps':>7}{'audio-s/s':>11}{'step ms':>9}{'audio-s/step':>14}"
          f"{'peak GiB':>10}{'speed-up':>10}{'efficiency':>12}")
    for r in rows:
        print(f"{r['strategy']:<9}{r['gpus']:>5}{r['steps']:>7}{r['audio_s_per_s']:>11.0f}{r['step_ms']:>9.0f}"
              f"{r['audio_s_per_step']:>14.1f}{r['peak_gib'] or float('nan'):>10.1f}"
              f"{r['speedup'] or float('nan'):>9.2f}x{r['efficiency'] or float('nan'):>11.0%}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
