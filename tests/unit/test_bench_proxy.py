"""The benchmarks' counting proxy on loopback: it forwards bodies unchanged (sized, chunked, none) over kept-alive
connections and counts each request by method and path."""

from __future__ import annotations

import http.server
import threading

import httpx
import pytest

from bench.counting_proxy import CountingProxy


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path.startswith("/unchanged"):
            self.send_response(304)
            self.end_headers()
        else:
            body = f"you asked {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_forwards_bodies_and_counts_requests_by_kind(upstream):
    with CountingProxy(upstream) as proxy, httpx.Client(base_url=proxy.url, trust_env=False, timeout=5) as client:
        assert client.get("/slurm/v0.0.38/jobs", params={"update_time": "1"}).text == \
            "you asked /slurm/v0.0.38/jobs?update_time=1"
        assert client.get("/chunked").text == "hello chunked world"
        assert client.get("/unchanged").status_code == 304
        payload = b"x" * 200_000  # larger than one read
        assert client.post("/slurm/v0.0.38/job/submit", content=payload).content == payload
        assert client.get("/slurm/v0.0.38/job/42").text == "you asked /slurm/v0.0.38/job/42"
        assert proxy.snapshot() == {
            "GET /chunked": 1, "GET /slurm/v0.0.38/job/{id}": 1, "GET /slurm/v0.0.38/jobs": 1,
            "GET /unchanged": 1, "POST /slurm/v0.0.38/job/submit": 1}
        assert proxy.total() == 5


def test_refuses_an_upstream_it_cannot_forward_to():
    with pytest.raises(ValueError):
        CountingProxy("https://127.0.0.1:6820")
