"""scripts/mini_cald.py: the stage graph, the scheduler (jobs, exclusive stages, failures, budget), each run's
hparams, and the whole recipe end to end on CPU (smoke profile) followed by its report."""
import json
import sys
import zipfile
from pathlib import Path

import pytest

from corpora import synth
from hparams import create_hparams
from scripts import mini_cald, mini_cald_report
from utils.seed_commands import hparams_string, parse_hparams, seed_argv


def recipe(root: Path) -> "mini_cald.Recipe":
    return mini_cald.Recipe(mini_cald.Layout(root), "smoke", sys.executable, "no")


def test_stage_graph_brings_in_what_a_task_builds_on(tmp_path):
    stages = recipe(tmp_path).stages(["sid"])
    keys = [s.key for s in stages]
    assert keys[:5] == ["asr/corpus", "asr/prep", "asr/pretrained", "asr/std", "asr/export"]  # sid starts from
    assert "asr/unguided" not in keys and "asr/test_std" not in keys                       # asr's teacher
    assert {"ic/corpus", "ic/prep"} <= set(keys) and "ic/std" not in keys  # SLURP's vocab.json only
    assert [k for k in keys if k.startswith("sid/")] == [f"sid/{n}" for n in (
        "corpus", "prep", *mini_cald.STRATEGIES, *(f"test_{s}" for s in mini_cald.STRATEGIES))]
    assert "asr/export" not in [s.key for s in recipe(tmp_path).stages(["asr"])]
    for i, stage in enumerate(stages):  # every need comes earlier
        assert set(stage.needs) <= set(keys[:i]), stage.key
    by_key = {s.key: s for s in stages}
    hybrid = by_key["sid/hybrid"]  # the teacher, and Target's checkpoint at the switch point (step 2 of 4)
    assert hybrid.needs == ("sid/std",) and hybrid.waits_for() == tmp_path / "runs/sid/target/model.ckpt-2"
    assert not hybrid.ready({"sid/std"})
    hybrid.waits_for().parent.mkdir(parents=True)
    hybrid.waits_for().touch()
    assert hybrid.ready({"sid/std"}) and not hybrid.ready(set())
    assert by_key["asr/export"].needs == ("asr/std",) and by_key["sid/std"].needs == ("sid/prep", "asr/export")
    assert all(s.exclusive == s.name.startswith("test_") for s in stages)
    shared_tests = mini_cald.Recipe(mini_cald.Layout(tmp_path), "smoke", sys.executable, "no", test_alone=False)
    assert not any(s.exclusive for s in shared_tests.stages(["sid"]))


def ready_recipe(root: Path, profile: str) -> "mini_cald.Recipe":
    """A recipe whose runs have a best dev checkpoint (step 6) and whose sid corpus has 7 speakers."""
    made = mini_cald.Recipe(mini_cald.Layout(root), profile, sys.executable, "bf16")
    made.num_speakers = lambda task: 7 if task == "sid" else 0
    for task in mini_cald.TASKS:
        for strategy in mini_cald.STRATEGIES:
            best = root / "runs" / task / strategy / "best_metrics.json"
            best.parent.mkdir(parents=True)
            best.write_text(json.dumps({mini_cald.SELECT_METRIC[task]: [0.5, 6]}))
    return made


def split_flags(argv: list[str]) -> dict[str, str | None]:
    """{flag: value} of a command line (--flag=value, --flag value, or a bare --flag: None)."""
    flags = {}
    for i, word in enumerate(argv):
        if word.startswith("--"):
            flag, _, value = word.partition("=")
            following = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("--") else None
            flags[flag] = value if "=" in word else following
    return flags


# what the toy scale may change in a seed command (scripts/mini_cald.py's docstring says why)
TOY_FLAGS = {"--model-dir", "--data-dir", "--train_meta", "--vocab-path", "--mixed_precision", "--accumulation_steps",
             "--max_steps", "--eval_interval", "--checkpoint_interval", "--teacher_path", "--hparams"}
TOY_HPARAMS = {"asr_model_name", "batch_size", "batch_frame_limit", "batch_quad_frame_limit", "data_warmup_steps",
               "asr_use_flash_attn", "max_lr", "warmup_steps", "decay_steps", "final_lr", "freeze_feature_encoder",
               "hidden_dropout", "activation_dropout", "feat_proj_dropout", "mask_time_prob", "mamba_headdim",
               "mamba_d_state", "mamba_chunk_size", "classifier_num_targets", "teacher_snapshot_cycle"}
