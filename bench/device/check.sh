#!/usr/bin/env bash
# Every GPU measurement of contrastkit in one command, in under 9 minutes on one H100/H200:
# SimCLR ResNet-18-CIFAR epoch time (ours eager and compiled, the same-work torchvision baseline,
# a lightly-style loop), ISD MyResNet, augmentation views/s, losses at N = 4096 against lightly,
# backbones eager and compiled, peak memory of each and MFU. Writes results.json and results.md
# into $OUT, or --out DIR.
#
#   bash bench/device/check.sh                               # on the GPU machine ($OUT set)
#   bash bench/device/check.sh --out DIR --data-dir ../shared/data/cifar10
#   bash bench/device/check.sh --dry-run --out /tmp/check    # CPU, tiny sizes, under 2 minutes
#
# Options: --dry-run, --out DIR, --data-dir DIR (CIFAR-10; default: synthetic uint8 images of
# CIFAR's shape, timing does not depend on the pixels), --peak-tflops X (the GPU's dense bf16
# peak, when bench/device/environment.py's table does not know it), --threads N (torch threads,
# default all cores). PYTHON picks the interpreter (default python3).
#
# First it installs, offline and only what fails to import: the wheels of wheels.txt from
# bench/device/wheels/ (filled by fetch_wheels.sh where the index is reachable, carried along),
# then contrastkit's four packages from this checkout with pip --no-deps. Then bench/device/run.py
# measures; if that process dies or outlives the time left, the part it was in is recorded as
# failed and the rest are measured by a new process.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
out="${OUT:-}"
dry_run=0
measure_args=()
command_line="bash bench/device/check.sh $*"

while (($# > 0)); do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) out="${2:?--out needs a folder}"; shift ;;
        --data-dir) measure_args+=(--data-dir "${2:?--data-dir needs a folder}"); shift ;;
        --peak-tflops) measure_args+=(--peak-tflops "${2:?--peak-tflops needs a number}"); shift ;;
        --threads) measure_args+=(--threads "${2:?--threads needs a number}"); shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$out" ]]; then
    echo "check.sh: no output folder: set OUT or pass --out DIR" >&2
    exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$repo"

# The whole command must end within 9 minutes on the GPU (2 in the dry run); run.py gets what is
# left after the installs, less a margin for writing the report.
if ((dry_run)); then
    limit=300  # a safety net for slow CI machines; the dry run itself takes about a minute
    # A CPU has no bf16 peak in the table: 1 TFLOP/s lets the dry run compute (and the tests check)
    # MFU's arithmetic; the report says where the number came from.
    measure_args=(--dry-run --peak-tflops 1 "${measure_args[@]}")
else
    limit=540
fi

echo "== machine"
command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$python" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__,
    '| CUDA', torch.version.cuda, '| GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"

echo "== installing what does not import"
# install_wheels WHAT SPEC...: pip-install wheels of wheels.txt from bench/device/wheels, offline.
install_wheels() {
    local what="$1"
    shift
    if (($# == 0)); then
        echo "wheels.txt ($what): everything imports; installed nothing"
    elif compgen -G "$here/wheels/*.whl" >/dev/null; then
        echo "installing from $here/wheels: $*"
        "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --no-index --no-deps --find-links "$here/wheels" "$@" ||
            echo "warning: installing $* failed; what needs them will fail" >&2
    else
        echo "warning: $* do not import and $here/wheels holds no wheels" \
            "(run bench/device/fetch_wheels.sh where pip reaches the index)" >&2
    fi
}
mapfile -t wheels < <("$python" "$here/missing.py" run)
install_wheels run "${wheels[@]}"
mapfile -t packages < <("$python" "$here/missing.py" contrastkit)
if ((${#packages[@]} == 0)); then
    echo "contrastkit: every package imports; installed nothing"
else
    mapfile -t wheels < <("$python" "$here/missing.py" build)
    install_wheels build "${wheels[@]}"
    folders=("${packages[@]/#/./packages/}")
    echo "installing from this checkout without dependencies: ${folders[*]}"
    if ! "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        --no-index --no-deps --no-build-isolation "${folders[@]}"; then
        # Without hatchling pip cannot build them; the sources import just as well from src/.
        echo "warning: pip could not install them; using their src/ folders on PYTHONPATH" >&2
        for name in "${packages[@]}"; do
            PYTHONPATH="$repo/packages/$name/src${PYTHONPATH:+:$PYTHONPATH}"
        done
        export PYTHONPATH
    fi
fi

echo "== measuring into $out"
status=1
resume=()
for _attempt in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do
    left=$((limit - SECONDS - 10))
    if ((left < 5)); then break; fi
    timeout --kill-after=5 "$left" "$python" -u "$here/run.py" --out "$out" \
        --budget-s "$((left - 5))" --command "$command_line" "${measure_args[@]}" "${resume[@]}"
    status=$?
    # 0: done; 2: bad arguments; 3: it failed before measuring anything (see its output).
    if ((status == 0 || status == 2 || status == 3)) || [[ ! -f "$out/results.json" ]]; then
        break
    fi
    echo "run.py ended with status $status; measuring the parts not yet done in a new process" >&2
    resume=(--resume "$status")
done
if ((status != 0)) && [[ -f "$out/results.json" ]]; then
    "$python" "$here/run.py" --out "$out" --finalize "$status"
fi
echo "== done in ${SECONDS} s: $out/results.json, $out/results.md"
[[ -f "$out/results.json" && -f "$out/results.md" ]]
