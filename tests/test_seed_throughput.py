"""bench/seed_throughput.py on CPU: its command lines are the seed's with only the documented changes, where each
run starts, its arithmetic on made-up numbers, and the whole bench at the tiny preset for Std and Target guided (the
figures themselves need a GPU)."""
import dataclasses
import json
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import seed_throughput as st
from utils import checkpoint as ckpt
from utils.seed_commands import SEED_COMMANDS, hparams_string


def seed_words(strategy: str) -> list[str]:
    return shlex.split(next(a for t, s, _, a in SEED_COMMANDS if (t, s) == ("asr", strategy)))


def extract(tar: tarfile.TarFile, out: Path) -> None:
    """Unpack one of the bench's own archives, through tarfile's "data" filter where this Python has it (3.11.4 and
    later; Debian 12's 3.11.2 has none)."""
    tar.extractall(out, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def test_commands_are_the_seeds_with_only_the_documented_changes(tmp_path):
    plans = st.make_plans(list(st.COMMANDS), warmup=10, steps=30, profile_steps=4)
    for command in st.COMMANDS:
        seed = seed_words(st.SEED_STRATEGY[command])
        argv = st.command_argv(command, tmp_path, 777, "large", plans)
        ours = argv[2:]  # python, the script
        assert argv[1].endswith("train.py" if command in ("std", "unguided") else "train_distill.py")
        assert len(ours) == len(seed)
        changed = {i for i, (a, b) in enumerate(zip(seed, ours)) if a != b}
        flags = {seed[i].split("=")[0] if "=" in seed[i] else seed[i - 1] for i in changed}
        expected = {"--model-dir", "--data-dir", "--max_steps", "--hparams"}
        assert flags == expected | ({"--teacher_path"} if command in ("target", "hybrid", "waypoint") else set())
        model = f"asr_model_name={tmp_path / 'models' / 'large'}"
        seed_hparams = hparams_string(" ".join(seed))
        if command == "hybrid":  # the Target-guided command with the layer distillation off, resuming its run
            assert "alpha_layer_distill_loss=15" in seed_hparams
            seed_hparams = seed_hparams.replace("alpha_layer_distill_loss=15", "alpha_layer_distill_loss=0")
        assert hparams_string(" ".join(ours)) == f"{seed_hparams},{model}"
        assert st.flag_value(ours, "--max_steps") == "777"
    teacher = st.run_dir(tmp_path, "std") / f"model.ckpt-{plans['std'].end}"
    for command in ("target", "hybrid"):
        assert st.flag_value(st.command_argv(command, tmp_path, 1, "large", plans), "--teacher_path") == str(teacher)
    assert st.run_dir(tmp_path, "hybrid") == st.run_dir(tmp_path, "target")
    tiny = st.command_argv("std", tmp_path, 1, "tiny", plans)
    assert hparams_string(" ".join(tiny)).endswith(f"models/tiny,{st.PRESET_HPARAMS['tiny']}")


def test_an_ab_lever_goes_to_the_commands_asked_for_and_not_to_the_runs_they_learn_from(tmp_path):
    """--hparams teacher_graph_frames=0 --commands target: the Target-guided run gets it, its Std teacher does not
    (so that the Std run of the other side of the A/B can serve); plan.json and the row keep it."""
    plans = st.make_plans(st.with_dependencies(["target"]), 1, 2, 1, "teacher_graph_frames=0", ("target",))
    assert hparams_string(" ".join(st.command_argv("target", tmp_path, 1, "large", plans))).endswith(
        "models/large,teacher_graph_frames=0")
    assert "teacher_graph_frames" not in hparams_string(" ".join(st.command_argv("std", tmp_path, 1, "large", plans)))
    assert st.Plan(**dataclasses.asdict(plans["target"])).hparams == "teacher_graph_frames=0"


def test_each_run_starts_where_its_measured_steps_matter():
    plans = st.make_plans(st.with_dependencies(["waypoint", "hybrid"]), warmup=10, steps=30, profile_steps=4)
    assert list(plans) == ["std", "target", "hybrid", "waypoint"]  # teachers first
    for command in ("std", "target"):  # past the seed's data warm-up of 10000 steps: TED-LIUM's whole length range
        assert plans[command].start == 10001
    assert plans["hybrid"].start == plans["target"].end == 10001 + 44
    waypoint, cycle = plans["waypoint"], 10000  # the seed's teacher_snapshot_cycle
    # the teacher switches as the step counter reaches 2 x cycle: inside the measured steps
    assert waypoint.first_measured <= 2 * cycle < waypoint.profile_first
    assert (waypoint.first_measured, waypoint.profile_first, waypoint.end) == (
        waypoint.start + 10, waypoint.start + 40, waypoint.start + 44)
    assert st.with_dependencies(["unguided"]) == ["unguided"]


def test_restamp_moves_the_start_checkpoint_to_a_later_step(tmp_path):
    from hparams import create_hparams
    from utils.training import lr_factor, make_scheduler

    hparams = create_hparams("warmup_steps=5000,max_lr=3e-4")
    (tmp_path / "hparams.json").write_text(hparams.to_json())
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([parameter], lr=hparams.max_lr)
    scheduler = make_scheduler(optimizer, hparams)
    state = {"model": {"w": parameter.detach()}, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "step": 0, "feeder": [], "rng": ckpt.rng_state()}
    ckpt.save_checkpoint(tmp_path / "model.ckpt-0", state)
    (tmp_path / "model.ckpt-0-wer-1.0000").hardlink_to(tmp_path / "model.ckpt-0")  # a best copy
    st.restamp(tmp_path, 12345)
    assert sorted(p.name for p in tmp_path.glob("model.ckpt-*")) == ["model.ckpt-12345"]
    moved = ckpt.load_checkpoint(tmp_path / "model.ckpt-12345")
    assert moved["step"] == 12345
    scheduler.load_state_dict(moved["scheduler"])
    optimizer.load_state_dict(moved["optimizer"])
    expected = hparams.max_lr * lr_factor(12345, hparams)
    assert expected < hparams.max_lr and scheduler.get_last_lr() == [pytest.approx(expected)]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
    scheduler.step()  # the schedule goes on from there
    assert optimizer.param_groups[0]["lr"] == pytest.approx(hparams.max_lr * lr_factor(12346, hparams))


def training_row(step, audio_s, step_s, padded_s=None, utterances=12, **fields):
    return {"step": step, "loss": 1.0, "audio_s": audio_s, "padded_s": padded_s or 1.25 * audio_s,
            "utterances": utterances, "step_s": step_s, **fields}


def test_throughput_is_audio_over_the_measured_steps_wall_time_less_teacher_switches(tmp_path):
    plan = st.Plan("waypoint", start=100, warmup=2, steps=4, profile_steps=1)
    rows = [training_row(101, 50.0, 9.0), training_row(102, 50.0, 9.0),  # warm-up: left out
            training_row(103, 100.0, 1.0), {"step": 103, "teacher_switch_s": 3.0, "teacher_step": 30},
            training_row(104, 100.0, 5.0, peak_gib=7.5),  # its step began with the switch: 5 - 3 s
            training_row(105, 300.0, 2.0), training_row(106, 100.0, 4.0),
            training_row(107, 100.0, 99.0)]  # profiled: left out
    (tmp_path / "runs" / "waypoint").mkdir(parents=True)
    (tmp_path / "runs" / "waypoint" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    measured = st.measured_rows(tmp_path, plan)
    assert [r["step"] for r in measured] == [103, 104, 105, 106] and measured[1]["step_s"] == pytest.approx(2.0)
    result = st.throughput(measured)
    assert result["audio_s_per_s"] == pytest.approx(600 / 9)
    assert result["padded_audio_s_per_s"] == pytest.approx(750 / 9)
    assert result["step_ms_median"] == pytest.approx(2000) and result["step_ms_mean"] == pytest.approx(2250)
    assert result["step_ms_p90"] == pytest.approx(1000 * np.percentile([1, 2, 2, 4], 90)) == pytest.approx(3400)
    assert result["padding"] == pytest.approx(0.2) and result["peak_gib"] == 7.5
    assert st.median_shape(measured, micro_batches=3) == (4, pytest.approx(125 / 12))
    # the ceiling: the profiled step's audio (step 107's 100 s) over its GPU time, 0.4 s
    assert st.gpu_bound(rows, plan, gpu_ms=400.0) == pytest.approx(250.0)
    assert st.gpu_bound(rows, plan, gpu_ms=0.0) is None and st.gpu_bound(rows[:3], plan, 400.0) is None
    # the GPU's busy share without the profiler: the measured steps' rate over that ceiling
    assert st.busy_unprofiled(result["audio_s_per_s"], 250.0) == pytest.approx(600 / 9 / 250)
    assert st.busy_unprofiled(result["audio_s_per_s"], None) is None


def test_switch_share_and_the_recipe_estimate():
    # one switch of 60 s every 10000 steps of 0.5 s: 60 / (60 + 5000)
    assert st.switch_share(60.0, 0.5, 10000) == pytest.approx(60 / 5060)
    assert st.evaluations(90000, 2000, 2000) == 45 and st.evaluations(50000, 2000, 5000) == 25 + 10 - 5
    rows = [{"command": c, "step_ms_mean": ms, "eval_interval": 2000, "checkpoint_interval": 2000,
             "eval_s_tedlium_dev": 30.0, "checkpoint_s": 6.0} for c, ms in (("std", 400), ("target", 720),
                                                                           ("hybrid", 600), ("waypoint", 700))]
    estimate = st.recipe_estimate(rows, {"std": 0.8, "target": 0.9}, [2, 4])
    target = estimate["parts"]["target"]
    assert target["train_h"] == pytest.approx(40000 * 0.72 / 3600) == pytest.approx(8.0)
    assert target["evaluations"] == 20 and target["eval_and_checkpoint_h"] == pytest.approx(20 * 36 / 3600)
    hybrid_h = 50000 * 0.6 / 3600 + 25 * 36 / 3600
    assert estimate["conversion_h"] == pytest.approx(8.2 + hybrid_h)
    assert estimate["recipe_h"] == pytest.approx(90000 * 0.4 / 3600 + 45 * 36 / 3600 + 8.2 + hybrid_h)
    assert "waypoint" not in estimate["parts"]  # not part of the recipe
    assert estimate["gpus"]["2"]["conversion_h"] == pytest.approx((8.2 + hybrid_h) / (2 * 0.9))
    assert estimate["gpus"]["4"]["std"] == pytest.approx(estimate["parts"]["std"]["hours"] / (4 * 0.8))
    partial = st.recipe_estimate(rows[:1], {}, [2])
    assert partial["conversion_h"] is None and partial["recipe_h"] is None and partial["gpus"]["2"] == {
        "conversion_h": None}


def test_autotuning_is_counted_from_the_first_measured_step(tmp_path):
    tune = "Triton autotuning for function _kernel,\nwith key as (1,),\nfinished after 0.10s,\nbest config: x;\n"
    log = tmp_path / "std.log"
    log.write_text("start\n" + tune + "std:  1%|[cald step 10]\n" + tune + "bar 11/44\r[cald step 11]\n"
                   "[cald step 12]\n" + tune + tune + "[cald step 13]\n[cald step end]\n" + tune)
    tunes = st.printed_per_step(log, st.AUTOTUNE_LINE)
    assert st.printed_after(tunes, 12) == 2  # the final evaluation's, after the loop, is not a step's
    assert st.printed_after(tunes, 10) == 3 and st.printed_after(tunes, 14) is None
    assert st.printed_after(st.printed_per_step(log, st.COMPILE_LINE), 12) == 0
    assert st.printed_after(st.printed_per_step(tmp_path / "missing.log", st.AUTOTUNE_LINE), 0) is None
    assert tunes == {10: 1, 11: 0, 12: 2, 13: 0}


def test_the_recipe_takes_the_steps_that_compiled_nothing():
    """A measured step that compiled kernels for a new shape (its counter's log piece has the compile line) is left
    out of the recipe's step time: a long run meets each shape's compile once."""
    rows = [{"step": n, "step_s": s} for n, s in ((11, 0.5), (12, 2.5), (13, 0.7))]
    assert st.steady_step_ms(rows, {10: 0, 11: 2, 12: 0}) == (pytest.approx(600), 2)
    assert st.steady_step_ms(rows, {}) == (pytest.approx(1233.33, rel=1e-5), 3)
    assert st.steady_step_ms(rows[1:2], {11: 1}) == (None, 0)
    row = {"command": "std", "step_ms_mean": 1233.3, "steady_step_ms_mean": 600.0, "eval_interval": 2000,
           "checkpoint_interval": 2000, "eval_s_tedlium_dev": None, "checkpoint_s": None}
    assert st.recipe_estimate([row], {}, [])["parts"]["std"]["train_h"] == pytest.approx(90000 * 0.6 / 3600)


def test_the_bench_runs_std_and_target_end_to_end_and_reports_from_its_record(tmp_path, monkeypatch, capsys):
    """Tiny preset on CPU, short segments (the TED-LIUM lengths make a CPU step take seconds): the runs, the
    microbenchmark, the rows; then --report regenerates the same rows from the packed record alone."""
    from corpora import synth

    short = synth.SegmentDurations(mean=1.5, sigma=0.3, low=1.0, high=2.5)
    monkeypatch.setattr(synth, "TEDLIUM3_TRAIN_DURATIONS", short)
    root, out = tmp_path / "bench_root", tmp_path / "rows.jsonl"
    st.main(["--preset", "tiny", "--commands", "target", "--warmup", "1", "--steps", "2", "--profile_steps", "1",
             "--talks", "2", "1", "--segments", "3", "--workers", "2", "--root", str(root), "--out", str(out),
             "--pack", str(tmp_path / "pack"), "--code", "abc1234", "--ddp_rows", str(tmp_path / "none.jsonl")])
    printed = capsys.readouterr().out
    rows = {r["command"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"std", "target"}  # Target guided's teacher ran first
    metrics = [json.loads(line) for line in (root / "runs" / "std" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in metrics if "loss" in r and 10002 < r["step"] <= 10004]
    assert len(measured) == 2 and all(r["utterances"] > 0 and r["padded_s"] >= r["audio_s"] for r in measured)
    std, target = rows["std"], rows["target"]
    assert std["audio_s_per_s"] == pytest.approx(sum(r["audio_s"] for r in measured) /
                                                 sum(r["step_s"] for r in measured))
    assert std["measured_steps"] == target["measured_steps"] == 2 and std["vs_std"] == 1.0
    assert target["vs_std"] == pytest.approx(target["audio_s_per_s"] / std["audio_s_per_s"])
    for row in rows.values():
        assert row["microbench_audio_s_per_s"] > 0 and row["loop_vs_microbench"] > 0
        assert row["eval_s"] > 0 and row["checkpoint_s"] > 0 and row["eval_s_tedlium_dev"] > row["eval_s"]
        assert row["breakdown"]["forward"]["cpu_ms"] > 0 and row["breakdown"]["backward"]["cpu_ms"] > 0
        assert row["gpu_busy"] is row["gpu_busy_unprofiled"] is None  # a CPU: neither GPU nor Triton
        assert row["autotunes_after_warmup"] == row["compiles_after_warmup"] == 0
        assert row["gpu"].startswith("cpu ") and (row["code"], row["start_step"]) == ("abc1234", 10001)
        assert row["corpus"]["distribution"] == short.describe()
    assert "teacher" in target["breakdown"] and "teacher" not in std["breakdown"]
    lengths = st.meta_seconds(root / "data" / "meta.train.txt")
    assert std["corpus"]["train"]["max_s"] == pytest.approx(max(lengths)) and len(lengths) == 6
    assert std["micro_batch"]["batch"] == json.loads((root / "microbench.json").read_text())["std"]["batch"]
    assert "targets (one process)" in printed and "conversion (Target 40k + Hybrid 50k)" in printed
    recipe = json.loads(out.with_name("rows_recipe.jsonl").read_text())
    assert recipe["parts"]["std"]["steps"] == 90000 and recipe["code"] == "abc1234"

    with tarfile.open(tmp_path / "pack" / "bench_root.tar.gz") as tar:
        names = tar.getnames()
        assert "bench_root/runs/std/metrics.jsonl" in names and not any("ckpt" in n or "trace" in n for n in names)
        extract(tar, tmp_path / "record")
    again = tmp_path / "again.jsonl"
    st.main(["--report", "--root", str(tmp_path / "record" / "bench_root"), "--out", str(again),
             "--ddp_rows", str(tmp_path / "none.jsonl")])
    assert again.read_text() == out.read_text()
    assert again.with_name("again_recipe.jsonl").read_text() == out.with_name("rows_recipe.jsonl").read_text()

    # an A/B's other side: Target guided with a lever, on the first root's corpus, model and Std run
    other, std_files = tmp_path / "other_root", sorted(p.name for p in (root / "runs" / "std").iterdir())
    st.main(["--preset", "tiny", "--commands", "target", "--hparams", "teacher_graph_frames=0", "--warmup", "1",
             "--steps", "2", "--profile_steps", "1", "--root", str(other), "--share", str(root), "--out",
             str(tmp_path / "other.jsonl"), "--ddp_rows", str(tmp_path / "none.jsonl")])
    assert all((other / name).is_symlink() for name in ("raw", "data", "models", "runs/std"))
    assert not (other / "runs" / "target").is_symlink() and (other / "runs" / "target" / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (root / "runs" / "std").iterdir()) == std_files  # nothing written there
    shared = {r["command"]: r for r in map(json.loads, (tmp_path / "other.jsonl").read_text().splitlines())}
    assert shared["target"]["hparams"] == "teacher_graph_frames=0" and shared["std"]["audio_s_per_s"] == std[
        "audio_s_per_s"]
    with pytest.raises(SystemExit, match="Hybrid resumes"):
        st.main(["--commands", "hybrid", "--root", str(tmp_path / "third"), "--share", str(root)])


def test_the_committed_rows_regenerate_from_their_record(tmp_path):
    """bench/results/seed_throughput_<gpu>.jsonl is what --report makes of the record packed beside it (the same
    numbers, to the rounding of sums in another order)."""
    results = st.REPO / "bench" / "results"
    committed = [json.loads(line) for line in (results / "seed_throughput_NVIDIA_H100_80GB_HBM3.jsonl").open()]
    with tarfile.open(results / "seed_throughput_NVIDIA_H100_80GB_HBM3.tar.gz") as tar:
        extract(tar, tmp_path)
    rows, _ = st.report(tmp_path / committed[0]["run"])
    assert [r["command"] for r in rows] == [r["command"] for r in committed] == ["std", "unguided", "target"]
    for made, saved in zip(rows, committed):
        assert made.keys() == saved.keys()
        for key, value in saved.items():
            if isinstance(value, float):
                assert made[key] == pytest.approx(value, rel=1e-9), (saved["command"], key)
            elif not isinstance(value, dict):
                assert made[key] == value, (saved["command"], key)
