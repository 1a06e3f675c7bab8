#!/usr/bin/env bash
# Fill bench/device/wheels/ with the wheels of bench/device/wheels.txt, for a GPU machine that has
# no network: CPython 3.12 manylinux x86_64 builds (or pure-Python wheels), no dependencies (every
# one needed is its own line). Run it here, where pip reaches the package index; the run that
# calls check.sh carries the folder (it is ignored by git). Replaces what the folder held, so it
# never has two versions of one package.
#
#   bash bench/device/fetch_wheels.sh            # then: bash bench/device/check.sh on the GPU
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="$here/wheels"
python="${PYTHON:-python3}"
limit_mib=32  # the whole working tree that travels to the GPU machine must stay under 64 MiB

mapfile -t specs < <(grep -v '^\s*#' "$here/wheels.txt" | awk 'NF { print $1 }')
if ((${#specs[@]} == 0)); then
    echo "no wheels named in $here/wheels.txt" >&2
    exit 1
fi

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any \
    --dest "$staging" "${specs[@]}"

count="$(find "$staging" -name '*.whl' | wc -l)"
if ((count != ${#specs[@]})); then
    echo "expected ${#specs[@]} wheels, pip saved $count:" >&2
    ls "$staging" >&2
    exit 1
fi
size_kib="$(du -sk "$staging" | awk '{ print $1 }')"
if ((size_kib > limit_mib * 1024)); then
    echo "the wheels take $((size_kib / 1024)) MiB, over the $limit_mib MiB this folder may use" >&2
    exit 1
fi

rm -rf "$target"
mkdir -p "$target"
mv "$staging"/*.whl "$target"/
ls -l "$target"
echo "$count wheels, $((size_kib)) KiB in $target"