EVAL_FLAGS = {"--model-path", "--output-path", "--data-dir", "--vocab-path", "--mixed_precision"}


# ids "<name>_profile": a bare "gpu" id would make the case a GPU-tier test (conftest.py)
@pytest.mark.parametrize("profile", sorted(mini_cald.PROFILES), ids=lambda name: f"{name}_profile")
def test_every_run_is_its_seed_command_with_only_the_toy_scale_changes(tmp_path, profile):
    """Each training and test command of every profile is the seed README's (utils/seed_commands.py) with only the
    flags and hparams the toy scale needs changed; Hybrid and target_attn_init are Target's plus their hparam."""
    made = ready_recipe(tmp_path, profile)
    for task in made.profile.tasks:
        for strategy in made.profile.strategies:
            script, argv = made.train_argv(task, strategy)[0], made.train_argv(task, strategy)[1:]
            seed_script, seed = seed_argv(task, mini_cald.SEED_STRATEGY[strategy])
            assert script == seed_script
            ours, theirs = split_flags(argv), split_flags(seed)
            assert set(theirs) <= set(ours), (task, strategy)
            assert {f: v for f, v in ours.items() if f not in TOY_FLAGS | {"--restore_from"}} == \
                {f: v for f, v in theirs.items() if f not in TOY_FLAGS}, (task, strategy)
            assert ("--restore_from" in ours) == (strategy == "hybrid")
            assert all(str(tmp_path) in ours[f] for f in ("--model-dir", "--data-dir"))  # nothing outside the root
            ours_h, theirs_h = (parse_hparams(hparams_string(" ".join(a))) for a in (argv, seed))
            expected = {**{k: v for k, v in theirs_h.items() if k not in TOY_HPARAMS},
                        **mini_cald.STRATEGY_HPARAMS.get(strategy, {})}
            assert {k: v for k, v in ours_h.items() if k not in TOY_HPARAMS} == expected, (task, strategy)
            create_hparams(hparams_string(" ".join(argv)))  # every key known, every value of its type

            test = made.test_command(task, strategy)
            seed_script, seed = seed_argv(task, "eval")
            ours, theirs = split_flags(test[1:]), split_flags(seed)
            assert test[0] == seed_script and set(theirs) <= set(ours) <= set(theirs) | EVAL_FLAGS
            assert {f: v for f, v in ours.items() if f not in EVAL_FLAGS} == \
                {f: v for f, v in theirs.items() if f not in EVAL_FLAGS}
            assert ours["--model-path"] == str(made.picked_checkpoint(task, strategy))


def test_run_hparams_per_strategy(tmp_path):
    made = ready_recipe(tmp_path, "gpu")

    def hparams(task, strategy):
        return parse_hparams(hparams_string(" ".join(made.train_argv(task, strategy))))

    std, target = hparams("asr", "std"), hparams("asr", "target")
    assert std["freeze_feature_encoder"] == "False" and "asr_use_mamba" not in std  # from a random model
    assert target["freeze_feature_encoder"] == "True" and target["asr_use_mamba"] == "True"
    assert (target["alpha_layer_distill_loss"], target["alpha_logits_distill_loss"]) == ("15", "1")
    assert target["asr_mamba_residual_inside"] == "False" and "asr_mamba_init" not in target
    assert hparams("asr", "hybrid")["alpha_layer_distill_loss"] == "0"
    assert hparams("asr", "hybrid")["decay_steps"] == target["decay_steps"] == "2700"  # one schedule
    assert hparams("asr", "target_attn_init")["asr_mamba_init"] == "attention"
    assert hparams("asr", "waypoint")["freeze_feature_encoder"] == "False"  # it starts from the random model
    assert hparams("asr", "waypoint")["teacher_snapshot_cycle"] == "200"  # the teacher's checkpoint interval
    assert "alpha_layer_distill_loss" not in hparams("asr", "unguided")
    sid = hparams("sid", "target")
    assert (sid["classifier_num_targets"], sid["ctc_weight"], sid["alpha_layer_distill_loss"]) == ("7", "0", "30")
    assert sid["asr_model_name"] == str(tmp_path / "models" / "w2v2_asr")
    assert hparams("ic", "std")["data_format"] == "nltLa"
    assert hparams("asr", "target")["hidden_dropout"] == "0.0" and "hidden_dropout" not in hparams("ic", "std")
    teacher = made.train_argv("sid", "target")
    assert teacher[teacher.index("--teacher_path") + 1] == str(tmp_path / "runs/sid/std/model.ckpt-6")  # best dev
    hybrid = made.train_argv("sid", "hybrid")
    assert hybrid[hybrid.index("--restore_from") + 1] == str(tmp_path / "runs/sid/target/model.ckpt-500")


