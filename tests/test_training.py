"""Loss scale, optimisation schedule, learning and exact resume of the training loop (utils/training.py); what the
loop does with bad input (a failing evaluation, a full disk, a damaged checkpoint, a refused resume)."""
import copy
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from hparams import create_hparams
from models.build import build_asr_model, forward_model
from models.heads import (NO_TRANSCRIPT_CHARS, ctc_loss_per_utterance, layer_distill_loss, logits_distill_loss,
                          normaliser)
from tests.conftest import QUIET, TINY_MAMBA
from utils import checkpoint as ckpt
from utils import training
from utils.metrics import read_rows

REPO = Path(__file__).resolve().parents[1]


def make_args(run_dir, data_dir, **overrides):
    args = training.build_arg_parser("test").parse_args(["--model-dir", str(run_dir), "--data-dir", str(data_dir)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_normaliser_and_ctc_reductions_by_hand():
    label_lengths, finite = torch.tensor([5, 3]), torch.tensor([True, False])
    assert normaliser(label_lengths, finite, "sample") == 5
    assert normaliser(label_lengths, finite, "utterance") == 1
    assert normaliser(torch.tensor([0, 0]), torch.tensor([True, True]), "sample", has_transcripts=False) \
        == 2 * NO_TRANSCRIPT_CHARS
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 5)
    labels = torch.tensor([[1, 2, 3], [4, -100, -100]])
    losses, ok = ctc_loss_per_utterance(logits, torch.tensor([6, 1]), labels, torch.tensor([3, 1]), blank=0)
    first = F.ctc_loss(logits[0].log_softmax(-1)[:, None], labels[:1, :3], [6], [3], reduction="sum")
    assert ok.tolist() == [True, True] and torch.allclose(losses[0], first)
    losses, ok = ctc_loss_per_utterance(logits, torch.tensor([6, 1]), labels, torch.tensor([3, 2]), blank=0)
    assert ok.tolist() == [True, False] and losses[1] == 0  # 2 labels cannot fit 1 frame: infinite, zeroed


def test_distillation_reductions_by_hand():
    torch.manual_seed(0)
    student = [torch.randn(2, 4, 8) for _ in range(3)]
    teacher = [torch.randn(2, 4, 8) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)

    def norm(x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)

    per_layer_sample, per_layer_utt = [], []
    for s, t in zip(student, teacher):
        mse = ((norm(s) - norm(t)) ** 2).mean(-1)  # (batch, frames)
        per_layer_sample.append(sum(mse[b, f] for b in range(2) for f in range(4) if mask[b, f]))
        per_layer_utt.append(mse[0, :4].mean() + mse[1, :2].mean())
    assert torch.allclose(layer_distill_loss(student, teacher, mask, "sample"), torch.stack(per_layer_sample).mean())
    assert torch.allclose(layer_distill_loss(student, teacher, mask, "utterance"), torch.stack(per_layer_utt).mean())

    s_logits, t_logits = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    p, q = (t_logits / 2).softmax(-1), (s_logits / 2).softmax(-1)
    kl = (p * (p.log() - q.log())).sum(-1)  # KL(teacher || student) at T = 2, no T^2
    assert torch.allclose(logits_distill_loss(s_logits, t_logits, mask, "sample", 2.0), kl[mask].sum())


def test_learning_rate_schedule_and_weight_decay_groups(tiny_hparams):
    hp = create_hparams("warmup_steps=10,decay_steps=100,max_lr=1e-3,final_lr=1e-5")
    assert training.lr_factor(0, hp) == 0 and training.lr_factor(5, hp) == 0.5 and training.lr_factor(10, hp) == 1
    assert training.lr_factor(60, hp) == pytest.approx((1e-5 / 1e-3) ** 0.5)
    assert training.lr_factor(110, hp) == training.lr_factor(10_000, hp) == pytest.approx(1e-2)
    model = build_asr_model(tiny_hparams("asr_use_mamba=True"))
    optimizer = training.make_optimizer(model, hp)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    plain = {names[id(p)] for p in optimizer.param_groups[1]["params"]}
    assert "wav2vec2.encoder.layers.0.attention.fw_mamba.in_proj.weight" in decayed
    assert "wav2vec2.encoder.layers.0.layer_norm.weight" in plain and "lm_head.bias" in plain
    # the original's rule exempts names ending in '.bias' and modules named 'layer_norm' only
    layer = "wav2vec2.encoder.layers.0"
    assert {f"{layer}.attention.fw_mamba.dt_bias", f"{layer}.attention.bw_mamba.A_log",
            f"{layer}.final_layer_norm.weight"} <= decayed
    assert not any("feature_extractor" in n for n in decayed | plain)  # the frozen CNN is not optimised


@pytest.mark.parametrize("saved_fused", [False, True])
def test_a_checkpoints_optimiser_state_loads_into_the_fused_adamw_as_the_same_update(tiny_hparams, saved_fused):
    """make_optimizer's AdamW is fused; a checkpoint of the default implementation (an older run, the original code)
    or of the fused one loads into it, stays fused, and the next update is the one the saving optimiser would make
    (up to rounding)."""
    hp = create_hparams("max_lr=1e-3")
    torch.manual_seed(0)
    model = build_asr_model(tiny_hparams())
    loading = training.make_optimizer(model, hp)
    saving = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                for g in loading.param_groups], lr=1e-3, fused=saved_fused)
    params = [p for group in loading.param_groups for p in group["params"]]
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        saving.step()
    grads = [torch.randn_like(p) for p in params]
    start = [p.detach().clone() for p in params]
    state = copy.deepcopy(saving.state_dict())  # step() updates the state's tensors in place
    for p, g in zip(params, grads):
        p.grad = g.clone()
    saving.step()  # the update the saved state leads to
    expected = [p.detach().clone() for p in params]

    with torch.no_grad():
        for p, value in zip(params, start):
            p.copy_(value)
    training.load_optimizer_state(loading, state)
    assert all(g["fused"] is True and g["foreach"] is None for g in loading.param_groups)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    loading.step()
    for p, value in zip(params, expected):
        torch.testing.assert_close(p.detach(), value, rtol=1e-5, atol=1e-7)


