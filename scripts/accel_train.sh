#!/usr/bin/env bash
# Train ensemble members (ml.accel_train) on a GPU machine whose Python has JAX or PyTorch but no Keras.
#
#   scripts/accel_train.sh PACK OUT [ml.accel_train options...]
#
# Wheels in .whl/ are installed to /tmp/site first. For a machine with Python 3.12 and no network, fetch them
# beforehand (keras's other needs, numpy, h5py, rich, ml-dtypes, absl-py, were already there):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
# Keras runs on JAX when JAX sees a GPU, else on PyTorch; if the JAX run fails, the PyTorch one is tried.
set -uo pipefail
pack=$1 out=$2
shift 2
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi -L || true
backend=$(python3 -c "import jax; print('jax' if jax.devices()[0].platform == 'gpu' else 'torch')" 2>/dev/null || echo torch)
echo "keras backend: $backend"
KERAS_BACKEND=$backend python3 -m ml.accel_train --pack "$pack" --out "$out" "$@" && exit 0
if [ "$backend" = jax ]; then
    echo "the JAX run failed; trying PyTorch"
    KERAS_BACKEND=torch python3 -m ml.accel_train --pack "$pack" --out "$out" "$@"
fi