def test_demo_profile_runs_the_demo_as_it_was(tmp_path):
    """The demo's figures stay comparable with README's table: its corpus, hparams, steps and intervals are those
    scripts/demo.sh ran before it became this profile (written out here), Target learns from the teacher's last
    checkpoint, Hybrid continues Target's last one, and every test takes a run's last checkpoint."""
    made = ready_recipe(tmp_path, "demo")
    stages = made.stages(["asr"])
    assert [s.key for s in stages] == [
        "asr/corpus", "asr/prep", "asr/pretrained", "asr/std", "asr/unguided", "asr/target", "asr/hybrid",
        "asr/test_std", "asr/test_unguided", "asr/test_target", "asr/test_hybrid", "asr/export_hybrid",
        "asr/long_form"]
    assert made.profile.corpus == {"asr": {**synth.PROFILES["tedlium"]["demo"], "talks": (300, 10, 10),
                                           "segments_per_talk": (10, 10)}}
    common = (f"asr_model_name={tmp_path / 'models' / 'w2v2_random'},batch_size=12,batch_frame_limit=1.2e6,"
              "batch_quad_frame_limit=1e12,data_warmup_steps=0,final_lr=1e-4,hidden_dropout=0.0,"
              "activation_dropout=0.0,feat_proj_dropout=0.0,mask_time_prob=0.0")
    scratch = "max_lr=5e-3,warmup_steps=100,freeze_feature_encoder=False"
    mamba = "asr_use_mamba=True,mamba_headdim=64,mamba_d_state=64,mamba_chunk_size=64"
    distill = ("max_lr=2e-3,warmup_steps=50,decay_steps=200,freeze_feature_encoder=True,alpha_logits_distill_loss=1,"
               "asr_mamba_residual_inside=False")
    before = {"std": (f"{common},{scratch},decay_steps=825", 550, 100),
              "unguided": (f"{common},{scratch},decay_steps=375,{mamba}", 250, 50),
              "target": (f"{common},{distill},{mamba},alpha_layer_distill_loss=15", 150, 50),
              "hybrid": (f"{common},{distill},{mamba},alpha_layer_distill_loss=0", 250, 50)}
    for strategy, (hparams, steps, interval) in before.items():
        argv = made.train_argv("asr", strategy)
        assert vars(create_hparams(hparams_string(" ".join(argv)))) == vars(create_hparams(hparams)), strategy
        flags = split_flags(argv)
        assert (flags["--max_steps"], flags["--eval_interval"], flags["--checkpoint_interval"]) == \
            (str(steps), str(interval), str(interval))
        assert flags["--mixed_precision"] == "bf16" and flags["--accumulation_steps"] == "1"
        assert made.test_command("asr", strategy)[2] == str(made.layout.run("asr", strategy) / f"model.ckpt-{steps}")
    for strategy in ("target", "hybrid"):
        assert split_flags(made.train_argv("asr", strategy))["--teacher_path"] == \
            str(tmp_path / "runs/asr/std/model.ckpt-550")
    assert split_flags(made.train_argv("asr", "hybrid"))["--restore_from"] == \
        str(tmp_path / "runs/asr/target/model.ckpt-150")
    # the long form: Hybrid's tested checkpoint exported with the data's vocabulary, then the test voices as one
    # recording of the profile's minutes through that export
    needs = {s.name: s.needs for s in stages}
    assert needs["export_hybrid"] == ("asr/hybrid",) and needs["long_form"] == ("asr/export_hybrid",)
    exported = tmp_path / "models" / "asr_hybrid_hf"
    assert split_flags(made.export_hybrid_command("asr")) == {
        "--checkpoint": str(tmp_path / "runs/asr/hybrid/model.ckpt-250"), "--out": str(exported),
        "--vocab": str(tmp_path / "data/tedlium/vocab.json")}
    long_form = made.long_form_command("asr")
    assert long_form[0] == "scripts/long_form.py" and split_flags(long_form) == {
        "--model": str(exported), "--data-dir": str(tmp_path / "data/tedlium"), "--minutes": "3.0",
        "--out": str(tmp_path / "eval/asr/long_form"), "--mixed_precision": "bf16"}
    assert not any(s.name == "long_form" for s in ready_recipe(tmp_path / "gpu", "gpu").stages(["asr"]))
    with pytest.raises(SystemExit):  # the demo has an asr corpus only
        mini_cald.main(["--profile", "demo", "--root", str(tmp_path / "demo"), "--tasks", "ic"])


