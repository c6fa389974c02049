"""How long the host takes to issue one fused BiMamba2 layer and each of its parts, against the GPU's time for them.

Usage (GPU):  python bench/launch_overhead.py [--cprofile]

An eager step is launch-bound when the host needs longer to enqueue its kernels than the GPU to run them: then
the GPU idles between kernels and a CUDA graph (bench/speed.py --execution cuda_graph) removes the gap. For each
part at the large model's mixer size (d_model 1024, both directions: 32 heads of 64, d_state 128, 2560 conv
channels), bf16, forward + backward, this prints the mean host time per call (perf_counter around 30 calls, no
synchronisation inside) and the mean wall time per call (CUDA events around the same 30, waiting for the GPU).
When the two agree the part is launch-bound. Shapes: 1 x 64 frames (GPU work negligible: host time alone) and
16 x 500 (16 x 10 s of audio). As the models run by default, the layer's forward + backward launches the mixer's
kernels and replays its SSD scan from graphs (models/kernels/scan_graphs.py), and its forward without a gradient replays
the whole mixer (``graphed_bimamba2_fused``); "layer, recompute graph" replays the whole mixer in training too
(mamba_recompute=True: its backward graph recomputes the forward), "eager mixer" launches the mixer's kernels
without a gradient too, "layer, eager scan" launches mamba_ssm's scan eagerly as well, as "SSD scan fwd+bwd"
does alone, and "scan graphed" is the replayed scan alone. ``--cprofile`` adds Python's profile of 20 layer
calls (where the host time goes).
"""
import argparse
import copy
import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.kernels.backend import mixer_kernels  # noqa: E402
from models.kernels.conv_triton import causal_conv_silu_triton  # noqa: E402
from models.mamba_utils import BiMamba2Wrapper  # noqa: E402

D_MODEL, HEADS, HEADDIM, D_STATE, CONV_CHANNELS = 1024, 32, 64, 128, 2560
SHAPES = ((1, 64), (16, 500))


def host_and_wall_ms(fn, repeats: int = 30, warmup: int = 5) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    host = (time.perf_counter() - began) / repeats * 1e3
    end.record()
    end.synchronize()
    return host, start.elapsed_time(end) / repeats


def parts(layer: BiMamba2Wrapper, batch: int, frames: int) -> dict:
    """name -> a no-argument forward + backward (or forward) of that part on fixed random inputs."""
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    from models.kernels.gated_norm_triton import bidirectional_gated_rms_norm
    from models.kernels.scan_graphs import graphed_chunk_scan

    cuda = torch.device("cuda")

    def leaf(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, device=cuda, dtype=dtype, requires_grad=True)

    hidden = leaf(batch, frames, D_MODEL, dtype=torch.float32)
    x, dt = leaf(batch, frames, HEADS, HEADDIM), leaf(batch, frames, HEADS)
    B, C = leaf(batch, frames, 2, D_STATE), leaf(batch, frames, 2, D_STATE)
    A = -torch.rand(HEADS, device=cuda) - 0.5
    D, dt_bias = leaf(HEADS, dtype=torch.float32), leaf(HEADS, dtype=torch.float32)
    conv_in = leaf(batch, frames, CONV_CHANNELS)
    conv_weight, conv_bias = leaf(CONV_CHANNELS, 1, 4, dtype=torch.float32), leaf(CONV_CHANNELS, dtype=torch.float32)
    y, z = leaf(batch, frames, 2 * D_MODEL), leaf(batch, frames, 2 * D_MODEL)
    norm_weight = leaf(2 * D_MODEL, dtype=torch.float32)
    in_weight = leaf(2 * layer.fw_mamba.in_proj.out_features, D_MODEL, dtype=torch.float32)  # both directions'
    autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731

    def layer_train(mixer=layer):
        with autocast():
            out, _ = mixer(hidden)
        out.sum().backward()

    def layer_infer(mixer=layer):
        with torch.no_grad(), autocast():
            mixer(hidden)

    def in_proj_train():
        with autocast():
            out = F.linear(hidden, in_weight)
        out.sum().backward()

    def norm_reversed_first_train():  # the mixer's norm before models/kernels/gated_norm_triton.py
        y_input_time = torch.cat([y[..., :D_MODEL], y[..., D_MODEL:].flip(1)], dim=-1)
        rmsnorm_fn(y_input_time, norm_weight, None, z=z, eps=1e-5, group_size=D_MODEL,
                   norm_before_gate=False).sum().backward()

    recompute_layer = copy.deepcopy(layer)
    recompute_layer.recompute = True
    eager_mixer_layer = copy.deepcopy(layer)  # the scan replays its graphs, the rest of the mixer is launched
    eager_mixer_layer.kernels = mixer_kernels("triton", "cuda", layer.kernels.scan_graph_frames, 0)
    eager_scan_layer = copy.deepcopy(eager_mixer_layer)
    eager_scan_layer.kernels = eager_mixer_layer.kernels.without_graphs()

    def scan_train(scan):
        scan(x, dt, A, B, C, 256, D=D, dt_bias=dt_bias, dt_softplus=True).sum().backward()

    return {
        "layer fwd+bwd": layer_train,
        "layer, recompute graph": lambda: layer_train(recompute_layer),
        "layer, eager scan": lambda: layer_train(eager_scan_layer),
        "layer fwd, no grad": layer_infer,
        "layer fwd, eager mixer": lambda: layer_infer(eager_mixer_layer),
        "SSD scan fwd+bwd": lambda: scan_train(mamba_chunk_scan_combined),
        "scan graphed fwd+bwd": lambda: scan_train(graphed_chunk_scan),
        "conv fwd+bwd": lambda: causal_conv_silu_triton(conv_in, conv_weight, conv_bias).sum().backward(),
        "gated norm fwd+bwd": lambda: bidirectional_gated_rms_norm(y, z, norm_weight, 1e-5, None).sum().backward(),
        "norm, y flipped first": norm_reversed_first_train,  # mamba_ssm's norm after a flip of the backward half
        "in_proj GEMM fwd+bwd": in_proj_train,
        "one add (floor)": lambda: y.detach() + 1,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cprofile", action="store_true", help="also profile 20 layer calls with cProfile")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/launch_overhead.py needs a CUDA GPU")
    layer = BiMamba2Wrapper(D_MODEL, d_state=D_STATE, headdim=HEADDIM, chunk_size=256, backend="triton").cuda()
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    print(f"{'shape':>9}  {'part':22s} {'host ms':>8} {'wall ms':>8}")
    for batch, frames in SHAPES:
        for name, fn in parts(layer, batch, frames).items():
            host, wall = host_and_wall_ms(fn)
            print(f"{batch:>3} x {frames:<3}  {name:22s} {host:8.3f} {wall:8.3f}", flush=True)
    if args.cprofile:
        layer_train = parts(layer, *SHAPES[0])["layer fwd+bwd"]
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(20):
            layer_train()
        torch.cuda.synchronize()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
