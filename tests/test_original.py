"""The original code's checkpoints, hparams and run dirs (models/original.py), and the export the other way
(scripts/export_original.py), on tiny models: a fake original run dir is built from this code's tiny model with the
original's key names, optimiser layout and full hparams key set."""
import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import infer
from hparams import HParams, create_hparams
from models import original
from models.build import build_asr_model
from scripts import export_original
from tests.conftest import QUIET, TINY_MAMBA
from utils import checkpoint as ckpt
from utils import training

REPO = Path(__file__).resolve().parents[1]


def trained_like(hparams_string: str, seed: int = 0):
    """(hparams, model) with weights moved off the pretrained ones: a conversion must carry these."""
    hparams = create_hparams(hparams_string)
    torch.manual_seed(seed)
    model = build_asr_model(hparams)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return hparams, model


def our_run(run_dir: Path, hparams, model, step: int) -> Path:
    """A run dir as train.py leaves it (weights and step; enough for infer.py and --teacher_path)."""
    run_dir.mkdir(parents=True)
    hparams.save_json(run_dir / "hparams.json")
    return ckpt.save_checkpoint(run_dir / f"model.ckpt-{step}", {"model": model.state_dict(), "step": step})


def original_optimiser(model, hparams, steps: int):
    """AdamW and LambdaLR as the original builds them: every parameter (frozen ones too), two groups by its weight-decay
    rule, a functools.partial schedule; stepped on random gradients (of a copy of ``model``: its weights stay)."""
    named = list(copy.deepcopy(model).named_parameters())
    decayed = [p for n, p in named if training.is_weight_decayed(n)]
    others = [p for n, p in named if not training.is_weight_decayed(n)]
    optim = torch.optim.AdamW([{"params": decayed, "weight_decay": hparams.reg_weight},
                               {"params": others, "weight_decay": 0.0}], lr=hparams.max_lr, eps=hparams.adam_eps)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, functools.partial(training.lr_factor, hparams=hparams))
    for _ in range(steps):
        for _, p in named:
            p.grad = torch.randn_like(p) if p.requires_grad else None
        optim.step()
        sched.step()
    return optim, sched


def original_run(run_dir: Path, hparams, model, step: int, name: str | None = None, with_optimiser=True) -> Path:
    """An original run dir: its hparams.json (every key of the original's hyperparams.py) and a checkpoint of
    {'model': Model.state_dict(), 'optim', 'sched', 'step'}, named ``name`` (a best-named file) if given."""
    run_dir.mkdir(parents=True, exist_ok=True)
    values, _ = original.hparams_to_original(hparams)
    (run_dir / "hparams.json").write_text(json.dumps(values, indent=1))
    state = {"model": original.model_to_original(model.state_dict()), "step": step}
    if with_optimiser:
        optim, sched = original_optimiser(model, hparams, step)
        state.update(optim=optim.state_dict(), sched=sched.state_dict())
    path = run_dir / (name or f"model.ckpt-{step}")
    torch.save(state, path)
    return path


# --- keys and hparams ------------------------------------------------------------------------------------------


def test_model_keys_round_trip(tiny_hparams):
    model = build_asr_model(tiny_hparams("asr_use_mamba=True,use_classifier=True,classifier_num_targets=3,5"))
    ours = model.state_dict()
    theirs = original.model_to_original(ours)
    assert all(k.startswith(("asr_model.wav2vec2.", "asr_model.lm_head.", "classifier.linear.")) for k in theirs)
    assert "asr_model.wav2vec2.encoder.layers.0.attention.fw_mamba.dt_bias" in theirs
    assert {"classifier.linear.1.weight", "asr_model.lm_head.bias"} <= set(theirs)
    back = original.model_from_original(theirs, "x")
    assert list(back) == list(ours) and all(back[k] is ours[k] for k in ours)
    # a DDP-wrapped original model, and the positional conv's weight norm of older transformers
    legacy = {"module." + k.replace(".parametrizations.weight.original0", ".weight_g")
              .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in theirs.items()}
    assert original.model_from_original(legacy, "x").keys() == ours.keys()
    with pytest.raises(ValueError, match=r"ckpt-9: unexpected key 'decoder.model.x'"):
        original.model_from_original({"decoder.model.x": torch.zeros(1)}, "ckpt-9")


