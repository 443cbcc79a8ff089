"""llamactl's system paths on the real stack: what actually serves (Slurm, engines) and the cluster's devices."""

from __future__ import annotations


def test_server_version_and_devices_say_what_serves_here(stack):
    with stack.api() as api:
        devices = api.get("/api/v1/server/devices")
        assert devices.status_code == 200 and devices.headers["content-type"].startswith("text/plain")
        # The local node has no GPU: it is listed, and none is made up.
        assert f"{stack.slurm.node_name}: " in devices.text and "no GPU" in devices.text
        version = api.get("/api/v1/server/version").text
        assert "Slurm cluster default: slurmrestd API v0.0.38" in version
        assert "testing/openai-echo" in version
        assert api.get("/api/v1/version").text.startswith("Version: aifactory")
