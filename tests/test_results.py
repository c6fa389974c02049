"""utils/results.py (a results root read alike as a directory or a zip, metrics.jsonl rows) and the helpers of
utils/seed_commands.py that turn a seed command into a run's command line."""
import json
from pathlib import Path

import pytest

from utils.results import pack, read_metrics_jsonl, results_root
from utils.seed_commands import SEED_COMMANDS, hparams_string, parse_hparams, seed_argv, set_flag


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_last_row_of_a_step_wins_and_a_torn_line_is_skipped(tmp_path, capsys):
    # resumed after step 3 was logged but before its checkpoint: steps 3 and 4 logged twice; killed mid-write
    write_jsonl(tmp_path / "metrics.jsonl", [
        {"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 2, "dev/cer": 0.9}, {"step": 3, "loss": 99.0},
        {"step": 4, "loss": 99.0}, {"step": 3, "loss": 3.0}, {"step": 4, "loss": 2.0}, {"step": 4, "dev/cer": 0.5},
        '{"step": 5, "lo'])
    train, dev = read_metrics_jsonl(tmp_path / "metrics.jsonl")
    assert [(s, r["loss"]) for s, r in train.items()] == [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.0)]
    assert list(dev) == [2, 4]
    assert "metrics.jsonl:9: not JSON, skipped" in capsys.readouterr().err
    assert read_metrics_jsonl(tmp_path / "metrics.jsonl", dev_key="dev/wer")[1] == {}
    assert read_metrics_jsonl(tmp_path / "none.jsonl") == ({}, {})


def test_a_zip_of_a_root_reads_as_the_root(tmp_path):
    root = tmp_path / "root"
    write_jsonl(root / "runs/a/metrics.jsonl", [{"step": 1, "loss": 1.0}])
    (root / "info.json").write_text('{"profile": "x"}')
    (root / "runs/a/model.ckpt-1").write_bytes(b"weights")
    assert pack(root, tmp_path / "r.zip", ("info.json", "runs/*/metrics.jsonl")) == 2
    for reader in (results_root(root), results_root(tmp_path / "r.zip")):
        assert json.loads((reader / "info.json").read_text()) == {"profile": "x"}
        assert list(read_metrics_jsonl(reader / "runs" / "a" / "metrics.jsonl")[0]) == [1]
        assert (reader / "runs" / "a").is_dir() and not (reader / "runs" / "b").is_dir()
    zipped = results_root(tmp_path / "r.zip")
    assert not (zipped / "runs/a/model.ckpt-1").is_file()  # only what the patterns name
    assert str(zipped / "runs/a/metrics.jsonl") == f"{tmp_path / 'r.zip'}/runs/a/metrics.jsonl"  # for messages
    (tmp_path / "notes.txt").write_text("text")
    with pytest.raises(SystemExit, match="notes.txt is neither a results directory nor a zip"):
        results_root(tmp_path / "notes.txt")


def test_set_flag_replaces_either_form_and_names_a_missing_flag():
    assert set_flag(["--a=1", "--b", "2"], "--b", "3") == ["--a=1", "--b", "3"]
    assert set_flag(["--a=1", "--b", "2"], "--a", "x") == ["--a=x", "--b", "2"]
    assert set_flag(["--a=1"], "--c", "3", add=True) == ["--a=1", "--c", "3"]
    with pytest.raises(ValueError, match="--c is not in"):
        set_flag(["--a=1"], "--c", "3")


@pytest.mark.parametrize("task,strategy", [(t, s) for t, s, script, _ in SEED_COMMANDS if script != "infer.py"])
def test_seed_argv_and_parse_hparams_give_back_the_seed_command(task, strategy):
    arguments = next(a for t, s, _, a in SEED_COMMANDS if (t, s) == (task, strategy))
    script, argv = seed_argv(task, strategy)
    assert script.startswith("train") and argv == arguments.split()
    hparams = parse_hparams(hparams_string(arguments))
    assert ",".join(f"{k}={v}" for k, v in hparams.items()) == hparams_string(arguments)
    with pytest.raises(KeyError, match="no seed command for task 'asr', strategy 'hybrid'"):
        seed_argv("asr", "hybrid")
