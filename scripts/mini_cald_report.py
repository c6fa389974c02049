"""The recipe's results (scripts/mini_cald.py), rendered as its profile asks: the comparison or the demo's table.

Usage:
    python scripts/mini_cald_report.py --root output/mini_cald --out results      # a gpu or smoke root
    python scripts/mini_cald_report.py --root output/demo                         # the demo (scripts/demo.sh)
    python scripts/mini_cald_report.py --root results/mini_cald_run.zip --out results \\
        --discussion results/mini_cald_discussion.md                                # the committed run

Reads, under --root (a directory in the layout of scripts/mini_cald.py, or a zip of one: mini_cald.py --pack):
    info.json                                {"profile", "invocations": [{"started", "host", "device", "torch",
                                             "cuda", "transformers", "mamba_ssm", "settings", "jobs", "seconds"}]}
    stages.jsonl                             {"stage", "seconds", "invocation"}: which invocation ran a stage
    timings.json                             {"<task>/<stage>": wall seconds}; a training stage is named after its
                                             strategy, an evaluation "test_<strategy>"
    runs/<task>/<strategy>/metrics.jsonl     training rows ({"step", "loss", "audio_s_per_s", ...}) and dev rows
                                             ({"step", "dev/wer", "dev/cer"} or {"step", "dev/intent_acc", ...})
    runs/<task>/<strategy>/best_metrics.json {metric: [best dev value, step]}
    eval/<task>/<strategy>/metrics.json      infer.py on the test split: wer, cer (asr) or intent_acc, clf_acc
                                             (ic, sid), real_time_factor, parameters, checkpoint, device_name
    eval/<task>/<strategy>/preds.jsonl       infer.py's predictions: the paired-bootstrap intervals against Std

One row per evaluated (task, strategy) of the profile's tasks and strategies (info.json names the profile). What
is written under --out (default: --root) depends on the profile's ``report``:

  comparison (gpu, smoke)
    mini_cald.json         one row per evaluated run: the test metric(s), their comparison with Std, parameters,
                           train / inference throughput, train time, steps, and "run": the invocations (start,
                           host, device) that trained and tested it
    mini_cald.md           a table per task, the profile, the machine and library versions of the invocations,
                           then the runs not yet evaluated, then --discussion's file if given (hand-written)
    mini_cald_curves.png   per task: training task loss and the dev metric against the step, per strategy
    mini_cald_bars.png     per task: the test metric per strategy, Std as a reference line
  demo
    results.md             the demo's table (model | step | test WER | test CER | params | RTF | audio s / s |
                           train time) and notes; printed too
    results.json           {"profile", "invocations", "models": the rows}
    training_loss.png      training loss and CTC loss per strategy
    dev_cer.png            dev CER per strategy
    test_wer_cer.png       test WER and CER per strategy

The test metric of a task is the dev metric that picks its checkpoint (mini_cald.SELECT_METRIC): WER for asr
(CER alongside), intent accuracy for ic, speaker accuracy (clf_acc) for sid. Hybrid's run dir starts at Target's
checkpoint at the switch step, so its metrics.jsonl and its timing cover only the steps after it; the curves draw
Target's earlier rows faintly in Hybrid's colour. The demo's train time of Hybrid adds Target's when Hybrid
continues Target's whole run (the demo profile). Every number comes from the files above; a missing or unreadable
one is a warning on stderr that names it and what is left out, never an error.
"""
import argparse
import json
import statistics
import sys
import textwrap
from pathlib import Path

import jiwer
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.mini_cald import PROFILES, SELECT_METRIC, STRATEGIES, TASKS  # noqa: E402
from utils.checkpoint import checkpoint_step, metric_direction  # noqa: E402
from utils.results import read_metrics_jsonl, results_root  # noqa: E402

