#!/bin/bash
# aifactory service default/example (recipe inference/llama-cpp)
set -uo pipefail

aifactory_publish() {
    # The job's comment is how the operator learns the stage and the port (readable over pure REST).
    local comment="aifactory uid=$AIFACTORY_SERVICE_UID stage=$1${2:+ port=$2}"
    scontrol update JobId="$SLURM_JOB_ID" Comment="$comment" \
        || echo "aifactory: could not publish stage $1 to Slurm" >&2
}

aifactory_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

echo "aifactory: job $SLURM_JOB_ID on $(hostname) for service $AIFACTORY_SERVICE_UID"

command -v apptainer >/dev/null || { echo "aifactory: apptainer is not on the PATH of $(hostname)" >&2; exit 127; }
AIFACTORY_SIF_CACHE="${AIFACTORY_SIF_CACHE:-${HOME:-$PWD}/.cache/aifactory/sif}"
AIFACTORY_MODEL_CACHE="${AIFACTORY_MODEL_CACHE:-${HOME:-$PWD}/.cache/aifactory/models}"
AIFACTORY_WORKSPACE="${AIFACTORY_WORKSPACE:-$PWD/workspaces/$AIFACTORY_SERVICE_UID}"
mkdir -p "$AIFACTORY_SIF_CACHE" "$AIFACTORY_MODEL_CACHE" "$AIFACTORY_WORKSPACE"

aifactory_image() {
    # $1 = SIF file, then the apptainer arguments that write $1 (pull or build). One job at a time per file
    # (flock); the others wait and reuse it. A failed pull leaves no partial file behind.
    local sif="$1"; shift
    [ -s "$sif" ] && return 0
    aifactory_publish building
    echo "aifactory: apptainer $* into $sif"
    (
        flock 9
        [ -s "$sif" ] && exit 0
        apptainer "$1" "$sif.partial.$SLURM_JOB_ID" "${@:2}" && mv -f "$sif.partial.$SLURM_JOB_ID" "$sif"
    ) 9>"$sif.lock"
    local status=$?
    rm -f "$sif.partial.$SLURM_JOB_ID"
    if [ "$status" -ne 0 ] || [ ! -s "$sif" ]; then
        echo "aifactory: could not pull the image (apptainer $1 exited with $status)" >&2
        exit 1
    fi
}

sif="$AIFACTORY_SIF_CACHE/6ca151b6b69ef97c584c54d45a920bbd6c4dbbca215d672d42ca425feeda3d90.sif"
aifactory_image "$sif" pull docker://ghcr.io/ggml-org/llama.cpp:server
AIFACTORY_PORT=$(aifactory_free_port)
export AIFACTORY_PORT
# The service's environment, handed to apptainer by name (APPTAINERENV_NAME); --no-eval keeps it literal.
for name in AIFACTORY_PORT LLAMA_CACHE LLAMA_CTX_SIZE LLAMA_HF_REPO; do
    if [ -n "${!name+set}" ]; then export "APPTAINERENV_$name=${!name}"; fi
done
# The GPUs Slurm gave the job, when it gave any (--cleanenv would keep them out).
for name in CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES GPU_DEVICE_ORDINAL; do
    if [ -n "${!name+set}" ]; then export "APPTAINERENV_$name=${!name}"; fi
done
aifactory_publish starting "$AIFACTORY_PORT"
echo "aifactory: starting inference/llama-cpp on port $AIFACTORY_PORT"
exec apptainer exec --cleanenv --no-eval \
    --bind "$AIFACTORY_MODEL_CACHE:/models" \
    --bind "$AIFACTORY_WORKSPACE:/workspace" \
    "$sif" \
    /app/llama-server -hf "$LLAMA_HF_REPO" --host "$AIFACTORY_BIND_ADDRESS" --port "$AIFACTORY_PORT" --ctx-size "$LLAMA_CTX_SIZE"