def build(run_dir, data_dir, tiny_model_dir, hparams_extra="", **arg_overrides):
    args = make_args(run_dir, data_dir, hparams=f"asr_model_name={tiny_model_dir},{TINY_MAMBA},{QUIET},"
                                               f"{hparams_extra}", **arg_overrides)
    accelerator = training.make_accelerator(args)
    start = training.resolve_run(args)
    model = training.build_model_for_run(start.hparams, start)
    trainer = training.build_trainer(args, start, accelerator, model)
    training.write_run_files(args, start.hparams, accelerator)  # as the scripts do
    return trainer


def test_step_gradient_is_the_summed_loss_over_the_steps_normaliser(corpus, tiny_model_dir, tmp_path):
    """Two micro-batches: the gradient the optimiser sees equals d(sum of CTC) / d(theta) / total characters."""
    trainer = build(tmp_path / "run", corpus, tiny_model_dir, "batch_size=2,max_grad_norm=1e9",
                    accumulation_steps=2)
    seen = {}
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (seen.update(
        {n: p.grad.clone() for n, p in trainer.asr_model.named_parameters() if p.grad is not None}), step(*a, **k))
    state = trainer.feeder.state_dict()
    weights = {n: p.detach().clone() for n, p in trainer.asr_model.named_parameters()}
    logged = trainer.train_step()
    trainer.feeder.load_state_dict(state)  # the same two micro-batches again, by hand
    with torch.no_grad():
        for n, p in trainer.asr_model.named_parameters():
            p.copy_(weights[n])
    batches = [trainer.feeder.next(0) for _ in range(2)]
    total, chars = 0.0, 0
    for batch in batches:
        out = forward_model(trainer.asr_model, batch["input_values"], batch["attention_mask"])
        losses, _ = ctc_loss_per_utterance(out.logits, out.output_lengths, batch["labels"], batch["label_lengths"], 0)
        total = total + losses.sum()
        chars += int(batch["label_lengths"].sum())
    (total / chars).backward()
    assert logged["n"] == chars and logged["ctc_loss"] == pytest.approx(total.item() / chars, rel=1e-5)
    name = "lm_head.weight"
    torch.testing.assert_close(seen[name], trainer.asr_model.get_parameter(name).grad, rtol=1e-4, atol=1e-6)
    trainer.feeder.close()