BOOTSTRAP_SAMPLES = 2000  # resamplings of the test utterances for the intervals of the differences to Std
WARMUP_STEPS = 10  # training steps at the start of each run left out of its throughput (compilation, caches)
LABELS = {
    "std": "Std (attention teacher)", "unguided": "Unguided", "target": "Target guided", "hybrid": "Hybrid",
    "waypoint": "Waypoint guided", "target_attn_init": "Target guided + attention init",
}
DEMO_LABELS = {s: label if s == "std" else f"{label} (BiMamba2)" for s, label in LABELS.items()}
TASK_TITLES = {
    "asr": "asr: speech recognition (TED-LIUM 3 layout)",
    "ic": "ic: intent classification (SLURP layout)",
    "sid": "sid: speaker identification (VoxCeleb1 layout)",
}
METRIC_NAMES = {"wer": "WER", "cer": "CER", "intent_acc": "intent accuracy", "clf_acc": "speaker accuracy"}
TASK_LOSS = {"asr": "ctc_loss", "ic": "classifier_loss", "sid": "classifier_loss"}  # loss without distillation
COLOURS = dict(zip(STRATEGIES, plt.get_cmap("tab10").colors, strict=False))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# -----------------------------------------------------------------------------------------------------------
# reading


def read_json(path, consequence: str):
    """The JSON in ``path``; None, with a warning naming the file and ``consequence``, if absent or unreadable."""
    if not path.is_file():
        warn(f"no {path}: {consequence}")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warn(f"{path} unreadable ({error}): {consequence}")
        return None


def read_run(root, task: str, strategy: str) -> tuple[dict, dict]:
    """({step: training row}, {step: dev row}) of a run, in step order; empty where it has no metrics.jsonl."""
    return read_metrics_jsonl(root / "runs" / task / strategy / "metrics.jsonl", dev_key=f"dev/{SELECT_METRIC[task]}")


def stage_invocations(path) -> dict[str, set[int]]:
    """{stage: indices of the invocations that ran (part of) it} from stages.jsonl; empty for roots older than it."""
    ran_in = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a torn last line of a killed recipe
                continue
            ran_in.setdefault(entry["stage"], set()).add(int(entry["invocation"]))
    return ran_in


def invocations(info: dict | None) -> list[dict]:
    return list((info or {}).get("invocations") or [])


def profile_scope(info: dict | None) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """(tasks, strategies, report) of the root's profile; every task and strategy, compared, if it is unknown."""
    profile = PROFILES.get((info or {}).get("profile"))
    if profile is None:
        return TASKS, STRATEGIES, "comparison"
    return profile.tasks, profile.strategies, profile.report


def evaluated_step(metrics: dict) -> int | None:
    """The step of the checkpoint an infer.py metrics.json evaluated."""
    try:
        return checkpoint_step(metrics["checkpoint"])
    except (KeyError, ValueError):
        return None


# -----------------------------------------------------------------------------------------------------------
# one row per evaluated run


def median_throughput(train: dict, warmup: int = WARMUP_STEPS) -> float | None:
    """Median audio_s_per_s of a run's training rows after its first ``warmup`` steps; None if none are left."""
    rates = [row["audio_s_per_s"] for row in list(train.values())[warmup:] if row.get("audio_s_per_s") is not None]
    return statistics.median(rates) if rates else None


def test_metrics(task: str, metrics: dict) -> dict:
    """The task's test metric(s): wer and cer for asr, accuracy (intent_acc or clf_acc) for ic and sid."""
    if task == "asr":
        return {"metric": "wer", "wer": metrics.get("wer"), "cer": metrics.get("cer")}
    return {"metric": SELECT_METRIC[task], "accuracy": metrics.get(SELECT_METRIC[task])}


def best_dev(root, task: str, strategy: str) -> dict:
    """The run's best dev value of the checkpoint-picking metric and its step (best_metrics.json)."""
    metric = SELECT_METRIC[task]
    best = read_json(root / "runs" / task / strategy / "best_metrics.json", f"{task}/{strategy}: best dev n/a")
    value, step = (best or {}).get(metric) or (None, None)
    return {"best_dev_metric": metric, "best_dev": value, "best_dev_step": step}


def training_facts(root, task: str, strategy: str, warmup: int) -> dict:
    """Throughput, first and last step of the run's training rows (metrics.jsonl)."""
    path = root / "runs" / task / strategy / "metrics.jsonl"
    train, _ = read_run(root, task, strategy)
    if not train:
        warn(f"no training rows in {path}: {task}/{strategy}: train throughput and steps n/a")
    steps = list(train)
    return {
        "train_audio_s_per_s": median_throughput(train, warmup),
        "steps": steps[-1] if steps else None,
        "start_step": steps[0] - 1 if steps else None,  # 0, or for Hybrid Target's step it resumes from
    }


