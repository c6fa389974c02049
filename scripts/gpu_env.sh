# Set up the Python packages on a GPU machine that has no PyPI. Source it at the start of every command there:
#
#     source scripts/gpu_env.sh && python -m pytest -m gpu tests/
#
# It installs carry/*.whl (filled by scripts/fetch_gpu_wheels.sh where PyPI is reachable) and mamba-ssm's
# Triton kernels (scripts/install_gpu.sh --from carry) into $GPU_SITE (default /tmp/site), then puts that
# folder first on PYTHONPATH and its bin/ on PATH. The first call on a fresh machine takes ~30 s; later calls
# find a stamp of carry/'s contents in $GPU_SITE and only set the paths. Triton's cache goes to carry/triton_cache
# (TRITON_CACHE_DIR, with the autotuner's choices: TRITON_CACHE_AUTOTUNING=1) unless set: carried to a fresh
# machine, it spares mamba_ssm's kernels their first compile and autotuning there.
#
# On any failure it prints "gpu_env.sh: FAILED: ..." and returns non-zero, so `&&` stops the command.
# Environment: PYTHON (default python3), GPU_SITE (default /tmp/site), GPU_CARRY (default <repo>/carry).

_gpu_env_main() {
    local repo carry site py stamp
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    carry=${GPU_CARRY:-$repo/carry}
    site=${GPU_SITE:-/tmp/site}
    py=${PYTHON:-python3}

    if ! compgen -G "$carry/*.whl" >/dev/null || ! compgen -G "$carry/mamba_ssm-*.tar.gz" >/dev/null; then
        echo "gpu_env.sh: FAILED: no wheels or no mamba_ssm sdist in $carry; run scripts/fetch_gpu_wheels.sh" \
             "where PyPI is reachable, and carry 'carry' to this machine" >&2
        return 1
    fi
    command -v "$py" >/dev/null || { echo "gpu_env.sh: FAILED: no '$py' on PATH" >&2; return 1; }
    mkdir -p "$site" || { echo "gpu_env.sh: FAILED: cannot create $site" >&2; return 1; }

    export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$carry/triton_cache} TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-1}
    case ":${PYTHONPATH:-}:" in *":$site:"*) ;; *) export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" ;; esac
    case ":$PATH:" in *":$site/bin:"*) ;; *) export PATH="$site/bin:$PATH" ;; esac

    # what is carried (names and sizes) and how it is installed: a change in either redoes the install
    stamp=$( (cd "$carry" && stat -c '%n %s' -- *.whl *.tar.gz; "$py" --version; cat "$repo/scripts/install_gpu.sh") \
             | sha256sum | cut -c1-16)
    if [[ -f $site/.gpu_env_stamp && $(cat "$site/.gpu_env_stamp") == "$stamp" ]]; then
        echo "gpu_env.sh: $site is up to date (PYTHONPATH set)"
        return 0
    fi
    rm -f "$site/.gpu_env_stamp"

    echo "gpu_env.sh: installing $(compgen -G "$carry/*.whl" | wc -l) carried wheels into $site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$carry"/*.whl \
        || { echo "gpu_env.sh: FAILED: pip could not install the carried wheels into $site" >&2; return 1; }
    PYTHON=$py bash "$repo/scripts/install_gpu.sh" --from "$carry" --target "$site" \
        || { echo "gpu_env.sh: FAILED: scripts/install_gpu.sh (mamba-ssm) failed" >&2; return 1; }

    # requirements of what was installed that this machine does not meet (warnings), then imports (fatal)
    "$py" - "$site" <<'PY' || { echo "gpu_env.sh: FAILED: a carried package does not import (above)" >&2; return 1; }
import importlib, importlib.metadata as md, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# mamba-ssm is installed --no-deps on purpose: these serve Mamba-3 / the CUDA build, not Mamba2's Triton path
NOT_NEEDED = {"mamba-ssm": {"tilelang", "apache-tvm-ffi", "quack-kernels", "ninja", "setuptools"}}
for dist in md.distributions(path=[sys.argv[1]]):
    skip = NOT_NEEDED.get(canonicalize_name(dist.metadata["Name"]), set())
    for req in map(Requirement, dist.requires or []):
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if canonicalize_name(req.name) in skip:
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            print(f"gpu_env.sh: WARNING: {dist.metadata['Name']} needs {req}, which is not installed")
            continue
        if not req.specifier.contains(have, prereleases=True):
            print(f"gpu_env.sh: WARNING: {dist.metadata['Name']} needs {req}, this machine has {have}")
failed = []
for module in ("wandb", "datasets", "jiwer", "soundfile", "soxr", "espeakng_loader", "unidecode", "inflect",
               "einops", "mamba_ssm"):
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001
        failed.append(module)
        print(f"gpu_env.sh: import {module} failed: {type(e).__name__}: {e}", file=sys.stderr)
sys.exit(1 if failed else 0)
PY
    echo "$stamp" >"$site/.gpu_env_stamp"
    echo "gpu_env.sh: ready ($site first on PYTHONPATH)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    echo "gpu_env.sh: FAILED: source this file (source scripts/gpu_env.sh), do not run it" >&2
    exit 1
fi
_gpu_env_main
_gpu_env_rc=$?
unset -f _gpu_env_main
return $_gpu_env_rc