class FakeRecipe(mini_cald.Recipe):
    """Stages that are short python -c commands appending "<name> start|end <time>" to a trace file."""

    def __init__(self, root: Path, graph: dict, gpus: tuple[str, ...] = ()):
        super().__init__(mini_cald.Layout(root), "smoke", sys.executable, "no", gpus=gpus)
        self.graph, self.trace = graph, root / "trace.txt"
        self.waits = {}  # stage name -> waits_for
        self.checks = {}  # stage name -> check

    def stages(self, tasks):
        return [mini_cald.Stage("t", name, needs, lambda c=code, n=name: self.command(n, c), exclusive=excl,
                                waits_for=self.waits.get(name), check=self.checks.get(name))
                for name, (needs, code, excl) in self.graph.items()]

    def command(self, name: str, code: str | None):
        if code is None:  # found done, as a finished run on a rerun
            return None
        return ["-c", f"import os, time, sys\nopen({str(self.trace)!r}, 'a').write('{name} start %f %s\\n' % "
                      f"(time.time(), os.environ.get('CUDA_VISIBLE_DEVICES', '-')))\n"
                      f"{code}\nopen({str(self.trace)!r}, 'a').write('{name} end %f\\n' % time.time())"]

    def events(self) -> dict:
        return {tuple(line.split()[:2]): float(line.split()[2]) for line in self.trace.read_text().splitlines()}


def test_scheduler_runs_in_parallel_and_exclusive_stages_alone(tmp_path):
    fake = FakeRecipe(tmp_path, {
        "a": ((), "time.sleep(1)", False),
        "x": ((), "pass", True),  # ready at once, but waits until nothing else can run
        "b": ((), "time.sleep(1)", False),
        "c": (("t/a",), "pass", False),
    })
    assert fake.run(["t"], jobs=2)
    ev = fake.events()
    assert ev["b", "start"] < ev["a", "end"] and ev["a", "start"] < ev["b", "end"]  # a and b at once
    assert ev["c", "start"] >= ev["a", "end"]
    assert ev["x", "start"] >= max(ev["a", "end"], ev["b", "end"], ev["c", "end"])
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert set(timings) == {"t/a", "t/b", "t/c", "t/x"} and timings["t/a"] >= 1


def test_scheduler_spreads_stages_over_gpus_and_keeps_an_exclusive_one_alone_on_its_gpu(tmp_path):
    fake = FakeRecipe(tmp_path, {
        "a": ((), "time.sleep(1)", False),
        "x": ((), "time.sleep(2.5)", True),  # no other stage can start: it takes the idle GPU
        "c": (("t/a",), "pass", False),  # ready while x runs: not on x's GPU
    }, gpus=("3", "5"))
    assert fake.run(["t"], jobs=3)
    ev = fake.events()
    gpu = {line.split()[0]: line.split()[3] for line in fake.trace.read_text().splitlines() if " start " in line}
    assert ev["x", "start"] < ev["a", "end"] and {gpu["a"], gpu["x"]} == {"3", "5"}
    assert ev["c", "start"] < ev["x", "end"] and gpu["c"] == gpu["a"]
    lines = [json.loads(line) for line in (tmp_path / "stages.jsonl").read_text().splitlines()]
    assert {line["stage"]: line["gpu"] for line in lines} == {f"t/{name}": gpu[name] for name in "axc"}


