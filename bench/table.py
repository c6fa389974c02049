"""The README's Speed table, made from the rows bench/speed.py committed: for each shape, the latest measurement of
one model beside the teacher measured in the same process, and the issue's targets judged on them.

Usage:
    python bench/table.py                               # the eager student, bench/results/NVIDIA_H200.jsonl
    python bench/table.py --model student_recompute     # another bench model
    python bench/table.py --execution cuda_graph        # both replayed as CUDA graphs (teacher_mode same)
    python bench/table.py --code <commit> <commit>      # only rows of these commits
    python bench/table.py bench/results/NVIDIA_H100_80GB_HBM3.jsonl

A row counts when it measured the model as the hparams' defaults build it (unpadded batch, their SSD chunk and
graph limits; rows from before a field existed count) and its teacher ran in the same process: the teacher row of
the same commit, date, execution and shape whose time the row's ``vs_teacher_same`` was taken against. Shapes no
such row measured are left out. Markdown on stdout: a line naming the GPU and library versions, then the table,
with one column saying which commit and day each row came from.

The column "of FLOP limit" sets each speed ratio against the one the FLOPs allow: the teacher's ``tflops`` over the
model's (``flop_limit``), the ratio the model would have at the teacher's FLOP rate, so "0.72 of 0.92x" means the
model runs its FLOPs at 0.72 of the teacher's rate. FLOPs are FlopCounterMode's on an eager pass (bench/speed.py,
``count_flops``); it does not see the SSD scan's Triton kernels, so a student's limit is a little above the true one.
A row whose count may have missed CUDA-graph replays (``counted_eagerly``) shows none.
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.speed import DEFAULT_SHAPES, SR, output_frames, parse_shape  # noqa: E402
from models.kernels.graphs import round_up  # noqa: E402
from hparams import HParams  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEFAULTS = {"padding": 0.0,  # a row's field -> the value the hparams' defaults give it
            "chunk_size": HParams.mamba_chunk_size,
            "scan_graph_frames": HParams.mamba_scan_graph_frames,
            "mixer_graph_frames": HParams.mamba_mixer_graph_frames}
VERSIONS = ("torch", "transformers", "mamba_ssm", "triton", "cuda", "flash_attn", "causal_conv1d")


class Target(NamedTuple):
    """One of the issue's targets for a shape: ``kind`` speedup (the model's speed over the teacher's, at least
    ``bound``), memory (its peak over the teacher's, at most ``bound``) or peak_gib (its peak, at most ``bound``)."""

    kind: str
    bound: float

    def met(self, row: dict, teacher: dict) -> bool:
        if self.kind == "speedup":
            return speedup(row) >= self.bound
        if self.kind == "memory":
            return row["peak_gib"] / teacher["peak_gib"] <= self.bound
        return row["peak_gib"] <= self.bound

    def __str__(self) -> str:
        return {"speedup": f"≥ {self.bound:.1f}x", "memory": f"≤ {self.bound:g}x the memory",
                "peak_gib": f"≤ {self.bound:g} GiB"}[self.kind]


# (teacher_mode, mode, batch, seconds) -> targets; teacher_mode eager: the teacher as users run it, same: under the
# model's own execution (issue 7)
TARGETS = {
    ("eager", "train", 16, 10.0): [Target("speedup", 1.0)],
    ("eager", "train", 4, 60.0): [Target("speedup", 1.5)],
    ("eager", "train", 1, 600.0): [Target("speedup", 4.0), Target("memory", 0.7)],
    ("eager", "infer", 16, 10.0): [Target("speedup", 1.0)],
    ("eager", "infer", 1, 1800.0): [Target("speedup", 6.0)],
    ("eager", "infer", 1, 3600.0): [Target("peak_gib", 20.0)],
    ("same", "train", 16, 10.0): [Target("speedup", 0.8)],
    ("same", "train", 4, 60.0): [Target("speedup", 1.2)],
    ("same", "train", 1, 600.0): [Target("speedup", 4.0)],
}


def read_rows(path: Path) -> list[dict]:
    """The JSON lines of ``path``; a line that is not JSON is an error naming it."""
    rows = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        try:
            rows.append(json.loads(text))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not a JSON row ({error})") from None
    return rows


def speedup(row: dict) -> float | None:
    """The row's speed over the teacher of its own execution in the same process (rows from before
    ``vs_teacher_same`` existed were all eager, their ``vs_teacher``)."""
    return row.get("vs_teacher_same", row.get("vs_teacher"))


def counted_eagerly(row: dict) -> bool:
    """Whether the row's FLOPs were counted with every kernel launched eagerly: bench/speed.py's rows say so
    (``flops_eager``); in an older row, unless its student's mixers replayed CUDA graphs: without gradients (or
    recomputed in backward) on at most ``mixer_graph_frames`` frames (batch x length padded to the chunk)."""
    if row.get("flops_eager") or not row.get("mixer_graph_frames"):
        return True
    if row["mode"] == "train" and row["model"] != "student_recompute":
        return True
    frames = round_up(output_frames(int(row["seconds"] * SR)), row.get("chunk_size") or DEFAULTS["chunk_size"])
    return row["batch"] * frames > row["mixer_graph_frames"]


def flop_limit(row: dict, teacher: dict) -> float | None:
    """The teacher's FLOPs over the row's: the speed ratio at which the row's model would run its FLOPs at the
    teacher's rate; None where a count is missing or may have missed graph replays."""
    if not (row.get("tflops") and teacher.get("tflops") and counted_eagerly(row) and counted_eagerly(teacher)):
        return None
    return teacher["tflops"] / row["tflops"]


def at_defaults(row: dict) -> bool:
    return all(row.get(key) is None or row[key] == value for key, value in DEFAULTS.items())


def same_process_teacher(rows: list[dict], index: int) -> dict | None:
    """The teacher row that row ``index``'s ratio was taken against: same commit, date, execution and shape, at
    the time the ratio implies, the nearest before it; None where there is none (a ratio from another process)."""
    row = rows[index]
    expected_ms = row["ms"] * speedup(row)
    for candidate in reversed(rows[:index]):
        if (candidate["model"] == "teacher" and candidate.get("ms") is not None
                and all(candidate.get(key) == row.get(key)
                        for key in ("code", "date", "execution", "mode", "batch", "seconds"))
                and math.isclose(candidate["ms"], expected_ms, rel_tol=1e-6)):
            return candidate
    return None


def latest_rows(rows: list[dict], model: str, execution: str, codes: list[str] | None) -> list[tuple[dict, dict]]:
    """(row, its teacher) for each shape the model was measured at, in DEFAULT_SHAPES order (then any other)."""
    chosen = {}
    for index, row in enumerate(rows):
        if (row["model"] == model and row.get("execution", "eager") == execution and at_defaults(row)
                and row.get("ms") is not None and speedup(row) is not None
                and (codes is None or row.get("code") in codes)):
            teacher = same_process_teacher(rows, index)
            if teacher is not None:
                chosen[(row["mode"], row["batch"], row["seconds"])] = row, teacher  # later rows replace earlier
    order = {parse_shape(shape): i for i, shape in enumerate(DEFAULT_SHAPES)}
    return [chosen[shape] for shape in sorted(chosen, key=lambda shape: (order.get(shape, len(order)), shape))]


def versions_line(pairs: list[tuple[dict, dict]]) -> str:
    """'NVIDIA H200; torch 2.11.0+cu130, ...' for each distinct GPU and versions among the rows, with their
    commits where there is more than one."""
    groups = {}
    for row, _ in pairs:
        versions = row.get("versions", {})
        text = f"{row.get('gpu', '?')}; " + ", ".join(f"{name} {versions[name]}" for name in VERSIONS
                                                     if versions.get(name))
        groups.setdefault(text, []).append(row.get("code"))
    if len(groups) == 1:
        return next(iter(groups))
    return "; and ".join(f"{text} (code {', '.join(dict.fromkeys(codes))})" for text, codes in groups.items())


def markdown(pairs: list[tuple[dict, dict]], model: str) -> str:
    """The table: ms (peak GiB) of both, the speed ratio, each target with met / not met, the row's commit."""
    lines = [f"| shape | teacher | {model} | speed vs teacher | of FLOP limit | target | code (date) |",
             "|---|---:|---:|---:|---:|---|---|"]
    for row, teacher in pairs:
        targets = TARGETS.get((row["teacher_mode"], row["mode"], row["batch"], row["seconds"]), [])
        judged = "; ".join(f"{target}: {'**met**' if target.met(row, teacher) else 'not met'}"
                           for target in targets)
        timing = lambda r: f"{r['ms']:.{1 if r['ms'] < 1000 else 0}f} ({r['peak_gib']:.1f})"  # noqa: E731
        limit = flop_limit(row, teacher)
        of_limit = f"{speedup(row) / limit:.2f} of {limit:.2f}x" if limit else "–"
        lines.append(f"| {row['mode']} {row['batch']}×{row['seconds']:g} s | {timing(teacher)} | {timing(row)} "
                     f"| {speedup(row):.2f}x | {of_limit} | {judged} | {row.get('code')} ({row.get('date')}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS / "NVIDIA_H200.jsonl",
                        help="bench/speed.py's JSON lines")
    parser.add_argument("--model", default="student", help="the bench model set beside its teacher")
    parser.add_argument("--execution", choices=("eager", "cuda_graph"), default="eager")
    parser.add_argument("--code", nargs="+", default=None, help="only rows of these commits")
    args = parser.parse_args(argv)
    rows = read_rows(args.results)
    pairs = latest_rows(rows, args.model, args.execution, args.code)
    if not pairs:
        sys.exit(f"{args.results}: no {args.execution} row of model '{args.model}' at the defaults with its "
                 f"teacher in the same process" + (f" among code {', '.join(args.code)}" if args.code else ""))
    print(f"{versions_line(pairs)}; ms (peak GiB)\n")
    print(markdown(pairs, args.model))


if __name__ == "__main__":
    main()
