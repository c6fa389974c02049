"""Compile this repository's Triton kernels for a GPU architecture on any machine, GPU or not (Triton's front end
and the ptxas it ships need none): every kernel of models/kernels/conv_triton.py with every compile-time switch,
and the CTC kernels of models/kernels/ctc_triton.py at their smallest and largest block of states, as one program
per utterance and as several (the number of blocks given at launch: Triton specialises an integer argument of 1),
with the warps they launch with, models/kernels/norm_gelu_triton.py's, and models/kernels/gated_norm_triton.py's
with and without an index. As a launch
of the large model specialises them: pointers 16-byte aligned, the conv's and the gate's channel stride 1
(channels-last activations), their channels and frame strides multiples of 16. Each line gives the registers a
thread and the stack (spills) of the compiled kernel, read with the cuobjdump Triton ships: on sm_90 a
multiprocessor's 65536 registers hold 65536 / (registers x 32 x warps) programs, so a memory-bound kernel past ~128
registers a thread runs few.

    python -m bench.kernel_compile            # sm_90 (H100 / H200); one line per kernel, exit status 1 on a failure
    python -m bench.kernel_compile --arch 80

tests/test_kernels_conv.py runs it in a subprocess: Triton's interpreter, which tests/conftest.py turns on without CUDA,
runs kernels as Python and so accepts programs the compiler refuses.
"""
import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from models.kernels import conv_triton, ctc_triton, gated_norm_triton, norm_gelu_triton

ACTIVATION, PARAMETER, FP32 = "*bf16", "*fp32", "*fp32"  # the mixer's: bf16 activations, fp32 weights
POINTER_TYPES = {"x_ptr": ACTIVATION, "out_ptr": ACTIVATION, "dout_ptr": ACTIVATION, "dx_ptr": ACTIVATION,
                 "w_ptr": PARAMETER, "b_ptr": PARAMETER, "g_ptr": ACTIVATION, "dw_rows_ptr": FP32, "db_rows_ptr": FP32,
                 "rev_ptr": "*i8", "index_ptr": "*i64",
                 # CTC: fp32 log-probs and buffers, int64 targets and lengths (as models.heads passes them)
                 "log_probs_ptr": FP32, "alpha_ptr": FP32, "gamma_ptr": FP32, "grad_out_ptr": FP32,
                 "grad_ptr": FP32, "beta_edges_ptr": FP32, "alpha_offsets_ptr": "*fp64", "beta_offsets_ptr": "*fp64",
                 "nll_ptr": "*fp64", "targets_ptr": "*i64", "input_lengths_ptr": "*i64", "target_lengths_ptr": "*i64",
                 "ticket_ptr": "*i32", "progress_ptr": "*i32"}
# integers a launch of the large model passes as multiples of 16 (the mixer's 2560 conv channels, its norm's 1024 a
# group, in_proj's 4640 columns), which Triton marks so at launch as it does a 16-byte aligned pointer
DIVISIBLE_BY_16 = {"channels", "stride_xt", "stride_xb", "d", "stride_zt", "stride_zb"}
KERNELS = (conv_triton._conv_silu_fwd, conv_triton._conv_silu_bwd_g, conv_triton._conv_bwd_dx)
SWITCHES = ({"REVERSE": False, "HAS_INDEX": False, "MIXED_TILES": False},
            *({"REVERSE": True, "HAS_INDEX": has_index, "MIXED_TILES": mixed} for has_index in (False, True)
              for mixed in (True, False)))
CTC_STATE_BLOCKS = ((32, 1), (ctc_triton.STATES_PER_PROGRAM, 1), (ctc_triton.STATES_PER_PROGRAM, None))  # lanes,
#                                                                     blocks (None: any number, a runtime int32)


