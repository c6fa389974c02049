"""scripts/mini_cald_report.py on hand-written recipe roots: median throughput after the warm-up steps, the test
metric per task, comparison with Std, Hybrid's late start, a missing evaluation warned and left out, outputs; the
demo profile's table (Hybrid's time with the Target phase it continues), notes and plots; the committed results
regenerated from their zip."""
import json
from pathlib import Path

import pytest

from scripts import mini_cald_report as report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def write_run(root: Path, task: str, strategy: str, rows: list[dict], best: dict | None = None) -> None:
    run = root / "runs" / task / strategy
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if best is not None:
        write_json(run / "best_metrics.json", best)


def train_rows(steps, speeds, loss_key: str) -> list[dict]:
    return [{"step": s, loss_key: 1.0 / s, "loss": 2.0 / s, "audio_s_per_s": v} for s, v in zip(steps, speeds)]


def write_eval(root: Path, task: str, strategy: str, checkpoint_step: int, rtf: float, **metrics) -> None:
    write_json(root / "eval" / task / strategy / "metrics.json", {
        "utterances": 7, "audio_hours": 0.01, "real_time_factor": rtf, "parameters": 2_500_000,
        "checkpoint": str(root / "runs" / task / strategy / f"model.ckpt-{checkpoint_step}"),
        "device": "cuda", "device_name": "NVIDIA H100", **metrics})


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "mc"
    write_json(root / "info.json", {"profile": "gpu", "invocations": [
        {"started": "2030-01-01 10:00:00 UTC", "host": "box1", "device": "NVIDIA H100", "torch": "2.5.0",
         "cuda": "12.4", "transformers": "4.46.0", "mamba_ssm": "2.2.2"},
        {"started": "2030-01-02 09:00:00 UTC", "host": "box2", "device": "NVIDIA H100", "torch": "2.5.0",
         "cuda": "12.4", "transformers": "4.46.0", "mamba_ssm": None}]})
    (root / "stages.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [  # which invocation ran what
        {"stage": "asr/std", "seconds": 600.0, "invocation": 0}, {"stage": "asr/target", "seconds": 300.0,
                                                                  "invocation": 1},
        {"stage": "asr/test_std", "seconds": 10.0, "invocation": 1}, {"stage": "asr/test_target", "seconds": 5.0,
                                                                      "invocation": 1}]) + '{"stage": "torn')
    write_json(root / "timings.json", {"asr/std": 600.0, "asr/target": 300.0, "asr/hybrid": 120.0,
                                       "asr/test_std": 10.0, "ic/std": 240.0, "ic/test_std": 5.0})
    # asr Std: 10 slow warm-up steps, then 20, 40, 30, 10 audio-s/s (median 25); step 12 logged twice (resumed)
    std_rows = train_rows(range(1, 15), [1000.0] * 10 + [20.0, 99.0, 30.0, 10.0], "ctc_loss")
    std_rows.insert(12, {"step": 12, "ctc_loss": 0.1, "loss": 0.1, "audio_s_per_s": 40.0})
    std_rows += [{"step": 7, "dev/wer": 0.5, "dev/cer": 0.3}, {"step": 14, "dev/wer": 0.4, "dev/cer": 0.2}]
    write_run(root, "asr", "std", std_rows, {"wer": [0.4, 14], "cer": [0.2, 14]})
    write_eval(root, "asr", "std", 14, 0.01, wer=0.5, cer=0.25)
    write_run(root, "asr", "target", train_rows(range(1, 15), [50.0] * 14, "ctc_loss")
              + [{"step": 7, "dev/wer": 0.7, "dev/cer": 0.5}], {"wer": [0.7, 7]})
    write_eval(root, "asr", "target", 7, 0.02, wer=0.6, cer=0.3)
    # Hybrid: Target's checkpoint at step 6 resumed: only steps 7..14 logged, fewer than the warm-up
    write_run(root, "asr", "hybrid", train_rows(range(7, 15), [60.0] * 8, "ctc_loss")
              + [{"step": 14, "dev/wer": 0.6, "dev/cer": 0.4}], {"wer": [0.6, 14]})
    write_eval(root, "asr", "hybrid", 14, 0.02, wer=0.55, cer=0.3)
    # asr Unguided trained but never evaluated
    write_run(root, "asr", "unguided", train_rows(range(1, 15), [70.0] * 14, "ctc_loss"), {"wer": [0.9, 14]})
    ic_dev = [{"step": 12, "dev/clf_acc": 0.5, "dev/intent_acc": 0.75}]
    write_run(root, "ic", "std", train_rows(range(1, 13), [5.0] * 10 + [80.0, 100.0], "classifier_loss") + ic_dev,
              {"intent_acc": [0.75, 12], "clf_acc": [0.5, 12]})
    write_eval(root, "ic", "std", 12, 0.001, clf_acc=0.6, intent_acc=0.8)
    write_run(root, "ic", "unguided", train_rows(range(1, 13), [90.0] * 12, "classifier_loss") + ic_dev)
    write_eval(root, "ic", "unguided", 12, 0.002, clf_acc=0.4, intent_acc=0.7)  # no best_metrics.json, no timing
    return root


