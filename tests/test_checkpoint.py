"""utils.checkpoint: atomic save, weights_only load, RNG round trip, lookup, teacher snapshots, best tracking."""
import errno
import json
import os
import random

import numpy as np
import pytest
import torch

from utils.checkpoint import (
    BestTracker,
    CheckpointError,
    checkpoint_step,
    latest_checkpoint,
    latest_usable_checkpoint,
    list_checkpoints,
    load_checkpoint,
    metric_direction,
    remove_temp_files,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    teacher_snapshot,
)


def touch_ckpts(run_dir, *names):
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (run_dir / name).write_bytes(name.encode())


# --- save / load / RNG ---------------------------------------------------------------------------------------


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    state = {
        "model": {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.bfloat16)},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "step": 2000,
        "feeder": {"epoch": 3, "order": [5, 1, 2], "name": "train"},
        "rng": rng_state(),
    }
    path = save_checkpoint(tmp_path / "run" / "model.ckpt-2000", state)
    assert sorted(os.listdir(tmp_path / "run")) == ["model.ckpt-2000"]  # no temp file left, dir created
    loaded = torch.load(path, map_location="cpu", weights_only=True)  # raises on any pickled object
    assert loaded["step"] == 2000 and loaded["feeder"] == state["feeder"]
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["model"]["b"].dtype == torch.bfloat16
    assert load_checkpoint(path)["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_save_overwrites_and_failed_save_leaves_old_file(tmp_path):
    path = tmp_path / "model.ckpt-10"
    save_checkpoint(path, {"step": 10})
    save_checkpoint(path, {"step": 11})
    assert load_checkpoint(path, required=())["step"] == 11

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"step": 12, "bad": Unpicklable()})
    assert load_checkpoint(path, required=())["step"] == 11  # old content intact
    assert os.listdir(tmp_path) == ["model.ckpt-10"]  # temp file cleaned up


def test_weights_only_refuses_numpy_state_so_rng_state_must_convert(tmp_path):
    # The reason rng_state() exists: numpy's raw state would make weights_only loading fail.
    torch.save({"np": np.random.get_state()}, tmp_path / "raw")
    with pytest.raises(Exception):
        torch.load(tmp_path / "raw", weights_only=True)


def draws():
    return (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(), torch.rand(4))


def test_rng_round_trip_reproduces_draws(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached gaussian in python's state (gauss_next)
    np.random.randn()  # and in numpy's (has_gauss=1, cached_gaussian)
    state = rng_state()
    assert state["python"]["gauss_next"] is not None and state["numpy"]["has_gauss"] == 1
    save_checkpoint(tmp_path / "model.ckpt-1", {"rng": state})
    expected = draws()

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert draws()[0] != expected[0]

    set_rng_state(load_checkpoint(tmp_path / "model.ckpt-1", required=())["rng"])
    got = draws()
    assert got[:4] == expected[:4]
    assert torch.equal(got[4], expected[4])


# --- names and lookup ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, step",
    [("model.ckpt-2000", 2000), ("model.ckpt-0", 0), ("model.ckpt-2000-wer-0.1234", 2000),
     ("model.ckpt-15-val_loss--0.5000", 15)],
)
def test_checkpoint_step(tmp_path, name, step):
    assert checkpoint_step(name) == step
    assert checkpoint_step(tmp_path / name) == step


@pytest.mark.parametrize("name", ["model.ckpt-", "model.ckpt-abc", "model.ckpt--5", "hparams.json", "ckpt-100",
                                  ".model.ckpt-100.x1y2.tmp", "model.ckpt-100x"])