def timing(timings: dict, task: str, stage: str, timings_path) -> float | None:
    key = f"{task}/{stage}"
    if key not in timings:
        warn(f"no {key!r} in {timings_path}: its time n/a")
    return timings.get(key)


def result_row(root, task: str, strategy: str, metrics: dict, timings: dict, run: list, warmup: int) -> dict:
    rtf = metrics.get("real_time_factor")
    timings_path = root / "timings.json"
    return {
        "task": task, "strategy": strategy, "label": LABELS[strategy],
        **test_metrics(task, metrics),
        "parameters": metrics.get("parameters"),
        **training_facts(root, task, strategy, warmup),
        "infer_audio_s_per_s": 1 / rtf if rtf else None,
        "real_time_factor": rtf,
        "train_seconds": timing(timings, task, strategy, timings_path),
        "test_seconds": timing(timings, task, f"test_{strategy}", timings_path),
        "checkpoint": metrics.get("checkpoint"),
        "checkpoint_step": evaluated_step(metrics),
        **best_dev(root, task, strategy),
        "test_utterances": metrics.get("utterances"), "test_audio_hours": metrics.get("audio_hours"),
        "device_name": metrics.get("device_name"),
        "run": run,
    }


def compare_with_std(rows: list[dict], root) -> None:
    """Add each asr row's wer_vs_std (WER / Std's WER) and each ic / sid row's accuracy_vs_std (minus Std's), and
    for every row the test metric minus Std's with a 95% paired-bootstrap interval over test utterances
    (delta_vs_std, delta_vs_std_ci95), from the preds.jsonl files."""
    std = {r["task"]: r for r in rows if r["strategy"] == "std"}
    scores = {(r["task"], r["strategy"]): utterance_scores(r["task"], root / "eval" / r["task"] / r["strategy"] /
                                                           "preds.jsonl") for r in rows}  # each file read once
    for row in rows:
        ref = std.get(row["task"], {})
        if row["task"] == "asr":
            ok = row["wer"] is not None and ref.get("wer")
            row["wer_vs_std"] = row["wer"] / ref["wer"] if ok else None
        else:
            ok = row["accuracy"] is not None and ref.get("accuracy") is not None
            row["accuracy_vs_std"] = row["accuracy"] - ref["accuracy"] if ok else None
        row["delta_vs_std"] = row["delta_vs_std_ci95"] = None
        mine, std_scores = scores[row["task"], row["strategy"]], scores.get((row["task"], "std"))
        if mine and std_scores:
            row["delta_vs_std"], row["delta_vs_std_ci95"] = paired_bootstrap(std_scores, mine)


def utterance_scores(task: str, path) -> dict[str, tuple[float, float]] | None:
    """{utterance: (numerator, denominator)} of the task's test metric, from infer.py's preds.jsonl: word errors
    and reference words for asr (WER = their sums' ratio, as utils.metrics), correct and total for ic (every head
    right: intent accuracy) and sid (heads right: clf_acc). None, with a warning, if the file is missing."""
    if not path.is_file():
        warn(f"no {path}: no confidence interval for it")
        return None
    scores = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if task == "asr":
            words = row["label"].split()
            if words:
                counts = jiwer.process_words(row["label"], row["pred"])
                errors = counts.substitutions + counts.deletions + counts.insertions
            else:  # an empty reference: its hypothesis words are insertions, it adds no words (as asr_metrics)
                errors = len(row["pred"].split())
            scores[row["name"]] = (float(errors), float(len(words)))
        else:
            right = [p == label for p, label in zip(row["clf_pred"], row["clf_label"])]
            scores[row["name"]] = (float(all(right)), 1.0) if task == "ic" else (float(sum(right)), len(right))
    return scores