def test_median_throughput_skips_warmup():
    train = {s: {"step": s, "audio_s_per_s": v} for s, v in zip(range(1, 6), [1, 2, 3, 4, 100])}
    assert report.median_throughput(train, warmup=2) == 4
    assert report.median_throughput(train, warmup=5) is None
    assert report.median_throughput({}, warmup=0) is None


def test_rows(root, capsys):
    rows, info = report.collect(root)
    assert info["profile"] == "gpu"
    assert [(r["task"], r["strategy"]) for r in rows] == [
        ("asr", "std"), ("asr", "target"), ("asr", "hybrid"), ("ic", "std"), ("ic", "unguided")]
    by = {(r["task"], r["strategy"]): r for r in rows}

    std = by["asr", "std"]
    assert std["label"] == "Std (attention teacher)" and std["metric"] == "wer"
    assert (std["wer"], std["cer"]) == (0.5, 0.25) and "accuracy" not in std
    assert std["train_audio_s_per_s"] == 25.0  # median of 20, 40, 30, 10: the warm-up and step 12's first row out
    assert std["infer_audio_s_per_s"] == pytest.approx(100.0)
    assert (std["train_seconds"], std["test_seconds"]) == (600.0, 10.0)
    assert (std["steps"], std["start_step"], std["checkpoint_step"]) == (14, 0, 14)
    assert (std["best_dev_metric"], std["best_dev"], std["best_dev_step"]) == ("wer", 0.4, 14)
    assert std["parameters"] == 2_500_000 and std["device_name"] == "NVIDIA H100"
    box1 = {"started": "2030-01-01 10:00:00 UTC", "host": "box1", "device": "NVIDIA H100"}
    box2 = {"started": "2030-01-02 09:00:00 UTC", "host": "box2", "device": "NVIDIA H100"}
    assert std["run"] == [box1, box2]  # trained in the first invocation, tested in the second
    assert by["asr", "target"]["run"] == [box2]
    assert by["asr", "hybrid"]["run"] == [box1, box2]  # not in stages.jsonl: every invocation
    assert std["wer_vs_std"] == 1.0 and by["asr", "target"]["wer_vs_std"] == pytest.approx(1.2)

    hybrid = by["asr", "hybrid"]
    assert (hybrid["steps"], hybrid["start_step"], hybrid["checkpoint_step"]) == (14, 6, 14)
    assert hybrid["train_audio_s_per_s"] is None  # 8 steps, all warm-up
    assert report.collect(root, warmup=2)[0][2]["train_audio_s_per_s"] == 60.0

    ic_std, ic_unguided = by["ic", "std"], by["ic", "unguided"]
    assert ic_std["metric"] == "intent_acc" and ic_std["accuracy"] == 0.8 and "wer" not in ic_std
    assert ic_std["train_audio_s_per_s"] == 90.0 and ic_std["best_dev"] == 0.75
    assert ic_unguided["accuracy_vs_std"] == pytest.approx(-0.1)
    assert ic_unguided["train_seconds"] is None and ic_unguided["best_dev"] is None

    err = capsys.readouterr().err
    assert f"no {root / 'eval/asr/unguided/metrics.json'}: asr/unguided (Unguided) left out" in err
    assert f"no {root / 'runs/ic/unguided/best_metrics.json'}" in err and "'ic/unguided' in" in err


