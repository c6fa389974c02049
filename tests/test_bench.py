"""bench/speed.py's and bench/profile_step.py's eager steps on CPU with a tiny model, teacher and student (the
timings themselves need a GPU: ``python bench/speed.py``); bench/cpu_speed.py's measurement at the tiny preset;
bench/table.py's Speed table from result rows, and the copies README and bench/NOTES.md hold."""
import json
import warnings
from pathlib import Path

import pytest
import torch
import transformers

from bench import cpu_speed, profile_step, speed, table
from models.mamba_utils import substitute_layer
from models.presets import preset_config


@pytest.mark.parametrize("padding", [0.0, 0.5])
@pytest.mark.parametrize("student", [False, True])
def test_eager_train_and_infer_steps_run(student, padding):
    torch.manual_seed(0)
    config = preset_config("tiny", vocab_size=32)
    config._attn_implementation = "sdpa"
    model = transformers.Wav2Vec2ForCTC(config)
    if student:
        substitute_layer(model.wav2vec2.encoder, config, headdim=16, d_state=16, chunk_size=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = speed.make_batch(2, 1.0, "cpu", padding)
    assert batch.x.shape == (2, 16000) and batch.labels.shape == (2, 12)
    before = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") on a CPU-only machine
        speed.train_step(model, optimizer, batch)
        speed.infer_step(model, batch)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the step trained
    assert all(p.grad is None for p in model.parameters())  # and cleared its gradients
    frames = int(model._get_feat_extract_output_lengths(16000))
    assert speed.ctc_logits(model, batch.x, batch.attention_mask).shape == (2, frames, 32)
    lengths = speed.frame_lengths(model, batch, frames)
    assert lengths[0] == frames and lengths[1] == (frames if not padding else
                                                 int(model._get_feat_extract_output_lengths(8000)))
    for mode in ("train", "infer"):  # bench/profile_step.py's step around the same functions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            profile_step.make_step(model, mode, 2, 0.5, "cpu")()


def test_the_no_mixer_model_keeps_everything_but_attention_and_trains():
    """bench/speed.py's floor: the teacher's every parameter but the attention's, and a training step runs."""
    teacher, floor = speed.build("teacher", "cpu", preset="tiny"), speed.build("no_mixer", "cpu", preset="tiny")
    kept = {k for k in teacher.state_dict() if ".attention." not in k}
    assert set(floor.state_dict()) == kept and len(kept) < len(teacher.state_dict())
    assert all(isinstance(layer.attention, speed.NoMixer) for layer in floor.wav2vec2.encoder.layers)
    optimizer = torch.optim.AdamW([p for p in floor.parameters() if p.requires_grad], lr=1e-3)
    batch = speed.make_batch(2, 1.0, "cpu")
    feed_forward = floor.wav2vec2.encoder.layers[0].feed_forward.output_dense.weight
    before = feed_forward.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") on a CPU-only machine
        speed.train_step(floor.train(), optimizer, batch)
    assert not torch.equal(before, feed_forward)
    with pytest.raises(ValueError, match="unknown model 'students'"):
        speed.build("students", "cpu", preset="tiny")


def test_every_bench_model_is_built_as_its_name_says():
    from models.mamba_utils import BiMamba2Wrapper

    shape = dict(headdim=16, d_state=16, chunk_size=16)
    for name in speed.MODELS:
        model = speed.build(name, "cpu", preset="tiny", **shape)
        wrappers = [m for m in model.modules() if isinstance(m, BiMamba2Wrapper)]
        assert len(wrappers) == (2 if name.startswith("student") else 0), name
        assert all(w.fused == (name != "student_separate") for w in wrappers), name
        assert all(w.recompute == (name == "student_recompute") for w in wrappers), name
        scan_graph_frames = 0 if name == "student_eager_scan" else 16384
        assert all(k.scan_graph_frames == scan_graph_frames
                   for w in wrappers for k in (w.kernels, w.fw_mamba.kernels, w.bw_mamba.kernels)), name
        mixer_graph_frames = 0 if name in ("student_eager_mixer", "student_eager_scan") else 16384
        assert all(w.kernels.mixer_graph_frames == mixer_graph_frames for w in wrappers), name
        assert model.wav2vec2.encoder.gradient_checkpointing == name.endswith("encoder_recompute"), name
        assert not model.wav2vec2.feature_extractor._requires_grad, name  # frozen, as in training


def test_eager_mixers_leave_no_graphs_inside_a_whole_model_capture():
    """cuda_graph execution: every mixer launches its kernels as the capture records them, in warm-up too."""
    from models.mamba_utils import BiMamba2Wrapper

    model = speed.build("student", "cpu", preset="tiny", headdim=16, d_state=16, chunk_size=16)
    speed.eager_mixers(model)
    kernels = [m.kernels for m in model.modules() if isinstance(m, BiMamba2Wrapper)]
    assert kernels and all(k.mixer_graph_frames == k.scan_graph_frames == 0 for k in kernels)


def test_shapes_and_frames_as_the_bench_reads_them():
    assert speed.parse_shape("train:16x10") == ("train", 16, 10.0)
    assert speed.parse_shape("infer:1x1800") == ("infer", 1, 1800.0)
    with torch.device("meta"):  # no weights needed: the front end's geometry comes from the config
        model = transformers.Wav2Vec2ForCTC(preset_config("large", vocab_size=32))
    for samples in (400, 401, 160000, 9600000):
        assert speed.output_frames(samples) == int(model._get_feat_extract_output_lengths(samples)), samples


def test_cpu_speed_measures_both_models_on_the_torch_backend():
    from models.mamba_utils import BiMamba2Wrapper

    shape = dict(headdim=16, d_state=16, chunk_size=16)
    student = cpu_speed.build("student", "tiny", **shape)
    wrappers = [m for m in student.modules() if isinstance(m, BiMamba2Wrapper)]
    assert len(wrappers) == 2 and all(w.fused and w.kernels.backend == "torch" for w in wrappers)
    assert not any(isinstance(m, BiMamba2Wrapper) for m in cpu_speed.build("teacher", "tiny").modules())
    row = cpu_speed.measure("student", 0.5, repeats=1, preset="tiny", **shape)
    assert row["model"] == "student" and row["seconds"] == 0.5 and 0 < row["cnn_ms"] and 0 < row["ms"]


def test_graph_safe_attention_captures_sdpa_without_a_mask(monkeypatch):
    """While a CUDA graph is captured, transformers (5.17) builds the full mask of an unpadded batch, and SDPA loses
    its flash kernel; the bench's cuda_graph teacher calls SDPA with no mask and computes the same logits. The
    capture is simulated on CPU: transformers asks torch.cuda whether a stream is capturing."""
    import transformers.utils.import_utils as import_utils

    torch.manual_seed(0)
    config = preset_config("tiny", vocab_size=32)
    config._attn_implementation = "sdpa"
    model = transformers.Wav2Vec2ForCTC(config).eval()
    x = torch.randn(2, 16000)
    with torch.no_grad():
        eager = speed.ctc_logits(model, x)

    masks, sdpa = [], torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *args, **kwargs: masks.append(kwargs.get("attn_mask")) or sdpa(*args, **kwargs))
    monkeypatch.setattr(import_utils, "is_cuda_stream_capturing", lambda: True)
    speed.graph_safe_attention(model)
    assert model.config._attn_implementation == speed.UNMASKED_SDPA
    with torch.no_grad():
        captured = speed.ctc_logits(model, x)
    assert len(masks) == config.num_hidden_layers and all(mask is None for mask in masks)
    torch.testing.assert_close(captured, eager)


