#!/usr/bin/env bash
# Fill carry/ (git-ignored) with what a GPU machine without PyPI needs: the mamba-ssm sdist and CPython 3.12
# manylinux x86_64 wheels of the pure-Python / small packages below. scripts/gpu_env.sh installs them there.
#
# Usage: bash scripts/fetch_gpu_wheels.sh [--dest DIR] [--optional]
#
#   --dest DIR    where to put them (default carry/ in the repository root)
#   --optional    also fetch the causal-conv1d and flash-attn sdists (for install_gpu.sh --from ... --causal-conv1d)
#
# Each package is pinned to the version installed in .venv (PYTHON, default .venv/bin/python) where it is
# installed there, else to the newest on PyPI. Files already present are kept; another version of the same
# package is removed, so the folder holds one version of each. Rerunning is cheap.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
dest=carry
optional=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dest) dest=${2:?--dest needs a directory}; shift 2 ;;
        --optional) optional=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "fetch_gpu_wheels.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
die() { echo "fetch_gpu_wheels.sh: ERROR: $*" >&2; exit 1; }
[[ -x $PYTHON ]] || die "$PYTHON not found (set PYTHON to a python with pip)"
mkdir -p "$dest"

MAMBA_VERSION=2.3.2.post1
CAUSAL_CONV1D_VERSION=1.7.0
FLASH_ATTN_VERSION=2.8.3.post2

# name or name==version (an explicit pin wins over the .venv's version)
PACKAGES=(
    datasets dill multiprocess soundfile cffi pycparser jiwer rapidfuzz espeakng-loader
    wandb sentry-sdk gitpython gitdb smmap pydantic pydantic-core annotated-types typing-inspection
    platformdirs distro sniffio importlib-metadata googleapis-common-protos
    opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions
    opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-common
    opentelemetry-exporter-http-transport==0.66b2 opentelemetry-exporter-otlp-common==0.66b2 cwevals==0.0.1b1
    unidecode inflect more-itertools typeguard soxr
    # not in the original list, added because something above requires them:
    jaraco.functools  # inflect
    zipp lazy-importer  # importlib-metadata (newest)
    typing-extensions  # pydantic 2.14 needs >= 4.16; shadowing an older one on the GPU image is harmless
    einops  # mamba_ssm imports it
)
BASE_PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
# tried only for a package with no wheel for the platforms above (its wheel then needs a newer glibc)
NEWER_PLATFORMS=(manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64)

# wheel / sdist file names use the normalised name: lower case, runs of -_. → _
norm() { echo "$1" | tr 'A-Z' 'a-z' | sed -E 's/[-_.]+/_/g'; }

# the files in $dest that belong to package $1 (any version)
files_of() {
    local want f stem
    want=$(norm "$1")
    for f in "$dest"/*.whl "$dest"/*.tar.gz; do
        [[ -e $f ]] || continue
        stem=$(basename "$f")
        [[ $(norm "${stem%%-*}") == "$want" ]] && echo "$f"
    done
    return 0
}

version_of() {  # the version to fetch: explicit pin, else .venv's, else PyPI's newest
    local name=$1 pin=$2 v
    if [[ -n $pin ]]; then echo "$pin"; return; fi
    v=$("$PYTHON" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    if [[ -z $v ]]; then
        v=$("$PYTHON" -m pip index versions "$name" 2>/dev/null | sed -n '1s/^[^(]*(\(.*\)).*/\1/p')
    fi
    [[ -n $v ]] || die "cannot find a version of $name (not in .venv, and pip index versions gave nothing)"
    echo "$v"
}

