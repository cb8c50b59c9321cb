# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks: single probes (command or HTTP) and the rise/fall verdict built on them."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import HealthCheck, ServiceConfig
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.health import HealthTracker


def tracker(**check):
    """A HealthTracker of service app with a fast HealthCheck (``check`` overrides its fields)."""
    settings = dict(interval=0.01, timeout=1.0, rise=2, fall=2, deadline=5.0)
    settings.update(check)
    return HealthTracker(ServiceConfig(name="app", install_dir="/opt/app", command=("run",), health=HealthCheck(**settings)))


# Hysteresis: "+" a passing probe, "-" a failing one; the verdict after each, 1 healthy, 0 not.
HYSTERESIS = [
    ("+", "0", 2, 2),
    ("++", "01", 2, 2),
    ("++-", "011", 2, 2),
    ("++--", "0110", 2, 2),
    ("++-+-+-", "0111111", 2, 2),
    ("+-+-+-", "000000", 2, 2),
    ("+++---", "001110", 3, 3),
    ("+-", "10", 1, 1),
    ("++---+", "011100", 2, 3),
]


@pytest.mark.parametrize("results, verdicts, rise, fall", HYSTERESIS)
def test_rise_consecutive_passes_make_it_healthy_and_fall_consecutive_failures_unhealthy(results, verdicts, rise, fall):
    health = tracker(rise=rise, fall=fall)
    assert "".join(str(int(health.observe(result == "+"))) for result in results) == verdicts


def test_a_new_instance_starts_unhealthy_and_no_instance_resets_the_history():
    health = tracker(command=("true",), rise=1)
    assert health.healthy is False
    assert health.update("1.0") is True
    assert health.update(None) is False
    assert (health.healthy, health.passes, health.failures) == (False, 0, 0)


# Command checks: argv from the local config, with validated placeholders.
@pytest.mark.parametrize("command, version, passed", [
    (("true",), "1.0", True),
    (("false",), "1.0", False),
    (("test", "{version}", "=", "2.0"), "2.0", True),
    (("test", "{version}", "=", "2.0"), "1.0", False),
    (("test", "{version_dir}", "=", "/opt/app/versions/2.0"), "2.0", True),
    (("/nonexistent/zkrollout-check",), "1.0", False),
])
def test_a_command_probe_passes_on_exit_status_zero(command, version, passed):
    assert tracker(command=command).probe(version) is passed


def test_a_command_probe_that_hangs_fails_at_its_timeout():
    started = time.monotonic()
    assert tracker(command=("sleep", "10"), timeout=0.2).probe("1.0") is False
    assert time.monotonic() - started < 3


def test_a_command_check_rises_and_falls_with_the_instance(tmp_path):
    up = tmp_path / "up"
    health = tracker(command=("test", "-e", str(up)), rise=2, fall=2)
    up.touch()
    assert [health.update("1.0") for _unused in range(3)] == [False, True, True]
    up.unlink()
    assert [health.update("1.0") for _unused in range(2)] == [True, False]


# HTTP checks against a real server on 127.0.0.1.
class HealthEndpoint(object):
    """An HTTP server on 127.0.0.1:0 whose /health answers ``status`` after ``delay`` seconds."""

    def __init__(self):
        self.status = 200
        self.delay = 0.0
        self.requests = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server dispatches to
                endpoint.requests.append((self.path, self.headers.get("Host")))
                time.sleep(endpoint.delay)
                self.send_response(endpoint.status)
                if endpoint.status in (301, 302):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args):
                """No request lines on the test output."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/health" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def endpoint():
    served = HealthEndpoint()
    yield served
    served.close()


@pytest.mark.parametrize("status, passed", [(200, True), (204, True), (500, False), (503, False), (404, False)])
def test_an_http_probe_passes_on_a_2xx_answer(endpoint, status, passed):
    endpoint.status = status
    assert tracker(http=endpoint.url).probe("1.0") is passed


def test_an_http_probe_does_not_follow_redirects(endpoint):
    # The URL's own answer is the verdict: a redirect to a page that answers 200 is not healthy.
    endpoint.status = 302
    assert tracker(http=endpoint.url).probe("1.0") is False
    assert [path for path, _host in endpoint.requests] == ["/health"]


def test_an_http_probe_sends_the_path_query_and_host_of_its_url(endpoint):
    url = endpoint.url.replace("127.0.0.1", "localhost") + "?deep=1"
    assert tracker(http=url).probe("1.0") is True
    assert endpoint.requests == [("/health?deep=1", url.split("/")[2])]


def test_an_http_probe_of_an_ip_literal_asks_no_resolver(endpoint, monkeypatch):
    # The resolver call was more than half of a probe's CPU; a name is still resolved at every probe.
    asked = []

    def no_resolver(host, *_args, **_kwargs):
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "no resolver here")

    monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
    assert tracker(http=endpoint.url).probe("1.0") is True
    assert asked == []
    assert tracker(http=endpoint.url.replace("127.0.0.1", "localhost")).probe("1.0") is False
    assert asked == ["localhost"]


@contextlib.contextmanager
def one_answer(reply, family=socket.AF_INET, host="127.0.0.1"):
    """Yield the port of a listener that answers one connection's request with ``reply`` (skips without ``host``)."""
    with socket.socket(family) as listener:
        try:
            listener.bind((host, 0))
        except OSError:
            pytest.skip("no %s on this machine" % host)
        listener.listen(1)

        def answer():
            connection, _address = listener.accept()
            with connection:
                connection.recv(1024)
                connection.sendall(reply)

        server = threading.Thread(target=answer, daemon=True)
        server.start()
        yield listener.getsockname()[1]
        server.join(5)