def test_profile_step_prints_the_table_of_a_training_step_on_cpu():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # autocast("cuda") on a CPU-only machine
        table = profile_step.main(["--device", "cpu", "--preset", "demo", "--batch", "2", "--seconds", "0.5",
                                   "--rows", "5"])
    assert "Self CPU" in table and "aten::mm" in table  # the projections, by the time spent in them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = profile_step.main(["--device", "cpu", "--preset", "demo", "--batch", "2", "--seconds", "0.5",
                                   "--rows", "5", "--by_shape"])
    assert "Input Shapes" in table


def test_code_version_names_the_commit_and_is_none_outside_a_checkout(tmp_path):
    """Every bench row records the commit it measured (bench/results/*.jsonl); a copy without .git records None
    unless bench/speed.py is given --code."""
    import re
    import subprocess

    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=speed.REPO, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=speed.REPO, capture_output=True, text=True).stdout
    version = speed.code_version()
    assert re.fullmatch(r"[0-9a-f]{7,}\+?", version) and head.startswith(version.rstrip("+"))
    assert speed.code_version(tmp_path) is None


@pytest.mark.parametrize("argv", [["--padding", "1.5"], ["--padding", "0.3", "--execution", "cuda_graph"]])
def test_padding_that_cannot_be_measured_is_refused(monkeypatch, capsys, argv):
    monkeypatch.setattr("sys.argv", ["speed.py", *argv])
    with pytest.raises(SystemExit) as stop:
        speed.main()
    assert stop.value.code == 2 and "--padding" in capsys.readouterr().err


