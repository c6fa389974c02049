"""Every seed command, as written, on tiny synthetic corpora in the official raw layouts and a tiny local model.

Per task (TED-LIUM ASR, SLURP intents, VoxCeleb1 SI) one workspace runs, in order: prepare -> Std -> Unguided ->
Target guided -> Waypoint guided -> Hybrid (rerun of the Target-guided dir with alpha_layer_distill_loss=0) ->
evaluation. The only changes to the commands: the tiny model and Mamba2 shape are appended to --hparams, and the
step counts / intervals are shrunk.
"""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from corpora import slurp, tedlium
from corpora.synth import synth_slurp, synth_tedlium, synth_voxceleb1
from models.presets import save_preset
from tests.conftest import TINY_MAMBA
from utils.seed_commands import SEED_COMMANDS

REPO = Path(__file__).resolve().parents[1]
STEPS = {"std": 4, "unguided": 2, "target": 4, "waypoint": 3}
HYBRID_STEPS = 6
TEACHER = "model.ckpt-4"


def seed_command(task: str, strategy: str) -> tuple[str, str]:
    (script, arguments), = [(s, a) for t, st, s, a in SEED_COMMANDS if (t, st) == (task, strategy)]
    return script, arguments


def shrink(arguments: str, extra_hparams: str, steps: int | None) -> list[str]:
    """The seed arguments with the tiny model appended to --hparams and small step counts / intervals."""
    words = shlex.split(arguments)
    out = []
    for i, word in enumerate(words):
        previous = words[i - 1] if i else ""
        if word.startswith("--hparams="):
            word = f"{word},{extra_hparams}"
        elif previous == "--hparams":
            word = f"{word},{extra_hparams}"
        elif previous in ("--checkpoint_interval", "--eval_interval"):
            word = "2"
        elif previous == "--max_steps" and steps is not None:
            word = str(steps)
        out.append(word)
    if steps is not None and "--checkpoint_interval" not in words:
        out += ["--checkpoint_interval", "2"]
    if steps is not None and "--eval_interval" not in words:
        out += ["--eval_interval", "2"]
    return out


