"""The CPU demo's results: a table (terminal, results.md, results.json) and plots, from what the runs left behind.

Usage (scripts/demo.sh runs it last):
    python scripts/demo_report.py --root output/demo

Reads, under --root:
    runs/<run>/metrics.jsonl     training rows ({"step", "loss", "ctc_loss", ...}), dev rows ({"step", "dev/cer", ...})
    eval/<model>/metrics.json    infer.py on the test split: wer, cer, real_time_factor, checkpoint, audio_hours
    timings.json                 {"<model>": training wall seconds} written by demo.sh as each stage finishes;
                                 Hybrid's is "target" + "hybrid_phase" unless given as "hybrid"

Writes results.md, results.json, training_loss.png, dev_cer.png and test_wer_cer.png under --root.
Target guided and Hybrid share a run dir (Hybrid resumes it with alpha_layer_distill_loss=0): the Target phase
is the steps up to the checkpoint Target was evaluated at, the Hybrid phase the steps after it. A resumed run
may log a step twice (the steps after its last checkpoint are trained again): the last entry of a step wins.
"""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.checkpoint import checkpoint_step, load_checkpoint  # noqa: E402


@dataclass(frozen=True)
class Model:
    key: str  # eval/<key>, timings.json key
    label: str  # as the table shows it
    run: str  # runs/<run>
    phase: str = "all"  # which steps of the run are this model's: all | upto (Target) | after (Hybrid)
    after: str = ""  # Hybrid: the model whose evaluated checkpoint ends the previous phase


MODELS = (
    Model("teacher", "Std (attention teacher)", "teacher"),
    Model("unguided", "Unguided (BiMamba2)", "unguided"),
    Model("target", "Target guided (BiMamba2)", "target_guided", phase="upto"),
    Model("hybrid", "Hybrid (BiMamba2)", "target_guided", phase="after", after="target"),
)


# -----------------------------------------------------------------------------------------------------------
# reading


def read_metrics_jsonl(path, dev_key: str = "dev/cer") -> tuple[dict, dict]:
    """({step: training row}, {step: dev row holding ``dev_key``}) of a metrics.jsonl, the last row of each step
    winning."""
    train, dev = {}, {}
    path = Path(path)
    if not path.is_file():
        return train, dev
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-write leaves a torn last line
            print(f"warning: {path}:{number}: not JSON, skipped", file=sys.stderr)
            continue
        if "loss" in row:
            train[int(row["step"])] = row
        if dev_key in row:
            dev[int(row["step"])] = row
    return train, dev


def phase_rows(rows: dict, model: Model, boundary: int | None) -> dict:
    """The rows of ``model``'s steps: all, up to the Target checkpoint, or after it (Hybrid)."""
    if model.phase == "all" or boundary is None:
        return dict(sorted(rows.items()))
    if model.phase == "upto":
        return {s: r for s, r in sorted(rows.items()) if s <= boundary}
    return {s: r for s, r in sorted(rows.items()) if s > boundary}


def count_parameters(checkpoint) -> int | None:
    """Number of parameters in a checkpoint's model state (every tensor: Wav2Vec2 has no sizeable buffers)."""
    try:
        state = load_checkpoint(checkpoint)["model"]
    except (FileNotFoundError, KeyError, RuntimeError):
        return None
    return int(sum(t.numel() for t in state.values()))


def evaluated_step(metrics: dict) -> int | None:
    try:
        return checkpoint_step(metrics["checkpoint"])
    except (KeyError, ValueError):
        return None


def read_timings(path: Path) -> dict:
    """{model key: training wall seconds}; Hybrid continues the Target run, so its time includes the Target phase."""
    timings = json.loads(path.read_text()) if path.is_file() else {}
    if "hybrid" not in timings and "target" in timings and "hybrid_phase" in timings:
        timings["hybrid"] = timings["target"] + timings["hybrid_phase"]
    return timings


def collect(root: Path, models=MODELS) -> list[dict]:
    """One result dict per model that has an eval/<key>/metrics.json."""
    timings = read_timings(root / "timings.json")
    evals = {}
    for model in models:
        path = root / "eval" / model.key / "metrics.json"
        if path.is_file():
            evals[model.key] = json.loads(path.read_text())
    results = []
    for model in models:
        if model.key not in evals:
            print(f"warning: no {root / 'eval' / model.key / 'metrics.json'}: {model.label} left out",
                  file=sys.stderr)
            continue
        metrics = evals[model.key]
        rtf = metrics.get("real_time_factor")
        train, dev = read_metrics_jsonl(root / "runs" / model.run / "metrics.jsonl")
        boundary = evaluated_step(evals.get(model.after, {})) if model.after else evaluated_step(metrics)
        dev_rows = phase_rows(dev, model, boundary)
        results.append({
            "key": model.key, "model": model.label, "run": model.run,
            "step": evaluated_step(metrics),
            "wer": metrics.get("wer"), "cer": metrics.get("cer"),
            "params": count_parameters(metrics["checkpoint"]) if "checkpoint" in metrics else None,
            "real_time_factor": rtf,
            "audio_s_per_s": 1 / rtf if rtf else None,
            "train_seconds": timings.get(model.key),
            "test_utterances": metrics.get("utterances"), "test_audio_hours": metrics.get("audio_hours"),
            "device": metrics.get("device"),
            "best_dev_cer": min((r["dev/cer"] for r in dev_rows.values()), default=None),
        })
    return results


# -----------------------------------------------------------------------------------------------------------
# table