def compile_kernel(kernel, constexprs: dict, arch: int, num_warps: int = 4, types: dict | None = None):
    """``kernel`` compiled for sm_<arch>: pointers as POINTER_TYPES, other arguments int32, both but where ``types``
    says otherwise; ``constexprs`` fixed (a pointer given as None is one the switches leave unused, as the launches
    pass it)."""
    names = kernel.arg_names
    types = {**POINTER_TYPES, **(types or {})}
    signature = {name: "constexpr" if name in constexprs else types.get(name, "i32") for name in names}
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(names)  # as a launch marks them
               if signature[name].startswith("*") or (name in DIVISIBLE_BY_16 and signature[name] == "i32")}
    source = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constexprs.items()},
                       attrs=aligned)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def resource_usage(compiled) -> str:
    """", N registers, S bytes of stack" of a compiled kernel, by the cuobjdump Triton ships ("" without it)."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not cuobjdump.exists():
        return ""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        report = subprocess.run([str(cuobjdump), "--dump-resource-usage", cubin.name], capture_output=True,
                                text=True).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+)", report)
    return f", {usage[1]} registers, {usage[2]} bytes of stack" if usage else ""


def conv_jobs():
    """(name, kernel, constexprs, num_warps, types) of every conv kernel under every switch."""
    for kernel in KERNELS:
        for switches in SWITCHES:
            constexprs = {"WIDTH": 4, "BLOCK_T": conv_triton.BLOCK_T, "BLOCK_C": conv_triton.BLOCK_C,
                          "stride_xc": 1, **switches}
            if not switches["REVERSE"]:
                constexprs["rev_ptr"] = None
            if not switches["HAS_INDEX"]:
                constexprs["index_ptr"] = None
            name = f"{kernel.fn.__name__} {' '.join(f'{k}={v}' for k, v in switches.items())}"
            constexprs = {k: v for k, v in constexprs.items() if k in kernel.arg_names}
            yield name, kernel, constexprs, conv_triton.NUM_WARPS, None


def ctc_jobs():
    """(name, kernel, constexprs, num_warps, types) of the CTC kernels as ctc_triton launches them on a GPU."""
    for block, num_blocks in CTC_STATE_BLOCKS:
        for kernel in (ctc_triton._ctc_alpha, ctc_triton._ctc_beta_occupancy):
            constexprs = {"BLOCK_S": block, "RENORMALISE_EVERY": ctc_triton.RENORMALISE_EVERY,
                          "PUBLISH_EVERY": ctc_triton.PUBLISH_EVERY, "FAST_LOG2": True}
            if num_blocks is not None:
                constexprs["num_blocks"] = num_blocks
            name = f"{kernel.fn.__name__} BLOCK_S={block} blocks={num_blocks or 'several'}"
            yield name, kernel, constexprs, ctc_triton.num_warps_for(block), None
    classes = ctc_triton.grad_block_classes(32)
    yield (f"_ctc_grad BLOCK_V={classes}", ctc_triton._ctc_grad,
           {"BLOCK_T": ctc_triton.GRAD_BLOCK_T, "BLOCK_K": ctc_triton.GRAD_BLOCK_K, "BLOCK_V": classes}, 4, None)


def norm_gelu_jobs():
    """(name, kernel, constexprs, num_warps, types) of the front end's LayerNorm + GELU at its 512 channels, bf16
    in (the conv's output under autocast), fp32 out."""
    types = {"x_ptr": ACTIVATION, "out_ptr": FP32, "eps": "fp32"}
    constexprs = {"BLOCK_R": norm_gelu_triton.ROWS_PER_PROGRAM, "BLOCK_C": 512}
    yield "_layer_norm_gelu BLOCK_C=512", norm_gelu_triton._layer_norm_gelu, constexprs, 4, types


def gated_norm_jobs():
    """(name, kernel, constexprs, num_warps, types) of the mixer's gated norm as the large model launches it: d 1024
    channels a direction, bf16 y, z (in_proj's output, channel stride 1) and gradients, fp32 weight and dweight
    rows, with and without the padded reversal's index."""
    types = {"y_ptr": ACTIVATION, "z_ptr": ACTIVATION, "dy_ptr": ACTIVATION, "dz_ptr": ACTIVATION, "eps": "fp32"}
    for kernel in (gated_norm_triton._gated_norm_fwd, gated_norm_triton._gated_norm_bwd):
        for has_index in (False, True):
            constexprs = {"HAS_INDEX": has_index, "STEPS": gated_norm_triton.BACKWARD_STEPS,
                          "BLOCK_R": gated_norm_triton.ROWS_PER_PROGRAM, "BLOCK_D": 1024, "stride_zc": 1}
            if not has_index:
                constexprs["index_ptr"] = None
            constexprs = {k: v for k, v in constexprs.items() if k in kernel.arg_names}
            yield (f"{kernel.fn.__name__} HAS_INDEX={has_index} BLOCK_D=1024", kernel, constexprs,
                   gated_norm_triton.NUM_WARPS, types)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 90 for sm_90")
    args = parser.parse_args(argv)
    failed = 0
    for name, kernel, constexprs, num_warps, types in (*conv_jobs(), *ctc_jobs(), *norm_gelu_jobs(),
                                                    *gated_norm_jobs()):
        try:
            compiled = compile_kernel(kernel, constexprs, args.arch, num_warps, types)
            print(f"{name}: ok{resource_usage(compiled)}")
        except Exception as error:  # noqa: BLE001  (report every kernel, then fail)
            failed += 1
            print(f"{name}: FAILED: {type(error).__name__}: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
