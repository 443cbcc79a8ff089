"""Batch scripts for recipes: pure functions from a recipe to the text sbatch runs.

User and recipe values never pass through shell interpolation: the environment reaches the job as Slurm's JSON
`environment`, and each command argument is quoted as one word. Only the run-time port and bind address are
shell variables, set by the script itself.
"""

from __future__ import annotations

import shlex

from aifactory.models import Recipe, Runtime

PORT_VAR = "AIFACTORY_PORT"
BIND_VAR = "AIFACTORY_BIND_ADDRESS"
UID_VAR = "AIFACTORY_SERVICE_UID"

_PLACEHOLDERS = {"{port}": f'"${PORT_VAR}"', "{host}": f'"${BIND_VAR}"'}


def shell_word(arg: str) -> str:
    """One argument as one shell word; {port} and {host} become the script's own variables."""
    pieces: list[str] = []
    rest = arg
    while rest:
        hits = [(rest.find(p), p) for p in _PLACEHOLDERS if p in rest]
        if not hits:
            pieces.append(shlex.quote(rest))
            break
        index, placeholder = min(hits)
        if index:
            pieces.append(shlex.quote(rest[:index]))
        pieces.append(_PLACEHOLDERS[placeholder])
        rest = rest[index + len(placeholder):]
    return "".join(pieces) or "''"


def command_line(argv: list[str]) -> str:
    return " ".join(shell_word(a) for a in argv)


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


def render_job_script(recipe: Recipe, title: str) -> str:
    """The batch script for one service of this recipe."""
    lines = [_PREAMBLE.replace("{title}", title.replace("\n", " "))]
    lines.append(f"{PORT_VAR}=$(aifactory_free_port)")
    lines.append(f"export {PORT_VAR}")
    if recipe.port_env:
        lines.append(f'export {recipe.port_env}="${PORT_VAR}"')
    if recipe.runtime is Runtime.native:
        lines.append(f'aifactory_publish starting "${PORT_VAR}"')
        lines.append(f'echo "aifactory: starting {recipe.path} on port ${PORT_VAR}"')
        lines.append(f"exec {command_line(recipe.command)}")
    else:
        raise NotImplementedError(f"runtime {recipe.runtime.value} is not rendered yet")
    return "\n".join(lines) + "\n"