def paired_bootstrap(base: dict, other: dict, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """(metric(other) - metric(base), [2.5%, 97.5%] of that difference over ``samples`` resamplings of the shared
    utterances), the metric of a set being sum(numerators) / sum(denominators)."""
    names = sorted(base.keys() & other.keys())
    a, b = (np.array([scores[n] for n in names]) for scores in (base, other))  # (utterances, 2)
    index = np.random.default_rng(seed).integers(0, len(names), (samples, len(names)))  # (samples, utterances)

    def metric(pairs):
        return pairs[..., 0].sum(-1) / np.maximum(pairs[..., 1].sum(-1), 1e-12)

    deltas = metric(b[index]) - metric(a[index])  # (samples,)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(metric(b) - metric(a)), [float(low), float(high)]


def collect(root, warmup: int = WARMUP_STEPS) -> tuple[list[dict], dict | None]:
    """(one row per (task, strategy) of the profile with an eval metrics.json, info.json's content or None)."""
    root = results_root(root)
    info = read_json(root / "info.json", "profile, device and library versions n/a")
    timings = read_json(root / "timings.json", "train and test times n/a") or {}
    ran_in = stage_invocations(root / "stages.jsonl")
    every = [{"started": i.get("started"), "host": i.get("host"), "device": i.get("device")} for i in invocations(info)]
    tasks, strategies, _ = profile_scope(info)
    rows = []
    for task in tasks:
        for strategy in strategies:
            metrics = read_json(root / "eval" / task / strategy / "metrics.json",
                                f"{task}/{strategy} ({LABELS[strategy]}) left out")
            if metrics is None:
                continue
            used = sorted(ran_in.get(f"{task}/{strategy}", set()) | ran_in.get(f"{task}/test_{strategy}", set()))
            run = [every[i] for i in used if i < len(every)] or every  # before stages.jsonl: every invocation
            rows.append(result_row(root, task, strategy, metrics, timings, run, warmup))
    compare_with_std(rows, root)
    return rows, info


# -----------------------------------------------------------------------------------------------------------
# the comparison's markdown (mini_cald.md)


FORMATS = {  # table cell formats by kind
    "pct": lambda v: f"{100 * v:.1f}%",
    "ratio": lambda v: f"{v:.2f}x",
    "points": lambda v: f"{100 * v:+.1f} pts",
    "params": lambda v: f"{v / 1e6:.3g}",
    "speed": lambda v: f"{v:,.0f}",
    "millions": lambda v: f"{v / 1e6:.2f}M",
    "rtf": lambda v: f"{v:.4f}",
    "times": lambda v: f"{v:.0f}x",
    "minutes": lambda v: f"{v / 60:.1f} min",
}


def fmt(value, kind: str = "str") -> str:
    return "n/a" if value is None else FORMATS.get(kind, str)(value)


def table_columns(task: str) -> list[tuple[str, str, str]]:
    """(header, row key, format) of a task's table."""
    if task == "asr":
        metrics = [("test WER", "wer", "pct"), ("test CER", "cer", "pct"), ("WER / Std", "wer_vs_std", "ratio")]
    else:
        metrics = [(f"test {METRIC_NAMES[SELECT_METRIC[task]]}", "accuracy", "pct")]
    metrics.append(("vs Std (95% CI)", "delta_vs_std", "delta"))
    return [("strategy", "label", "str"), *metrics, ("best dev", "best_dev", "pct"), ("@ step", "best_dev_step", "str"),
            ("params (M)", "parameters", "params"), ("train audio-s/s", "train_audio_s_per_s", "speed"),
            ("infer audio-s/s", "infer_audio_s_per_s", "speed")]


def markdown_table(task: str, rows: list[dict]) -> str:
    columns = table_columns(task)
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" if kind == "str" and key == "label" else "---:" for _, key, kind in columns) + "|"]
    lines += ["| " + " | ".join(cell(r, key, kind) for _, key, kind in columns) + " |" for r in rows]
    return "\n".join(lines)


def cell(row: dict, key: str, kind: str) -> str:
    if kind != "delta":
        return fmt(row.get(key), kind)
    if row.get(key) is None or row["strategy"] == "std":
        return "n/a" if row["strategy"] != "std" else ""
    low, high = row[f"{key}_ci95"]
    return f"{100 * row[key]:+.1f} pts [{100 * low:+.1f}, {100 * high:+.1f}]"


def describe_invocation(inv: dict) -> str:
    versions = ", ".join(f"{name} {inv.get(key) or 'none'}" for name, key in
                         (("torch", "torch"), ("CUDA", "cuda"), ("transformers", "transformers"),
                          ("mamba_ssm", "mamba_ssm")))
    line = f"{inv.get('started', '?')} on {inv.get('host', '?')}: device {inv.get('device', '?')}; {versions}"
    settings = inv.get("settings")  # the profile as that invocation ran it (absent before it was recorded)
    if settings:
        steps = ", ".join(f"{task} {n if isinstance(n, int) else ' / '.join(f'{s} {k}' for s, k in n.items())}"
                          for task, n in settings["steps"].items())  # every run's steps, or each strategy's
        line += f"; preset {settings['preset']}, steps {steps}"
    if inv.get("jobs"):
        line += f"; {inv['jobs']} stage(s) at once (training throughput measured alongside the others"
        line += "; test stages too)" if inv.get("test_alone") is False else ")"
    if inv.get("seconds") is not None:
        line += f"; {inv['seconds'] / 60:.1f} min"
    return line


def header_lines(info: dict | None, rows: list[dict]) -> list[str]:
    profile = (info or {}).get("profile", "n/a")
    invs = invocations(info)
    lines = [f"Profile `{profile}` of scripts/mini_cald.py, {len(invs)} invocation(s):", ""]
    lines += [f"- {describe_invocation(inv)}" for inv in invs] or ["- n/a (no info.json)"]
    devices = sorted({str(r.get("device_name")) for r in rows})
    lines += ["", f"Evaluated on: {', '.join(devices) or 'n/a'}."]
    return lines


def notes(rows: list[dict], warmup: int) -> list[str]:
    hybrid_starts = sorted({f"{r['task']} step {r['start_step']}" for r in rows
                            if r["strategy"] == "hybrid" and r.get("start_step") is not None})
    return [
        ("Test metrics: infer.py on the test split at each run's best dev checkpoint (best dev: that metric on the "
         "dev split, and its step). WER / Std: the strategy's test WER over Std's. vs Std: its test metric minus "
         f"Std's in percentage points, with a 95% paired-bootstrap interval ({BOOTSTRAP_SAMPLES} resamplings of the "
         "test utterances): an interval that holds 0 is no evidence of a difference."),
        (f"train audio-s/s: median over the training steps of a run after its first {warmup} (warm-up); n/a when "
         "the run has no more. infer audio-s/s: 1 / infer.py's real-time factor on the test split."),
        ("Hybrid resumes Target's checkpoint at the switch point" +
         (f" ({', '.join(hybrid_starts)})" if hybrid_starts else "") + ": its steps are those after it. Target "
         "guided, Hybrid and Waypoint also need Std (the teacher). Wall times per stage are in mini_cald.json "
         "(train_seconds: the recipe's invocations that finished the stage; a killed one records nothing)."),
    ]


def missing_lines(root, rows: list[dict], tasks, strategies) -> list[str]:
    """One line per task with strategies not evaluated on test: those trained say their best dev value."""
    done = {(r["task"], r["strategy"]) for r in rows}
    lines = []
    for task in tasks:
        missing = [s for s in strategies if (task, s) not in done]
        if not missing:
            continue
        described = []
        for strategy in missing:
            dev = best_dev(root, task, strategy) if (root / "runs" / task / strategy).is_dir() else {}
            described.append(f"{LABELS[strategy]} (trained, best dev {fmt(dev['best_dev'], 'pct')} at step "
                             f"{dev['best_dev_step']})" if dev.get("best_dev") is not None else LABELS[strategy])
        lines.append(f"- {task}: {', '.join(described)}")
    return ["## Not evaluated on test", "", *lines, ""] if lines else []


def comparison_markdown(root, rows: list[dict], info: dict | None, warmup: int) -> str:
    tasks, strategies, _ = profile_scope(info)
    parts = ["# mini-CALD: strategy comparison", "", *header_lines(info, rows), ""]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if task_rows:
            parts += [f"## {TASK_TITLES[task]}", "", markdown_table(task, task_rows), ""]
    if not rows:
        parts += ["No eval/<task>/<strategy>/metrics.json found: nothing evaluated yet.", ""]
    parts += [f"- {note}" for note in notes(rows, warmup)]
    parts += ["", *missing_lines(root, rows, tasks, strategies)]
    return "\n".join(parts).rstrip("\n") + "\n"


# -----------------------------------------------------------------------------------------------------------
# the demo's markdown (results.md)


DEMO_COLUMNS = (  # (header, row key, format)
    ("model", "label", "str"), ("step", "checkpoint_step", "str"), ("test WER", "wer", "pct"),
    ("test CER", "cer", "pct"), ("params", "parameters", "millions"), ("RTF", "real_time_factor", "rtf"),
    ("audio s / s", "infer_audio_s_per_s", "times"), ("train time", "demo_train_seconds", "minutes"),
)


def demo_train_seconds(row: dict, rows: list[dict]) -> float | None:
    """A run's training wall time; Hybrid's adds Target's when it continues Target's whole run (the demo)."""
    target = next((r for r in rows if (r["task"], r["strategy"]) == (row["task"], "target")), None)
    continues = row["strategy"] == "hybrid" and target is not None and row["start_step"] == target["steps"]
    if not continues:
        return row["train_seconds"]
    return None if None in (row["train_seconds"], target["train_seconds"]) else (
        row["train_seconds"] + target["train_seconds"])


def demo_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(h for h, _, _ in DEMO_COLUMNS) + " |",
             "|" + "|".join("---" if kind == "str" else "---:" for _, _, kind in DEMO_COLUMNS) + "|"]
    for row in rows:
        values = {**row, "label": DEMO_LABELS[row["strategy"]], "demo_train_seconds": demo_train_seconds(row, rows)}
        lines.append("| " + " | ".join(fmt(values[key], kind) for _, key, kind in DEMO_COLUMNS) + " |")
    return "\n".join(lines)


