"""Batch scripts for recipes: pure functions from a recipe to the text sbatch runs.

User and recipe values never pass through shell interpolation: the environment reaches the job as Slurm's JSON
`environment`, and each command argument is quoted as one word. Only the run-time port and bind address (and
`{env:NAME}` placeholders, as `"$NAME"`) are shell variables, and a variable's value is never parsed again.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable

from aifactory.models import ENV_NAME_PATTERN, ENV_PLACEHOLDER, Recipe, Runtime

PORT_VAR = "AIFACTORY_PORT"
BIND_VAR = "AIFACTORY_BIND_ADDRESS"
UID_VAR = "AIFACTORY_SERVICE_UID"
SIF_CACHE_VAR = "AIFACTORY_SIF_CACHE"
MODEL_CACHE_VAR = "AIFACTORY_MODEL_CACHE"
WORKSPACE_VAR = "AIFACTORY_WORKSPACE"

# Where the model cache and the workspace appear inside every container.
MODELS_MOUNT = "/models"
WORKSPACE_MOUNT = "/workspace"

CONTAINER_COMMANDS = ("apptainer", "singularity")
# Host-side settings that are not handed into the container: Apptainer refuses to override HOME, and the
# host's PATH (where apptainer is found) would hide the container's own programs.
NOT_FORWARDED = frozenset({"PATH", "HOME"})
# The devices Slurm gives a job, by the variables it sets; --cleanenv would keep them out of the container (and
# --nv adds nothing for them), so a service would see, and might take, every GPU of the node.
GPU_BINDING = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")

_FIXED = {"{port}": f'"${PORT_VAR}"', "{host}": f'"${BIND_VAR}"'}
_PLACEHOLDER = re.compile(r"\{port\}|\{host\}|" + ENV_PLACEHOLDER.pattern)


def shell_word(arg: str) -> str:
    """One argument as one shell word; {port}, {host} and {env:NAME} become quoted variable expansions."""
    pieces: list[str] = []
    last = 0
    for match in _PLACEHOLDER.finditer(arg):
        name = match.group(1)
        if name is not None and not re.fullmatch(ENV_NAME_PATTERN, name):
            continue  # not a placeholder: stays literal text
        if match.start() > last:
            pieces.append(shlex.quote(arg[last:match.start()]))
        pieces.append(_FIXED[match.group(0)] if name is None else f'"${name}"')
        last = match.end()
    if last < len(arg):
        pieces.append(shlex.quote(arg[last:]))
    return "".join(pieces) or "''"


def command_line(argv: list[str]) -> str:
    return " ".join(shell_word(a) for a in argv)


def image_cache_key(recipe: Recipe) -> str:
    """The SIF cache file name: the sha256 of the image reference (or of the build definition)."""
    source = recipe.image if recipe.image else f"build:{recipe.build}"
    return hashlib.sha256(source.encode()).hexdigest()


_PREAMBLE = f"""\
#!/bin/bash
# {{title}}
set -uo pipefail

aifactory_publish() {{
    # The job's comment is how the operator learns the stage and the port (readable over pure REST).
    local comment="aifactory uid=${UID_VAR} stage=$1${{2:+ port=$2}}"
    scontrol update JobId="$SLURM_JOB_ID" Comment="$comment" \\
        || echo "aifactory: could not publish stage $1 to Slurm" >&2
}}

aifactory_free_port() {{
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}}