def distill_trainer(run_dir, corpus, tiny_model_dir, hparams_extra, accumulation_steps):
    """A Target-guided trainer (student seeded alike every time) whose teacher, the tiny pretrained attention model,
    runs in eval mode: deterministic, as dropout and SpecAugment are off (QUIET) for both."""
    from train_distill import Teacher

    torch.manual_seed(0)
    trainer = build(run_dir, corpus, tiny_model_dir, f"asr_use_mamba=True,teacher_eval_mode=True,{hparams_extra}",
                    accumulation_steps=accumulation_steps)
    hp = trainer.hparams
    weights = build_asr_model(create_hparams(f"asr_model_name={tiny_model_dir},{QUIET}")).state_dict()
    teacher = Teacher(hp, weights, tiny_model_dir, "cpu", trainer.accelerator.autocast)
    trainer.extra_losses = teacher.losses
    trainer.extra_weights = {"layer_distill_loss": hp.alpha_layer_distill_loss,
                             "logits_distill_loss": hp.alpha_logits_distill_loss}
    trainer.weights.update(trainer.extra_weights)
    trainer.record_hidden_states = True
    return trainer


def step_gradients(trainer) -> tuple[dict, dict]:
    """(the gradients the optimiser sees in one train_step, its logged row)."""
    seen, step = {}, trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (seen.update(
        {n: p.grad.clone() for n, p in trainer.asr_model.named_parameters() if p.grad is not None}), step(*a, **k))
    logged = trainer.train_step()
    trainer.feeder.close()
    return seen, logged


@pytest.mark.parametrize("frame_mean", [False, True])
def test_distillation_weight_under_accumulation_is_the_originals(corpus, tiny_model_dir, tmp_path, frame_mean):
    """One utterance repeated: accumulating k micro-batches weights distillation by alpha / k (the original's
    n_b / F before the step's division by N), so accumulation 2 with alphas 2 is accumulation 1 with alphas 1;
    distill_frame_mean=True keeps the mean per frame, the same at any accumulation."""
    runs = {}
    for accumulation, alpha in ((1, 1), (2, 2), (2, 1)):
        trainer = distill_trainer(tmp_path / f"acc{accumulation}_alpha{alpha}", corpus, tiny_model_dir,
                                  f"batch_size=1,max_grad_norm=1e9,alpha_layer_distill_loss={alpha},"
                                  f"alpha_logits_distill_loss={alpha},distill_frame_mean={frame_mean}", accumulation)
        one = trainer.feeder.utts[:1]
        trainer.feeder.epoch_batches = lambda epoch, one=one: [one] * 4
        runs[accumulation, alpha] = step_gradients(trainer)
    (base, base_logged) = runs[1, 1]
    (same, same_logged), (other, _) = (runs[2, 1], runs[2, 2]) if frame_mean else (runs[2, 2], runs[2, 1])
    assert base.keys() == same.keys() == other.keys()
    for name in base:
        torch.testing.assert_close(same[name], base[name], rtol=1e-4, atol=1e-7, msg=name)
    assert same_logged["loss"] == pytest.approx(base_logged["loss"], rel=1e-5)
    name = "wav2vec2.encoder.layers.0.attention.fw_mamba.in_proj.weight"  # distillation reaches it
    assert not torch.allclose(other[name], base[name], rtol=1e-2, atol=0)


