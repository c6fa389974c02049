"""Teacher (attention) vs converted student (BiMamba2) speed and memory at wav2vec2-large size, on one GPU.

Usage (on a GPU machine; bench/NOTES.md, "How to measure"):
    python bench/speed.py                      # every shape; table on stdout, bench/results/<gpu>.jsonl
    python bench/speed.py --shapes train:16x10 infer:1x3600 --models teacher student
    python bench/speed.py --execution eager cuda_graph     # also both models replayed as CUDA graphs
    python bench/speed.py --code <commit>      # a copy of the tree without .git: name the commit it holds
    python bench/speed.py --models student --chunk_size 128   # the students' SSD chunk length (default 256)
    python bench/speed.py --models student student_eager_mixer student_eager_scan   # which parts replay CUDA graphs
    python bench/speed.py --models student --mixer_graph_frames 40000   # graphs for larger mixers too (default 16384)
    python bench/speed.py --models teacher no_mixer   # the shared cost: the most a new mixer can gain
    python bench/speed.py --padding 0.3        # padded batches (the longest item full, the last 30% shorter)

Random weights from the large preset's config (no download). bf16 autocast, CNN front end frozen as in training,
channels-last as build_asr_model makes it (``teacher_hf_front_end``: the teacher with Hugging Face's own).
A training step is forward + CTC loss + backward + AdamW step; inference is a no-grad forward with the front end
run in 5-minute pieces (as infer.py does). Batches are unpadded unless ``--padding`` (field ``padding``): then
every model gets the attention mask a padded training batch brings (SDPA then without its flash kernel; the
students their padding-aware reversal). Each measurement is the median of timed repeats after warm-up (CUDA
events), peak memory from torch.cuda.max_memory_allocated. MFU counts the FLOPs torch's FlopCounterMode sees:
matmuls, convolutions and attention, on an eager pass of the same step (``count_flops``: every mixer kernel launched
eagerly, as a CUDA-graph replay dispatches no operator to count; rows say so with ``flops_eager``); it does not
see inside the Mamba2 Triton scan, so the student's MFU is a lower bound.

Execution (``--execution``, field ``execution``): ``eager`` runs the modules as users run them; ``cuda_graph``
replays the same work as CUDA graphs (no launch overhead): inference captured whole, training with the model's
forward and backward graphed by torch.cuda.make_graphed_callables and the CTC loss and AdamW step eager around
them. Graph capture needs a static program, so the cuda_graph models run without SpecAugment (mask_time_prob=0,
its mask is drawn on the host), and the teacher's SDPA gets no attention mask, as eagerly on these unpadded
batches (``graph_safe_attention``); both models get the same treatment. ``teacher_mode`` says which teacher a row
belongs with: ``eager`` (the teacher as users run it) or ``same`` (the teacher under the student's treatment).
``vs_teacher`` is the speed-up over the eager teacher at that shape, ``vs_teacher_same`` over the teacher with
the row's own execution. ``ctc_ms`` (training rows): the CTC loss alone, forward + backward on random logits of the
batch's size, timed once per shape (models/kernels/ctc_triton.py's kernels, as models.heads runs them on a GPU): CTC
steps through time one frame after the other, so on long utterances this part of every model's step is large.
"""
import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from models.build import (CNN_CHUNK_FRAMES, attention_implementation, chunked_feature_encoder,  # noqa: E402
                          enable_encoder_recompute, feature_encoder_geometry, use_channels_last_feature_encoder)
from models.heads import ctc_loss_per_utterance  # noqa: E402
from models.mamba_utils import (BiMamba2Wrapper, release_mixer_graphs, replace_attention,  # noqa: E402
                                substitute_layer)
from models.presets import preset_config  # noqa: E402
from models.kernels.scan_graphs import release_scan_graphs  # noqa: E402

SR = 16000
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}
DEFAULT_SHAPES = ["train:16x10", "train:8x20", "train:4x60", "train:1x600",
                  "infer:16x10", "infer:8x20", "infer:4x60", "infer:1x600", "infer:1x1800", "infer:1x3600"]
# SDPA without transformers' attention-mask preparation, for unpadded batches only (the cuda_graph path's). While
# a CUDA graph is captured, transformers (5.17 at least) takes itself to be tracing and builds the full
# (batch, 1, frames, frames) mask of an all-valid batch: SDPA then loses its flash kernel, and the captured teacher
# runs slower than eager and needs memory quadratic in the length. A registered implementation gets no mask at all.
UNMASKED_SDPA = "sdpa_unmasked"
AttentionInterface.register(UNMASKED_SDPA, sdpa_attention_forward)