def run(workspace: Path, script: str, argv: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(REPO / script), *argv], cwd=workspace, env=env,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{script} {' '.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stderr + result.stdout


def prepare_corpus(task: str, workspace: Path) -> None:
    if task == "asr":
        synth_tedlium(workspace / "database/TEDLIUM_release-3", talks=(3, 1, 1), segments_per_talk=(3, 4),
                      progress=False)
        tedlium.main(["--src", str(workspace / "database/TEDLIUM_release-3"), "--out", str(workspace / "data/tedlium")])
    if task in ("ic", "sid"):  # SI commands take the SLURP vocab.json, as the seed says
        synth_slurp(workspace / "database/SLURP", utterances=(8, 3, 3), synthetic=4, progress=False)
        slurp.main(["--src", str(workspace / "database/SLURP"), "--out", str(workspace / "data/slurp_full")])
    if task == "sid":
        synth_voxceleb1(workspace / "data/VoxCeleb1", speakers=3, videos_per_speaker=(2, 2),
                        utterances_per_video=(2, 3), progress=False)


def extra_hparams(task: str, workspace: Path) -> str:
    return f"asr_model_name={workspace / 'tiny'},{TINY_MAMBA}"


@pytest.fixture(scope="module", params=["asr", "ic", "sid"])
def pipeline(request, tmp_path_factory):
    """Run the task's whole sequence of seed commands once; tests below read what it left."""
    task = request.param
    workspace = tmp_path_factory.mktemp(f"seed_{task}")
    save_preset("tiny", workspace / "tiny")
    prepare_corpus(task, workspace)
    extra = extra_hparams(task, workspace)
    logs = {}
    for strategy in ("std", "unguided", "target", "waypoint"):
        script, arguments = seed_command(task, strategy)
        arguments = arguments.replace("{BEST_CKPT}", TEACHER)
        strategy_extra = extra + (",teacher_snapshot_cycle=2" if strategy == "waypoint" else "")
        logs[strategy] = run(workspace, script, shrink(arguments, strategy_extra, STEPS[strategy]))
    # Hybrid: the Target-guided command again, alpha_layer_distill_loss=0, trained further: it resumes
    script, arguments = seed_command(task, "target")
    arguments = arguments.replace("{BEST_CKPT}", TEACHER).replace("alpha_layer_distill_loss=15",
                                                                 "alpha_layer_distill_loss=0").replace(
        "alpha_layer_distill_loss=30", "alpha_layer_distill_loss=0")
    logs["hybrid"] = run(workspace, script, shrink(arguments, extra, HYBRID_STEPS))
    script, arguments = seed_command(task, "eval")
    arguments = arguments.replace("{EXP_NAME}", "target_guided").replace("{CHECKPOINT_PATH}",
                                                                         f"model.ckpt-{HYBRID_STEPS}")
    logs["eval"] = run(workspace, script, shlex.split(arguments))
    return task, workspace, logs


RUN_DIRS = {"asr": "output/tedlium", "ic": "output/slurp", "sid": "output/superb_si"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_run_dir_is_self_describing(pipeline):
    task, workspace, _ = pipeline
    root = workspace / RUN_DIRS[task]
    for name, steps in (("direct", 4), ("unguided", 2), ("target_guided", HYBRID_STEPS), ("waypoint_guided", 3)):
        run_dir = root / name
        assert (run_dir / "hparams.json").is_file() and (run_dir / "best_metrics.json").is_file()
        assert (run_dir / f"model.ckpt-{steps}").is_file(), sorted(p.name for p in run_dir.iterdir())
        logged = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
        assert [r["step"] for r in logged][-1] == steps and all(r["loss"] == r["loss"] for r in logged)
    hparams = json.loads((root / "target_guided/hparams.json").read_text())
    assert hparams["asr_use_mamba"] and not json.loads((root / "direct/hparams.json").read_text())["asr_use_mamba"]


def test_distillation_terms_follow_the_alphas(pipeline):
    task, workspace, logs = pipeline
    rows = [r for r in read_jsonl(workspace / RUN_DIRS[task] / "target_guided/metrics.jsonl") if "loss" in r]
    target, hybrid = [r for r in rows if r["step"] <= 4], [r for r in rows if r["step"] > 4]
    assert all(r["layer_distill_loss"] > 0 for r in target)
    # the logged total is the weighted sum of the logged terms (each distillation term already carries the original's
    # n_b / F weighting: tests/test_training.py checks it against the micro-batches' sums)
    weights = {"ctc_loss": 1.0, "classifier_loss": 1.0, "layer_distill_loss": 30.0 if task == "sid" else 15.0,
               "logits_distill_loss": 1.0}
    for r in rows:
        assert r["loss"] == pytest.approx(sum(w * r[k] for k, w in weights.items() if k in r), rel=1e-6), r
    assert ("logits_distill_loss" in target[0]) == (task == "asr")  # alpha_logits 1 for TED-LIUM, 0 otherwise
    assert hybrid and not any("layer_distill_loss" in r for r in hybrid)
    assert "resuming from" in logs["hybrid"] and "alpha_layer_distill_loss 15.0 -> 0.0" in logs["hybrid"] \
        or "alpha_layer_distill_loss 30.0 -> 0.0" in logs["hybrid"]
    saved = json.loads((workspace / RUN_DIRS[task] / "target_guided/hparams.json").read_text())
    assert saved["alpha_layer_distill_loss"] == 0.0


def test_waypoint_follows_the_teacher_snapshots(pipeline):
    task, workspace, logs = pipeline
    rows = read_jsonl(workspace / RUN_DIRS[task] / "waypoint_guided/metrics.jsonl")
    switches = [(r["step"], r["teacher_step"]) for r in rows if "teacher_step" in r]
    assert switches == [(0, 2), (2, 4)]  # at step s: the teacher checkpoint at the next multiple of 2 after s


def test_infer_metrics_match_a_recomputation_from_preds(pipeline):
    task, workspace, _ = pipeline
    out = workspace / {"asr": "output/tedlium/test", "ic": "output/slurp/test", "sid": "output/superb_si/test"}[task]
    metrics = json.loads((out / "metrics.json").read_text())
    preds = read_jsonl(out / "preds.jsonl")
    assert metrics["utterances"] == len(preds) > 0
    if task == "asr":
        import jiwer

        assert metrics["wer"] == pytest.approx(jiwer.wer([p["label"] for p in preds], [p["pred"] for p in preds]))
        assert metrics["cer"] == pytest.approx(jiwer.cer([p["label"] for p in preds], [p["pred"] for p in preds]))
    else:
        pairs = [(a, b) for p in preds for a, b in zip(p["clf_pred"], p["clf_label"])]
        assert metrics["clf_acc"] == pytest.approx(sum(a == b for a, b in pairs) / len(pairs))
        assert metrics["intent_acc"] == pytest.approx(sum(p["clf_pred"] == p["clf_label"] for p in preds) / len(preds))
    assert metrics["audio_hours"] > 0 and metrics["real_time_factor"] > 0
