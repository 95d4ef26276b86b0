#!/usr/bin/env bash
# The GPU measurement of issue 20, in one go (under 8 minutes on one H200 with 16 cores): installs the
# carried wheels (benchmarks/device_wheels.sh, run beforehand where PyPI is reachable), checks the host,
# then measures the PyTorch backend on a random-init ConvNeXt-base at 384 px (built from its config: no
# downloads): the model's own limit, and the service end to end from 800x1000 JPEG uploads at concurrency
# 1/16/64, with host decoding, with nvJPEG decoding when torchvision and CUDA are there, and with 4 front
# ends and one inference process (SHARED_INFERENCE). Results go to $OUT.
#
#   bash benchmarks/device_run.sh                       # on the GPU machine (build/device-wheels carried)
#   DEVICE_RUN_SMOKE=1 bash benchmarks/device_run.sh    # anywhere: a tiny model for seconds, to check the script
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-build/device-run}
mkdir -p "$out"
python=${PYTHON:-python3}
wheels=${DEVICE_WHEELS:-build/device-wheels}
log="$out/device_run.log"
exec > >(tee "$log") 2>&1

if compgen -G "$wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/device-site \
    "$wheels"/*.whl || { echo "error: installing the carried wheels failed"; exit 2; }
  export PYTHONPATH=/tmp/device-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$python" - <<'PY' || { echo "error: the host lacks what the service needs (above)"; exit 2; }
import importlib, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
for name in ("fastapi", "uvicorn", "pydantic_settings", "multipart", "PIL", "prometheus_client", "onnx",
             "onnxruntime", "transformers", "safetensors"):
    module = importlib.import_module(name)
    print(f"  {name} {getattr(module, '__version__', '')}")
try:
    import torchvision
    print(f"  torchvision {torchvision.__version__}")
except ImportError as error:
    print(f"  torchvision: not importable ({error})")
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc

# Host decoding in one process, then nvJPEG, then host decoding in 4 front ends feeding one inference
# process (SHARED_INFERENCE: the design for more uploads/s than one process decodes).
shared="torch+workers=4+shared_inference=true"
configs="torch,$shared"
if "$python" -c "import torch, torchvision; assert torch.cuda.is_available()" 2>/dev/null; then
  configs="torch,torch+gpu_decode,$shared"
fi
if [[ "${DEVICE_RUN_SMOKE:-0}" == 1 ]]; then
  args=(--backbone convnext-test --model-size 32 --concurrency 1,4 --batch-sizes 1,8 --max-batch-size 8
        --duration 1 --image-size 160x200)
  configs="${DEVICE_RUN_CONFIGS:-torch,onnxruntime}"
else
  args=(--backbone convnext-base --model-size 384 --concurrency 1,16,64 --batch-sizes 1,16,64
        --max-batch-size 64 --duration 8)
  configs="${DEVICE_RUN_CONFIGS:-$configs}"
fi
start=$(date +%s)
timeout "${DEVICE_RUN_TIMEOUT_S:-450}" "$python" benchmarks/bench_torch_backend.py "${args[@]}" \
  --configs "$configs" --out "$out/device_run.md"
status=$?
echo "device_run: exit $status after $(( $(date +%s) - start )) s; table in $out/device_run.md, log in $log"
exit $status