MODELS = {
    "teacher": "the attention model (SDPA, or flash-attn 2 when installed)",
    "teacher_hf_front_end": "the teacher with Hugging Face's CNN front end (transposes around each LayerNorm), "
                            "not this repository's channels-last one",
    "student": "BiMamba2, both directions fused; without gradients the mixer replays CUDA graphs up to 16384 frames "
               "(mamba_mixer_graph_frames), in training its SSD scan does (mamba_scan_graph_frames)",
    "student_eager_mixer": "the student with the mixer's kernels launched eagerly, inference too, but its SSD scan "
                           "replayed as CUDA graphs up to 16384 frames (mamba_mixer_graph_frames=0)",
    "student_eager_scan": "the student with every mixer kernel launched eagerly, mamba_ssm's scan too "
                          "(mamba_mixer_graph_frames=0, mamba_scan_graph_frames=0)",
    "student_separate": "BiMamba2, two Mamba2 calls (the reference path)",
    "student_recompute": "fused BiMamba2 recomputed in backward (mamba_recompute=True): in training too the mixer "
                         "replays CUDA graphs up to 16384 frames, its backward graph recomputing the forward",
    "student_encoder_recompute": "fused BiMamba2, whole encoder layers recomputed in backward "
                                 "(encoder_recompute=True)",
    "teacher_encoder_recompute": "the teacher with encoder_recompute=True",
    "no_mixer": "every attention replaced by zeros: the cost of all the two models share; teacher / no_mixer is "
                "the most any replacement of attention can speed a step up",
}


class NoMixer(torch.nn.Module):
    """A sequence mixer that costs one kernel: zeros. Its layer still runs the residual, norms and feed-forward
    (the norm in front of it is left without a gradient, one small kernel fewer in backward)."""

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        return torch.zeros_like(hidden_states), None


