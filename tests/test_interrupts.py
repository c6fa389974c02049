"""The scripts under real signals and kills, and reruns that must be refused, each in a subprocess on a tiny corpus:
SIGTERM / SIGINT while training, Ctrl-C (once, twice) and SIGKILL during a checkpoint write, a resume that would
change the model or its vocabulary, infer.py against another vocabulary or NaN audio."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.conftest import TINY_MAMBA
from utils import checkpoint as ckpt
from utils.metrics import read_rows

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
RESUME_HINT = "rerun the same command to resume from"

# Runs a script with its N-th torch.save slowed down once it has written 64 KiB: it touches MARK, then sleeps
# 8 s inside torch's writer, where a signal finds it in the middle of a checkpoint.
SLOW_SAVE = """
import os, runpy, sys, time, torch
mark, slow_call, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real_save, calls = torch.save, []

class SlowFile:
    def __init__(self, f):
        self.f, self.written = f, 0
    def write(self, data):
        self.written += len(data)
        if self.written > 65536 and not os.path.exists(mark):
            open(mark, "w").close()
            for _ in range(80):
                time.sleep(0.1)
        return self.f.write(data)
    def __getattr__(self, name):
        return getattr(self.f, name)

def save(obj, f, *args, **kwargs):
    calls.append(f)
    return real_save(obj, SlowFile(f) if len(calls) == slow_call else f, *args, **kwargs)