def test_logged_distillation_terms_follow_the_formula(corpus, tiny_model_dir, tmp_path):
    """Two micro-batches of different lengths: each logged distillation term is sum_b (n_b / N) * S_b / F (S_b summed
    over b's valid frames, n_b its characters, N and F the step's characters and frames), the CTC term sum_b
    CTC_b / N, and the logged loss their weighted sum."""
    trainer = distill_trainer(tmp_path / "run", corpus, tiny_model_dir, "batch_size=2,alpha_layer_distill_loss=15,"
                              "alpha_logits_distill_loss=1", accumulation_steps=2)
    recorded, losses = [], trainer.extra_losses

    def recording(batch, out):
        terms = losses(batch, out)
        ctc, _ = ctc_loss_per_utterance(out.logits, out.output_lengths, batch["labels"], batch["label_lengths"], 0)
        recorded.append((int(batch["label_lengths"].sum()), int(out.output_lengths.sum()), ctc.sum().item(),
                         {k: v.item() for k, v in terms.items()}))
        return terms

    trainer.extra_losses = recording
    logged = trainer.train_step()
    trainer.feeder.close()
    assert logged["n_inf"] == 0 and len(recorded) == 2 and recorded[0][:2] != recorded[1][:2]
    chars, frames = sum(r[0] for r in recorded), sum(r[1] for r in recorded)
    assert logged["n"] == chars
    for term in ("layer_distill_loss", "logits_distill_loss"):
        expected = sum(n_b / chars * s[term] / frames for n_b, _, _, s in recorded)
        assert logged[term] == pytest.approx(expected, rel=1e-5), term
    assert logged["ctc_loss"] == pytest.approx(sum(r[2] for r in recorded) / chars, rel=1e-5)
    assert logged["loss"] == pytest.approx(logged["ctc_loss"] + 15 * logged["layer_distill_loss"]
                                           + logged["logits_distill_loss"], rel=1e-6)


def test_teacher_keeps_its_mode_through_a_snapshot_evaluation(corpus, tiny_model_dir, tmp_path):
    """Waypoint guidance evaluates each new teacher snapshot on dev; afterwards the teacher runs in the mode it ran
    in: eval with teacher_eval_mode=True, train (the original's) without."""
    trainer = distill_trainer(tmp_path / "run", corpus, tiny_model_dir, "batch_size=2", accumulation_steps=1)
    teacher = trainer.extra_losses.__self__
    assert not teacher.model.training
    metrics = teacher.evaluate(trainer.dev_batches(), trainer.tokenizer, trainer.accelerator)
    assert not teacher.model.training and 0 <= metrics["wer"]
    teacher.model.train()
    teacher.evaluate(trainer.dev_batches(), trainer.tokenizer, trainer.accelerator)
    assert teacher.model.training
    trainer.feeder.close()


@pytest.mark.parametrize("distill", [False, True])
def test_loss_falls_on_a_memorisable_batch(corpus, tiny_model_dir, tmp_path, distill):
    hp = "batch_size=2,max_lr=3e-3,warmup_steps=1,decay_steps=1000,final_lr=3e-3"
    if distill:
        teacher = build(tmp_path / "teacher", corpus, tiny_model_dir, hp, max_steps=1)
        teacher.fit()
        hp += ",asr_use_mamba=True,ctc_weight=0"  # only the teacher drives the student
    trainer = build(tmp_path / "run", corpus, tiny_model_dir, hp)
    trainer.feeder.epoch_batches = lambda epoch: [trainer.feeder.utts[:2]]  # one batch, every step
    if distill:
        from train_distill import Teacher

        weights = torch.load(tmp_path / "teacher/model.ckpt-1", weights_only=True)["model"]
        trainer.extra_losses = Teacher(trainer.hparams, weights, tmp_path / "teacher/model.ckpt-1", "cpu",
                                       trainer.accelerator.autocast).losses
        trainer.extra_weights = {"layer_distill_loss": 1.0, "logits_distill_loss": 1.0}
        trainer.weights.update(trainer.extra_weights)
        trainer.record_hidden_states = True
    logs = [trainer.train_step() for _ in range(25)]
    trainer.feeder.close()
    key = "layer_distill_loss" if distill else "ctc_loss"
    assert logs[-1][key] < 0.7 * logs[0][key], [round(r[key], 3) for r in logs]


