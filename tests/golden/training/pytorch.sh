#!/bin/bash
# aifactory service default/example (recipe training/pytorch)
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

AIFACTORY_PORT=$(aifactory_free_port)
export AIFACTORY_PORT
aifactory_publish starting "$AIFACTORY_PORT"
echo "aifactory: starting training/pytorch on port $AIFACTORY_PORT"
exec python3 -m aifactory.trainer