echo "aifactory: job $SLURM_JOB_ID on $(hostname) for service ${UID_VAR}"
"""

_IMAGE_FUNCTIONS = """\
aifactory_image() {
    # $1 = SIF file, then the {cmd} arguments that write $1 (pull or build). One job at a time per file
    # (flock); the others wait and reuse it. A failed pull leaves no partial file behind.
    local sif="$1"; shift
    [ -s "$sif" ] && return 0
    aifactory_publish building
    echo "aifactory: {cmd} $* into $sif"
    (
        flock 9
        [ -s "$sif" ] && exit 0
        {cmd} "$1" "$sif.partial.$SLURM_JOB_ID" "${@:2}" && mv -f "$sif.partial.$SLURM_JOB_ID" "$sif"
    ) 9>"$sif.lock"
    local status=$?
    rm -f "$sif.partial.$SLURM_JOB_ID"
    if [ "$status" -ne 0 ] || [ ! -s "$sif" ]; then
        echo "aifactory: could not {verb} the image ({cmd} $1 exited with $status)" >&2
        exit 1
    fi
}
"""


def render_job_script(recipe: Recipe, title: str, *, env_names: Iterable[str] = (), gpus: int = 0,
                      container_command: str = "apptainer") -> str:
    """The batch script for one service of this recipe.

    env_names: the names of the service's environment (recipe defaults and the service's env); with runtime
    apptainer these are handed into the container, whose environment is otherwise clean.
    """
    lines = [_PREAMBLE.replace("{title}", title.replace("\n", " "))]
    if recipe.runtime is Runtime.native:
        lines.extend(_port_lines(recipe))
        lines.append(f'aifactory_publish starting "${PORT_VAR}"')
        lines.append(f'echo "aifactory: starting {recipe.path} on port ${PORT_VAR}"')
        lines.append(f"exec {command_line(recipe.command + recipe.args)}")
    else:
        lines.extend(_container_lines(recipe, env_names, gpus, container_command))
    return "\n".join(lines) + "\n"


def _port_lines(recipe: Recipe) -> list[str]:
    """The port the service listens on: fixed, or a free one picked just before the service starts."""
    lines = [f"{PORT_VAR}={recipe.port}" if recipe.port else f"{PORT_VAR}=$(aifactory_free_port)", f"export {PORT_VAR}"]
    if recipe.port_env:
        lines.append(f'export {recipe.port_env}="${PORT_VAR}"')
    if recipe.host_env:
        lines.append(f'export {recipe.host_env}="${BIND_VAR}"')
    return lines


def _container_lines(recipe: Recipe, env_names: Iterable[str], gpus: int, cmd: str) -> list[str]:
    if cmd not in CONTAINER_COMMANDS:
        raise ValueError(f"container command {cmd!r} is not one of {', '.join(CONTAINER_COMMANDS)}")
    names = set(env_names) | {PORT_VAR} | {n for n in (recipe.port_env, recipe.host_env) if n}
    bad = sorted(n for n in names if not re.fullmatch(ENV_NAME_PATTERN, n))
    if bad:
        raise ValueError(f"not environment variable names: {', '.join(bad)}")
    forwarded = sorted(names - NOT_FORWARDED)
    prefix = "APPTAINERENV_" if cmd == "apptainer" else "SINGULARITYENV_"
    lines = [
        (f"command -v {cmd} >/dev/null || {{ echo \"aifactory: {cmd} is not on the PATH of $(hostname)\" >&2; "
         "exit 127; }"),
        f'{SIF_CACHE_VAR}="${{{SIF_CACHE_VAR}:-${{HOME:-$PWD}}/.cache/aifactory/sif}}"',
        f'{MODEL_CACHE_VAR}="${{{MODEL_CACHE_VAR}:-${{HOME:-$PWD}}/.cache/aifactory/models}}"',
        f'{WORKSPACE_VAR}="${{{WORKSPACE_VAR}:-$PWD/workspaces/${UID_VAR}}}"',
        f'mkdir -p "${SIF_CACHE_VAR}" "${MODEL_CACHE_VAR}" "${WORKSPACE_VAR}"',
    ]
    key = image_cache_key(recipe)
    if recipe.image and recipe.image.endswith(".sif") and recipe.image.startswith("/"):
        lines.append(f"sif={shlex.quote(recipe.image)}")
        lines.append('[ -r "$sif" ] || { echo "aifactory: image $sif is not readable on $(hostname)" >&2; exit 1; }')
    else:
        lines.append("")
        lines.append(_IMAGE_FUNCTIONS.replace("{cmd}", cmd).replace("{verb}", "pull" if recipe.image else "build"))
        lines.append(f'sif="${SIF_CACHE_VAR}/{key}.sif"')
        if recipe.image:
            lines.append(f"aifactory_image \"$sif\" pull {shlex.quote(recipe.image)}")
        else:
            lines.append(f'definition="${SIF_CACHE_VAR}/{key}.def"')
            lines.append(f'[ -s "$definition" ] || printf \'%s\\n\' {shlex.quote(recipe.build or "")} > "$definition"')
            lines.append('aifactory_image "$sif" build "$definition"')
    # After the image is ready: a pull may take minutes, and a port picked before it may be taken by then.
    lines.extend(_port_lines(recipe))
    # The service's environment goes in as <PREFIX>NAME variables, read by apptainer from its own environment
    # (never parsed by this shell), and --no-eval makes apptainer inject them single-quoted: without it,
    # apptainer evaluates them in the container's shell ($(...) would run). An --env-file is no safer: apptainer
    # evaluates that file as a shell script. --cleanenv keeps the rest of the host's environment out.
    if forwarded:
        lines.append(f"# The service's environment, handed to {cmd} by name ({prefix}NAME); --no-eval keeps it literal.")
        lines.append(f"for name in {' '.join(forwarded)}; do")
        lines.append(f'    if [ -n "${{!name+set}}" ]; then export "{prefix}$name=${{!name}}"; fi')
        lines.append("done")
    lines.append("# The GPUs Slurm gave the job, when it gave any (--cleanenv would keep them out).")
    lines.append(f"for name in {' '.join(GPU_BINDING)}; do")
    lines.append(f'    if [ -n "${{!name+set}}" ]; then export "{prefix}$name=${{!name}}"; fi')
    lines.append("done")
    switches = ["--cleanenv", "--no-eval"] + (["--nv"] if gpus else [])
    options = [("--bind", f'"${MODEL_CACHE_VAR}:{MODELS_MOUNT}"'), ("--bind", f'"${WORKSPACE_VAR}:{WORKSPACE_MOUNT}"')]
    options += [("--bind", shlex.quote(bind)) for bind in recipe.binds]
    if recipe.workdir:
        options.append(("--pwd", shlex.quote(recipe.workdir)))
    verb = "exec" if recipe.command else "run"
    argv = command_line(recipe.command + recipe.args)
    lines.append(f'aifactory_publish starting "${PORT_VAR}"')
    lines.append(f'echo "aifactory: starting {recipe.path} on port ${PORT_VAR}"')
    run = [f"exec {cmd} {verb} {' '.join(switches)}", *(f"    {flag} {value}" for flag, value in options),
           '    "$sif"', *([f"    {argv}"] if argv else [])]
    lines.append(" \\\n".join(run))
    return lines
