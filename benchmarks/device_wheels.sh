#!/usr/bin/env bash
# Download here (where PyPI is reachable) the small wheels the service needs on the GPU machine, which has
# PyTorch, numpy, Pillow, onnxruntime (CPU), prometheus-client, httpx and uvloop but no FastAPI stack and no
# registry. Versions are the lock's (requirements/constraints.txt); no torch. The machine's python3 is 3.12.
#
#   bash benchmarks/device_wheels.sh [DIR]     # default build/device-wheels; prints the total size
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build/device-wheels}
python=${PYTHON:-/work/main/.venv/bin/python}
packages=(fastapi fastapi_offline starlette pydantic pydantic_core pydantic-settings python-dotenv python-multipart
          annotated-types annotated-doc typing-inspection uvicorn httptools)
pins=()
for name in "${packages[@]}"; do
  pin=$(grep -iE "^${name//[-_]/[-_]}==" requirements/constraints.txt) || { echo "no pin for $name" >&2; exit 1; }
  pins+=("$pin")
done
rm -rf "$dir" && mkdir -p "$dir"
platforms=()
for n in 17 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" \
  --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d "$dir" "${pins[@]}"
total=$(du -cb "$dir"/*.whl | tail -1 | cut -f1)
echo "$(ls "$dir"/*.whl | wc -l) wheels, $((total / 1024)) KiB in $dir"
if (( total > 48 * 1024 * 1024 )); then echo "too large to carry beside the repository (64 MiB in all)" >&2; exit 1; fi