def test_scheduler_failure_stops_the_others_and_names_the_log(tmp_path):
    fake = FakeRecipe(tmp_path, {
        "slow": ((), "time.sleep(60)", False),
        "bad": ((), "print('something broke'); sys.exit(3)", False),
        "after": (("t/bad",), "pass", False),
    })
    with pytest.raises(mini_cald.StageFailed, match=r"(?s)t/bad failed \(exit 3\).*t_bad.log.*something broke"):
        fake.run(["t"], jobs=2)
    ev = fake.events()
    assert ("slow", "end") not in ev and ("after", "start") not in ev  # slow terminated, after never started
    assert "t/slow" in json.loads((tmp_path / "timings.json").read_text())  # its time is still recorded


def test_scheduler_keep_going_runs_everything_that_does_not_build_on_a_failure(tmp_path):
    fake = FakeRecipe(tmp_path, {
        "bad": ((), "sys.exit(3)", False),
        "after": (("t/bad",), "pass", False),
        "after_after": (("t/after",), "pass", False),
        "slow": ((), "time.sleep(1)", False),
        "other": (("t/slow",), "pass", False),
        "hybrid": ((), "pass", False),  # waits for a file that only the failed stage would have written
    })
    fake.waits["hybrid"] = lambda: tmp_path / "never"
    with pytest.raises(mini_cald.StageFailed, match=r"(?s)2 stage\(s\) failed \(t/bad, t/hybrid\).*"
                                                    r"t/bad failed \(exit 3\).*t/hybrid \(needs .*never\)"):
        fake.run(["t"], jobs=2, keep_going=True)
    ev = fake.events()
    assert ("other", "end") in ev and ("slow", "end") in ev
    assert not any(name in ("after", "after_after", "hybrid") for name, _ in ev)


def test_scheduler_names_a_stage_waiting_on_a_missing_one(tmp_path):
    fake = FakeRecipe(tmp_path, {"a": ((), "pass", False), "b": (("t/nowhere",), "pass", False)})
    with pytest.raises(mini_cald.StageFailed, match=r"t/b \(needs t/nowhere\)"):
        fake.run(["t"], jobs=2)


def test_scheduler_starts_a_stage_when_the_file_it_waits_for_appears(tmp_path):
    """As Hybrid starts from Target's checkpoint at the switch while Target goes on."""
    mark = tmp_path / "ckpt"
    fake = FakeRecipe(tmp_path, {
        "long": ((), f"time.sleep(0.5); open({str(mark)!r}, 'w').close(); time.sleep(1.5)", False),
        "then": ((), "pass", False),
    })
    fake.waits["then"] = lambda: mark
    assert fake.run(["t"], jobs=2)
    ev = fake.events()
    assert ev["long", "start"] + 0.5 <= ev["then", "start"] < ev["long", "end"]


def test_scheduler_starts_stages_that_others_wait_for_first(tmp_path):
    fake = FakeRecipe(tmp_path, {"test_std": ((), "pass", False), "waypoint": ((), "pass", False),
                                 "std": ((), "pass", False)})
    assert fake.run(["t"], jobs=1)
    ev = fake.events()
    assert ev["std", "end"] <= ev["waypoint", "start"] and ev["waypoint", "end"] <= ev["test_std", "start"]


def test_scheduler_names_a_file_no_stage_wrote(tmp_path):
    fake = FakeRecipe(tmp_path, {"a": ((), "pass", False), "b": (("t/a",), "pass", False)})
    fake.waits["b"] = lambda: tmp_path / "model.ckpt-2"
    with pytest.raises(mini_cald.StageFailed, match=r"t/b \(needs t/a, .*model.ckpt-2\)"):
        fake.run(["t"], jobs=2)


def test_scheduler_budget_starts_nothing_new(tmp_path):
    fake = FakeRecipe(tmp_path, {"a": ((), "time.sleep(0.5)", False), "b": (("t/a",), "pass", False)})
    assert not fake.run(["t"], jobs=1, budget=0.1)
    ev = fake.events()
    assert ("a", "end") in ev and ("b", "start") not in ev  # a finished, b left for the next invocation


