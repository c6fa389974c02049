"""bench/ddp_scaling.py on CPU: its command lines are the seed's with only the four documented changes, and the
throughput it reports is audio over wall time after the skipped steps. The runs themselves need several GPUs."""
import json
import shlex

import pytest

from bench import ddp_scaling
from utils.seed_commands import SEED_COMMANDS, hparams_string


def test_commands_are_the_seeds_with_only_the_documented_changes(tmp_path):
    for strategy in ddp_scaling.STRATEGIES:
        seed = shlex.split(next(a for t, s, _, a in SEED_COMMANDS if (t, s) == ("asr", strategy)))
        for gpus in (1, 2):
            argv = ddp_scaling.run_argv(strategy, gpus, 7, tmp_path)
            script = argv.index(next(w for w in argv if w.endswith((".py",))))
            launcher, ours = argv[:script], argv[script + 1:]
            assert ("accelerate.commands.launch" in launcher) == (gpus > 1)
            if gpus > 1:
                assert launcher[launcher.index("--num_processes") + 1] == "2"
                assert launcher[launcher.index("--mixed_precision") + 1] == "bf16"  # the seed's own flag
            assert len(ours) == len(seed)
            changed = {i for i, (a, b) in enumerate(zip(seed, ours)) if a != b}
            flags = {seed[i].split("=")[0] if "=" in seed[i] else seed[i - 1] for i in changed}
            expected = {"--model-dir", "--data-dir", "--max_steps", "--hparams"}
            assert flags == (expected | {"--teacher_path"} if strategy == "target" else expected)
            assert hparams_string(" ".join(ours)) == (f"{hparams_string(' '.join(seed))},"
                                                      f"asr_model_name={tmp_path / 'models' / 'large'}")
            assert f"--model-dir={tmp_path / 'runs' / f'{strategy}_{gpus}gpu'}" in ours
    target = ddp_scaling.run_argv("target", 2, 7, tmp_path)
    assert target[target.index("--teacher_path") + 1] == str(tmp_path / "runs" / "std_1gpu" / "model.ckpt-7")


def test_throughput_is_audio_over_time_after_the_skipped_steps(tmp_path):
    rows = [{"step": 1, "loss": 9.0, "audio_s": 100.0, "audio_s_per_s": 1.0},  # autotuning: skipped
            {"step": 2, "loss": 5.0, "audio_s": 100.0, "audio_s_per_s": 100.0},  # 1 s
            {"step": 2, "dev/wer": 0.5},
            {"step": 3, "loss": 4.0, "audio_s": 300.0, "audio_s_per_s": 100.0, "peak_gib": 3.0}]  # 3 s
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = ddp_scaling.throughput(tmp_path / "metrics.jsonl", skip=1)
    assert result["audio_s_per_s"] == pytest.approx(100.0) and result["measured_steps"] == 2
    assert result["steps"] == 3
    assert result["step_ms"] == pytest.approx(2000.0) and result["peak_gib"] == 3.0
    assert (result["first_loss"], result["last_loss"]) == (9.0, 4.0)
    with pytest.raises(SystemExit, match="no training step after step 3"):
        ddp_scaling.throughput(tmp_path / "metrics.jsonl", skip=3)


def test_report_gives_efficiency_against_one_gpu_and_the_recorded_machine(tmp_path):
    def write_run(name, step_seconds, audio_per_step):
        rows = [{"step": s, "loss": 1.0, "audio_s": audio_per_step, "audio_s_per_s": audio_per_step / step_seconds}
                for s in range(1, 9)]
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    with pytest.raises(SystemExit, match="env.json is missing"):
        ddp_scaling.report(tmp_path, [1, 2], skip=2)
    (tmp_path / "env.json").write_text(json.dumps({"gpu": "Some GPU", "torch": "9"}))
    write_run("std_1gpu", 1.0, 100.0)
    write_run("std_2gpu", 1.25, 200.0)  # twice the audio a step, a quarter slower: 1.6x, 80%
    write_run("target_2gpu", 1.0, 50.0)  # no 1-GPU run: no efficiency
    rows = {(r["strategy"], r["gpus"]): r for r in ddp_scaling.report(tmp_path, [1, 2], skip=2)}
    assert set(rows) == {("std", 1), ("std", 2), ("target", 2)}
    assert rows["std", 2]["speedup"] == pytest.approx(1.6) and rows["std", 2]["efficiency"] == pytest.approx(0.8)
    assert rows["std", 2]["gpu"] == "Some GPU" and rows["std", 2]["measured_steps"] == 6
    assert rows["target", 2]["efficiency"] is None


def test_the_committed_results_regenerate_from_their_runs(tmp_path):
    """The committed rows are what --report makes of the committed zip of their runs."""
    results = ddp_scaling.REPO / "bench" / "results"
    out = tmp_path / "rows.jsonl"
    ddp_scaling.main(["--report", "--root", str(results / "ddp_scaling_run.zip"), "--skip", "25", "--out", str(out)])
    assert out.read_text() == (results / "ddp_scaling_NVIDIA_H100_80GB_HBM3.jsonl").read_text()