def test_sid_accuracy_is_clf_acc(tmp_path):
    write_run(tmp_path, "sid", "std", train_rows([1], [1.0], "classifier_loss"), {"clf_acc": [0.9, 1]})
    write_eval(tmp_path, "sid", "std", 1, 0.01, clf_acc=0.85, intent_acc=0.1)
    (row,), _ = report.collect(tmp_path)
    assert (row["metric"], row["accuracy"], row["best_dev"]) == ("clf_acc", 0.85, 0.9)


def test_outputs(root, tmp_path, capsys):
    out = tmp_path / "results"
    report.main(["--root", str(root), "--out", str(out)])
    saved = json.loads((out / "mini_cald.json").read_text())
    assert [(r["task"], r["strategy"]) for r in saved] == [(r["task"], r["strategy"]) for r in report.collect(root)[0]]
    md = (out / "mini_cald.md").read_text()
    assert "Profile `gpu`" in md
    assert "2030-01-02 09:00:00 UTC on box2: device NVIDIA H100; torch 2.5.0, CUDA 12.4, transformers 4.46.0, " \
           "mamba_ssm none" in md
    assert "| Std (attention teacher) | 50.0% | 25.0% | 1.00x |  | 40.0% | 14 | 2.5 | 25 | 100 |" in md
    assert "| Hybrid | 55.0% | 30.0% | 1.10x | n/a | 60.0% | 14 | 2.5 | n/a | 50 |" in md  # no preds.jsonl
    assert "| Unguided | 70.0% | n/a | n/a | n/a | 2.5 | 90 | 500 |" in md
    assert "test intent accuracy" in md and "(asr step 6)" in md
    assert "Unguided" not in md.split("## ic")[0]  # asr's Unguided left out of the table...
    not_evaluated = md.split("## Not evaluated on test")[1]  # ...and listed as trained, not evaluated
    assert "- asr: Unguided (trained, best dev 90.0% at step 14), Waypoint guided, Target guided + attention init" \
        in not_evaluated
    assert "- sid: Std (attention teacher), Unguided" in not_evaluated
    for name in ("mini_cald_curves.png", "mini_cald_bars.png"):
        png = (out / name).read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 5000
    assert "| Hybrid |" in capsys.readouterr().out


def test_empty_root_warns_without_crashing(tmp_path, capsys):
    out = tmp_path / "results"
    assert report.write_report(tmp_path / "nothing", out) == []
    assert json.loads((out / "mini_cald.json").read_text()) == []
    assert "nothing evaluated yet" in (out / "mini_cald.md").read_text()
    assert not (out / "mini_cald_curves.png").exists()
    err = capsys.readouterr().err
    assert "info.json" in err and "timings.json" in err and "no plots" in err