def test_resumed_run_repeats_the_uninterrupted_losses(corpus, tiny_model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}

    def run(run_dir, max_steps, *extra):
        argv = ["--model-dir", str(run_dir), "--data-dir", str(corpus), "--accumulation_steps", "2", *extra,
                "--max_steps", str(max_steps), "--checkpoint_interval", "2", "--eval_interval", "100",
                "--hparams", f"asr_model_name={tiny_model_dir},{TINY_MAMBA},batch_size=2,warmup_steps=2,"
                             f"asr_use_mamba=True"]  # dropout and SpecAugment on: the RNG must resume too
        subprocess.run([sys.executable, str(REPO / "train.py"), *argv], env=env, check=True, capture_output=True)

    def losses(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    run(tmp_path / "straight", 4)
    run(tmp_path / "resumed", 2)
    run(tmp_path / "resumed", 4)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert len(losses(tmp_path / "straight")) == 4
    # --restore_from into a new dir on the same data continues the same way (Hybrid from a Target checkpoint)
    run(tmp_path / "restored", 4, "--restore_from", str(tmp_path / "straight" / "model.ckpt-2"))
    assert losses(tmp_path / "restored") == {k: v for k, v in losses(tmp_path / "straight").items() if k > 2}


def test_a_run_whose_gradients_are_never_finite_stops_with_an_error(corpus, tiny_model_dir, tmp_path):
    """A skipped step does not advance: without a limit such a run would loop for ever (mini-CALD's first IC run)."""
    trainer = build(tmp_path / "run", corpus, tiny_model_dir, "batch_size=2", max_steps=3)
    with torch.no_grad():
        trainer.asr_model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match=rf"{training.MAX_NONFINITE_IN_A_ROW} batches in a row gave a "
                                           rf"non-finite gradient norm at step 0"):
        trainer.fit()
    trainer.feeder.close()


def test_ctrl_c_stops_the_run_naming_the_checkpoint_to_resume_from(corpus, tiny_model_dir, tmp_path, caplog):
    trainer = build(tmp_path / "run", corpus, tiny_model_dir, "batch_size=2", max_steps=5, checkpoint_interval=2,
                    eval_interval=100)
    step = trainer.train_step

    def interrupted_at_step_4():
        if trainer.step == 3:
            raise KeyboardInterrupt
        return step()

    trainer.train_step = interrupted_at_step_4
    with pytest.raises(SystemExit) as stopped, caplog.at_level("WARNING"):
        trainer.fit()
    assert stopped.value.code == 130
    assert f"interrupted after step 3, which is not saved: rerun the same command to resume from " \
           f"{tmp_path / 'run' / 'model.ckpt-2'} (step 2)" in caplog.text
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2]  # nothing saved at the interrupt


@pytest.mark.gpu
def test_fp16_overflowing_steps_lower_the_loss_scale_and_the_run_goes_on(corpus, tiny_model_dir, tmp_path):
    """Under fp16 a step with inf gradients is skipped by the grad scaler too, which then halves its scale; a run
    that started with a far too large scale reaches its max_steps. 2^30 overflows fp16 gradients (up to 65504)
    until about 14 halvings have brought it down: fewer skipped steps in a row than stop a run."""
    trainer = build(tmp_path / "run", corpus, tiny_model_dir, "batch_size=2", max_steps=2, mixed_precision="fp16")
    scaler, too_large = trainer.accelerator.scaler, 2.0 ** 30
    scaler.scale(torch.ones((), device="cuda"))  # the scaler creates its scale tensor on first use
    scaler.update(new_scale=too_large)
    trainer.fit()
    assert trainer.step == 2 and scaler.get_scale() < too_large / 2  # at least two overflowing steps were skipped


# ---------------------------------------------------------------------------------------------------------
# bad input and faults: nothing lost, the culprit named


