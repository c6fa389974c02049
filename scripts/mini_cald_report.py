"""mini-CALD's results: a table per task (mini_cald.md), one JSON row per evaluated run (mini_cald.json) and plots.

Usage (scripts/mini_cald.py prints it when every stage is done):
    python scripts/mini_cald_report.py --root output/mini_cald --out results

Reads, under --root (the layout of scripts/mini_cald.py):
    info.json                                {"profile", "invocations": [{"started", "host", "device", "torch",
                                             "cuda", "transformers", "mamba_ssm", "settings", "jobs"}]}
    stages.jsonl                             {"stage", "seconds", "invocation"}: which invocation ran a stage
    timings.json                             {"<task>/<stage>": wall seconds}; a training stage is named after its
                                             strategy, an evaluation "test_<strategy>"
    runs/<task>/<strategy>/metrics.jsonl     training rows ({"step", "loss", "audio_s_per_s", ...}) and dev rows
                                             ({"step", "dev/wer", "dev/cer"} or {"step", "dev/intent_acc", ...})
    runs/<task>/<strategy>/best_metrics.json {metric: [best dev value, step]}: picks the evaluated checkpoint
    eval/<task>/<strategy>/metrics.json      infer.py on the test split: wer, cer (asr) or intent_acc, clf_acc
                                             (ic, sid), real_time_factor, parameters, checkpoint, device_name

Writes, under --out:
    mini_cald.json         one row per (task, strategy) with an eval metrics.json: the test metric(s), their
                           comparison with Std, parameters, train / inference throughput, train time, steps, and
                           "run": the invocations (start, host, device) that trained and tested it
    mini_cald.md           a table per task, the profile, the machine and library versions of the invocations,
                           then the runs not yet evaluated, then --discussion's file if given (hand-written)
    mini_cald_curves.png   per task: training task loss and the dev metric against the step, per strategy
    mini_cald_bars.png     per task: the test metric per strategy, Std as a reference line

The test metric of a task is the dev metric that picks its checkpoint (mini_cald.SELECT_METRIC): WER for asr
(CER alongside), intent accuracy for ic, speaker accuracy (clf_acc) for sid. Hybrid's run dir starts at Target's
checkpoint at the switch point, so its metrics.jsonl and its timing cover only the steps after it; the curves
draw Target's earlier rows faintly in Hybrid's colour. Every number comes from the files above; a missing or
unreadable one is a warning on stderr that names it and what is left out, never an error.
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
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.demo_report import evaluated_step, read_metrics_jsonl
from scripts.mini_cald import SELECT_METRIC, STRATEGIES, TASKS
from utils.checkpoint import metric_direction

BOOTSTRAP_SAMPLES = 2000  # resamplings of the test utterances for the intervals of the differences to Std
WARMUP_STEPS = 10  # training steps at the start of each run left out of its throughput (compilation, caches)
LABELS = {
    "std": "Std (attention teacher)", "unguided": "Unguided", "target": "Target guided", "hybrid": "Hybrid",
    "waypoint": "Waypoint guided", "target_attn_init": "Target guided + attention init",
}
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


def read_json(path: Path, consequence: str):
    """The JSON in ``path``; None, with a warning naming the file and ``consequence``, if absent or unreadable."""
    if not path.is_file():
        warn(f"no {path}: {consequence}")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warn(f"{path} unreadable ({error}): {consequence}")
        return None


def read_run(root: Path, task: str, strategy: str) -> tuple[dict, dict]:
    """({step: training row}, {step: dev row}) of a run, in step order; empty where it has no metrics.jsonl."""
    path = root / "runs" / task / strategy / "metrics.jsonl"
    train, dev = read_metrics_jsonl(path, dev_key=f"dev/{SELECT_METRIC[task]}")
    return dict(sorted(train.items())), dict(sorted(dev.items()))


def stage_invocations(path: Path) -> dict[str, set[int]]:
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


def best_dev(root: Path, task: str, strategy: str) -> dict:
    """The run's best dev value of the checkpoint-picking metric and its step (best_metrics.json)."""
    metric = SELECT_METRIC[task]
    best = read_json(root / "runs" / task / strategy / "best_metrics.json", f"{task}/{strategy}: best dev n/a")
    value, step = (best or {}).get(metric) or (None, None)
    return {"best_dev_metric": metric, "best_dev": value, "best_dev_step": step}