def result_row(model, ms, mode="train", batch=16, seconds=10.0, code="new", teacher_ms=None, **fields):
    """A row as bench/speed.py writes it; ``teacher_ms``: the same-process teacher's time its ratios come from."""
    ratio = None if teacher_ms is None else teacher_ms / ms
    return {"model": model, "mode": mode, "batch": batch, "seconds": seconds, "ms": ms, "peak_gib": fields.pop(
        "peak_gib", 10.0), "execution": "eager", "teacher_mode": "eager", "chunk_size": 256, "scan_graph_frames": 16384,
        "mixer_graph_frames": 16384, "padding": 0.0, "gpu": "GPU X", "versions": {"torch": "9.9", "mamba_ssm": "1.0"},
        "code": code, "date": "2026-12-05", "vs_teacher": ratio, "vs_teacher_same": ratio, **fields}


def test_speed_table_shows_each_shapes_latest_student_beside_its_own_teacher(tmp_path, capsys):
    rows = [
        result_row("teacher", 100.0, code="old", vs_teacher=1.0, vs_teacher_same=1.0),
        result_row("student", 200.0, code="old", teacher_ms=100.0),
        result_row("teacher", 80.0, vs_teacher=1.0, vs_teacher_same=1.0),
        result_row("teacher", 1000.0, mode="train", batch=1, seconds=600.0, peak_gib=40.0),
        result_row("student", 100.0, teacher_ms=80.0),  # the latest at train 16x10 s
        result_row("student", 250.0, batch=1, seconds=600.0, teacher_ms=1000.0, peak_gib=20.0),
        result_row("student", 50.0, teacher_ms=80.0, padding=0.3),  # not at the defaults
        result_row("student", 60.0, teacher_ms=80.0, chunk_size=128),
        result_row("student", 40.0, teacher_ms=95.0),  # its teacher ran in another process: no such row here
    ]
    path = tmp_path / "GPU_X.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    table.main([str(path)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "GPU X; torch 9.9, mamba_ssm 1.0; ms (peak GiB)"
    assert lines[4] == ("| train 16×10 s | 80.0 (10.0) | 100.0 (10.0) | 0.80x | – | ≥ 1.0x: not met "
                        "| new (2026-12-05) |")  # no FLOP counts in these rows: no FLOP limit
    assert lines[5] == ("| train 1×600 s | 1000 (40.0) | 250.0 (20.0) | 4.00x | – | ≥ 4.0x: **met**; ≤ 0.7x the "
                        "memory: **met** | new (2026-12-05) |")
    assert len(lines) == 6  # the versions, a blank line, the table's two heading lines, one line for each shape
    table.main([str(path), "--code", "old"])
    assert "| 100.0 (10.0) | 200.0 (10.0) | 0.50x |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no cuda_graph row of model 'student'"):
        table.main([str(path), "--execution", "cuda_graph"])
    path.write_text(json.dumps(rows[0]) + "\nnot json\n")
    with pytest.raises(ValueError, match="GPU_X.jsonl:2: not a JSON row"):
        table.main([str(path)])