@pytest.fixture
def quiet_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture
def restore_logging():
    """Scripts and run_script set the root logger up (force=True): give the next tests pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def rows_of(run_dir, key):
    return [r["step"] for r in read_rows(run_dir / "metrics.jsonl") if any(k.startswith(key) for k in r)]


def test_a_failing_dev_evaluation_saves_first_and_the_rerun_evaluates_that_checkpoint(corpus, tiny_model_dir,
                                                                                       tmp_path, quiet_wandb):
    data_dir, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(corpus, data_dir)
    trainer = build(run, data_dir, tiny_model_dir, "batch_size=2", max_steps=2, checkpoint_interval=2,
                    eval_interval=100)
    dev_file = Path(trainer.dev_utts[0].audio_path)
    sound = dev_file.read_bytes()
    dev_file.write_bytes(b"damaged after the start-up check")
    with pytest.raises(ValueError) as raised:
        trainer.fit()
    assert str(raised.value).startswith("step 2: the dev evaluation failed: ") and str(dev_file) in str(raised.value)
    assert f"{run / 'model.ckpt-2'} is saved: fix the dev data, then rerun the same command to resume from " \
           f"{run / 'model.ckpt-2'} (step 2)" in str(raised.value)
    assert ckpt.load_checkpoint(run / "model.ckpt-2", required=training.RESUME_CHECKPOINT_KEYS)["step"] == 2
    assert rows_of(run, "loss") == [1, 2] and rows_of(run, "dev/") == []
    dev_file.write_bytes(sound)
    resumed = build(run, data_dir, tiny_model_dir, "batch_size=2", max_steps=2, checkpoint_interval=2,
                    eval_interval=100)
    assert resumed.step == 2 and resumed.evaluate_first
    resumed.fit()
    assert rows_of(run, "dev/") == [2] and json.loads((run / "best_metrics.json").read_text())["wer"][1] == 2


def test_a_dev_file_that_cannot_be_read_stops_the_start_before_anything_is_written(corpus, tiny_model_dir, tmp_path):
    data_dir = tmp_path / "data"
    shutil.copytree(corpus, data_dir)
    dev_name = (data_dir / "meta.dev.txt").read_text().split("|", 1)[0]
    dev_file = next(data_dir.rglob(f"{dev_name}.flac"))
    dev_file.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^dev data meta.dev.txt: 1 of \d+ audio files fail the check: {dev_file}: "
                                         rf"cannot read the audio header of {dev_name}"):
        build(tmp_path / "run", data_dir, tiny_model_dir, "batch_size=2")
    assert not (tmp_path / "run").exists()


def test_metrics_keep_one_row_per_step_across_a_resume(corpus, tiny_model_dir, tmp_path, quiet_wandb):
    run = tmp_path / "run"
    build(run, corpus, tiny_model_dir, "batch_size=2", max_steps=3, checkpoint_interval=2, eval_interval=100).fit()
    assert rows_of(run, "loss") == [1, 2, 3] and rows_of(run, "dev/") == [2, 3]
    (run / "model.ckpt-3").unlink()  # the run was killed after logging step 3, before saving it,
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1.')  # in the middle of a line
    build(run, corpus, tiny_model_dir, "batch_size=2", max_steps=4, checkpoint_interval=2, eval_interval=100).fit()
    assert rows_of(run, "loss") == [1, 2, 3, 4] and rows_of(run, "dev/") == [2, 4]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line) for line in lines)


def test_resume_falls_back_past_a_truncated_latest_checkpoint(corpus, tiny_model_dir, tmp_path, caplog, quiet_wandb):
    run = tmp_path / "run"
    build(run, corpus, tiny_model_dir, "batch_size=2", max_steps=4, checkpoint_interval=2, eval_interval=100).fit()
    latest = run / "model.ckpt-4"
    latest.write_bytes(latest.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        trainer = build(run, corpus, tiny_model_dir, "batch_size=2", max_steps=4, checkpoint_interval=2,
                        eval_interval=100)
    assert f"checkpoint {latest}: truncated or not a torch checkpoint" in caplog.text
    assert trainer.step == 2 and trainer.last_checkpoint == run / "model.ckpt-2"
    trainer.fit()
    assert ckpt.load_checkpoint(latest, required=training.RESUME_CHECKPOINT_KEYS)["step"] == 4
    assert rows_of(run, "loss") == [1, 2, 3, 4]

    for path in (run / "model.ckpt-2", latest):  # nothing left to fall back to: the start stops, naming the run dir
        path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ckpt.CheckpointError) as raised:
        build(run, corpus, tiny_model_dir, "batch_size=2", max_steps=4, checkpoint_interval=2, eval_interval=100)
    assert str(raised.value).startswith(f"{run}: none of its checkpoints can be read (see above): move them away")


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_earlier_checkpoints(corpus, tiny_model_dir, tmp_path,
                                                                                  monkeypatch, quiet_wandb):
    run = tmp_path / "run"
    trainer = build(run, corpus, tiny_model_dir, "batch_size=2", max_steps=4, checkpoint_interval=2,
                    eval_interval=100)
    real_save = torch.save

    def disk_full_after_the_first_checkpoint(state, f):
        if not (run / "model.ckpt-2").exists():
            return real_save(state, f)
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_after_the_first_checkpoint)
    with pytest.raises(OSError) as raised:
        trainer.fit()
    message = str(raised.value)
    assert f"{run / 'model.ckpt-4'}: no space left on the device" in message and "\n" not in message
    assert message.endswith(f"the earlier checkpoints are intact: rerun the same command to resume from "
                            f"{run / 'model.ckpt-2'} (step 2)")
    monkeypatch.undo()
    assert not (run / "model.ckpt-4").exists() and not list(run.glob(".*.tmp"))
    assert ckpt.load_checkpoint(run / "model.ckpt-2", required=training.RESUME_CHECKPOINT_KEYS)["step"] == 2


def test_run_script_ends_an_input_error_in_one_line_and_train_log_keeps_the_traceback(tmp_path, capsys,
                                                                                      restore_logging):
    training.setup_logging(tmp_path, is_main=True)

    def main():
        raise FileNotFoundError("meta file meta.dev.txt not found in --data-dir data/x")

    with pytest.raises(SystemExit) as stopped:
        training.run_script(main)
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("ERROR utils.training: meta file meta.dev.txt not found in --data-dir "
                                             "data/x")
    assert "Traceback" in (tmp_path / "train.log").read_text()

    def disk_full():  # as Trainer.save raises it: the errno, and a message that names the checkpoint
        raise OSError(28, "run/model.ckpt-4: no space left on the device (...): the checkpoint was not written")

    with pytest.raises(SystemExit) as stopped:
        training.run_script(disk_full)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("ERROR utils.training: run/model.ckpt-4: no space left on the device "
                                             "(...): the checkpoint was not written")

    def bug():
        raise TypeError("a bug keeps its traceback")

    with pytest.raises(SystemExit) as stopped:
        training.run_script(bug)
    assert stopped.value.code == 1 and "Traceback" in capsys.readouterr().err


# ops that make the host wait for the GPU on CUDA: a scalar read, and the nonzero behind boolean indexing
SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "item", "equal"}


class SyncingOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        indices = args[1] if name.startswith("index") and len(args) > 1 else ()
        if name in SYNCING_OPS or any(getattr(i, "dtype", None) == torch.bool for i in indices or ()):
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("hparams", [f"{QUIET}", "mask_time_prob=0.3,hidden_dropout=0.1",  # Std, SpecAugment
                                     "asr_use_mamba=True,mask_time_prob=0.3"])  # a BiMamba2 student
def test_a_training_step_makes_no_scalar_read_or_boolean_index(corpus, tiny_model_dir, tmp_path, hparams):
    """On CUDA each of these ops stops the host until the GPU has caught up. The step's logged values come back in
    one ``tolist`` after the gradient is clipped (the GPU tier counts the synchronisations themselves); its CTC loss
    runs the Triton kernels on CUDA, here F.ctc_loss, whose own scalar reads are left out."""
    trainer = build(tmp_path / "run", corpus, tiny_model_dir, f"batch_size=2,{hparams}", accumulation_steps=2)
    trainer.train_step()  # the first step: lazy state (the optimiser's) is made here
    mode = SyncingOps()
    ctc = torch.nn.functional.ctc_loss
    try:
        torch.nn.functional.ctc_loss = lambda *a, **k: _without(mode, ctc, *a, **k)
        with mode:
            row = trainer.train_step()
    finally:
        torch.nn.functional.ctc_loss = ctc
        trainer.feeder.close()
    assert row is not None and mode.seen == []


def _without(mode, function, *args, **kwargs):
    seen = list(mode.seen)
    result = function(*args, **kwargs)
    mode.seen[:] = seen
    return result