file_version() {  # name-VERSION-tags.whl, name-VERSION.tar.gz
    local stem
    stem=$(basename "$1")
    if [[ $stem == *.whl ]]; then
        stem=${stem#*-}; echo "${stem%%-*}"
    else
        stem=${stem%.tar.gz}; echo "${stem##*-}"
    fi
}

# keep only $1's files of version $2; 0 if one is already there
keep_version() {
    local name=$1 version=$2 f have=1
    while read -r f; do
        [[ -n $f ]] || continue
        if [[ $(file_version "$f") == "$version" ]]; then
            have=0
        else
            echo "fetch_gpu_wheels.sh: removing old $(basename "$f")"
            rm -f "$f"
        fi
    done < <(files_of "$name")
    return $have
}

pip_download_wheel() {  # name==version, platforms...
    local spec=$1; shift
    local plat_args=()
    for p in "$@"; do plat_args+=(--platform "$p"); done
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${plat_args[@]}" -d "$dest" "$spec"
}

# 1. mamba-ssm sdist (Triton-only build metadata; needs torch in $PYTHON because setup.py imports it)
if keep_version mamba-ssm "$MAMBA_VERSION"; then
    echo "fetch_gpu_wheels.sh: have mamba-ssm==$MAMBA_VERSION"
else
    MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE "$PYTHON" -m pip download -q --no-binary :all: --no-deps \
        --no-build-isolation "mamba-ssm==$MAMBA_VERSION" -d "$dest" || die "could not download mamba-ssm sdist"
fi
if [[ $optional == 1 ]]; then
    for spec in "causal-conv1d==$CAUSAL_CONV1D_VERSION" "flash-attn==$FLASH_ATTN_VERSION"; do
        if keep_version "${spec%%==*}" "${spec#*==}"; then echo "fetch_gpu_wheels.sh: have $spec"; continue; fi
        CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE "$PYTHON" -m pip download -q \
            --no-binary :all: --no-deps --no-build-isolation "$spec" -d "$dest" || die "could not download $spec sdist"
    done
fi

# 2. wheels for CPython 3.12 on manylinux x86_64
for entry in "${PACKAGES[@]}"; do
    name=${entry%%==*}
    pin=""
    [[ $entry == *==* ]] && pin=${entry#*==}
    version=$(version_of "$name" "$pin")
    if keep_version "$name" "$version"; then
        echo "fetch_gpu_wheels.sh: have $name==$version"
        continue
    fi
    echo "fetch_gpu_wheels.sh: fetching $name==$version"
    if ! pip_download_wheel "$name==$version" "${BASE_PLATFORMS[@]}" 2>/dev/null; then
        echo "fetch_gpu_wheels.sh: no wheel of $name==$version for ${BASE_PLATFORMS[0]} or older;" \
             "trying ${NEWER_PLATFORMS[*]} (needs a newer glibc on the GPU machine)"
        pip_download_wheel "$name==$version" "${NEWER_PLATFORMS[@]}" "${BASE_PLATFORMS[@]}" \
            || die "no CPython 3.12 manylinux x86_64 wheel of $name==$version"
    fi
done

# 3. report: requirements (for CPython 3.12 on Linux x86_64) that the carried wheels do not satisfy
"$PYTHON" - "$dest" <<'PY'
import email.parser, glob, sys, zipfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

env = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux", "os_name": "posix",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "extra": ""}
carried = {}
for path in glob.glob(f"{sys.argv[1]}/*.whl"):
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode())
    carried[canonicalize_name(msg["Name"])] = (msg["Version"], msg.get_all("Requires-Dist") or [])
outside, conflicts = {}, []
for name, (version, reqs) in sorted(carried.items()):
    for req in map(Requirement, reqs):
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        dep = canonicalize_name(req.name)
        if dep not in carried:
            outside.setdefault(dep, []).append(f"{name} {req.specifier or 'any'}")
        elif not req.specifier.contains(carried[dep][0], prereleases=True):
            conflicts.append(f"{name} needs {req}, carried {carried[dep][0]}")
for line in conflicts:
    print(f"fetch_gpu_wheels.sh: CONFLICT {line}")
print("fetch_gpu_wheels.sh: not carried, must be on the GPU machine (scripts/gpu_env.sh checks):")
for dep, why in sorted(outside.items()):
    print(f"fetch_gpu_wheels.sh:   {dep:18s} for {', '.join(why)}")
sys.exit(1 if conflicts else 0)
PY

echo "fetch_gpu_wheels.sh: $(ls "$dest" | wc -l) files, $(du -sh "$dest" | cut -f1) in $dest"