def write_preds(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_differences_to_std_carry_a_paired_bootstrap_interval(tmp_path):
    # 40 utterances of 5 words: Std gets 1 word wrong in each; Target none (consistently better); Unguided the same
    # errors as Std on half the utterances and none on the other half, Hybrid exactly Std's output
    refs = {f"u{i:02d}": "A B C D E" for i in range(40)}
    std = [{"name": n, "label": r, "pred": "A B C D X", "seconds": 1.0} for n, r in refs.items()]
    runs = {"std": std, "target": [{**row, "pred": row["label"]} for row in std], "hybrid": std,
            "unguided": [{**row, "pred": row["label"] if i % 2 else row["pred"]} for i, row in enumerate(std)]}
    for strategy, preds in runs.items():
        write_preds(tmp_path / "eval" / "asr" / strategy / "preds.jsonl", preds)
    scores = report.utterance_scores("asr", tmp_path / "eval/asr/std/preds.jsonl")
    assert scores["u00"] == (1.0, 5.0)
    delta, (low, high) = report.paired_bootstrap(scores, report.utterance_scores(
        "asr", tmp_path / "eval/asr/target/preds.jsonl"))
    assert delta == pytest.approx(-0.2) and low == high == pytest.approx(-0.2)  # better on every utterance
    delta, (low, high) = report.paired_bootstrap(scores, report.utterance_scores(
        "asr", tmp_path / "eval/asr/unguided/preds.jsonl"))
    assert delta == pytest.approx(-0.1) and -0.2 < low < -0.1 < high < 0.0
    assert report.paired_bootstrap(scores, scores) == (0.0, [0.0, 0.0])

    ic = [{"name": "a", "clf_label": [1, 2], "clf_pred": [1, 3]},
          {"name": "b", "clf_label": [0, 0], "clf_pred": [0, 0]}]
    write_preds(tmp_path / "ic.jsonl", ic)
    assert report.utterance_scores("ic", tmp_path / "ic.jsonl") == {"a": (0.0, 1.0), "b": (1.0, 1.0)}  # intent
    assert report.utterance_scores("sid", tmp_path / "ic.jsonl") == {"a": (1.0, 2.0), "b": (2.0, 2.0)}  # heads


def test_the_committed_results_regenerate_from_the_committed_run(tmp_path):
    """results/mini_cald.{md,json} are what the report makes of results/mini_cald_run.zip (and the discussion)."""
    results = Path(__file__).resolve().parents[1] / "results"
    out = tmp_path / "results"
    report.main(["--root", str(results / "mini_cald_run.zip"), "--out", str(out), "--discussion",
                 str(results / "mini_cald_discussion.md")])
    for name in ("mini_cald.md", "mini_cald.json"):
        assert (out / name).read_text() == (results / name).read_text(), name
    assert all((out / name).read_bytes()[:8] == PNG_MAGIC for name in ("mini_cald_curves.png", "mini_cald_bars.png"))
    with pytest.raises(SystemExit, match="is an archive: name the directory to write to"):
        report.write_report(results / "mini_cald_run.zip")


# -----------------------------------------------------------------------------------------------------------
# the demo profile


def demo_rows(steps, loss: float, **extra) -> list[dict]:
    return [{"step": s, "loss": loss / s, "ctc_loss": loss / s, "audio_s_per_s": 10.0, **extra} for s in steps]


def dev_rows(steps, cer: float) -> list[dict]:
    return [{"step": s, "dev/wer": 2 * cer, "dev/cer": cer} for s in steps]


@pytest.fixture
def demo_root(tmp_path):
    """A demo root: Std to step 4, Unguided to 2, Target to 2, Hybrid restored from Target's step 2 to step 4."""
    root = tmp_path / "demo"
    write_json(root / "info.json", {"profile": "demo", "invocations": [
        {"started": "2030-01-01 10:00:00 UTC", "host": "box", "device": "cpu", "seconds": 90.0}]})
    write_json(root / "timings.json", {"asr/std": 60.0, "asr/target": 45.0, "asr/hybrid": 15.0, "asr/test_std": 2.0})
    write_run(root, "asr", "std", demo_rows(range(1, 5), 5.0) + dev_rows((2, 4), 0.5), {"wer": [1.0, 4]})
    write_run(root, "asr", "unguided", demo_rows((1, 2), 6.0) + dev_rows((2,), 0.95))
    write_run(root, "asr", "target", demo_rows((1, 2), 8.0, layer_distill_loss=0.5) + dev_rows((2,), 0.7))
    write_run(root, "asr", "hybrid", demo_rows((3, 4), 3.0) + dev_rows((4,), 0.6))
    for strategy, step, wer, cer, rtf, params in (("std", 4, 0.30, 0.10, 0.01, 2_080_000),
                                                  ("unguided", 2, 0.80, 0.40, 0.02, 2_590_000),
                                                  ("target", 2, 0.50, 0.20, 0.02, 2_590_000),
                                                  ("hybrid", 4, 0.35, 0.12, 0.025, 2_590_000)):
        write_eval(root, "asr", strategy, step, rtf, wer=wer, cer=cer, device_name="cpu", parameters=params)
    return root


def test_demo_rows_give_hybrid_the_time_of_the_target_phase_it_continues(demo_root):
    rows, info = report.collect(demo_root)
    assert info["profile"] == "demo" and [r["strategy"] for r in rows] == ["std", "unguided", "target", "hybrid"]
    by = {r["strategy"]: r for r in rows}  # only the demo's strategies and task: nothing else warned about
    assert (by["hybrid"]["start_step"], by["target"]["steps"], by["hybrid"]["checkpoint_step"]) == (2, 2, 4)
    assert report.demo_train_seconds(by["hybrid"], rows) == 60.0  # 45 s of Target, 15 of its own
    assert report.demo_train_seconds(by["std"], rows) == 60.0
    assert report.demo_train_seconds(by["unguided"], rows) is None  # no timing recorded: n/a, not 0
    branched = [{**r, "start_step": 1} if r["strategy"] == "hybrid" else r for r in rows]  # from Target's step 1
    assert report.demo_train_seconds(branched[3], branched) == 15.0
    runs = {s: report.read_run(demo_root, "asr", s) for s in ("target", "hybrid")}
    assert report.hybrid_start(runs) == 2 and list(runs["hybrid"][0]) == [3, 4]


def test_demo_report_outputs(demo_root, capsys):
    report.main(["--root", str(demo_root)])  # written beside the runs
    printed = capsys.readouterr()
    md = (demo_root / "results.md").read_text()
    for text in (md, printed.out):
        assert "| model | step | test WER | test CER | params | RTF | audio s / s | train time |" in text
        assert "| Std (attention teacher) | 4 | 30.0% | 10.0% | 2.08M | 0.0100 | 100x | 1.0 min |" in text
        assert "| Hybrid (BiMamba2) | 4 | 35.0% | 12.0% | 2.59M | 0.0250 | 40x | 1.0 min |" in text
    assert "| Unguided (BiMamba2) | 2 | 80.0% | 40.0% | 2.59M | 0.0200 | 50x | n/a |" in md
    assert "Hybrid CER / teacher CER = 1.20" in md
    assert "profile demo of scripts/mini_cald.py; the recipe took 1.5 min (1 invocation(s))" in md
    assert "test split: 7 utterances, 0.6 min of audio; device cpu" in md
    assert "ic/" not in printed.err and "waypoint" not in printed.err  # the profile's task and strategies only
    saved = json.loads((demo_root / "results.json").read_text())
    assert saved["profile"] == "demo" and [m["strategy"] for m in saved["models"]] == [
        "std", "unguided", "target", "hybrid"]
    for name in ("training_loss.png", "dev_cer.png", "test_wer_cer.png"):
        png = (demo_root / name).read_bytes()
        assert png[:8] == PNG_MAGIC and len(png) > 5000
    assert not (demo_root / "mini_cald.md").exists()


def test_demo_report_gives_the_long_form_beside_one_utterance_at_a_time(demo_root):
    write_json(demo_root / "eval/asr/long_form/long_form.json", {
        "utterances": 100, "minutes": 3.84, "long_wer": 0.181, "long_cer": 0.042, "segment_wer": 0.164,
        "segment_cer": 0.030, "long_real_time_factor": 0.0123})
    report.write_report(demo_root)
    assert ("long form: the exported Hybrid model (a Hugging Face model dir) transcribed 100 held-out utterances "
            "joined into one recording of 3.8 min in one pass: WER 18.1% (CER 4.2%), against 16.4% (3.0%) one "
            "utterance at a time; RTF 0.0123") in (demo_root / "results.md").read_text()


def test_demo_missing_model_is_left_out(demo_root, capsys):
    (demo_root / "eval/asr/unguided/metrics.json").unlink()
    rows = report.write_report(demo_root)
    assert [r["strategy"] for r in rows] == ["std", "target", "hybrid"]
    assert "asr/unguided (Unguided) left out" in capsys.readouterr().err
    assert "Unguided" not in (demo_root / "results.md").read_text()
