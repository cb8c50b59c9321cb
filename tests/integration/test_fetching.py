# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hardened fetching against a real HTTP(S) server on 127.0.0.1 that misbehaves on purpose.

Each test prepares a version with ``artifacts.prepare`` and a service config from the real
config parser, then checks what reached the disk (a version directory or nothing, and no
scratch files) and what the server was asked for. The server's loops are bounded and stop
when the fixture does.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import ssl
import tarfile
import threading
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.artifacts import ArtifactError, prepare, prepared_versions
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import parse_config
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact
from ansible_collections.zkrollout.dc.tests.bed import tls as tls_material
from ansible_collections.zkrollout.dc.tests.unit.agent.test_artifacts import Zeros, member

# A slow route sends one byte per TRICKLE seconds, at most TRICKLE_BYTES of them.
TRICKLE, TRICKLE_BYTES = 0.05, 400
DEADLINE = 1.0


def tar_gz(members):
    """The bytes of a .tar.gz of ``(TarInfo, content)`` members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, content in members:
            archive.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else content)
    return buffer.getvalue()


GOOD = tar_gz([(member("run", 3, mode=0o755), b"2.0")])
BOMB = tar_gz([(member("run", 3, mode=0o755), b"2.0"), (member("zeros", 64 << 20), Zeros(64 << 20))])


class ArtifactRoutes(http.server.BaseHTTPRequestHandler):
    """``/allowed/...`` and ``/outside/...``: files, redirects, and servers that are slow, endless or lie."""

    def log_message(self, *_args):
        """No request lines on the test output."""

    def do_GET(self):
        self.server.requests.append(self.path)
        route = getattr(self, "route_" + self.path.rsplit("/", 1)[-1].replace("-", "_").replace(".", "_"), self.serve_file)
        try:
            route()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def raw(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def serve_file(self):
        content = self.server.files.get(self.path.rsplit("/", 1)[-1])
        if content is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.raw(content)

    def redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_hop(self):
        self.redirect("/allowed/app.tar.gz")

    def route_two_hops(self):
        self.redirect("/allowed/hop")

    def route_out(self):
        self.redirect("http://127.0.0.1:%d/outside/app.tar.gz" % self.server.server_address[1])

    def route_sibling(self):
        self.redirect("/allowed-old/app.tar.gz")

    def route_dots(self):
        self.redirect("/allowed/%2e%2e/outside/app.tar.gz")

    def route_credentials(self):
        self.redirect("http://deploy:secret@127.0.0.1:%d/allowed/app.tar.gz" % self.server.server_address[1])

    def route_to_file(self):
        self.redirect("file:///etc/passwd")

    def route_loop(self):
        self.redirect("/allowed/loop")

    def route_downgrade(self):
        self.redirect("http://127.0.0.1:%d/allowed/app.tar.gz" % self.server.plain_port)

    def trickle(self):
        for _unused in range(TRICKLE_BYTES):
            self.raw(b"x")
            if self.server.stopping.wait(TRICKLE):
                return

    def route_slow_body(self):
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TRICKLE_BYTES)
        self.trickle()

    def route_slow_headers(self):
        self.raw(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
        self.trickle()

    def route_endless(self):
        # No Content-Length: the body ends when the server closes the connection.
        self.raw(b"HTTP/1.0 200 OK\r\n\r\n")
        for _unused in range(1024):
            self.raw(bytes(1 << 16))

    def route_endless_chunked(self):
        self.raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _unused in range(1024):
            self.raw(b"10000\r\n" + bytes(1 << 16) + b"\r\n")
        self.raw(b"0\r\n\r\n")

    def route_announced_huge(self):
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 << 30) + bytes(1 << 16))

    def route_truncated(self):
        self.raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + bytes(100))


class ArtifactServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls=None, plain_port=None):
        super().__init__(("127.0.0.1", 0), ArtifactRoutes)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.server_keystore)
            self.socket = context.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.plain_port = plain_port
        self.files = {"app.tar.gz": GOOD, "bomb.tar.gz": BOMB}
        self.requests = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def url(self, path):
        return "%s://127.0.0.1:%d/%s" % (self.scheme, self.server_address[1], path)

    def close(self):
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    """A plain HTTP artifact server on 127.0.0.1."""
    running = ArtifactServer()
    yield running
    running.close()


@pytest.fixture
def tls_server(server, tmp_path, monkeypatch):
    """An HTTPS artifact server on 127.0.0.1 whose CA the agent trusts; its downgrade route leads to ``server``."""
    files = tls_material.generate(str(tmp_path / "tls"))
    monkeypatch.setenv("SSL_CERT_FILE", files.ca_cert)
    running = ArtifactServer(tls=files, plain_port=server.server_address[1])
    yield running
    running.close()


def service(tmp_path, prefixes, **settings):
    """Service app from the real config parser, allowed to fetch from ``prefixes``."""
    raw = {
        "host": "h1",
        "state_dir": str(tmp_path / "state"),
        "zookeeper": {"hosts": "127.0.0.1:2181"},
        "allowed_url_prefixes": prefixes,
        # Signatures are checked before the runtime calls prepare(); they are not what these tests are about.
        "allow_unsigned_releases": True,
        "download_timeout": DEADLINE,
        "download_read_timeout": 5,
        "services": {"app": {"install_dir": str(tmp_path / "opt" / "app"), "command": ["{version_dir}/run"], "health": {"command": ["true"]}}},
    }
    raw.update(settings)
    return parse_config(raw, "test agent config").services["app"]


def artifact(url, content=GOOD):
    return Artifact(url=url, sha256=hashlib.sha256(content).hexdigest())


def refused(app, url, stage="download", content=GOOD):
    """Prepare ``url`` expecting a refusal at ``stage``; check nothing was left behind; return the reason."""
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", artifact(url, content))
    assert raised.value.stage == stage, raised.value.reason
    assert prepared_versions(app) == frozenset()
    assert not os.path.exists(os.path.join(app.install_dir, "versions"))
    assert os.listdir(os.path.join(app.install_dir, ".work")) == []
    return raised.value.reason


def test_a_redirect_inside_the_allowed_prefix_is_followed(tmp_path, server):
    app = service(tmp_path, [server.url("allowed/")])
    final = prepare(app, "2.0", artifact(server.url("allowed/two-hops")))
    assert open(os.path.join(final, "run")).read() == "2.0"
    assert server.requests == ["/allowed/two-hops", "/allowed/hop", "/allowed/app.tar.gz"]


def test_a_redirect_out_of_the_allowed_prefix_is_refused_before_the_target_is_requested(tmp_path, server):
    app = service(tmp_path, [server.url("allowed/")])
    reason = refused(app, server.url("allowed/out"))
    assert "artifact URL %s redirected to %s" % (server.url("allowed/out"), server.url("outside/app.tar.gz")) in reason
    assert "outside the allowed prefixes (allowed prefixes: %s)" % server.url("allowed/") in reason
    assert "zkrollout_agent_allowed_url_prefixes" in reason
    assert server.requests == ["/allowed/out"]


@pytest.mark.parametrize("route, fact", [
    pytest.param("sibling", "outside the allowed prefixes", id="to_a_sibling_with_a_longer_name"),
    pytest.param("dots", "'..' path segment", id="with_encoded_dot_dot"),
    pytest.param("credentials", "redirected to http://***@127.0.0.1", id="with_credentials"),
    pytest.param("to-file", "may only lead to http or https", id="to_a_file_url"),
    pytest.param("loop", "redirected more than 5 times", id="in_a_loop"),
])
def test_a_redirect_that_leaves_the_prefix_or_never_ends_is_refused(tmp_path, server, route, fact):
    app = service(tmp_path, [server.url("allowed")])
    reason = refused(app, server.url("allowed/" + route))
    assert fact in reason and "secret" not in reason
    assert not [path for path in server.requests if not path.startswith("/allowed/")]
    assert len(server.requests) <= 6


def test_an_https_artifact_is_downloaded_and_a_redirect_to_http_is_refused(tmp_path, server, tls_server):
    app = service(tmp_path, [tls_server.url("allowed/"), server.url("allowed/")])
    assert "a redirect from https to http is refused" in refused(app, tls_server.url("allowed/downgrade"))
    assert server.requests == []
    assert prepare(app, "2.0", artifact(tls_server.url("allowed/app.tar.gz")))


@pytest.mark.parametrize("route", ["slow-body", "slow-headers"])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_server_that_sends_slowly_is_cut_at_the_whole_download_deadline(tmp_path, server, tls_server, scheme, route):
    source = tls_server if scheme == "https" else server
    app = service(tmp_path, [source.url("allowed/")])
    started = time.monotonic()
    reason = refused(app, source.url("allowed/" + route))
    took = time.monotonic() - started
    assert "took longer than download_timeout (%ss for the whole download)" % DEADLINE in reason
    assert "zkrollout_agent_download_timeout" in reason
    # Every read got a byte within the 5 s read timeout: only the whole-download deadline stops it.
    assert DEADLINE <= took < DEADLINE + 1.0, took


@pytest.mark.parametrize("route", ["endless", "endless-chunked"])
def test_a_download_without_content_length_is_cut_at_max_download_bytes(tmp_path, server, route):
    app = service(tmp_path, [server.url("allowed/")], max_download_bytes=1 << 20)
    reason = refused(app, server.url("allowed/" + route))
    assert "larger than max_download_bytes (1048576 bytes): the download was stopped at that limit" in reason
    assert "zkrollout_agent_max_download_bytes" in reason


def test_a_download_announced_above_max_download_bytes_is_not_started(tmp_path, server):
    app = service(tmp_path, [server.url("allowed/")], max_download_bytes=1 << 20)
    assert "announces 10737418240 bytes, more than max_download_bytes (1048576 bytes)" in refused(app, server.url("allowed/announced-huge"))


def test_a_download_shorter_than_announced_is_refused(tmp_path, server):
    app = service(tmp_path, [server.url("allowed/")])
    assert "the connection ended after 100 of the 5000 bytes announced" in refused(app, server.url("allowed/truncated"))


def test_a_gzip_bomb_is_refused_while_unpacking_and_leaves_nothing(tmp_path, server):
    app = service(tmp_path, [server.url("allowed/")], max_unpacked_bytes=1 << 20)
    started = time.monotonic()
    reason = refused(app, server.url("allowed/bomb.tar.gz"), stage="unpack", content=BOMB)
    assert "unpacks to more than max_unpacked_bytes (1048576 bytes): refused at member zeros" in reason
    assert "zkrollout_agent_max_unpacked_bytes" in reason
    # Refused at the member's header, not after inflating its 64 MiB.
    assert time.monotonic() - started < 2.0
    assert [name for _directory, _subdirectories, names in os.walk(app.install_dir) for name in names] == []