def build(model_name: str, device, spec_augment: bool = True, preset: str = "large", **mixer) -> torch.nn.Module:
    """A model of ``MODELS`` at a preset's size, random weights; mixer: substitute_layer's shape and backend for
    the students (its defaults, the hparams' defaults, when not given)."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model '{model_name}': expected one of {', '.join(MODELS)}")
    config = preset_config(preset, vocab_size=32, mask_time_prob=0.05 if spec_augment else 0.0, layerdrop=0.0)
    config._attn_implementation = attention_implementation(True)
    model = transformers.Wav2Vec2ForCTC(config)
    if model_name != "teacher_hf_front_end":
        use_channels_last_feature_encoder(model)  # as build_asr_model: every model of this repository
    model.freeze_feature_encoder()
    if model_name.endswith("encoder_recompute"):
        enable_encoder_recompute(model)
    if model_name == "no_mixer":
        replace_attention(model.wav2vec2.encoder, lambda attention: NoMixer())
    elif model_name.startswith("student"):
        if model_name in ("student_eager_mixer", "student_eager_scan"):
            mixer = {**mixer, "mixer_graph_frames": 0}
        if model_name == "student_eager_scan":
            mixer = {**mixer, "scan_graph_frames": 0}
        substitute_layer(model.wav2vec2.encoder, config, fused=model_name != "student_separate",
                         recompute=model_name == "student_recompute", **mixer)
    return model.to(device)


@dataclasses.dataclass
class Batch:
    x: torch.Tensor  # (batch, samples) random audio, zero past each item's length
    labels: torch.Tensor  # (batch, max labels) random CTC labels, ~12 characters a second
    label_lengths: torch.Tensor  # (batch,)
    attention_mask: torch.Tensor | None  # (batch, samples) 1 on valid samples; None: unpadded


def make_batch(batch: int, seconds: float, device, padding: float = 0.0) -> Batch:
    """A random batch of ``batch`` items of up to ``seconds``. padding 0: every item full length, no mask; else
    the items shrink linearly from full length (the first) to (1 - padding) of it (the last), padded at the end
    behind an attention mask, as dynamic batching leaves a training batch (a batch of one is never padded)."""
    samples, max_labels = int(seconds * SR), int(seconds * 12)
    shrink = torch.linspace(0, padding, batch) if batch > 1 else torch.zeros(1)  # (batch,)
    lengths = ((1 - shrink) * samples).long().to(device)  # (batch,)
    valid = torch.arange(samples, device=device)[None, :] < lengths[:, None]  # (batch, samples)
    x = torch.randn(batch, samples, device=device) * valid
    labels = torch.randint(1, 32, (batch, max_labels), device=device)
    label_lengths = (lengths * max_labels) // samples
    return Batch(x, labels, label_lengths, valid.long() if padding > 0 else None)


def ctc_logits(model, x, attention_mask=None) -> torch.Tensor:
    """input_values (batch, samples) (and their attention mask when padded) -> CTC logits (batch, frames, vocab).

    An unpadded batch gets no attention mask: Hugging Face drops an all-ones mask before SDPA by looking at it on
    the host, which a CUDA graph capture cannot do (it would keep the mask and lose SDPA's flash kernel)."""
    return model.lm_head(model.dropout(model.wav2vec2(x, attention_mask=attention_mask).last_hidden_state))


class Logits(torch.nn.Module):
    """``ctc_logits`` as a module: what torch.cuda.make_graphed_callables takes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return ctc_logits(self.model, x)


def ctc_loss_sum(logits, batch: Batch, frame_lengths) -> torch.Tensor:
    """The summed CTC loss of ``batch``'s labels on logits (batch, frames, vocab) valid up to frame_lengths."""
    losses, _ = ctc_loss_per_utterance(logits, frame_lengths, batch.labels, batch.label_lengths, blank=0)
    return losses.sum()


def frame_lengths(model, batch: Batch, frames: int) -> torch.Tensor:
    """(batch,) valid frames of each item's logits."""
    if batch.attention_mask is None:
        return torch.full((len(batch.x),), frames, device=batch.x.device)
    return model._get_feat_extract_output_lengths(batch.attention_mask.sum(-1))


def train_step(model, optimizer, batch: Batch):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = ctc_logits(model, batch.x, batch.attention_mask)
    ctc_loss_sum(logits, batch, frame_lengths(model, batch, logits.shape[1])).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def infer_step(model, batch: Batch):
    with torch.autocast("cuda", dtype=torch.bfloat16), chunked_feature_encoder(model, CNN_CHUNK_FRAMES):
        ctc_logits(model, batch.x, batch.attention_mask)


def graph_safe_attention(model) -> None:
    """Let ``model``'s SDPA attention be captured as it runs eagerly on an unpadded batch: with no mask."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(UNMASKED_SDPA)


def eager_mixers(model) -> None:
    """Launch every BiMamba2 mixer's kernels eagerly, without CUDA graphs of their own: inside a whole-model capture
    they run so anyway, and the capture's warm-up must compile and autotune the very kernels the capture launches
    (a kernel compiled during a capture invalidates it)."""
    for module in model.modules():
        if isinstance(module, BiMamba2Wrapper):
            module.kernels = module.kernels.without_graphs()


def graphed_train_step(model, optimizer, batch: Batch):
    """A training step whose forward and backward replay CUDA graphs captured for this very (unpadded) input."""
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)  # noqa: E731
    with autocast():  # a graphed callable needs autocast's weight cache off, at capture and replay alike
        logits_of = torch.cuda.make_graphed_callables(Logits(model), (batch.x,), allow_unused_input=True)

    def run():
        with autocast():
            logits = logits_of(batch.x)
        ctc_loss_sum(logits, batch, frame_lengths(model, batch, logits.shape[1])).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def graphed(run):
    """``run`` (fixed inputs, no host synchronisation) captured once as a CUDA graph: returns its replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph: Triton autotuning, cuBLAS workspaces
        for _ in range(3):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


@contextlib.contextmanager
def kernels_launched_eagerly(model):
    """``model``'s BiMamba2 mixers with every kernel launched eagerly (no CUDA-graph replay) inside the block."""
    from models.kernels.backend import MixerKernels

    modules = [m for m in model.modules() if isinstance(getattr(m, "kernels", None), MixerKernels)]
    kept = [m.kernels for m in modules]
    for module in modules:
        module.kernels = module.kernels.without_graphs()
    try:
        yield
    finally:
        for module, kernels in zip(modules, kept):
            module.kernels = kernels


def count_flops(run, model) -> float:
    """The FLOPs FlopCounterMode sees in one ``run()`` of ``model``, on an eager pass: a CUDA-graph replay
    dispatches no operator, so the mixers' graphs are off while it counts."""
    from torch.utils.flop_counter import FlopCounterMode

    with kernels_launched_eagerly(model), FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def measure(run, min_seconds: float = 2.0, max_repeats: int = 10) -> tuple[float, float]:
    """(median ms, peak GiB) of ``run`` after two warm-up calls."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        run()
    times = []
    spent = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 3 or time.perf_counter() - spent < min_seconds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


def measure_model(model_name: str, shapes: list[str], device, env: dict, peak: float | None,
                  execution: str = "eager", padding: float = 0.0, **mixer) -> list[dict]:
    """One JSON row per shape ("mode:BATCHxSECONDS") for one model; an out-of-memory shape gets None values.
    padding: ``make_batch``'s; mixer: the students' substitute_layer shape (``build``)."""
    torch.manual_seed(0)
    model = build(model_name, device, spec_augment=execution == "eager", **mixer)
    wrapper = next((m for m in model.modules() if isinstance(m, BiMamba2Wrapper)), None)  # None: no BiMamba2
    if execution == "cuda_graph":
        graph_safe_attention(model)
        eager_mixers(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    rows = []
    for shape in shapes:
        mode, batch, seconds = parse_shape(shape)
        inputs = make_batch(batch, seconds, device, padding)
        model.train(mode == "train")
        if mode == "train":
            eager_run = lambda: train_step(model, optimizer, inputs)  # noqa: E731
        else:
            eager_run = lambda: infer_step(model, inputs)  # noqa: E731
        run = None
        try:
            if execution == "eager":
                run = eager_run
            elif mode == "train":
                run = graphed_train_step(model, optimizer, inputs)
            else:
                run = graphed(eager_run)
            ms, peak_gib = measure(run)
            flops = count_flops(eager_run, model)  # the same work, eagerly: FlopCounterMode sees no graph replay
        except torch.OutOfMemoryError:
            print(f"{model_name} {execution} {shape}: out of GPU memory (a row of None)", file=sys.stderr, flush=True)
            ms = peak_gib = flops = None
        del run
        torch.cuda.empty_cache()
        row = {"model": model_name, "mode": mode, "batch": batch, "seconds": seconds, "ms": ms,
               "audio_s_per_s": batch * seconds / (ms / 1000) if ms else None, "peak_gib": peak_gib,
               "tflops": flops / 1e12 if flops else None, "mfu": flops / (ms / 1000) / peak if ms and peak else None,
               "flops_eager": True,
               "execution": execution, "teacher_mode": "eager" if execution == "eager" else "same",
               "chunk_size": None if wrapper is None else wrapper.fw_mamba.chunk_size,
               "scan_graph_frames": None if wrapper is None else wrapper.kernels.scan_graph_frames,
               "mixer_graph_frames": (None if wrapper is None or not wrapper.fused
                                      else wrapper.kernels.mixer_graph_frames),
               "padding": padding,
               "gpu": env["gpu"], "versions": env["versions"], "code": env["code"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def output_frames(samples: int, preset: str = "large") -> int:
    """Frames the CNN front end of a preset makes of ``samples``."""
    field, stride = feature_encoder_geometry(preset_config(preset))
    return (samples - field) // stride + 1


def measure_ctc(batch: int, seconds: float, device, preset: str = "large") -> float:
    """ms of the CTC loss alone, forward + backward, on random bf16 logits of a training batch's size: a part of
    every model's training step that does not depend on the model."""
    frames = output_frames(int(seconds * SR), preset)
    logits = torch.randn(batch, frames, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
    inputs, lengths = make_batch(batch, seconds, device), torch.full((batch,), frames, device=device)
    ms, _ = measure(lambda: ctc_loss_sum(logits, inputs, lengths).backward())
    return ms


def parse_shape(shape: str) -> tuple[str, int, float]:
    """"train:16x10" -> ("train", 16, 10.0): mode, batch, seconds of audio per item."""
    mode, size = shape.split(":")
    batch, seconds = size.split("x")
    return mode, int(batch), float(seconds)


def code_version(repo: Path = REPO) -> str | None:
    """The commit measured, '+' when the tree has uncommitted changes; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+" if dirty else "")


def environment(code: str | None) -> dict:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(), "cuda": torch.version.cuda}
    for name in ("mamba_ssm", "triton", "flash_attn", "causal_conv1d"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {"gpu": torch.cuda.get_device_name(), "versions": versions, "code": code}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="mode:BATCHxSECONDS")
    parser.add_argument("--models", nargs="+", default=["teacher", "student"], choices=MODELS, metavar="MODEL",
                        help="; ".join(f"{name}: {what}" for name, what in MODELS.items()))
    parser.add_argument("--execution", nargs="+", choices=("eager", "cuda_graph"), default=["eager"],
                        help="eager modules, and/or the same work replayed as CUDA graphs (see above)")
    parser.add_argument("--chunk_size", type=int, default=None,
                        help="the students' SSD chunk length (mamba_chunk_size; default the hparams' 256); "
                             "recorded in each student row")
    parser.add_argument("--scan_graph_frames", type=int, default=None,
                        help="the students' mamba_scan_graph_frames: SSD scans of up to this many frames replay CUDA "
                             "graphs (default the hparams' 16384; 0: never); recorded in each student row")
    parser.add_argument("--mixer_graph_frames", type=int, default=None,
                        help="the students' mamba_mixer_graph_frames: fused mixers of up to this many frames replay "
                             "CUDA graphs (default the hparams' 16384; 0: never); recorded in each student row")
    parser.add_argument("--padding", type=float, default=0.0,
                        help="padded batches: items shrink linearly to (1 - PADDING) of the longest, behind an "
                             "attention mask (eager only; recorded as the rows' padding)")
    parser.add_argument("--out", default=None, help="JSON lines file (default bench/results/<gpu>.jsonl)")
    parser.add_argument("--code", default=None,
                        help="the commit measured, recorded in every row (default: git's HEAD, '+' for uncommitted "
                             "changes); give it where the tree is a copy without .git, as on the device machine")
    args = parser.parse_args()
    if not 0 <= args.padding < 1:
        parser.error(f"--padding {args.padding}: expected a fraction in [0, 1)")
    if args.padding and args.execution != ["eager"]:
        parser.error("--padding needs --execution eager: a CUDA graph replays one unpadded batch")
    if not torch.cuda.is_available():
        sys.exit("bench/speed.py needs a CUDA GPU")
    device = torch.device("cuda")
    env = environment(args.code or code_version())
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in env["gpu"]), None)
    out_path = Path(args.out or Path(__file__).parent / "results" / f"{env['gpu'].replace(' ', '_')}.jsonl")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    print(json.dumps(env), flush=True)

    mixer = {"chunk_size": args.chunk_size, "scan_graph_frames": args.scan_graph_frames,
             "mixer_graph_frames": args.mixer_graph_frames}
    mixer = {key: value for key, value in mixer.items() if value is not None}  # the rest: the hparams' defaults
    rows = []
    for execution in args.execution:
        for model_name in args.models:
            rows += measure_model(model_name, args.shapes, device, env, peak, execution, args.padding, **mixer)
            release_scan_graphs()  # the next model's peak memory without this one's graphs
            release_mixer_graphs()
            torch.cuda.empty_cache()  # the model and its optimiser went with measure_model's frame
    ctc_ms = {(batch, seconds): measure_ctc(batch, seconds, device)
              for mode, batch, seconds in map(parse_shape, args.shapes) if mode == "train"}

    teacher = {(r["execution"], r["mode"], r["batch"], r["seconds"]): r for r in rows if r["model"] == "teacher"}
    for row in rows:
        for key, execution in (("vs_teacher", "eager"), ("vs_teacher_same", row["execution"])):
            base = teacher.get((execution, row["mode"], row["batch"], row["seconds"]))
            row[key] = base["ms"] / row["ms"] if base and base["ms"] and row["ms"] else None
        row["ctc_ms"] = ctc_ms.get((row["batch"], row["seconds"])) if row["mode"] == "train" else None
    with open(out_path, "a") as f:
        for row in rows:
            f.write(json.dumps({**row, "date": time.strftime("%Y-%m-%d")}) + "\n")
    print(f"\n{env['gpu']}  ({', '.join(f'{k} {v}' for k, v in env['versions'].items() if v)})")
    print(f"{'model':25} {'execution':10} {'mode':6} {'shape':>9} {'ms':>9} {'audio s/s':>10} {'peak GiB':>9} "
          f"{'MFU':>6} {'vs eager':>9} {'vs same':>8} {'CTC ms':>7}")
    for r in rows:
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        print(f"{r['model']:25} {r['execution']:10} {r['mode']:6} {r['batch']:>3}x{r['seconds']:<5g} "
              f"{fmt(r['ms'], '9.1f')} {fmt(r['audio_s_per_s'], '10.0f')} {fmt(r['peak_gib'], '9.1f')} "
              f"{fmt(r['mfu'], '6.1%')} {fmt(r['vs_teacher'], '8.2f')}x {fmt(r['vs_teacher_same'], '7.2f')}x "
              f"{fmt(r['ctc_ms'], '7.1f')}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
