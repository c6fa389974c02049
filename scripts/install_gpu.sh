#!/usr/bin/env bash
# Install the optional CUDA packages: mamba-ssm's Triton kernels (default), causal-conv1d and flash-attn.
#
# Usage: bash scripts/install_gpu.sh [--target DIR] [--from DIR] [--causal-conv1d] [--flash-attn] [--force]
#
#   --target DIR      pip --target DIR, for machines whose site-packages is read-only (put DIR on PYTHONPATH)
#   --from DIR        install from a local folder of wheels / sdists (pip --no-index --find-links DIR),
#                     e.g. the carry/ folder that scripts/fetch_gpu_wheels.sh fills
#   --causal-conv1d   also build causal-conv1d from source: a long CUDA compile (tens of minutes)
#   --flash-attn      also build flash-attn from source: a very long CUDA compile (an hour or more)
#   --force           reinstall mamba-ssm even where the right version is already installed
#
# mamba-ssm is built from its sdist without CUDA extensions (MAMBA_SKIP_CUDA_BUILD=TRUE, ~15 s) and with
# --no-deps: its Mamba2 kernels are Triton and need only torch, triton, einops, packaging, transformers.
# mamba-ssm 2.3.2.post1 still imports the CUDA extension `selective_scan_cuda` when `mamba_ssm` is imported
# (fixed upstream, not released), so an empty stub module is written next to it when that import fails.
# Environment: PYTHON (default python3).
set -euo pipefail

MAMBA_VERSION=2.3.2.post1
CAUSAL_CONV1D_VERSION=1.7.0
FLASH_ATTN_VERSION=2.8.3.post2
PYTHON=${PYTHON:-python3}

target=""
from=""
causal_conv1d=0
flash_attn=0
force=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --target) target=${2:?--target needs a directory}; shift 2 ;;
        --target=*) target=${1#*=}; shift ;;
        --from) from=${2:?--from needs a directory}; shift 2 ;;
        --from=*) from=${1#*=}; shift ;;
        --causal-conv1d) causal_conv1d=1; shift ;;
        --flash-attn) flash_attn=1; shift ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "install_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "install_gpu.sh: ERROR: $*" >&2; exit 1; }

pip_args=(-m pip install --no-build-isolation --no-deps --no-cache-dir)
if [[ -n $target ]]; then
    mkdir -p "$target"
    target=$(cd "$target" && pwd)
    pip_args+=(--target "$target" --upgrade)
    export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ -n $from ]]; then
    [[ -d $from ]] || die "--from $from is not a directory"
    ls "$from"/mamba_ssm-"$MAMBA_VERSION".tar.gz >/dev/null 2>&1 \
        || die "$from has no mamba_ssm-$MAMBA_VERSION.tar.gz (run scripts/fetch_gpu_wheels.sh where PyPI is reachable)"
    pip_args+=(--no-index --find-links "$from")
fi

"$PYTHON" -c "import torch" 2>/dev/null || die "'$PYTHON' cannot import torch: install a CUDA build of torch first"

# 1. mamba-ssm (Triton kernels only), unless this version is already there
installed=$("$PYTHON" -c "
import importlib.metadata as m
try: print(m.version('mamba-ssm'))
except m.PackageNotFoundError: print('')")
if [[ $force == 1 || $installed != "$MAMBA_VERSION" ]]; then
    echo "install_gpu.sh: building mamba-ssm==$MAMBA_VERSION (Triton kernels only)${target:+ into $target}"
    MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE "$PYTHON" "${pip_args[@]}" "mamba-ssm==$MAMBA_VERSION" \
        || die "pip could not install mamba-ssm==$MAMBA_VERSION"
else
    echo "install_gpu.sh: mamba-ssm==$MAMBA_VERSION already installed"
fi

# 2. the selective_scan_cuda stub, in the site-packages that holds mamba_ssm
if ! "$PYTHON" -c "import selective_scan_cuda" 2>/dev/null; then
    site=$("$PYTHON" -c "
import importlib.util, pathlib
spec = importlib.util.find_spec('mamba_ssm')  # does not run mamba_ssm/__init__.py
print(pathlib.Path(spec.origin).parent.parent if spec and spec.origin else '')")
    [[ -n $site ]] || die "mamba_ssm is not importable after the install"
    cat > "$site/selective_scan_cuda.py" <<'EOF'
"""Stub written by scripts/install_gpu.sh.

mamba-ssm 2.3.2.post1 imports this CUDA extension when `mamba_ssm` is imported, even when it was built with
MAMBA_SKIP_CUDA_BUILD=TRUE (fixed upstream, not yet released). Mamba-1's selective_scan_fn needs the real
extension; Mamba2's Triton kernels (mamba_chunk_scan_combined) do not.
"""


def __getattr__(name):
    raise AttributeError(f"selective_scan_cuda.{name}: this is a stub; mamba-ssm was built without its CUDA "
                         "extensions (scripts/install_gpu.sh), so Mamba-1's selective scan is unavailable")
EOF
    echo "install_gpu.sh: wrote stub $site/selective_scan_cuda.py"
fi

# 3. optional CUDA builds: each compiles for a long time
if [[ $causal_conv1d == 1 ]]; then
    echo "install_gpu.sh: building causal-conv1d==$CAUSAL_CONV1D_VERSION from source (a long CUDA compile)"
    CAUSAL_CONV1D_FORCE_BUILD=TRUE "$PYTHON" "${pip_args[@]}" "causal-conv1d==$CAUSAL_CONV1D_VERSION" \
        || die "pip could not build causal-conv1d==$CAUSAL_CONV1D_VERSION"
fi
if [[ $flash_attn == 1 ]]; then
    # only this machine's GPU architecture (e.g. 90 for H100 / H200): a quarter of the default compile
    archs=${FLASH_ATTN_CUDA_ARCHS:-$("$PYTHON" -c "
import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}{minor}')" 2>/dev/null || echo "80;90")}
    echo "install_gpu.sh: building flash-attn==$FLASH_ATTN_VERSION from source for sm_$archs (a very long CUDA" \
         "compile; MAX_JOBS=${MAX_JOBS:-4} limits its memory use)"
    FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTN_CUDA_ARCHS=$archs MAX_JOBS=${MAX_JOBS:-4} \
        "$PYTHON" "${pip_args[@]}" "flash-attn==$FLASH_ATTN_VERSION" \
        || die "pip could not build flash-attn==$FLASH_ATTN_VERSION"
fi

# 4. check, and say what is installed
"$PYTHON" -c "import mamba_ssm; from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined" \
    || die "mamba_ssm is installed but its Triton SSD kernel does not import (see the traceback above)"
"$PYTHON" - <<'EOF'
import importlib
import importlib.metadata as md

import torch

print(f"install_gpu.sh: torch {torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()})")
for dist, module in [("triton", "triton"), ("mamba-ssm", "mamba_ssm"), ("causal-conv1d", "causal_conv1d"),
                     ("flash-attn", "flash_attn"), ("einops", "einops")]:
    try:
        where = importlib.import_module(module).__file__
        print(f"install_gpu.sh:   {dist:14s} {md.version(dist):14s} {where}")
    except Exception as e:  # noqa: BLE001
        print(f"install_gpu.sh:   {dist:14s} {'-':14s} not importable ({type(e).__name__})")
ss = importlib.import_module("selective_scan_cuda")
print(f"install_gpu.sh:   selective_scan_cuda {'stub' if 'Stub' in (ss.__doc__ or '') else 'CUDA extension'}"
      f"  {ss.__file__}")
EOF