def test_checkpoint_step_rejects_other_names(name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        checkpoint_step(name)


def test_list_latest_and_resolve(tmp_path):
    run = tmp_path / "run"
    assert list_checkpoints(run) == [] and latest_checkpoint(run) is None
    touch_ckpts(run, "model.ckpt-900", "model.ckpt-10000", "model.ckpt-2000", "model.ckpt-10000-wer-0.1000",
                ".model.ckpt-12000.abcd.tmp", "hparams.json", "best_metrics.json")
    (run / "model.ckpt-50000").mkdir()  # a directory is not a checkpoint
    assert [s for s, _ in list_checkpoints(run)] == [900, 2000, 10000]  # numeric, not lexical, order
    assert latest_checkpoint(run) == run / "model.ckpt-10000"
    assert resolve_checkpoint(run) == run / "model.ckpt-10000"
    assert resolve_checkpoint(run / "model.ckpt-900") == run / "model.ckpt-900"
    assert resolve_checkpoint(run / "model.ckpt-10000-wer-0.1000") == run / "model.ckpt-10000-wer-0.1000"


def test_an_original_run_dirs_best_named_checkpoints_are_found(tmp_path):
    """The original code removes the plain model.ckpt-<step> of a step it saves as best: its run dir's latest
    checkpoint may be a best-named one."""
    run = tmp_path / "original"
    touch_ckpts(run, "model.ckpt-2000", "model.ckpt-4000-wer-0.3000-cer-0.1000", "model.ckpt-6000-wer-0.2000",
                "model.ckpt-6000-cer-0.0900")
    assert [p.name for _, p in list_checkpoints(run)] == ["model.ckpt-2000", "model.ckpt-4000-wer-0.3000-cer-0.1000",
                                                          "model.ckpt-6000-cer-0.0900"]  # one per step, by name
    assert resolve_checkpoint(run) == latest_checkpoint(run) == run / "model.ckpt-6000-cer-0.0900"
    touch_ckpts(run, "model.ckpt-6000")
    assert latest_checkpoint(run) == run / "model.ckpt-6000"  # the plain file first


def test_resolve_errors_say_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in run directory .*empty.*model\.ckpt-<step>"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")


class FailingFile:
    """A file whose writes fail with ``error`` once ``limit`` bytes have gone through: a full disk, or a Ctrl-C
    arriving while torch's writer is in the middle of a checkpoint."""

    def __init__(self, f, error, limit=4096):
        self.f, self.error, self.limit, self.written = f, error, limit, 0

    def write(self, data):
        self.written += len(data)
        if self.written > self.limit:
            raise self.error
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_full_disk_or_a_ctrl_c_during_a_save_leaves_the_old_files_and_says_so(tmp_path, monkeypatch, error):
    """torch's writer reports either as "unexpected pos"; the caller gets the cause, and nothing is half written."""
    save_checkpoint(tmp_path / "model.ckpt-10", {"model": {}, "step": 10})
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FailingFile(real_fdopen(fd, mode), error))
    big = {"model": {"w": torch.randn(10000)}, "step": 20}
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(tmp_path / "model.ckpt-20", big)
    else:
        with pytest.raises(OSError, match=rf"{tmp_path}/model.ckpt-10: no space left on the device \(No space left "
                                          rf"on device; \d+ MiB free in {tmp_path}\): the checkpoint was not "
                                          rf"written") as raised:
            save_checkpoint(tmp_path / "model.ckpt-10", big)  # over an existing one: it stays as it was
        assert raised.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.ckpt-10"]  # no temp file, nothing new
    assert load_checkpoint(tmp_path / "model.ckpt-10")["step"] == 10


def test_damaged_or_foreign_checkpoints_are_named_in_one_line(tmp_path):
    good = save_checkpoint(tmp_path / "model.ckpt-2", {"model": {"w": torch.ones(3)}, "step": 2})
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "truncated").write_bytes(good.read_bytes()[:-300])
    (tmp_path / "text").write_text("not a checkpoint\n")
    torch.save({"w": torch.ones(3)}, tmp_path / "state_dict")  # a bare state dict (pytorch_model.bin)
    torch.save({"model": {}, "when": np.float64(1.0)}, tmp_path / "pickled")  # a numpy scalar: pickled code
    cases = {"empty": "empty (0 bytes): its write was cut short",
             "truncated": "truncated or not a torch checkpoint",
             "text": "truncated or not a torch checkpoint",
             "state_dict": "lacks 'model' (it holds 'w'): not a checkpoint of train.py / train_distill.py",
             "pickled": "holds objects that weights_only loading refuses"}
    for name, message in cases.items():
        with pytest.raises(CheckpointError) as raised:
            load_checkpoint(tmp_path / name)
        assert str(raised.value).startswith(f"checkpoint {tmp_path / name}: {message}"), str(raised.value)
        assert "\n" not in str(raised.value)
    with pytest.raises(CheckpointError, match=r"lacks 'optimizer', 'rng'"):
        load_checkpoint(good, required=("model", "optimizer", "step", "rng"))