def training_facts(root: Path, task: str, strategy: str, warmup: int) -> dict:
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


def timing(timings: dict, task: str, stage: str, timings_path: Path) -> float | None:
    key = f"{task}/{stage}"
    if key not in timings:
        warn(f"no {key!r} in {timings_path}: its time n/a")
    return timings.get(key)


def result_row(root: Path, task: str, strategy: str, metrics: dict, timings: dict, run: list, warmup: int) -> dict:
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


def compare_with_std(rows: list[dict], root: Path) -> None:
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


def utterance_scores(task: str, path: Path) -> dict[str, tuple[float, float]] | None:
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
    """(one row per (task, strategy) with an eval metrics.json, info.json's content or None)."""
    root = Path(root)
    info = read_json(root / "info.json", "profile, device and library versions n/a")
    timings = read_json(root / "timings.json", "train and test times n/a") or {}
    ran_in = stage_invocations(root / "stages.jsonl")
    every = [{"started": i.get("started"), "host": i.get("host"), "device": i.get("device")} for i in invocations(info)]
    rows = []
    for task in TASKS:
        for strategy in STRATEGIES:
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
# markdown


FORMATS = {  # table cell formats by kind
    "pct": lambda v: f"{100 * v:.1f}%",
    "ratio": lambda v: f"{v:.2f}x",
    "points": lambda v: f"{100 * v:+.1f} pts",
    "params": lambda v: f"{v / 1e6:.3g}",
    "speed": lambda v: f"{v:,.0f}",
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
        steps = ", ".join(f"{task} {n}" for task, n in settings["steps"].items())
        line += f"; preset {settings['preset']}, steps {steps}"
    if inv.get("jobs"):
        line += f"; {inv['jobs']} stage(s) at once (training throughput measured alongside the others"
        line += "; test stages too)" if inv.get("test_alone") is False else ")"
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


def missing_lines(root: Path, rows: list[dict]) -> list[str]:
    """One line per task with strategies not evaluated on test: those trained say their best dev value."""
    done = {(r["task"], r["strategy"]) for r in rows}
    lines = []
    for task in TASKS:
        missing = [s for s in STRATEGIES if (task, s) not in done]
        if not missing:
            continue
        described = []
        for strategy in missing:
            dev = best_dev(root, task, strategy) if (root / "runs" / task / strategy).is_dir() else {}
            described.append(f"{LABELS[strategy]} (trained, best dev {fmt(dev['best_dev'], 'pct')} at step "
                             f"{dev['best_dev_step']})" if dev.get("best_dev") is not None else LABELS[strategy])
        lines.append(f"- {task}: {', '.join(described)}")
    return ["## Not evaluated on test", "", *lines, ""] if lines else []


def markdown_report(root: Path, rows: list[dict], info: dict | None, warmup: int) -> str:
    parts = ["# mini-CALD: strategy comparison", "", *header_lines(info, rows), ""]
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if task_rows:
            parts += [f"## {TASK_TITLES[task]}", "", markdown_table(task, task_rows), ""]
    if not rows:
        parts += ["No eval/<task>/<strategy>/metrics.json found: nothing evaluated yet.", ""]
    parts += [f"- {note}" for note in notes(rows, warmup)]
    parts += ["", *missing_lines(root, rows)]
    return "\n".join(parts).rstrip("\n") + "\n"


# -----------------------------------------------------------------------------------------------------------
# plots


def task_loss(task: str, train: dict) -> tuple[list, list]:
    """(steps, task loss) of training rows: CTC or classifier loss, the total where a row lacks it."""
    steps = list(train)
    return steps, [train[s].get(TASK_LOSS[task], train[s]["loss"]) for s in steps]


def plot_run(axes, task: str, strategy: str, train: dict, dev: dict, faint: bool = False) -> None:
    """One run's loss (axes[0]) and dev metric in % (axes[1]); ``faint``: Target's rows ahead of Hybrid."""
    style = {"color": COLOURS[strategy], "lw": 1, **({"alpha": 0.5, "ls": ":", "lw": 2} if faint else {})}
    label = None if faint else LABELS[strategy]
    if train:
        axes[0].plot(*task_loss(task, train), label=label, **style)
    if dev:
        key = f"dev/{SELECT_METRIC[task]}"
        axes[1].plot(list(dev), [100 * r[key] for r in dev.values()], marker="o", ms=3, label=label, **style)


def plot_hybrid_prefix(axes, task: str, hybrid: tuple[dict, dict], target: tuple[dict, dict]) -> None:
    """Target's rows before Hybrid's first step, faintly in Hybrid's colour, joined to Hybrid's first row."""
    start = next(iter(hybrid[0])) - 1
    prefix = []
    for target_rows, hybrid_rows in zip(target, hybrid, strict=True):
        joined = {s: r for s, r in target_rows.items() if s <= start}
        if joined and hybrid_rows:
            first = next(iter(hybrid_rows))
            joined[first] = hybrid_rows[first]
        prefix.append(joined)
    plot_run(axes, task, "hybrid", *prefix, faint=True)


def plot_curves(root: Path, tasks: list[str], path: Path) -> None:
    fig, grid = plt.subplots(len(tasks), 2, figsize=(12, 3.8 * len(tasks)), squeeze=False)
    for task, axes in zip(tasks, grid, strict=True):
        runs = {s: read_run(root, task, s) for s in STRATEGIES}
        for strategy, (train, dev) in runs.items():
            plot_run(axes, task, strategy, train, dev)
        hybrid_train = runs["hybrid"][0]
        if hybrid_train:  # Hybrid branches off Target at its first step - 1: Target's rows up to there, faintly
            plot_hybrid_prefix(axes, task, runs["hybrid"], runs["target"])
        axes[0].set_title(f"{task}: training {TASK_LOSS[task]}")
        losses = [y for line in axes[0].get_lines() for y in line.get_ydata()]
        if losses and min(losses) > 0 and max(losses) / min(losses) > 10:  # log where it spans decades
            axes[0].set_yscale("log")
        axes[1].set_title(f"{task}: dev {METRIC_NAMES[SELECT_METRIC[task]]}")
        axes[1].set_ylabel("%")
        for ax in axes:
            ax.set_xlabel("step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(row: dict) -> float | None:
    return row["wer"] if row["task"] == "asr" else row["accuracy"]


def plot_bars(rows: list[dict], tasks: list[str], path: Path) -> None:
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -----------------------------------------------------------------------------------------------------------


def write_report(root, out, warmup: int = WARMUP_STEPS, discussion=None) -> list[dict]:
    root, out = Path(root), Path(out)
    rows, info = collect(root, warmup)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mini_cald.json").write_text(json.dumps(rows, indent=1) + "\n")
    md = markdown_report(root, rows, info, warmup)
    if discussion is not None:
        md += "\n" + Path(discussion).read_text()
    (out / "mini_cald.md").write_text(md)
    written = ["mini_cald.json", "mini_cald.md"]
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    if tasks:
        plot_curves(root, tasks, out / "mini_cald_curves.png")
        plot_bars(rows, tasks, out / "mini_cald_bars.png")
        written += ["mini_cald_curves.png", "mini_cald_bars.png"]
    else:
        warn(f"no eval/<task>/<strategy>/metrics.json under {root}: no plots")
    print(md)
    print(f"wrote {', '.join(str(out / name) for name in written)}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="output/mini_cald", help="scripts/mini_cald.py's --root")
    parser.add_argument("--out", default="results", help="directory for mini_cald.{json,md} and the plots")
    parser.add_argument("--warmup_steps", type=int, default=WARMUP_STEPS,
                        help="training steps at the start of each run left out of its median throughput")
    parser.add_argument("--discussion", default=None,
                        help="a hand-written markdown file (the reading of these numbers) appended to mini_cald.md")
    args = parser.parse_args(argv)
    write_report(args.root, args.out, args.warmup_steps, args.discussion)


if __name__ == "__main__":
    main()
