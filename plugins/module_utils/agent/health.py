# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Health checks with rise/fall hysteresis, from the local config only."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import ProxyHandler, build_opener

# Health checks target the host itself: never send them through a proxy from the environment.
_DIRECT = build_opener(ProxyHandler({}))
# A gap between two probes longer than their interval and timeout by this much (seconds) means
# the agent itself was stopped; a health wait does not count that time.
STALL = 1.0
# A status line longer than this is not HTTP.
_STATUS_LINE_LIMIT = 1024


def _connect(hostname, port, timeout):
    """A connected socket to ``hostname`` ``port``.

    An IP literal (the usual health URL: 127.0.0.1, ::1) is connected to as it is: the resolver
    call it would cost otherwise is more than half of a probe's CPU. A name is resolved at every
    probe, as ``socket.create_connection`` does.
    """
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return socket.create_connection((hostname, port), timeout=timeout)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    connection = socket.socket(family, socket.SOCK_STREAM)
    try:
        connection.settimeout(timeout)
        connection.connect((hostname, port))
    except BaseException:
        connection.close()
        raise
    return connection


def http_probe(url, timeout):
    """True if a GET of the ``http://`` ``url`` answers a 2xx status within ``timeout`` seconds.

    One short connection, no proxy, redirects not followed (the URL's own answer is the
    verdict), and a third of the CPU of ``urllib``: an agent probes every service every
    ``interval``, on every host. ``https://`` URLs go through ``urllib`` (certificate checks).
    """
    parts = urlsplit(url)
    if parts.scheme != "http":
        try:
            with _DIRECT.open(url, timeout=timeout) as response:
                return 200 <= response.status < 300
        except (URLError, OSError, ValueError):
            return False
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    host = parts.netloc.rsplit("@", 1)[-1]
    request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: zkrollout-agent\r\nConnection: close\r\n\r\n" % (target, host)).encode("latin-1")
    deadline = time.monotonic() + timeout
    answer = b""
    try:
        with _connect(parts.hostname, parts.port or 80, timeout) as connection:
            connection.sendall(request)
            # The status line decides; the rest of the answer is not waited for.
            while b"\r\n" not in answer and len(answer) < _STATUS_LINE_LIMIT:
                connection.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except (OSError, ValueError, UnicodeError):
        return False
    status = answer.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[0].startswith(b"HTTP/1.") and len(status[1]) == 3 and status[1][:1] == b"2"


class HealthTracker(object):
    """Probes one service and turns single results into a healthy/unhealthy verdict.

    Healthy after ``rise`` consecutive passes, unhealthy after ``fall`` consecutive failures;
    a new instance starts unhealthy.
    """

    def __init__(self, service_config):
        self.config = service_config
        self.check = service_config.health
        self.healthy = False
        self.passes = 0
        self.failures = 0
        self.last_result = None

    def reset(self):
        """Forget the history (a new instance was started)."""
        self.healthy, self.passes, self.failures = False, 0, 0

    def probe(self, version):
        """One check of ``version``: True when it passes within the timeout."""
        check = self.check
        if check.http:
            return http_probe(check.http, check.timeout)
        argv = [self.config.render(item, version) for item in check.command]
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=check.timeout, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def observe(self, passed):
        """Record one result and return the verdict."""
        self.last_result = passed
        if passed:
            self.passes, self.failures = self.passes + 1, 0
            if self.passes >= self.check.rise:
                self.healthy = True
        else:
            self.passes, self.failures = 0, self.failures + 1
            if self.failures >= self.check.fall:
                self.healthy = False
        return self.healthy

    def update(self, version):
        """Probe once (nothing to probe when no instance runs) and return the verdict."""
        if version is None:
            self.reset()
            return False
        return self.observe(self.probe(version))

    def wait_healthy(self, version, is_running, stop=None):
        """Probe every ``startup_interval`` until ``rise`` consecutive passes or the ``deadline``.

        Returns ``(healthy, reason)``. Gives up early when the process dies or ``stop`` is set.
        """
        self.reset()
        interval = self.check.startup_interval or self.check.interval
        deadline = time.monotonic() + self.check.deadline
        last = time.monotonic()
        while time.monotonic() < deadline:
            if not is_running():
                return False, "the process of %s %s exited during its health check" % (self.config.name, version)
            if self.observe(self.probe(version)):
                return True, "%d consecutive health checks passed" % self.check.rise
            if stop is not None and stop.is_set():
                return False, "the agent is stopping"
            time.sleep(interval)
            now = time.monotonic()
            stalled = now - last - interval - self.check.timeout
            if stalled > STALL:
                # The agent itself did not run (SIGSTOP, a VM pause): that time was not the
                # instance's to get healthy in, so it does not count against the deadline.
                deadline += stalled
            last = now
        return False, "no %d consecutive passing health checks within %gs" % (self.check.rise, self.check.deadline)
