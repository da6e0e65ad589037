"""Delivery of signed bundles: HTTP from the device (unix port, both lanes) against a local server on
127.0.0.1 that supports Range and drops one download half-way; the same streaming installer as serial."""
import http.server
import threading

import pytest

from mpplugin import lanes
from test_ota_device import cases, run_scenario  # noqa: F401  (the module's signed bundles fixture)


class BundleServer(http.server.BaseHTTPRequestHandler):
    root = None
    log = []

    def do_GET(self):
        name, _, query = self.path.lstrip("/").partition("?")
        path = self.root / name
        rng = self.headers.get("Range")
        self.log.append((name, query, rng))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if query == "drop":
            body = body[:len(body) // 2]   # then the connection closes: a broken download
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(cases):  # noqa: F811
    BundleServer.root = cases
    BundleServer.log = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BundleServer)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("lane", lanes())
def test_http_delivery_resumes_with_range(lane, cases, server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OTA_URL", server)
    out = run_scenario(lane, "scenario_http_delivery", cases, tmp_path)
    assert "http: ok" in out
    ranges = [entry for entry in BundleServer.log if entry[0] == "big.bnd" and entry[2]]
    assert ranges and ranges[0][2].startswith("bytes=") and int(ranges[0][2][6:-1]) > 1000, BundleServer.log