def test_hparams_export_has_the_originals_key_set_and_types_and_reads_back(tiny_hparams, tmp_path, caplog):
    hparams = tiny_hparams("asr_use_mamba=True,alpha_layer_distill_loss=15,use_classifier=True,"
                           "classifier_num_targets=1251,batch_frame_limit=1.9e6")
    values, unexpressed = original.hparams_to_original(hparams)
    assert values.keys() == original.ORIGINAL_DEFAULTS.keys()
    assert all(type(values[k]) is type(v) for k, v in original.ORIGINAL_DEFAULTS.items())
    assert values["alpha_layer_distill_loss"] == 15 and values["classifier_num_targets"] == "1251"
    assert values["use_decoder"] is False and values["shuffle_training_data"] is True
    assert unexpressed == {"mamba_d_state": 16, "mamba_headdim": 16, "mamba_chunk_size": 16}
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps(values))
    with caplog.at_level("INFO"):
        back = training.hparams_of_run(path, TINY_MAMBA)
    assert back == hparams
    legacy = sorted(set(original.ORIGINAL_DEFAULTS) - {f for f in HParams().values()})
    assert f"the original code's hparams; {len(legacy)} legacy keys without effect here: {', '.join(legacy)}" \
        in caplog.text
    with pytest.raises(ValueError, match=r"alpha_logits_distill_loss=0.5: the original code holds "
                                         r"alpha_logits_distill_loss as int"):
        original.hparams_to_original(tiny_hparams("alpha_logits_distill_loss=0.5"))


@pytest.mark.parametrize("key, value, message", [
    ("use_decoder", True, r"use_decoder=True \(only False is supported\)"),
    ("decay_type", "linear", r"decay_type='linear' \(only 'exp' is supported\)"),
    ("freeze_module", "asr_model.wav2vec2", r"freeze_module='asr_model.wav2vec2'"),
    ("classifier_pooling", "first", r"hparam 'classifier_pooling' must be one of mean, got 'first'"),
])
def test_original_hparams_that_change_behaviour_are_refused(tmp_path, key, value, message):
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps({**original.ORIGINAL_DEFAULTS, key: value}))
    with pytest.raises(ValueError, match=rf"{path}: .*{message}"):
        training.hparams_of_run(path)


# --- infer.py, train_distill.py, --restore_from and a resumed --model-dir on original run dirs -----------------


def run_infer(monkeypatch, model_path, out, corpus, *extra) -> list[dict]:
    monkeypatch.setattr(sys, "argv", ["infer.py", "--model-path", str(model_path), "--output-path", str(out),
                                      "--data-dir", str(corpus), *extra])
    infer.main()
    return [json.loads(line) for line in (out / "preds.jsonl").read_text().splitlines()]


def test_infer_on_an_original_checkpoint_and_run_dir(corpus, tiny_model_dir, tmp_path, monkeypatch):
    """The same weights give the same predictions in either format; a run dir's latest checkpoint may be a
    best-named one (the original removes the plain file of a best step)."""
    hparams, model = trained_like(f"asr_model_name={tiny_model_dir},asr_use_mamba=True,{TINY_MAMBA}")
    ours = run_infer(monkeypatch, our_run(tmp_path / "ours", hparams, model, 3), tmp_path / "eval_ours", corpus)
    original_run(tmp_path / "original", hparams, model, 2)
    original_run(tmp_path / "original", hparams, model, 3, name="model.ckpt-3-wer-0.9000-cer-0.4000")
    theirs = run_infer(monkeypatch, tmp_path / "original", tmp_path / "eval_original", corpus,
                       "--hparams", TINY_MAMBA)  # the original's hparams have no key for the tiny Mamba2 shape
    assert len(ours) > 0 and theirs == ours
    metrics = json.loads((tmp_path / "eval_original/metrics.json").read_text())
    assert metrics["checkpoint"] == str(tmp_path / "original/model.ckpt-3-wer-0.9000-cer-0.4000")