def _fmt(value, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "params":
        return f"{value / 1e6:.2f}M"
    if kind == "speed":
        return f"{value:.0f}x"
    if kind == "rtf":
        return f"{value:.4f}"
    if kind == "time":
        return f"{value / 60:.1f} min"
    return str(value)


COLUMNS = (  # (header, key, format)
    ("model", "model", "str"), ("step", "step", "str"), ("test WER", "wer", "pct"), ("test CER", "cer", "pct"),
    ("params", "params", "params"), ("RTF", "real_time_factor", "rtf"),
    ("audio s / s", "audio_s_per_s", "speed"), ("train time", "train_seconds", "time"),
)


def markdown_table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|" + "|".join("---" if k == "str" else "---:" for _, _, k in COLUMNS) + "|"]
    for r in results:
        lines.append("| " + " | ".join(_fmt(r.get(key), kind) for _, key, kind in COLUMNS) + " |")
    return "\n".join(lines)


def markdown_report(results: list[dict], notes: list[str]) -> str:
    parts = ["# CALD speech: CPU demo results", "", markdown_table(results), ""]
    parts += [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def notes_for(results: list[dict], info: dict | None = None) -> list[str]:
    info = info or {}
    notes = []
    if info:
        facts = [f"{k} {info[k]}" for k in ("profile", "train_utterances", "train_hours") if k in info]
        if "wall_seconds" in info:
            facts.append(f"this invocation of the demo took {info['wall_seconds'] / 60:.1f} min")
        notes.append("; ".join(facts))
    notes += ["WER/CER: greedy CTC on the held-out synthetic test split (infer.py); RTF: inference seconds per "
             "second of audio (batched, this machine), audio s / s = 1 / RTF.",
             "train time: wall time of the model's own training command(s); Target guided and Hybrid also need "
             "the teacher, and Hybrid's time includes the Target phase it continues."]
    by_key = {r["key"]: r for r in results}
    teacher, hybrid = by_key.get("teacher"), by_key.get("hybrid")
    if teacher and hybrid and teacher.get("cer") and hybrid.get("cer") is not None:
        notes.append(f"Hybrid CER / teacher CER = {hybrid['cer'] / teacher['cer']:.2f}")
    if results:
        r = results[0]
        if r.get("test_utterances"):
            notes.append(f"test split: {r['test_utterances']} utterances, "
                         f"{(r.get('test_audio_hours') or 0) * 60:.1f} min of audio; device {r.get('device')}")
    return notes


# -----------------------------------------------------------------------------------------------------------
# plots


def run_curves(root: Path, results: list[dict], models=MODELS) -> list[tuple[str, dict, dict]]:
    """(label, {step: train row}, {step: dev row}) for each evaluated model's phase of its run."""
    steps = {r["key"]: r["step"] for r in results}
    curves = []
    for model in models:
        if model.key not in steps:
            continue
        train, dev = read_metrics_jsonl(root / "runs" / model.run / "metrics.jsonl")
        boundary = steps.get(model.after) if model.after else steps[model.key]
        curves.append((model.label, phase_rows(train, model, boundary), phase_rows(dev, model, boundary)))
    return curves


def plot_training_loss(curves, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, train, _ in curves:
        steps = list(train)
        axes[0].plot(steps, [train[s]["loss"] for s in steps], label=label, lw=1)
        ctc = [s for s in steps if "ctc_loss" in train[s]]
        axes[1].plot(ctc, [train[s]["ctc_loss"] for s in ctc], label=label, lw=1)
    axes[0].set_title("training loss (task + weighted distillation)")
    axes[1].set_title("CTC loss (per transcript character)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_dev_cer(curves, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, _, dev in curves:
        steps = list(dev)
        ax.plot(steps, [100 * dev[s]["dev/cer"] for s in steps], marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("dev CER (%)")
    ax.set_title("dev CER during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_test_bars(results: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.38
    xs = range(len(results))
    for offset, key, name in ((-width / 2, "wer", "WER"), (width / 2, "cer", "CER")):
        values = [100 * (r[key] or 0) for r in results]
        bars = ax.bar([x + offset for x in xs], values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(xs), [r["model"].replace(" (", "\n(") for r in results], fontsize=8)
    ax.set_ylabel("%")
    ax.set_title("test WER / CER per strategy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -----------------------------------------------------------------------------------------------------------


def write_report(root, extra: dict | None = None) -> list[dict]:
    root = Path(root)
    results = collect(root)
    if not results:
        raise SystemExit(f"no eval/<model>/metrics.json under {root}: nothing to report")
    notes = notes_for(results, extra)
    (root / "results.md").write_text(markdown_report(results, notes))
    (root / "results.json").write_text(json.dumps({"models": results, **(extra or {})}, indent=2) + "\n")
    curves = run_curves(root, results)
    plot_training_loss(curves, root / "training_loss.png")
    plot_dev_cer(curves, root / "dev_cer.png")
    plot_test_bars(results, root / "test_wer_cer.png")
    print(markdown_table(results))
    for note in notes:
        print(f"  {note}")
    print(f"wrote {root / 'results.md'}, results.json, training_loss.png, dev_cer.png, test_wer_cer.png")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="output/demo", help="the demo's output directory")
    parser.add_argument("--info", default=None,
                        help="a JSON file of extra facts (profile, corpus, wall time) to store in results.json")
    args = parser.parse_args(argv)
    extra = json.loads(Path(args.info).read_text()) if args.info else None
    write_report(args.root, extra)


if __name__ == "__main__":
    main()