def test_an_http_probe_of_an_ipv6_literal_connects_over_ipv6():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with one_answer(b"HTTP/1.1 204 No Content\r\n\r\n", socket.AF_INET6, "::1") as port:
        assert tracker(http="http://[::1]:%d/health" % port).probe("1.0") is True


def test_an_http_probe_of_something_that_is_not_http_fails():
    with one_answer(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
        assert tracker(http="http://127.0.0.1:%d/" % port).probe("1.0") is False


def test_an_http_check_rises_and_falls_with_the_endpoint(endpoint):
    health = tracker(http=endpoint.url, rise=2, fall=3)
    assert [health.update("1.0") for _unused in range(2)] == [False, True]
    endpoint.status = 503
    assert [health.update("1.0") for _unused in range(3)] == [True, True, False]
    endpoint.status = 200
    assert [health.update("1.0") for _unused in range(2)] == [False, True]


def test_an_http_probe_fails_when_nothing_listens(endpoint):
    url = endpoint.url
    endpoint.close()
    assert tracker(http=url).probe("1.0") is False


def test_an_http_probe_that_answers_too_late_fails(endpoint):
    endpoint.delay = 1.0
    assert tracker(http=endpoint.url, timeout=0.2).probe("1.0") is False


def test_an_http_probe_never_goes_through_a_proxy_from_the_environment(endpoint, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert tracker(http=endpoint.url).probe("1.0") is True


# wait_healthy: the health gate of a switch.
def test_wait_healthy_returns_once_rise_consecutive_probes_pass(endpoint):
    healthy, reason = tracker(http=endpoint.url, rise=3).wait_healthy("2.0", lambda: True)
    assert healthy is True and reason == "3 consecutive health checks passed"


def test_wait_healthy_probes_a_new_instance_at_its_startup_interval(endpoint):
    # At interval 10 s, three passes could not happen before the 5 s deadline.
    healthy, _reason = tracker(http=endpoint.url, rise=3, interval=10.0, startup_interval=0.01, deadline=5.0).wait_healthy("2.0", lambda: True)
    assert healthy is True and len(endpoint.requests) == 3


def test_wait_healthy_gives_up_at_the_deadline():
    started = time.monotonic()
    healthy, reason = tracker(command=("false",), deadline=0.3, interval=0.05).wait_healthy("2.0", lambda: True)
    elapsed = time.monotonic() - started
    assert healthy is False and reason == "no 2 consecutive passing health checks within 0.3s"
    assert 0.3 <= elapsed < 2


def test_wait_healthy_gives_up_as_soon_as_the_process_exits():
    probes = []
    health = tracker(command=("false",), deadline=30, interval=0.01)
    health.probe = lambda version: probes.append(version) or False
    alive = iter([True, True])
    started = time.monotonic()
    healthy, reason = health.wait_healthy("2.0", lambda: next(alive, False))
    assert healthy is False and reason == "the process of app 2.0 exited during its health check"
    assert probes == ["2.0", "2.0"] and time.monotonic() - started < 2


def test_wait_healthy_stops_when_the_agent_stops():
    stop = threading.Event()
    stop.set()
    healthy, reason = tracker(command=("false",), deadline=30).wait_healthy("2.0", lambda: True, stop)
    assert healthy is False and reason == "the agent is stopping"


def test_wait_healthy_forgets_the_verdict_of_the_previous_instance():
    # Without the reset, one failure (below fall) would leave the old "healthy" standing.
    health = tracker(command=("true",), rise=2, fall=2, deadline=0.1)
    assert [health.update("1.0") for _unused in range(2)] == [False, True]
    health.probe = lambda version: False
    assert health.wait_healthy("2.0", lambda: True)[0] is False


def test_wait_healthy_does_not_count_time_the_agent_itself_was_stopped(monkeypatch):
    # The agent is frozen (SIGSTOP, a VM pause) for 100 s inside a 5 s deadline: when it runs
    # again, the instance gets its probes instead of being judged failed unseen.
    import ansible_collections.zkrollout.dc.plugins.module_utils.agent.health as health_module

    clock = {"now": 1000.0}
    monkeypatch.setattr(health_module.time, "monotonic", lambda: clock["now"])
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock["now"] += seconds + (100.0 if len(sleeps) == 1 else 0.0)

    monkeypatch.setattr(health_module.time, "sleep", sleep)
    health = tracker(command=("true",), rise=3, interval=0.5, deadline=5.0)
    results = iter([False, True, True, True])
    health.probe = lambda version: next(results)
    assert health.wait_healthy("2.0", lambda: True) == (True, "3 consecutive health checks passed")