def test_smoke_recipe_end_to_end_then_report(tmp_path):
    """Every stage of the three tasks on tiny corpora (about 2 minutes on 2 cores), a rerun that skips them all,
    and the report's 18 rows."""
    root = tmp_path / "mc"
    mini_cald.main(["--profile", "smoke", "--root", str(root), "--jobs", "2"])
    timings = json.loads((root / "timings.json").read_text())
    trained = {f"{t}/{s}" for t in mini_cald.TASKS for s in mini_cald.STRATEGIES}
    assert trained <= set(timings)
    hybrid = json.loads((root / "runs/asr/hybrid/hparams.json").read_text())
    assert hybrid["alpha_layer_distill_loss"] == 0 and hybrid["asr_use_mamba"] is True

    archive = tmp_path / "results.zip"
    mini_cald.main(["--profile", "smoke", "--root", str(root), "--jobs", "2", "--pack", str(archive)])  # no-op
    again = json.loads((root / "timings.json").read_text())
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert {"info.json", "timings.json", "stages.jsonl", "runs/asr/std/metrics.jsonl",
            "eval/sid/hybrid/metrics.json"} <= names
    assert not any("ckpt" in n or n.endswith((".wav", ".flac", ".sph")) for n in names)
    assert {k: v for k, v in again.items() if k != "sid/prep"} == {k: v for k, v in timings.items() if k != "sid/prep"}
    invocations = json.loads((root / "info.json").read_text())["invocations"]
    assert len(invocations) == 2 and invocations[0]["settings"]["preset"] == "tiny"
    assert all(inv["seconds"] > 0 for inv in invocations)

    mini_cald_report.main(["--root", str(archive), "--out", str(tmp_path / "results")])  # the zip reads as the root
    rows = json.loads((tmp_path / "results" / "mini_cald.json").read_text())
    assert {(r["task"], r["strategy"]) for r in rows} == {(t, s) for t in mini_cald.TASKS for s in mini_cald.STRATEGIES}
    for row in rows:
        assert row["parameters"] > 0 and row["checkpoint_step"] > 0
        assert [r["started"] for r in row["run"]] == [invocations[0]["started"]]  # trained and tested in the first
        assert (0 <= row["wer"]) if row["task"] == "asr" else (0 <= row["accuracy"] <= 1)
    with pytest.raises(SystemExit, match="holds a 'smoke' recipe"):
        mini_cald.main(["--profile", "gpu", "--root", str(root)])


def test_a_teacher_that_has_not_learnt_fails_its_stage_and_what_builds_on_it_is_dropped(tmp_path):
    """The gpu profile's teacher_bound: a diverged asr Std (best dev WER 1.0) fails asr/std even when found done
    (a rerun), --keep_going drops the strategies built on it; a learnt one passes."""
    gpu = mini_cald.Recipe(mini_cald.Layout(tmp_path), "gpu", sys.executable, "no")
    best = tmp_path / "runs" / "asr" / "std" / "best_metrics.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"wer": [1.0, 400], "cer": [0.69, 200]}))
    with pytest.raises(mini_cald.StageFailed, match=r"best dev wer 1.000 \(step 400.*above the ceiling of 0.5"):
        gpu.check_teacher("asr")
    best.write_text(json.dumps({"wer": [0.12, 1800]}))
    gpu.check_teacher("asr")
    sid = tmp_path / "runs" / "sid" / "std" / "best_metrics.json"
    sid.parent.mkdir(parents=True)
    sid.write_text(json.dumps({"clf_acc": [0.03, 500]}))
    with pytest.raises(mini_cald.StageFailed, match=r"clf_acc 0.030 .*below the floor of 0.05"):
        gpu.check_teacher("sid")

    fake = FakeRecipe(tmp_path / "fake", {"std": ((), "pass", False), "target": (("t/std",), "pass", False),
                                          "other": ((), "pass", False)})
    fake.checks["std"] = lambda: gpu.check_teacher("sid")
    with pytest.raises(mini_cald.StageFailed, match=r"(?s)1 stage\(s\) failed \(t/std\).*has not learnt"):
        fake.run(["t"], jobs=1, keep_going=True)
    assert {name for name, _ in fake.events()} == {"std", "other"}
    fake.graph["std"] = ((), None, False)  # a rerun finds std done and checks it again
    with pytest.raises(mini_cald.StageFailed, match=r"(?s)1 stage\(s\) failed \(t/std\).*has not learnt"):
        fake.run(["t"], jobs=1, keep_going=True)
    assert ("target", "start") not in fake.events()
    sid.write_text(json.dumps({"clf_acc": [0.5, 900]}))
    assert fake.run(["t"], jobs=1)
    assert ("target", "end") in fake.events()