torch.save = save
sys.argv = [script, *sys.argv[4:]]
runpy.run_path(script, run_name="__main__")
"""


def train_argv(run_dir, data_dir, model_dir, max_steps, checkpoint_interval=1, extra_hparams=""):
    return ["--model-dir", str(run_dir), "--data-dir", str(data_dir), "--max_steps", str(max_steps),
            "--checkpoint_interval", str(checkpoint_interval), "--eval_interval", "1000",
            "--hparams", f"asr_model_name={model_dir},{TINY_MAMBA},batch_size=2,{extra_hparams}"]


def start(argv, slow_call=None, mark=None):
    command = [sys.executable, str(REPO / "train.py"), *argv]
    if slow_call is not None:
        command = [sys.executable, "-c", SLOW_SAVE, str(mark), str(slow_call), str(REPO / "train.py"), *argv]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(script, argv):
    return subprocess.run([sys.executable, str(REPO / script), *argv], env=ENV, capture_output=True, text=True,
                          timeout=600)


def wait_for(condition, process, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"exited {process.returncode} first:\n{process.stderr.read()[-4000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.1)


def finish(process):
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def last_line(err):
    return err.strip().splitlines()[-1]


def temp_files(run_dir):
    return [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_training_saves_at_the_step_boundary_and_the_rerun_resumes(corpus, tiny_model_dir, tmp_path,
                                                                                  signum):
    run_dir = tmp_path / "run"
    argv = train_argv(run_dir, corpus, tiny_model_dir, max_steps=10000, checkpoint_interval=10000)
    process = start(argv)
    wait_for(lambda: any("loss" in r for r in read_rows(run_dir / "metrics.jsonl")), process)
    process.send_signal(signum)
    code, err = finish(process)
    assert code == 128 + signum, err[-3000:]
    (step, saved), = ckpt.list_checkpoints(run_dir)
    assert step >= 1 and ckpt.load_checkpoint(saved)["step"] == step
    assert last_line(err).endswith(f"{signal.Signals(signum).name}: stopped after step {step}: {RESUME_HINT} "
                                   f"{saved} (step {step})"), err[-2000:]
    assert "Traceback" not in err
    if signum == signal.SIGTERM:
        result = run("train.py", train_argv(run_dir, corpus, tiny_model_dir, max_steps=step + 1,
                                            checkpoint_interval=10000))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"resuming from {saved}" in result.stderr
        assert [r["step"] for r in read_rows(run_dir / "metrics.jsonl") if "loss" in r] == list(range(1, step + 2))


def test_ctrl_c_during_a_checkpoint_write_finishes_it_then_stops(corpus, tiny_model_dir, tmp_path):
    run_dir, mark = tmp_path / "run", tmp_path / "writing"
    process = start(train_argv(run_dir, corpus, tiny_model_dir, max_steps=3), slow_call=2, mark=mark)
    wait_for(mark.exists, process)  # model.ckpt-2 is half written
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130, err[-3000:]
    assert [step for step, _ in ckpt.list_checkpoints(run_dir)] == [1, 2] and not temp_files(run_dir)
    assert ckpt.load_checkpoint(run_dir / "model.ckpt-2")["step"] == 2
    assert last_line(err).endswith(f"SIGINT: stopped after step 2: {RESUME_HINT} {run_dir / 'model.ckpt-2'} (step 2)")


def test_a_second_ctrl_c_during_a_checkpoint_write_stops_at_once_and_keeps_the_earlier_ones(corpus, tiny_model_dir,
                                                                                            tmp_path):
    run_dir, mark = tmp_path / "run", tmp_path / "writing"
    process = start(train_argv(run_dir, corpus, tiny_model_dir, max_steps=3), slow_call=2, mark=mark)
    wait_for(mark.exists, process)
    process.send_signal(signal.SIGINT)
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    code, err = finish(process)
    assert code == 130, err[-3000:]
    assert [step for step, _ in ckpt.list_checkpoints(run_dir)] == [1] and not temp_files(run_dir)
    assert ckpt.load_checkpoint(run_dir / "model.ckpt-1")["step"] == 1
    assert last_line(err).endswith(f"interrupted after step 2, which is not saved: {RESUME_HINT} "
                                   f"{run_dir / 'model.ckpt-1'} (step 1)"), err[-2000:]
    assert "unexpected pos" not in err and "Traceback" not in err


def test_a_kill_during_a_checkpoint_write_leaves_a_temp_file_that_the_next_start_removes(corpus, tiny_model_dir,
                                                                                        tmp_path):
    run_dir, mark = tmp_path / "run", tmp_path / "writing"
    argv = train_argv(run_dir, corpus, tiny_model_dir, max_steps=2)
    process = start(argv, slow_call=2, mark=mark)
    wait_for(mark.exists, process)
    process.kill()
    process.communicate(timeout=60)
    leftover, = temp_files(run_dir)
    assert leftover.startswith(".model.ckpt-2.") and [s for s, _ in ckpt.list_checkpoints(run_dir)] == [1]
    result = run("train.py", argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"removed {run_dir / leftover}, left by a write that was cut short" in result.stderr
    assert f"resuming from {run_dir / 'model.ckpt-1'}" in result.stderr
    assert not temp_files(run_dir) and ckpt.load_checkpoint(run_dir / "model.ckpt-2")["step"] == 2


@pytest.fixture(scope="module")
def std_run(corpus, tiny_model_dir, tmp_path_factory):
    """A one-step Std run dir: hparams.json, vocab.json, model.ckpt-1."""
    run_dir = tmp_path_factory.mktemp("std") / "run"
    result = run("train.py", train_argv(run_dir, corpus, tiny_model_dir, max_steps=1))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def other_vocab(data_dir, out):
    """A copy of the data dir whose vocab.json gives '|' and [UNK] each other's ids (a re-prepared subset)."""
    shutil.copytree(data_dir, out)
    vocab = json.loads((out / "vocab.json").read_text())
    vocab["|"], vocab["[UNK]"] = vocab["[UNK]"], vocab["|"]
    (out / "vocab.json").write_text(json.dumps(vocab))
    return out