def demo_notes(rows: list[dict], info: dict | None) -> list[str]:
    invs = invocations(info)
    seconds = [inv["seconds"] for inv in invs if inv.get("seconds") is not None]
    facts = [f"profile {(info or {}).get('profile', 'n/a')} of scripts/mini_cald.py"]
    if seconds:
        facts.append(f"the recipe took {sum(seconds) / 60:.1f} min ({len(seconds)} invocation(s))")
    notes = ["; ".join(facts),
             "WER/CER: greedy CTC on the held-out synthetic test split (infer.py) at each run's last checkpoint; "
             "RTF: inference seconds per second of audio (batched, this machine), audio s / s = 1 / RTF.",
             "train time: wall time of the model's own training command(s); Target guided and Hybrid also need "
             "the teacher, and Hybrid's time includes the Target phase it continues."]
    by_strategy = {r["strategy"]: r for r in rows}
    teacher, hybrid = by_strategy.get("std"), by_strategy.get("hybrid")
    if teacher and hybrid and teacher.get("cer") and hybrid.get("cer") is not None:
        notes.append(f"Hybrid CER / teacher CER = {hybrid['cer'] / teacher['cer']:.2f}")
    if rows and rows[0].get("test_utterances"):
        first = rows[0]
        notes.append(f"test split: {first['test_utterances']} utterances, "
                     f"{(first.get('test_audio_hours') or 0) * 60:.1f} min of audio; device {first.get('device_name')}")
    return notes