@pytest.mark.parametrize("execution,document", [("eager", "README.md"), ("cuda_graph", "bench/NOTES.md")])
def test_the_speed_tables_are_the_ones_the_committed_results_make(execution, document, capsys):
    """README's Speed table (and NOTES.md's CUDA-graph one) hold bench/table.py's output for the committed H200
    rows: rerun it after adding rows."""
    table.main(["--execution", execution])
    made = capsys.readouterr().out.strip()
    text = (Path(table.__file__).parents[1] / document).read_text()
    assert made in text, f"{document} is stale: paste in what `python bench/table.py --execution {execution}` prints"


def test_flops_are_counted_with_every_mixer_kernel_launched_eagerly():
    """A CUDA-graph replay dispatches no operator for FlopCounterMode to count: count_flops turns the mixers'
    graphs off while it counts, and back on after."""
    from models.mamba_utils import BiMamba2Wrapper

    model = speed.build("student", "cpu", preset="tiny", headdim=16, d_state=16, chunk_size=16)
    kernels = [(m, m.kernels) for m in model.modules() if hasattr(m, "kernels")]
    assert len(kernels) == 6 and all(k.scan_graph_frames == 16384 for _, k in kernels)  # 2 wrappers, 4 Mamba2
    seen = []

    def run():
        seen.extend((k.scan_graph_frames, k.mixer_graph_frames) for m in model.modules()
                    if isinstance(m, BiMamba2Wrapper) for k in (m.kernels, m.fw_mamba.kernels))
        with torch.no_grad():
            speed.ctc_logits(model.eval(), torch.randn(1, 16000))

    flops = speed.count_flops(run, model)
    assert seen and set(seen) == {(0, 0)} and flops > 0
    assert all(m.kernels is k for m, k in kernels)  # restored
    with pytest.raises(RuntimeError, match="inside"):
        with speed.kernels_launched_eagerly(model):
            raise RuntimeError("inside")
    assert all(m.kernels is k for m, k in kernels)


def test_the_flop_limit_column_sets_each_ratio_against_the_flops(tmp_path, capsys):
    """The column: the speed ratio over the teacher's FLOPs / the model's; none for a row whose student FLOPs may
    have missed its mixers' CUDA-graph replays (inference on at most mixer_graph_frames, counted before
    ``flops_eager``)."""
    rows = [
        result_row("teacher", 80.0, tflops=20.0, vs_teacher=1.0, vs_teacher_same=1.0),
        result_row("student", 100.0, teacher_ms=80.0, tflops=16.0),  # 0.80x of a 1.25x limit: 0.64
        result_row("teacher", 20.0, mode="infer", tflops=6.0, vs_teacher=1.0, vs_teacher_same=1.0),
        result_row("student", 25.0, mode="infer", teacher_ms=20.0, tflops=4.0),  # 16 x 512 frames: graphs
        result_row("teacher", 2000.0, mode="infer", batch=1, seconds=1800.0, tflops=860.0, vs_teacher=1.0,
                   vs_teacher_same=1.0),
        result_row("student", 250.0, mode="infer", batch=1, seconds=1800.0, teacher_ms=2000.0, tflops=80.0),
    ]
    path = tmp_path / "GPU_X.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    table.main([str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert "| of FLOP limit |" in lines[2]
    assert "| 0.80x | 0.64 of 1.25x |" in lines[4]
    assert "| 0.80x | – |" in lines[5]  # infer 16x10 s: its count may have missed the graph replays
    assert "| 8.00x | 0.74 of 10.75x |" in lines[6]  # 90000 frames: more than the mixer graphs take
    assert table.counted_eagerly({**rows[3], "flops_eager": True})
    assert not table.counted_eagerly({**rows[3], "model": "student_recompute", "mode": "train"})
    assert table.counted_eagerly({**rows[3], "mixer_graph_frames": 0})