def test_a_refused_resume_ends_in_one_line_and_leaves_the_run_files_as_they_were(corpus, tiny_model_dir, std_run,
                                                                                 tmp_path):
    run_files = {name: (std_run / name).read_bytes() for name in ("hparams.json", "vocab.json", "model.ckpt-1")}
    refusals = [
        (corpus, "asr_use_mamba=True", 1,
         f"--hparams asr_use_mamba=True: {std_run / 'hparams.json'} says asr_use_mamba=False, and resuming from "
         f"{std_run / 'model.ckpt-1'} cannot change what its weights were built with"),
        (corpus, "batch_size=-2", 2, "error: --hparams: hparam 'batch_size' must be > 0, got -2"),
        (corpus, "data_warmup_steps=100,input_length_upper_bound=10", 1,
         "the data warm-up (steps below data_warmup_steps=100) keeps utterances of at most "
         "input_length_upper_bound=10 samples (0.000625 s at sr=16000;"),
        (other_vocab(corpus, tmp_path / "data"), "", 1,
         f"{tmp_path / 'data' / 'vocab.json'} differs from {std_run / 'vocab.json'}, the vocabulary of the run in "
         f"{std_run}: 2 token(s) with another id"),
    ]
    for data_dir, hparams, code, message in refusals:
        result = run("train.py", train_argv(std_run, data_dir, tiny_model_dir, max_steps=2, extra_hparams=hparams))
        assert result.returncode == code and message in last_line(result.stderr), result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert {name: (std_run / name).read_bytes() for name in run_files} == run_files
        assert [s for s, _ in ckpt.list_checkpoints(std_run)] == [1]


def test_a_teacher_of_another_vocabulary_is_refused_naming_both_files(corpus, tiny_model_dir, std_run, tmp_path):
    data_dir, student = other_vocab(corpus, tmp_path / "data"), tmp_path / "student"
    teacher = std_run / "model.ckpt-1"
    argv = [*train_argv(student, data_dir, tiny_model_dir, max_steps=1, extra_hparams="asr_use_mamba=True"),
            "--teacher_path", str(teacher)]
    result = run("train_distill.py", argv)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"{data_dir / 'vocab.json'} differs from {std_run / 'vocab.json'}, the vocabulary of the teacher " \
           f"{teacher}: 2 token(s) with another id" in last_line(result.stderr)
    assert not (student / "hparams.json").exists() and not ckpt.list_checkpoints(student)


def test_infer_refuses_another_vocabulary_and_names_nan_audio(corpus, std_run, tmp_path):
    data_dir = other_vocab(corpus, tmp_path / "data")
    argv = ["--model-path", str(std_run), "--output-path", str(tmp_path / "out"), "--data-dir", str(data_dir)]
    result = run("infer.py", argv)
    assert result.returncode == 1, result.stderr[-3000:]
    kept = json.loads((std_run / "vocab.json").read_text())
    assert last_line(result.stderr).endswith(
        f"ERROR utils.training: {data_dir / 'vocab.json'} differs from {std_run / 'vocab.json'}, the vocabulary of "
        f"the run of {std_run / 'model.ckpt-1'}: 2 token(s) with another id, e.g. '|' {kept['[UNK]']} here and "
        f"{kept['|']} there; pass --vocab-path {std_run / 'vocab.json'}, or the data prepared as for that run")
    name, samples = (data_dir / "meta.test.txt").read_text().split("|")[:2]
    flac, = data_dir.rglob(f"{name}.flac")
    flac.unlink()
    wave = np.zeros(int(samples), dtype=np.float32)
    wave[100] = np.nan
    soundfile.write(str(flac.with_suffix(".wav")), wave, 16000, subtype="FLOAT")
    result = run("infer.py", [*argv, "--vocab-path", str(std_run / "vocab.json")])
    assert result.returncode == 1, result.stderr[-3000:]
    assert last_line(result.stderr).endswith(f"eval data meta.test.txt: 1 of 3 audio files fail the check: "
                                             f"{flac.with_suffix('.wav')}: 1 of {samples} samples of {name} are NaN "
                                             f"or inf")
    assert not (tmp_path / "out" / "metrics.json").exists()