def long_form_note(result: dict) -> str:
    """scripts/long_form.py's result as one line of the demo's notes."""
    return (f"long form: the exported Hybrid model (a Hugging Face model dir) transcribed {result['utterances']} held-out "
            f"utterances joined into one recording of {result['minutes']:.1f} min in one pass: WER "
            f"{100 * result['long_wer']:.1f}% (CER {100 * result['long_cer']:.1f}%), against "
            f"{100 * result['segment_wer']:.1f}% ({100 * result['segment_cer']:.1f}%) one utterance at a time; "
            f"RTF {result['long_real_time_factor']:.4f} (scripts/long_form.py, eval/asr/long_form/long_form.json)")


def demo_markdown(rows: list[dict], notes: list[str]) -> str:
    return "\n".join(["# CALD speech: demo results", "", demo_table(rows), "", *[f"- {n}" for n in notes]]) + "\n"


# -----------------------------------------------------------------------------------------------------------
# plots


def hybrid_start(runs: dict) -> int | None:
    """The Target step Hybrid's run starts from (its first training step - 1), if it has rows."""
    train = runs.get("hybrid", ({}, {}))[0]
    return next(iter(train)) - 1 if train else None


def plot_lines(ax, runs: dict, start: int | None, value, labels: dict, scale: float = 1.0,
               markers: bool = False) -> None:
    """Each run's ``value(row)`` against the step, over {strategy: {step: row}}; where Hybrid starts from Target
    at ``start``, Target's rows up to it faintly in Hybrid's colour, joined to Hybrid's first row."""
    def draw(strategy, rows, faint=False):
        points = [(step, scale * value(row)) for step, row in rows.items() if value(row) is not None]
        if points:
            style = {"color": COLOURS[strategy], "lw": 1, **({"alpha": 0.5, "ls": ":", "lw": 2} if faint else {}),
                     **({"marker": "o", "ms": 3} if markers else {})}
            ax.plot(*zip(*points, strict=True), label=None if faint else labels[strategy], **style)

    for strategy, rows in runs.items():
        draw(strategy, rows)
    if start is not None and runs.get("target") and runs.get("hybrid"):
        prefix = {step: row for step, row in runs["target"].items() if step <= start}
        first = next(iter(runs["hybrid"]))
        draw("hybrid", {**prefix, first: runs["hybrid"][first]}, faint=True)


