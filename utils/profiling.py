"""A profile of a few training steps, on request only: ``CALD_PROFILE=<dir>:<first step>:<steps>`` in the
environment of train.py / train_distill.py (bench/seed_throughput.py sets it).

The training loop marks its phases with ``torch.profiler.record_function`` ranges, which cost next to nothing while no
profiler runs (utils/training.py, train_distill.py):

    cald/step            one iteration of the loop; its own time: the signal check, bookkeeping
      cald/teacher_switch  Waypoint guided: loading the next teacher snapshot and evaluating it on dev
      cald/data            waiting for the feeder's micro-batches and copying them to the device
      cald/normalisers     the step's loss normalisers over its micro-batches (and ranks)
      cald/forward         the student's forward, per micro-batch
      cald/loss            the task loss and the distillation terms, per micro-batch
        cald/teacher         the teacher's forward
      cald/backward        the backward pass (the last micro-batch's with DDP's gradient all-reduce)
      cald/optimizer       the finite-count check, gradient clipping, the optimiser and scheduler steps
      cald/log             the logged values read from the device, metrics.jsonl, the progress bar
    cald/eval, cald/checkpoint   a dev evaluation, writing a checkpoint

A range's CPU time holds the time the host waits in it for the GPU (a synchronisation).

With CALD_PROFILE set, ``StepProfiler`` runs torch.profiler over the steps ``first`` .. ``first + steps - 1`` (the
trainer's step counter as the step starts), writes its Chrome trace to ``<dir>/trace.json`` and a summary of it to
``<dir>/profile.json`` (``summarise_trace``), and prints ``[cald step N]`` on stdout as every step starts (``[cald step
end]`` when the loop ends), so that a log of the run places what is printed there at its step: Triton's autotuning
(with TRITON_PRINT_AUTOTUNING=1) and, from this profiler's hook, ``Triton compiling <kernel>`` for every kernel
specialisation the process compiles or loads from Triton's disk cache (a new shape or alignment, a new autotuning
config). A rank other than 0 of a multi-GPU run writes ``trace.rank<r>.json`` and ``profile.rank<r>.json``.

The summary, per profiled step: each range's own CPU time (less the ranges inside it) and the GPU time of the kernels
launched inside it (the innermost range holding the launch), the wall time, the GPU busy fraction (the union of every
kernel, copy and memset interval over the steps' wall time), the host-device synchronisations (the CUDA
synchronise calls and the time the host waited in them; ``.item()`` and a tensor's truth value show up as
``aten::_local_scalar_dense``), the CUDA graphs captured, and per range the host time inside PyTorch's operators
with the operators that take most of it (``host_ops``): what is left of a range's host time is Python's own and
its launches of Triton kernels and CUDA graphs.
"""
import itertools
import json
import logging
import os
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

logger = logging.getLogger(__name__)

ENV = "CALD_PROFILE"
PREFIX = "cald/"
COMPILE_LINE = "Triton compiling"
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")
SCALAR_READ = "aten::_local_scalar_dense"
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")
OUTSIDE = "(outside the ranges)"
TOP_HOST_OPS = 12


