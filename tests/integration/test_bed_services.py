# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test bed's demo service, artifacts, artifact server and quorum monitor, for real.

Real processes on 127.0.0.1 (no ZooKeeper): every process a test starts is killed by PID in
its fixture's teardown, also when the test fails, and every directory is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pytest

from ansible_collections.zkrollout.dc.tests.bed.artifacts import (
    DEMO_SERVICE_SOURCE,
    ArtifactServer,
    build_artifacts,
    wrong_sha256,
)
from ansible_collections.zkrollout.dc.tests.bed.monitor import QuorumMonitor, _Target
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import LOOPBACK, free_ports

pytestmark = pytest.mark.timeout(60)

STARTUP_DELAY = 0.5
# The kernel kills a demo service if the test process dies, so not even a killed run leaves one.
PDEATHSIG_GUARD = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


@pytest.fixture
def workdir():
    directory = tempfile.mkdtemp(prefix="zkrollout-bed-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def artifacts():
    """A 1.0.0, a 2.0.0 and a broken 3.0.0 of service A, built once for the module."""
    directory = tempfile.mkdtemp(prefix="zkrollout-artifacts-")
    yield build_artifacts(directory, "A", {"1.0.0": {}, "2.0.0": {}, "3.0.0": {"broken": True}},
                          startup_delay=STARTUP_DELAY)
    shutil.rmtree(directory, ignore_errors=True)


class DemoProcesses:
    """Starts demo services from unpacked artifacts; ``kill_all()`` ends the survivors by PID."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.processes = []

    def install(self, artifact):
        """Unpack ``artifact`` into a fresh directory of its own; return the directory."""
        directory = tempfile.mkdtemp(prefix="%s-" % artifact.version, dir=self.workdir)
        with tarfile.open(artifact.path) as tarball:
            tarball.extractall(directory, filter="data")
        return directory

    def start(self, artifact, port):
        """Run ``service.py`` of ``artifact`` on 127.0.0.1:``port``; return its Popen."""
        directory = self.install(artifact)
        with open(os.path.join(directory, "service.log"), "wb") as log:
            process = subprocess.Popen(
                PDEATHSIG_GUARD + [sys.executable, os.path.join(directory, "service.py"), "--port", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=directory,
            )
        self.processes.append(process)
        return process

    def kill_all(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def demo(workdir):
    processes = DemoProcesses(workdir)
    yield processes
    processes.kill_all()


def http_get(port, path, connection=None, timeout=1.0):
    """GET 127.0.0.1:port/path (over ``connection`` if given); return (status, body text)."""
    connection = connection or http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    connection.request("GET", path)
    response = connection.getresponse()
    return response.status, response.read().decode("utf-8")


def health_or_none(port):
    """(status, JSON document) of /health, or None while nothing listens."""
    with contextlib.suppress(OSError):
        status, body = http_get(port, "/health")
        return status, json.loads(body)
    return None


def wait_for(condition, timeout, what):
    """Poll ``condition`` every 10 ms until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("gave up after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.01)


def wait_healthy(port, timeout=10.0):
    """Wait until /health on ``port`` answers 200; return its JSON document."""
    def healthy_document():
        answer = health_or_none(port)
        return answer[1] if answer and answer[0] == 200 else None
    return wait_for(healthy_document, timeout, "port %d to answer 200" % port)


def health_url(port):
    return "http://%s:%d/health" % (LOOPBACK, port)


# The demo service


def test_the_service_answers_503_while_it_starts_then_200_with_its_version(demo, artifacts):
    (port,) = free_ports(1)
    process = demo.start(artifacts["2.0.0"], port)
    status, document = wait_for(lambda: health_or_none(port), 10, "the service to listen")
    listening_at = time.monotonic()
    assert (status, document["status"]) == (503, "starting")

    document = wait_healthy(port)
    assert time.monotonic() - listening_at >= STARTUP_DELAY - 0.2
    assert document == {"service": "A", "version": "2.0.0", "pid": process.pid, "status": "ok"}
    assert http_get(port, "/version") == (200, "2.0.0")
    assert http_get(port, "/nothing")[0] == 404


def test_a_broken_version_always_fails_its_health_check_but_tells_its_version(demo, artifacts):
    (port,) = free_ports(1)
    demo.start(artifacts["3.0.0"], port)
    wait_for(lambda: health_or_none(port), 10, "the service to listen")
    statuses = set()
    until = time.monotonic() + STARTUP_DELAY + 0.3
    while time.monotonic() < until:
        statuses.add(health_or_none(port)[0])
        time.sleep(0.02)
    assert statuses == {500}
    assert http_get(port, "/version") == (200, "3.0.0")


def test_sigterm_stops_the_service_at_once_and_it_restarts_on_the_same_port(demo, artifacts):
    (port,) = free_ports(1)
    process = demo.start(artifacts["1.0.0"], port)
    wait_healthy(port)
    # A kept-alive client connection, like the monitor's, must not hold the shutdown up.
    client = http.client.HTTPConnection(LOOPBACK, port, timeout=1.0)
    assert http_get(port, "/health", connection=client)[0] == 200

    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(5) == 0
    assert time.monotonic() - sent < 0.5
    client.close()

    # The old server's side of the connection is in TIME_WAIT now: only SO_REUSEADDR lets this bind.
    again = demo.start(artifacts["2.0.0"], port)
    wait_healthy(port)
    assert again.poll() is None
    assert http_get(port, "/version") == (200, "2.0.0")


def test_the_service_refuses_to_start_without_its_config(workdir):
    (port,) = free_ports(1)
    script = shutil.copy(DEMO_SERVICE_SOURCE, os.path.join(workdir, "service.py"))
    finished = subprocess.run([sys.executable, script, "--port", str(port)], capture_output=True, text=True, timeout=10, check=False)
    assert finished.returncode == 2
    assert "cannot read %s" % os.path.join(workdir, "service.json") in finished.stderr


# Artifacts and the artifact server


def test_artifacts_are_byte_identical_when_rebuilt(workdir):
    versions = {"1.0.0": {}, "2.0.0": {"startup_delay": 2}}
    first = build_artifacts(os.path.join(workdir, "first"), "A", versions)
    time.sleep(1.1)  # a different clock second must not change a byte
    second = build_artifacts(os.path.join(workdir, "second"), "A", versions)
    for version in versions:
        assert first[version].sha256 == second[version].sha256
        assert first[version].filename == "A-%s.tar.gz" % version
        with open(first[version].path, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == first[version].sha256
    assert first["1.0.0"].sha256 != first["2.0.0"].sha256


def test_an_artifact_holds_the_service_and_its_config_at_the_root(artifacts):
    with open(DEMO_SERVICE_SOURCE, "rb") as handle:
        program = handle.read()
    for version, broken in (("2.0.0", False), ("3.0.0", True)):
        with tarfile.open(artifacts[version].path) as tarball:
            assert tarball.getnames() == ["service.py", "service.json"]
            assert tarball.extractfile("service.py").read() == program
            assert tarball.getmember("service.py").mode == 0o755
            config = json.loads(tarball.extractfile("service.json").read())
        assert config == {"service": "A", "version": version, "startup_delay": STARTUP_DELAY, "broken": broken}


def test_the_wrong_checksum_is_well_formed_and_wrong(artifacts):
    wrong = wrong_sha256(artifacts["2.0.0"])
    assert re.fullmatch("[0-9a-f]{64}", wrong)
    assert wrong not in {artifact.sha256 for artifact in artifacts.values()}


@pytest.mark.parametrize("versions, message", [
    ({"2.0.0": {"color": "red"}}, "unknown knob(s) color for A 2.0.0"),
    ({"2.0.0": {"broken": "yes"}}, "A 2.0.0: broken must be True or False"),
    ({"2.0.0": {"startup_delay": -1}}, "startup_delay must be a number of seconds >= 0"),
    ({"../2": {}}, "version '../2' of service A must look like '2.0.0'"),
])
def test_build_artifacts_rejects_what_the_service_could_not_run(workdir, versions, message):
    with pytest.raises(ValueError) as raised:
        build_artifacts(workdir, "A", versions)
    assert message in str(raised.value)


def test_the_artifact_server_serves_the_artifacts_and_404_for_the_rest(artifacts):
    some = artifacts["2.0.0"]
    with ArtifactServer(os.path.dirname(some.path)) as server:
        url = server.url(some.filename)
        assert url == "http://127.0.0.1:%d/A-2.0.0.tar.gz" % server.port
        connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=5)
        connection.request("GET", "/" + some.filename)
        response = connection.getresponse()
        assert response.status == 200
        assert hashlib.sha256(response.read()).hexdigest() == some.sha256
        assert http_get(server.port, "/A-9.9.9.tar.gz")[0] == 404
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        http_get(server.port, "/" + some.filename)


# The quorum monitor


def test_the_monitor_sees_an_instance_go_down_and_come_back(demo, artifacts):
    ports = free_ports(3)
    processes = [demo.start(artifacts["1.0.0"], port) for port in ports]
    for port in ports:
        wait_healthy(port)

    with QuorumMonitor({"A": [health_url(port) for port in ports]}) as monitor:
        assert monitor.healthy_now() == {"A": 3}
        processes[1].kill()
        wait_for(lambda: monitor.healthy_now() == {"A": 2}, 5, "the monitor to count 2 healthy")
        demo.start(artifacts["2.0.0"], ports[1])
        wait_for(lambda: monitor.healthy_now() == {"A": 3}, 10, "the monitor to count 3 healthy again")
        versions_now = monitor.versions_now()

    assert monitor.min_healthy == {"A": 2}
    assert [(change.service, change.healthy) for change in monitor.timeline] == [("A", 3), ("A", 2), ("A", 3)]
    assert monitor.versions_seen == {"A": {"1.0.0", "2.0.0"}}
    assert versions_now == {"A": {health_url(ports[0]): "1.0.0", health_url(ports[1]): "2.0.0",
                                  health_url(ports[2]): "1.0.0"}}
    assert monitor.samples > 30
    monitor.assert_quorum({"A": 2})
    with pytest.raises(AssertionError) as raised:
        monitor.assert_quorum({"A": 3})
    assert re.match(r"service A dropped to 2 healthy instances \(quorum 3\) at t=\d+\.\d\ds; down then: %s$"
                    % re.escape(health_url(ports[1])), str(raised.value))


def test_a_frozen_instance_counts_as_down_within_the_request_timeout(demo, artifacts):
    (port,) = free_ports(1)
    process = demo.start(artifacts["1.0.0"], port)
    wait_healthy(port)
    with QuorumMonitor({"A": [health_url(port)]}, timeout=0.25) as monitor:
        process.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            wait_for(lambda: monitor.healthy_now() == {"A": 0}, 5, "the monitor to see the frozen instance down")
            assert time.monotonic() - frozen < 1.0
        finally:
            process.send_signal(signal.SIGCONT)
        wait_for(lambda: monitor.healthy_now() == {"A": 1}, 5, "the monitor to see the thawed instance up")
    assert monitor.min_healthy == {"A": 0}


def test_a_kept_alive_connection_closed_by_a_restart_is_not_mistaken_for_an_outage(demo, artifacts):
    (port,) = free_ports(1)
    process = demo.start(artifacts["1.0.0"], port)
    wait_healthy(port)
    target = _Target("A", health_url(port), timeout=1.0)
    try:
        assert target.sample() == (True, "1.0.0")
        process.send_signal(signal.SIGTERM)
        process.wait(5)
        demo.start(artifacts["2.0.0"], port)
        wait_healthy(port)
        # The monitor's connection died with the old process; the next sample must reconnect.
        assert target.sample() == (True, "2.0.0")
    finally:
        target.close()


def _raw_exchange(port, request):
    """Send ``request`` on a new connection; everything the service answers until it closes (or 1 s passes)."""
    with socket.create_connection((LOOPBACK, port), timeout=1.0) as connection:
        connection.sendall(request)
        answer = b""
        with contextlib.suppress(socket.timeout):
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return answer, True
                answer += chunk
    return answer, False


def test_the_service_keeps_a_connection_alive_unless_asked_and_answers_each_request_on_it_in_order(demo, artifacts):
    (port,) = free_ports(1)
    demo.start(artifacts["1.0.0"], port)
    wait_healthy(port)
    two = b"GET /version HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer, closed = _raw_exchange(port, two)
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 OK\r\n") and first.endswith(b"\r\n\r\n1.0.0") and b"Content-Length: 5\r\n" in first
    assert second.startswith(b"404 Not Found\r\n") and b"Connection: close\r\n" in second and b"/nothing;" in second
    assert closed
    # HTTP/1.0 closes after one answer unless asked to keep the connection; other methods are refused.
    answer, closed = _raw_exchange(port, b"GET /version HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"1.0.0") and closed
    answer, closed = _raw_exchange(port, b"POST /health HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /version HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and answer.endswith(b"1.0.0") and not closed
    # Not HTTP: the connection is dropped, and the service goes on serving others.
    assert _raw_exchange(port, b"hello\r\n") == (b"", True)
    assert http_get(port, "/version") == (200, "1.0.0")


def test_the_monitor_reads_an_answer_split_over_many_packets_and_counts_one_that_is_not_http_as_down():
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        target = _Target("A", health_url(port), timeout=1.0)

        def serve(*answers):
            connection, _address = listener.accept()
            with connection:
                connection.recv(65536)
                for part in answers:
                    connection.sendall(part)
                    time.sleep(0.02)
                connection.recv(65536)

        body = json.dumps({"version": "2.0.0"}).encode()
        parts = [b"HTTP/1.1 200 OK\r\nconTent-LENGTH: %d\r\n" % len(body), b"\r\n", body[:5], body[5:]]
        server = threading.Thread(target=serve, args=parts)
        server.start()
        assert target.sample() == (True, "2.0.0")
        target.close()
        server.join(5)
        server = threading.Thread(target=serve, args=[b"SSH-2.0-OpenSSH\r\n\r\n"])
        server.start()
        assert target.sample() == (False, None)
        target.close()
        server.join(5)


def test_a_target_nobody_listens_on_counts_as_down_from_the_start():
    (port,) = free_ports(1)
    with QuorumMonitor({"A": [health_url(port)]}) as monitor:
        assert monitor.healthy_now() == {"A": 0}
    assert monitor.versions_seen == {"A": set()}
    with pytest.raises(AssertionError, match=r"service A dropped to 0 healthy instances \(quorum 1\) at t=0\.\d\ds"):
        monitor.assert_quorum({"A": 1})
    with pytest.raises(AssertionError, match=r"service B is not monitored \(monitored: A\)"):
        monitor.assert_quorum({"B": 0})


def test_the_monitor_stops_by_itself_after_max_seconds_and_then_proves_nothing():
    (port,) = free_ports(1)
    monitor = QuorumMonitor({"A": [health_url(port)]}, max_seconds=0.3).start()
    try:
        wait_for(lambda: monitor.expired, 5, "the monitor to stop by itself")
        samples = monitor.samples
        time.sleep(0.05)
        assert monitor.samples == samples
    finally:
        monitor.stop()
    with pytest.raises(AssertionError, match=r"stopped by itself after max_seconds=0\.3s"):
        monitor.assert_quorum({"A": 0})


def test_an_unstarted_monitor_proves_nothing_and_bad_targets_are_refused():
    with pytest.raises(AssertionError, match="never sampled every target"):
        QuorumMonitor({"A": [health_url(1)]}).assert_quorum({"A": 0})
    with pytest.raises(ValueError, match="must look like http://HOST:PORT/health"):
        QuorumMonitor({"A": ["ftp://127.0.0.1/health"]})
    with pytest.raises(ValueError, match="service A needs a list of health URLs"):
        QuorumMonitor({"A": health_url(1)})
    with pytest.raises(ValueError, match="listed more than once: http://127.0.0.1:1/health"):
        QuorumMonitor({"A": [health_url(1)], "B": [health_url(1)]})