def finish_axes(ax, title: str, ylabel: str | None = None) -> None:
    ax.set_title(title)
    ax.set_xlabel("step")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(root, tasks: list[str], strategies, path) -> None:
    """Per task: the training task loss and the dev metric of each strategy."""
    fig, grid = plt.subplots(len(tasks), 2, figsize=(12, 3.8 * len(tasks)), squeeze=False)
    for task, axes in zip(tasks, grid, strict=True):
        runs = {s: read_run(root, task, s) for s in strategies}
        start = hybrid_start(runs)
        loss, metric = TASK_LOSS[task], f"dev/{SELECT_METRIC[task]}"
        plot_lines(axes[0], {s: train for s, (train, _) in runs.items()}, start,
                   lambda row: row.get(loss, row["loss"]), LABELS)
        plot_lines(axes[1], {s: dev for s, (_, dev) in runs.items()}, start, lambda row: row.get(metric), LABELS,
                   scale=100, markers=True)
        losses = [y for line in axes[0].get_lines() for y in line.get_ydata()]
        if losses and min(losses) > 0 and max(losses) / min(losses) > 10:  # log where it spans decades
            axes[0].set_yscale("log")
        finish_axes(axes[0], f"{task}: training {loss}")
        finish_axes(axes[1], f"{task}: dev {METRIC_NAMES[SELECT_METRIC[task]]}", "%")
    save(fig, path)


def headline(row: dict) -> float | None:
    return row["wer"] if row["task"] == "asr" else row["accuracy"]


def plot_bars(rows: list[dict], tasks: list[str], path) -> None:
    """Per task: the test metric of each strategy, Std's as a reference line."""
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.5), squeeze=False)
    for task, ax in zip(tasks, axes[0], strict=True):
        task_rows = [r for r in rows if r["task"] == task and headline(r) is not None]
        bars = ax.bar(range(len(task_rows)), [100 * headline(r) for r in task_rows],
                      color=[COLOURS[r["strategy"]] for r in task_rows])
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
        std = next((r for r in task_rows if r["strategy"] == "std"), None)
        if std is not None:
            ax.axhline(100 * headline(std), color="black", ls="--", lw=1, label="Std")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(task_rows)), [textwrap.fill(r["label"], 14) for r in task_rows], fontsize=7)
        name = METRIC_NAMES[SELECT_METRIC[task]]
        ax.set_ylabel(f"test {name} (%)")
        better = "lower" if metric_direction(SELECT_METRIC[task]) == "min" else "higher"
        ax.set_title(f"{task}: test {name} ({better} is better)")
    save(fig, path)


