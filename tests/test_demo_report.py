"""scripts/demo_report.py on synthetic run dirs: last row per step wins, Target/Hybrid phases split at the Target
checkpoint, parameters counted from the checkpoint, table, JSON and plots written."""
import json
from pathlib import Path

import pytest
import torch

from scripts import demo_report
from utils.checkpoint import save_checkpoint


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_row(step, loss, **extra):
    return {"step": step, "loss": loss, "ctc_loss": loss, "lr": 1e-3, **extra}


def dev_row(step, cer):
    return {"step": step, "dev/utterances": 10, "dev/wer": 2 * cer, "dev/cer": cer}


def write_eval(root: Path, key: str, checkpoint: Path, wer: float, cer: float, rtf: float) -> None:
    out = root / "eval" / key
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps({
        "utterances": 10, "wer": wer, "cer": cer, "audio_hours": 0.01, "real_time_factor": rtf,
        "checkpoint": str(checkpoint), "device": "cpu"}))


@pytest.fixture
def demo_root(tmp_path):
    root = tmp_path / "demo"
    # teacher: resumed after step 3 was logged but before its checkpoint: steps 3 and 4 logged twice
    write_jsonl(root / "runs/teacher/metrics.jsonl", [
        train_row(1, 5.0), train_row(2, 4.0), dev_row(2, 0.9), train_row(3, 99.0), train_row(4, 99.0),
        train_row(3, 3.0), train_row(4, 2.0), dev_row(4, 0.5)])
    write_jsonl(root / "runs/unguided/metrics.jsonl", [train_row(1, 6.0), train_row(2, 5.0), dev_row(2, 0.95)])
    # target guided to step 2 (with a distillation term), then Hybrid to step 4 in the same dir
    write_jsonl(root / "runs/target_guided/metrics.jsonl", [
        train_row(1, 8.0, layer_distill_loss=0.5), train_row(2, 7.0, layer_distill_loss=0.4), dev_row(2, 0.7),
        train_row(3, 3.5), train_row(4, 3.0), dev_row(4, 0.6)])
    ckpts = {}
    for run, width in (("teacher", 3), ("unguided", 4), ("target_guided", 4)):
        for step in (2, 4):
            state = {"model": {"w": torch.zeros(width, 5), "b": torch.zeros(width)}, "step": step}
            ckpts[run, step] = save_checkpoint(root / "runs" / run / f"model.ckpt-{step}", state)
    write_eval(root, "teacher", ckpts["teacher", 4], 0.30, 0.10, 0.01)
    write_eval(root, "unguided", ckpts["unguided", 2], 0.80, 0.40, 0.02)
    write_eval(root, "target", ckpts["target_guided", 2], 0.50, 0.20, 0.02)
    write_eval(root, "hybrid", ckpts["target_guided", 4], 0.35, 0.12, 0.025)
    (root / "timings.json").write_text(json.dumps({"teacher": 60.0, "target": 45.0, "hybrid_phase": 15.0}))
    return root


def test_last_row_of_a_step_wins(demo_root):
    train, dev = demo_report.read_metrics_jsonl(demo_root / "runs/teacher/metrics.jsonl")
    assert [(s, r["loss"]) for s, r in sorted(train.items())] == [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.0)]
    assert sorted(dev) == [2, 4]


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(train_row(1, 2.0)) + "\n" + '{"step": 2, "lo')
    train, _ = demo_report.read_metrics_jsonl(path)
    assert list(train) == [1]


def test_collect_splits_target_and_hybrid_and_counts_parameters(demo_root):
    results = {r["key"]: r for r in demo_report.collect(demo_root)}
    assert list(results) == ["teacher", "unguided", "target", "hybrid"]
    assert results["teacher"]["params"] == 3 * 5 + 3 and results["hybrid"]["params"] == 4 * 5 + 4
    assert results["teacher"]["audio_s_per_s"] == pytest.approx(100.0)
    assert results["target"]["step"] == 2 and results["hybrid"]["step"] == 4
    assert results["target"]["best_dev_cer"] == 0.7 and results["hybrid"]["best_dev_cer"] == 0.6
    assert results["hybrid"]["train_seconds"] == 60.0  # the Target phase it continues + its own
    assert results["unguided"]["train_seconds"] is None  # no timing recorded: shown as n/a, not 0

    curves = {label: (train, dev) for label, train, dev in demo_report.run_curves(demo_root, list(results.values()))}
    target_train, _ = curves["Target guided (BiMamba2)"]
    hybrid_train, hybrid_dev = curves["Hybrid (BiMamba2)"]
    assert list(target_train) == [1, 2] and list(hybrid_train) == [3, 4] and list(hybrid_dev) == [4]


def test_write_report_outputs(demo_root, capsys):
    (demo_root / "info.json").write_text(json.dumps({"profile": "cpu", "wall_seconds": 90}))
    demo_report.main(["--root", str(demo_root), "--info", str(demo_root / "info.json")])
    printed = capsys.readouterr().out
    md = (demo_root / "results.md").read_text()
    for text in (md, printed):
        assert "| Hybrid (BiMamba2) | 4 | 35.0% | 12.0% |" in text
        assert "| Std (attention teacher) | 4 | 30.0% | 10.0% | 0.00M | 0.0100 | 100x | 1.0 min |" in text
    assert "Hybrid CER / teacher CER = 1.20" in md
    assert "profile cpu; this invocation of the demo took 1.5 min" in md
    assert "| Unguided (BiMamba2) | 2 | 80.0% | 40.0% | 0.00M | 0.0200 | 50x | n/a |" in md
    saved = json.loads((demo_root / "results.json").read_text())
    assert saved["profile"] == "cpu"
    assert [m["key"] for m in saved["models"]] == ["teacher", "unguided", "target", "hybrid"]
    for name in ("training_loss.png", "dev_cer.png", "test_wer_cer.png"):
        png = (demo_root / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_missing_model_is_left_out(demo_root, capsys):
    (demo_root / "eval/unguided/metrics.json").unlink()
    results = demo_report.write_report(demo_root)
    assert [r["key"] for r in results] == ["teacher", "target", "hybrid"]
    assert "Unguided (BiMamba2) left out" in capsys.readouterr().err