class StepProfiler:
    """torch.profiler over steps ``first`` .. ``first + steps - 1``; ``at_step(step)`` as each step starts,
    ``finish()`` when the loop ends (it writes what was profiled if the run ended inside the window)."""

    def __init__(self, out_dir: Path, first: int, steps: int):
        self.out_dir, self.first, self.steps = Path(out_dir), first, steps
        rank = os.environ.get("RANK", "0")
        self.suffix = "" if rank == "0" else f".rank{rank}"
        self._profile = None
        self._started = False
        report_triton_compiles()

    @classmethod
    def from_env(cls) -> "StepProfiler | None":
        """The profiler CALD_PROFILE asks for, or None; a malformed value is an error naming it."""
        value = os.environ.get(ENV)
        if not value:
            return None
        try:
            out_dir, first, steps = value.rsplit(":", 2)
            profiler = cls(Path(out_dir), int(first), int(steps))
        except ValueError:
            raise ValueError(f"{ENV}={value!r}: expected <dir>:<first step>:<steps>") from None
        if profiler.first < 0 or profiler.steps < 1:
            raise ValueError(f"{ENV}={value!r}: the first step must be >= 0 and the steps >= 1")
        return profiler

    def at_step(self, step: int) -> None:
        print(f"[cald step {step}]", flush=True)
        if not self._started and self.first <= step < self.first + self.steps:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
            self._profile, self._started = profile(activities=activities), True
            self._profile.start()
        elif step >= self.first + self.steps:
            self._write()

    def finish(self) -> None:
        print("[cald step end]", flush=True)
        self._write()

    def _write(self) -> None:
        """Stop profiling (if it runs) and write the trace and its summary."""
        if self._profile is None:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._profile.stop()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        trace = self.out_dir / f"trace{self.suffix}.json"
        self._profile.export_chrome_trace(str(trace))
        self._profile = None
        events = json.loads(trace.read_text())["traceEvents"]
        summary = {"first_step": self.first, **summarise_trace(events),
                   "cudnn_benchmark": torch.backends.cudnn.benchmark}
        (self.out_dir / f"profile{self.suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
        logger.info("profiled %d step(s) from step %d: %s", summary["steps"], self.first, trace)


def report_triton_compiles() -> None:
    """Print ``Triton compiling <kernel>`` whenever Triton compiles a kernel specialisation in this process (its
    jit_cache_hook, which runs before each; left alone when Triton is absent or another hook is set)."""
    try:
        from triton import knobs
    except ImportError:
        return
    if getattr(knobs.runtime, "jit_cache_hook", False) is None:
        knobs.runtime.jit_cache_hook = _print_compile


def _print_compile(*, fn, **_) -> None:
    print(f"{COMPILE_LINE} {fn.module}.{fn.name}", flush=True)


def union_length(intervals) -> float:
    """Total length covered by (start, end) intervals (overlaps counted once)."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


def summarise_trace(events: list[dict]) -> dict:
    """Per-step figures of a Chrome trace's events (torch.profiler's ``traceEvents``; times in microseconds) whose
    steps are ``cald/step`` ranges; see the module's docstring. ``ranges``: {name: {"cpu_ms", "gpu_ms"}} per step,
    names without the ``cald/`` prefix; ``gpu_busy`` is None without GPU events."""
    complete = [e for e in events if e.get("ph") == "X"]
    ranges = [(e["ts"], e["ts"] + e["dur"], e["name"][len(PREFIX):]) for e in complete
              if e.get("cat") == "user_annotation" and e["name"].startswith(PREFIX)]
    steps = [(start, end) for start, end, name in ranges if name == "step"]
    if not steps:
        raise ValueError("the trace holds no cald/step range: were the profiled steps run?")
    wall_us = sum(end - start for start, end in steps)

    # each range's own CPU time: its length less that of the ranges directly inside it
    own_cpu = {name: 0.0 for _, _, name in ranges}
    stack = []
    for start, end, name in sorted(ranges, key=lambda r: (r[0], -r[1])):
        while stack and stack[-1][1] <= start:
            stack.pop()
        own_cpu[name] += end - start
        if stack:
            own_cpu[stack[-1][2]] -= end - start
        stack.append((start, end, name))

    # each kernel's GPU time goes to the innermost range open when the host launched it
    launches = {e["args"]["correlation"]: e["ts"] for e in complete
                if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in e.get("args", {})}
    gpu = [e for e in complete if e.get("cat") in GPU_CATEGORIES]
    gpu_time = {name: 0.0 for name in own_cpu}
    gpu_time[OUTSIDE] = 0.0
    launched = [e for e in gpu if e.get("args", {}).get("correlation") in launches]
    for e, name in zip(launched, innermost_ranges(ranges, [launches[e["args"]["correlation"]] for e in launched])):
        gpu_time[name] += e["dur"]
    gpu_time[OUTSIDE] += sum(e["dur"] for e in gpu if e.get("args", {}).get("correlation") not in launches)

    busy_us = sum(union_length((max(e["ts"], start), min(e["ts"] + e["dur"], end)) for e in gpu
                               if e["ts"] < end and e["ts"] + e["dur"] > start) for start, end in steps)
    syncs = [e for e in complete if e.get("cat") in LAUNCH_CATEGORIES and e["name"] in SYNC_CALLS]
    n = len(steps)
    return {
        "steps": n,
        "step_ms": wall_us / n / 1000,
        "ranges": {name: {"cpu_ms": own_cpu.get(name, 0.0) / n / 1000, "gpu_ms": gpu_time[name] / n / 1000}
                   for name in gpu_time if name in own_cpu or gpu_time[name]},
        "gpu_ms": sum(e["dur"] for e in gpu) / n / 1000,
        "gpu_busy": busy_us / wall_us if gpu else None,
        "syncs": len(syncs) / n,
        "sync_wait_ms": sum(e["dur"] for e in syncs) / n / 1000,
        "scalar_reads": sum(e["name"] == SCALAR_READ for e in complete if e.get("cat") == "cpu_op") / n,
        "graph_captures": sum(e["name"].startswith("cudaGraphInstantiate") for e in complete
                              if e.get("cat") in LAUNCH_CATEGORIES) / n,
        "kernels": len(gpu) / n,
        "host_ops": host_ops(complete, ranges, n),
    }


def innermost_ranges(ranges: list[tuple[float, float, str]], times: list[float]) -> list[str]:
    """For each time, the name of the innermost of ``ranges`` ((start, end, name), nested) open then, else
    ``OUTSIDE``."""
    marks = sorted([(start, 0, i) for i, (start, _, _) in enumerate(ranges)]
                   + [(end, 2, i) for i, (_, end, _) in enumerate(ranges)]
                   + [(t, 1, j) for j, t in enumerate(times)])
    names, open_ranges = [OUTSIDE] * len(times), []
    for _, kind, index in marks:
        if kind == 0:
            open_ranges.append(index)
        elif kind == 2:
            open_ranges.remove(index)
        elif open_ranges:
            names[index] = ranges[open_ranges[-1]][2]
    return names


def host_ops(complete: list[dict], ranges: list[tuple[float, float, str]], steps: int) -> dict:
    """Per range, where its host time goes: ``ops_ms``, the time inside PyTorch operators called from Python (an
    operator not inside another on its thread; autograd's backward nodes on autograd's thread count where they
    start), and ``top``, the TOP_HOST_OPS operators of most time, [name, calls, ms]; per step. A range's
    ``cpu_ms`` less ``ops_ms`` is Python's own time and what it launches without an operator (Triton kernels,
    CUDA graphs)."""
    outermost = []
    for _, ops in itertools.groupby(sorted((e for e in complete if e.get("cat") == "cpu_op"),
                                           key=lambda e: (e.get("tid", 0), e["ts"], -e["dur"])),
                                    key=lambda e: e.get("tid", 0)):
        reach = None
        for e in ops:
            if reach is None or e["ts"] >= reach:
                outermost.append(e)
                reach = e["ts"] + e["dur"]
    per_range: dict[str, dict[str, list[float]]] = {}
    for e, name in zip(outermost, innermost_ranges(ranges, [e["ts"] for e in outermost])):
        calls_us = per_range.setdefault(name, {}).setdefault(e["name"], [0, 0.0])
        calls_us[0] += 1
        calls_us[1] += e["dur"]
    return {name: {"ops_ms": sum(us for _, us in ops.values()) / steps / 1000,
                   "top": [[op, calls / steps, us / steps / 1000] for op, (calls, us)
                           in sorted(ops.items(), key=lambda item: -item[1][1])[:TOP_HOST_OPS]]}
            for name, ops in per_range.items() if name != OUTSIDE}