def test_resume_lookup_skips_a_damaged_latest_checkpoint_with_a_warning(tmp_path, caplog):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path / f"model.ckpt-{step}", {"model": {}, "step": step})
    assert latest_usable_checkpoint(tmp_path) == tmp_path / "model.ckpt-6"
    (tmp_path / "model.ckpt-6").write_bytes((tmp_path / "model.ckpt-6").read_bytes()[:100])
    (tmp_path / "model.ckpt-4").write_bytes(b"")
    with caplog.at_level("WARNING"):
        assert latest_usable_checkpoint(tmp_path) == tmp_path / "model.ckpt-2"
    assert f"checkpoint {tmp_path / 'model.ckpt-6'}: truncated" in caplog.text
    assert f"checkpoint {tmp_path / 'model.ckpt-4'}: empty" in caplog.text
    (tmp_path / "model.ckpt-2").write_bytes(b"")
    assert latest_usable_checkpoint(tmp_path) is None


def test_leftover_temp_files_are_removed_and_nothing_else(tmp_path):
    keep = ["model.ckpt-2", ".keep.tmp", "notes.tmp", ".hidden"]
    gone = [".model.ckpt-4.k2j_9x0a.tmp", ".hparams.json.abcdefgh.tmp", ".metrics.jsonl.12345678.tmp"]
    touch_ckpts(tmp_path, *keep, *gone)
    assert sorted(p.name for p in remove_temp_files(tmp_path)) == sorted(gone)
    assert sorted(os.listdir(tmp_path)) == sorted(keep)


# --- teacher snapshots --------------------------------------------------------------------------------------


@pytest.fixture
def teacher(tmp_path):
    run = tmp_path / "teacher"
    # 1500 and 2500 are not multiples of the cycle; 3000 has a best copy beside it (this code's run dirs); 4000 has
    # only its best-named file (the original code's run dirs, which remove the plain file of a best step)
    touch_ckpts(run, "model.ckpt-1000", "model.ckpt-1500", "model.ckpt-2000", "model.ckpt-2500",
                "model.ckpt-3000", "model.ckpt-3000-wer-0.2000", "model.ckpt-4000-wer-0.1000-cer-0.0500")
    return run


@pytest.mark.parametrize(
    "student_step, expected",
    [(0, "1000"),  # before the first waypoint
     (999, "1000"),
     (1000, "2000"),  # exactly on a waypoint: the next one ahead
     (1200, "2000"),  # between, and 1500 (not a multiple) is skipped
     (2400, "3000"),  # 2500 skipped; the plain file, not its best copy
     (3000, "4000-wer-0.1000-cer-0.0500"),  # a best-named file is the waypoint of its step when it is alone
     (4000, "4000-wer-0.1000-cer-0.0500"),  # on the last: stays there
     (99999, "4000-wer-0.1000-cer-0.0500")],  # past the end
)
def test_teacher_snapshot(teacher, student_step, expected):
    assert teacher_snapshot(teacher, student_step, cycle=1000) == teacher / f"model.ckpt-{expected}"


def test_teacher_snapshot_other_cycle(teacher):
    assert teacher_snapshot(teacher, 0, cycle=500) == teacher / "model.ckpt-1000"
    assert teacher_snapshot(teacher, 1000, cycle=500) == teacher / "model.ckpt-1500"


def test_teacher_snapshot_errors(teacher, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"multiple of 7000.*model\.ckpt-1000, model\.ckpt-1500"):
        teacher_snapshot(teacher, 0, cycle=7000)
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match=r"checkpoints there: none"):
        teacher_snapshot(tmp_path / "none", 0, cycle=1000)
    with pytest.raises(ValueError, match="positive"):
        teacher_snapshot(teacher, 0, cycle=0)


