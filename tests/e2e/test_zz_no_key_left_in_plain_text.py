"""After the session's other tests: no API key made during the run sits in plain text anywhere in the stack: not
in a Secret or any other resource (nor in etcd's files underneath), not in an event, not in a log or job output.
(Named to run last: pytest runs this folder's modules in name order.)"""

from __future__ import annotations

import json
from pathlib import Path

from aifactory.devstack import stack as devstack
from aifactory.devstack.process import state_dir

KINDS = "secrets,configmaps,events,serviceaccounts,aiservices,apikeys,users,tenants,slurmclusters,servicerecipes"


def made_keys(stack) -> list[str]:
    from tests.e2e import test_console, test_identity, test_lmstack, test_openai_gateway

    return [stack.api_key, *test_identity.MADE_KEYS, *test_lmstack.MADE_KEYS, *test_openai_gateway.MADE_KEYS,
            *test_console.MADE_KEYS]


def test_no_api_key_is_stored_or_logged_in_plain_text(stack) -> None:
    keys = made_keys(stack)
    assert len(keys) >= 1
    resources = stack.kubectl("get", KINDS, "--all-namespaces", "-o", "json").stdout
    assert json.loads(resources)["items"], "nothing listed: the check would see nothing"
    places: dict[str, bytes] = {"every resource (kubectl get -A)": resources.encode()}
    # Everything the stack keeps on disk: etcd's data, the daemons' and the jobs' logs. Only the file where the
    # local stack keeps its own admin key for `aifactory dev env` (like a kubeconfig holds its token) is exempt.
    exempt = {devstack.admin_key_file()}
    for path in Path(state_dir()).rglob("*"):
        if path.is_file() and path not in exempt and path.stat().st_size < 512 * 1024 * 1024:
            places[str(path.relative_to(state_dir()))] = path.read_bytes()
    assert any("etcd" in p for p in places) and any(p.endswith(".log") for p in places)
    leaks = [(place, key[:16]) for key in keys for place, data in places.items() if key.encode() in data]
    assert not leaks, f"keys found in plain text: {leaks}"
