"""utils/profiling.py: the per-step summary of a Chrome trace (on made-up events: a GPU trace needs a GPU), and
CALD_PROFILE's profiler around the steps it names on CPU."""
import json

import pytest
import torch
from torch.profiler import record_function

from utils import profiling


def x(cat, name, ts, dur, **args):
    """A complete ('X') trace event; times in microseconds."""
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_union_length_counts_overlaps_once():
    assert profiling.union_length([]) == 0
    assert profiling.union_length([(0, 10), (5, 15), (20, 25), (21, 22)]) == 20
    assert profiling.union_length([(20, 25), (0, 30)]) == 30


def test_summary_attributes_each_kernel_to_the_range_that_launched_it():
    """Two steps of 1000 us: the host launches in the forward (inside it the teacher) and the backward; kernels run
    later on the GPU, overlapping each other; one .item() waits 150 us."""
    events = []
    for step, t0 in enumerate((0, 2000)):
        events += [
            x("user_annotation", "cald/step", t0, 1000),
            x("user_annotation", "cald/forward", t0 + 100, 300),
            x("user_annotation", "cald/teacher", t0 + 150, 100),
            x("user_annotation", "cald/backward", t0 + 500, 200),
            x("cuda_runtime", "cudaLaunchKernel", t0 + 120, 5, correlation=10 * step + 1),  # forward
            x("cuda_runtime", "cudaLaunchKernel", t0 + 160, 5, correlation=10 * step + 2),  # teacher
            x("cuda_driver", "cuLaunchKernel", t0 + 510, 5, correlation=10 * step + 3),  # backward (Triton)
            x("kernel", "gemm", t0 + 200, 300, correlation=10 * step + 1),
            x("kernel", "attention", t0 + 400, 200, correlation=10 * step + 2),  # overlaps the gemm by 100
            x("gpu_memcpy", "Memcpy HtoD", t0 + 700, 100, correlation=10 * step + 3),
            x("cuda_runtime", "cudaStreamSynchronize", t0 + 800, 150),
            x("cpu_op", "aten::_local_scalar_dense", t0 + 790, 170),
        ]
    events.append(x("kernel", "stray", 5000, 50, correlation=99))  # launched before the trace began
    events.append(x("cuda_runtime", "cudaGraphInstantiateWithFlags", 2900, 10))
    summary = profiling.summarise_trace(events)
    assert summary["steps"] == 2 and summary["step_ms"] == pytest.approx(1.0)
    ranges = summary["ranges"]
    assert ranges["forward"] == {"cpu_ms": pytest.approx(0.2), "gpu_ms": pytest.approx(0.3)}  # 300 less the teacher
    assert ranges["teacher"] == {"cpu_ms": pytest.approx(0.1), "gpu_ms": pytest.approx(0.2)}
    assert ranges["backward"]["gpu_ms"] == pytest.approx(0.1)
    assert ranges["step"]["cpu_ms"] == pytest.approx(0.5)  # 1000 less the forward's 300 and the backward's 200
    assert ranges["(outside the ranges)"]["gpu_ms"] == pytest.approx(0.025)  # 50 us over 2 steps
    assert summary["gpu_ms"] == pytest.approx((300 + 200 + 100 + 25) / 1000)  # per step, in ms
    # busy: [200, 600) and [700, 800) of each 1000 us step; the stray kernel ran outside the steps
    assert summary["gpu_busy"] == pytest.approx(0.5)
    assert summary["syncs"] == 1 and summary["sync_wait_ms"] == pytest.approx(0.15)
    assert summary["scalar_reads"] == 1 and summary["graph_captures"] == 0.5