def run_script(script: str, *argv) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(REPO / script), *argv], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def test_export_then_distil_from_original_teacher_checkpoints_and_run_dir(corpus, tiny_model_dir, tmp_path,
                                                                             monkeypatch):
    """scripts/export_original.py writes the original's format; train_distill.py takes such a checkpoint as a
    Target-guided teacher and such a run dir (best-named snapshots) as a Waypoint-guided one."""
    teacher_hparams, teacher = trained_like(f"asr_model_name={tiny_model_dir},{QUIET}")
    exported = export_original.export(our_run(tmp_path / "teacher", teacher_hparams, teacher, 4),
                                      tmp_path / "original_teacher")
    state = torch.load(exported, weights_only=True)
    assert set(state) == {"model", "step"} and state["step"] == 4
    assert state["model"].keys() == original.model_to_original(teacher.state_dict()).keys()
    assert json.loads((tmp_path / "original_teacher/hparams.json").read_text()).keys() == \
        original.ORIGINAL_DEFAULTS.keys()
    assert ckpt.load_model_weights(exported).keys() == teacher.state_dict().keys()
    for key, tensor in ckpt.load_model_weights(exported).items():
        torch.testing.assert_close(tensor, teacher.state_dict()[key], rtol=0, atol=0)
    # the export alone rebuilds the model: the same predictions as the checkpoint it came from
    assert run_infer(monkeypatch, exported, tmp_path / "eval_exported", corpus) == \
        run_infer(monkeypatch, tmp_path / "teacher/model.ckpt-4", tmp_path / "eval_teacher", corpus)

    hparams = f"asr_model_name={tiny_model_dir},{TINY_MAMBA},{QUIET},asr_use_mamba=True,batch_size=2"
    common = ["--data-dir", str(corpus), "--checkpoint_interval", "2", "--eval_interval", "100"]
    log = run_script("train_distill.py", "--model-dir", str(tmp_path / "target"), *common, "--max_steps", "1",
                     "--hparams", hparams, "--teacher_path", str(exported))
    assert f"teacher: {exported}" in log
    waypoints = tmp_path / "original_waypoints"
    original_run(waypoints, teacher_hparams, teacher, 2, name="model.ckpt-2-wer-0.9500")
    original_run(waypoints, teacher_hparams, teacher, 4, name="model.ckpt-4-wer-0.9000-cer-0.4000")
    run_script("train_distill.py", "--model-dir", str(tmp_path / "waypoint"), *common, "--max_steps", "3",
               "--hparams", f"{hparams},teacher_snapshot_cycle=2", "--teacher_path", str(waypoints),
               "--use_teacher_snapshots")
    rows = [json.loads(line) for line in (tmp_path / "waypoint/metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["teacher_step"]) for r in rows if "teacher_step" in r] == [(0, 2), (2, 4)]


def restored(run_dir, corpus, hparams_string, **args):
    parsed = training.build_arg_parser("test").parse_args(["--model-dir", str(run_dir), "--data-dir", str(corpus),
                                                           "--hparams", hparams_string])
    for key, value in args.items():
        setattr(parsed, key, value)
    accelerator = training.make_accelerator(parsed)
    start = training.resolve_run(parsed)
    model = training.build_model_for_run(start.hparams, start)
    return parsed, start, training.build_trainer(parsed, start, accelerator, model), accelerator


def test_restore_from_and_resume_an_original_checkpoint(corpus, tiny_model_dir, tmp_path):
    """Weights, AdamW moments (re-indexed by name: the original's optimiser holds the frozen parameters too), the
    schedule and the step carry over, whether --restore_from names the checkpoint or the run continues in the
    original's own run dir (Hybrid); the original's hparams.json is kept beside this code's."""
    hparams, model = trained_like(f"asr_model_name={tiny_model_dir},asr_use_mamba=True,{TINY_MAMBA},{QUIET},"
                                  f"batch_size=2")
    path = original_run(tmp_path / "original", hparams, model, 3)
    saved = torch.load(path, weights_only=True)
    names = [n for n, _ in model.named_parameters()]
    original_index = {n: i for i, n in enumerate([n for n in names if training.is_weight_decayed(n)]
                                                 + [n for n in names if not training.is_weight_decayed(n)])}
    for run_dir, args in ((tmp_path / "new", {"restore_from": str(path)}), (tmp_path / "original", {})):
        parsed, start, trainer, accelerator = restored(run_dir, corpus, f"{TINY_MAMBA},alpha_layer_distill_loss=0",
                                                       **args)
        trainer.feeder.close()
        assert trainer.step == 3 and trainer.scheduler.last_epoch == 3
        assert trainer.scheduler.get_last_lr() == saved["sched"]["_last_lr"]
        for name, p in trainer.asr_model.named_parameters():
            torch.testing.assert_close(p, model.get_parameter(name), rtol=0, atol=0, msg=name)
            moments = trainer.optimizer.state.get(p, {})
            if p.requires_grad:
                torch.testing.assert_close(moments["exp_avg"], saved["optim"]["state"][original_index[name]]["exp_avg"],
                                           rtol=0, atol=0, msg=name)
            else:
                assert not moments and "feature_extractor" in name
        training.write_run_files(parsed, start.hparams, accelerator)
    assert original.is_original_hparams(json.loads((tmp_path / "original/hparams.original.json").read_text()))
    assert not original.is_original_hparams(json.loads((tmp_path / "original/hparams.json").read_text()))