def plot_demo_curves(root, strategies, loss_path, dev_path) -> None:
    """The demo's training loss and CTC loss (log scale) and its dev CER, per strategy."""
    runs = {s: read_run(root, "asr", s) for s in strategies}
    start, train = hybrid_start(runs), {s: train for s, (train, _) in runs.items()}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_lines(axes[0], train, start, lambda row: row["loss"], DEMO_LABELS)
    plot_lines(axes[1], train, start, lambda row: row.get("ctc_loss"), DEMO_LABELS)
    for ax, title in zip(axes, ("training loss (task + weighted distillation)", "CTC loss (per transcript character)"),
                         strict=True):
        ax.set_yscale("log")
        finish_axes(ax, title)
    save(fig, loss_path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_lines(ax, {s: dev for s, (_, dev) in runs.items()}, start, lambda row: row.get("dev/cer"), DEMO_LABELS,
               scale=100, markers=True)
    finish_axes(ax, "dev CER during training", "dev CER (%)")
    save(fig, dev_path)


def plot_demo_bars(rows: list[dict], path) -> None:
    """Test WER and CER side by side per strategy."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width, xs = 0.38, range(len(rows))
    for offset, key, name in ((-width / 2, "wer", "WER"), (width / 2, "cer", "CER")):
        bars = ax.bar([x + offset for x in xs], [100 * (r[key] or 0) for r in rows], width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(xs), [DEMO_LABELS[r["strategy"]].replace(" (", "\n(") for r in rows], fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("test WER / CER per strategy")
    ax.legend()
    save(fig, path)


# -----------------------------------------------------------------------------------------------------------


def write_comparison(root, rows: list[dict], info: dict | None, out: Path, warmup: int, discussion) -> None:
    (out / "mini_cald.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = comparison_markdown(root, rows, info, warmup)
    if discussion is not None:
        md += "\n" + Path(discussion).read_text()
    (out / "mini_cald.md").write_text(md)
    written = ["mini_cald.json", "mini_cald.md"]
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    if tasks:
        plot_curves(root, tasks, profile_scope(info)[1], out / "mini_cald_curves.png")
        plot_bars(rows, tasks, out / "mini_cald_bars.png")
        written += ["mini_cald_curves.png", "mini_cald_bars.png"]
    else:
        warn(f"no eval/<task>/<strategy>/metrics.json under {root}: no plots")
    print(md)
    print(f"wrote {', '.join(str(out / name) for name in written)}")


def write_demo(root, rows: list[dict], info: dict | None, out: Path) -> None:
    if not rows:
        raise SystemExit(f"error: no eval/asr/<strategy>/metrics.json under {root}: nothing to report")
    notes = demo_notes(rows, info)
    profile = PROFILES.get((info or {}).get("profile"))
    if profile is not None and profile.long_form_minutes:
        long_form = read_json(root / "eval" / "asr" / "long_form" / "long_form.json", "the long-form line left out")
        if long_form is not None:
            notes.append(long_form_note(long_form))
    (out / "results.md").write_text(demo_markdown(rows, notes))
    (out / "results.json").write_text(json.dumps({**(info or {}), "models": rows}, indent=1) + "\n")
    plot_demo_curves(root, profile_scope(info)[1], out / "training_loss.png", out / "dev_cer.png")
    plot_demo_bars(rows, out / "test_wer_cer.png")
    print(demo_table(rows))
    for note in notes:
        print(f"  {note}")
    print(f"wrote {out / 'results.md'}, results.json, training_loss.png, dev_cer.png, test_wer_cer.png")


def write_report(root, out=None, warmup: int = WARMUP_STEPS, discussion=None) -> list[dict]:
    """The report of ``root`` (a directory or a zip of one) under ``out`` (default: ``root``), as its profile asks."""
    root = results_root(root)
    if out is None and not isinstance(root, Path):
        raise SystemExit(f"error: {root} is an archive: name the directory to write to (--out)")
    out = Path(root if out is None else out)
    out.mkdir(parents=True, exist_ok=True)
    rows, info = collect(root, warmup)
    if profile_scope(info)[2] == "demo":
        write_demo(root, rows, info, out)
    else:
        write_comparison(root, rows, info, out, warmup, discussion)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="output/mini_cald",
                        help="scripts/mini_cald.py's --root, or a zip of one (its --pack)")
    parser.add_argument("--out", default=None, help="directory for the tables and plots (default: --root)")
    parser.add_argument("--warmup_steps", type=int, default=WARMUP_STEPS,
                        help="training steps at the start of each run left out of its median throughput")
    parser.add_argument("--discussion", default=None,
                        help="a hand-written markdown file (the reading of these numbers) appended to mini_cald.md")
    args = parser.parse_args(argv)
    write_report(args.root, args.out, args.warmup_steps, args.discussion)


if __name__ == "__main__":
    main()