def test_host_ops_count_each_outermost_operator_once_in_the_range_it_starts_in():
    """One step: the forward calls aten::linear (inside it aten::mm) and aten::gelu from Python; the backward's
    nodes run on autograd's thread (tid 2) while the main thread waits in cald/backward."""
    events = [
        x("user_annotation", "cald/step", 0, 1000),
        x("user_annotation", "cald/forward", 100, 300),
        x("user_annotation", "cald/backward", 500, 400),
        {**x("cpu_op", "aten::linear", 110, 50), "tid": 1},
        {**x("cpu_op", "aten::mm", 120, 30), "tid": 1},  # inside aten::linear: not counted again
        {**x("cpu_op", "aten::gelu", 200, 20), "tid": 1},
        {**x("cpu_op", "aten::linear", 250, 40), "tid": 1},
        {**x("cpu_op", "autograd::engine::evaluate_function: MmBackward0", 510, 100), "tid": 2},
        {**x("cpu_op", "aten::mm", 520, 60), "tid": 2},
        {**x("cpu_op", "aten::zeros", 950, 10), "tid": 1},  # in the step's own time
    ]
    host = profiling.summarise_trace(events)["host_ops"]
    assert host["forward"]["ops_ms"] == pytest.approx(0.11)
    assert host["forward"]["top"] == [["aten::linear", 2, pytest.approx(0.09)], ["aten::gelu", 1, pytest.approx(0.02)]]
    assert host["backward"]["top"] == [["autograd::engine::evaluate_function: MmBackward0", 1, pytest.approx(0.1)]]
    assert host["step"] == {"ops_ms": pytest.approx(0.01), "top": [["aten::zeros", 1, pytest.approx(0.01)]]}


def test_summary_of_a_cpu_trace_has_no_gpu_figures():
    events = [x("user_annotation", "cald/step", 0, 100), x("user_annotation", "cald/log", 10, 20),
              x("cpu_op", "aten::_local_scalar_dense", 12, 2)]
    summary = profiling.summarise_trace(events)
    assert summary["gpu_busy"] is None and summary["ranges"]["log"]["cpu_ms"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="no cald/step range"):
        profiling.summarise_trace([x("user_annotation", "other", 0, 1)])


@pytest.mark.parametrize("value", ["out", "out:1", "out:a:2", "out:1:0", "out:-1:2"])
def test_a_malformed_cald_profile_is_named(monkeypatch, value):
    monkeypatch.setenv(profiling.ENV, value)
    with pytest.raises(ValueError, match=f"CALD_PROFILE={value!r}"):
        profiling.StepProfiler.from_env()


def test_the_profiler_covers_the_steps_it_names_and_marks_every_step(tmp_path, monkeypatch, capsys):
    from triton import knobs

    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", None)
    monkeypatch.delenv(profiling.ENV, raising=False)
    assert profiling.StepProfiler.from_env() is None
    monkeypatch.setenv(profiling.ENV, f"{tmp_path / 'prof'}:3:2")
    profiler = profiling.StepProfiler.from_env()
    a = torch.randn(64, 64)
    for step in range(2, 7):
        profiler.at_step(step)
        with record_function("cald/step"):
            with record_function("cald/forward"):
                (a @ a).sum().item()
    profiler.finish()
    summary = json.loads((tmp_path / "prof" / "profile.json").read_text())
    assert summary["first_step"] == 3 and summary["steps"] == 2 and summary["scalar_reads"] == 1
    assert summary["ranges"]["forward"]["cpu_ms"] > 0 and summary["gpu_busy"] is None
    forward_ops = sorted(op for op, _, _ in summary["host_ops"]["forward"]["top"])
    assert forward_ops == ["aten::item", "aten::matmul", "aten::sum"]
    marks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[cald step")]
    assert marks == [f"[cald step {s}]" for s in range(2, 7)] + ["[cald step end]"]


def test_the_profiler_reports_each_triton_compile_without_replacing_another_hook(monkeypatch, capsys):
    from types import SimpleNamespace

    from triton import knobs

    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", None)
    profiling.report_triton_compiles()
    hook = knobs.runtime.jit_cache_hook
    assert hook(key=(), repr="", fn=SimpleNamespace(module="models.kernels.conv_triton", name="_conv_fwd"), compile={},
                is_manual_warmup=False, already_compiled=False) is None  # None: Triton goes on to compile
    assert capsys.readouterr().out == f"{profiling.COMPILE_LINE} models.kernels.conv_triton._conv_fwd\n"
    theirs = object()
    monkeypatch.setattr(knobs.runtime, "jit_cache_hook", theirs)
    profiling.report_triton_compiles()
    assert knobs.runtime.jit_cache_hook is theirs