# --- best tracking ------------------------------------------------------------------------------------------


def test_metric_direction():
    assert [metric_direction(m) for m in ("wer", "cer", "dev/wer", "val_cer", "loss", "ctc_loss", "clf_acc",
                                          "intent_acc", "lr", "power")] == \
        ["min", "min", "min", "min", "min", "min", "max", "max", None, None]


def test_best_tracker_improve_and_file_management(tmp_path):
    run = tmp_path / "run"
    for step in (100, 200, 300):
        save_checkpoint(run / f"model.ckpt-{step}", {"step": step})

    tracker = BestTracker(run)
    improved = tracker.update({"wer": 0.5, "clf_acc": 0.25, "loss": 2.0, "lr": 1e-3}, 100, run / "model.ckpt-100")
    assert sorted(improved) == ["clf_acc", "loss", "wer"]  # lr has no direction
    assert (run / "model.ckpt-100-wer-0.5000").is_file()
    assert (run / "model.ckpt-100-clf_acc-0.2500").is_file()
    assert load_checkpoint(run / "model.ckpt-100-loss-2.0000", required=())["step"] == 100

    # wer better (lower), acc worse (lower), loss tied: only wer improves
    improved = tracker.update({"wer": 0.4, "clf_acc": 0.2, "loss": 2.0}, 200, run / "model.ckpt-200")
    assert improved == ["wer"]
    assert not (run / "model.ckpt-100-wer-0.5000").exists()  # previous best copy removed
    assert load_checkpoint(run / "model.ckpt-200-wer-0.4000", required=())["step"] == 200
    assert (run / "model.ckpt-100-clf_acc-0.2500").is_file()  # other metrics' copies untouched

    # nothing improves: no files change, JSON unchanged
    before = sorted(os.listdir(run))
    assert tracker.update({"wer": 0.45, "clf_acc": float("nan")}, 300, run / "model.ckpt-300") == []
    assert sorted(os.listdir(run)) == before

    assert json.loads((run / "best_metrics.json").read_text()) == {
        "wer": [0.4, 200], "clf_acc": [0.25, 100], "loss": [2.0, 100]}
    assert [s for s, _ in list_checkpoints(run)] == [100, 200, 300]  # best copies are not listed
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]

    # a new tracker (resume) continues from best_metrics.json
    resumed = BestTracker(run)
    assert resumed.best == tracker.best
    assert resumed.update({"clf_acc": 0.3, "wer": 0.41}, 300, run / "model.ckpt-300") == ["clf_acc"]
    assert sorted(n for n in os.listdir(run) if "-clf_acc-" in n) == ["model.ckpt-300-clf_acc-0.3000"]


def test_best_copy_survives_pruning_and_overwrite(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run / "model.ckpt-100", {"step": 100})
    BestTracker(run).update({"wer": 0.3}, 100, run / "model.ckpt-100")
    save_checkpoint(run / "model.ckpt-100", {"step": -1})  # atomic save replaces the inode, not the link
    assert load_checkpoint(run / "model.ckpt-100-wer-0.3000", required=())["step"] == 100
    (run / "model.ckpt-100").unlink()  # keep-last-N pruning
    assert load_checkpoint(run / "model.ckpt-100-wer-0.3000", required=())["step"] == 100


def test_best_tracker_copies_when_hard_links_fail(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_checkpoint(run / "model.ckpt-100", {"step": 100})

    def no_link(src, dst):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    assert BestTracker(run).update({"wer": 0.3}, 100, run / "model.ckpt-100") == ["wer"]
    copy = run / "model.ckpt-100-wer-0.3000"
    assert copy.stat().st_ino != (run / "model.ckpt-100").stat().st_ino
    assert load_checkpoint(copy, required=())["step"] == 100


def test_best_tracker_errors(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="model.ckpt-5"):
        BestTracker(run).update({"wer": 0.1}, 5, run / "model.ckpt-5")
    (run / "best_metrics.json").write_text('{"wer": 0.1}')
    with pytest.raises(ValueError, match=r"best_metrics\.json: entry 'wer' should be \[value, step\]"):
        BestTracker(run)
