# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The independent invariant monitor: how many instances of each service were healthy, at worst.

It looks only at the services themselves (their HTTP health endpoints), never at ZooKeeper,
so a bug in the agents' accounting cannot hide from it::

    targets = {"A": ["http://10.77.0.11:8080/health", "http://10.77.0.12:8080/health", ...]}
    with QuorumMonitor(targets) as monitor:
        ...                                # run the rollout
    monitor.assert_quorum({"A": 3})        # AssertionError: service A dropped to 2 healthy ...

One daemon thread per target sends ``GET`` over a kept-alive connection, sleeps ``interval``
and repeats. HTTP 200 is healthy; any other status, a refused or reset connection or no answer
within ``timeout`` is down. Each target's changes are kept in ``transitions``
(``Transition(t, service, url, healthy, version)``, starting with each target's first sample), for
measurements of when each instance went down and came back on which version; ``healthy_now()``
counts the latest samples.

The quorum verdict (``min_healthy``, ``timeline``, ``assert_quorum``) counts an instance as down
from its first failing sample to its last one, both included: that much is certain. Between its
last failing and its first passing sample it may have come back at any moment, so that gap is not
counted, and a hand-off faster than one sample period (the next host going down a few
milliseconds after the previous one answered again) is not taken for two instances down at once.
The price: two outages count as overlapping only where both were seen down, so an overlap shorter
than about two sample periods (``interval`` plus a request each) can be missed, as can an outage
shorter than one sample.

Cost, measured on the 2-core test machine: a sample costs the monitor about 65 us of CPU (a
GET written by hand; ``http.client`` took 170-220 us) and the demo service about 80-110 us
(150-160 us before its handler read only what it needs), so 27 instances sampled every ~21 ms
(a benchmark fleet) cost about a fifth of a core in all instead of half. An outage shorter than
one sample (``interval`` plus a request) can be missed; raise ``timeout`` on a very busy machine,
where a slow answer would otherwise count as down (the safe direction, but a spurious failure).

No loop is unbounded: threads stop by themselves after ``max_seconds``, and ``assert_quorum``
then fails, because the run was not watched to its end.
"""

from __future__ import annotations

import collections
import http.client
import json
import socket
import threading
import time
import traceback
import urllib.parse

Change = collections.namedtuple("Change", "t service healthy")
Change.__doc__ = "At ``t`` seconds after start, ``service`` had ``healthy`` healthy instances."
Transition = collections.namedtuple("Transition", "t service url healthy version")
Transition.__doc__ = ("At ``t`` seconds after start, the sample of ``url`` (an instance of ``service``) first showed ``healthy`` and "
                      "``version`` (None unless healthy).")


class _Target:
    """One health URL, its latest sample and the connection that samples it (owned by one thread).

    The GET is written by hand over a kept-alive socket: status line, ``Content-Length``,
    ``Connection: close``, body. ``http.client`` parses every answer's headers with the email
    package; at a sample every 20 ms of 27 instances that made the monitor the busiest process of
    a benchmark fleet, and slowed what it measures.
    """

    def __init__(self, service, url, timeout):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("health URL %r of service %s must look like http://HOST:PORT/health" % (url, service))
        self.service = service
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.timeout = timeout
        self.healthy = None
        self.version = None
        self.samples = 0
        self._request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: zkrollout-monitor\r\n\r\n" % (self.path, self.host, self.port)).encode("latin-1")
        self._connection = None
        self._buffer = b""
        self._last_body = None
        self._last_version = None

    def sample(self):
        """GET the URL once; return ``(healthy, version)``. ``version`` is None unless healthy."""
        for fresh in (self._connection is None, True):
            try:
                status, body = self._get()
                break
            except ConnectionError:
                self.close()
                if fresh:
                    return False, None
                # The server may have closed our kept-alive connection (idle timeout, or it was
                # restarted between two samples): only a fresh connection can tell if it is down.
            except (OSError, http.client.HTTPException):
                self.close()
                return False, None
        if status != 200:
            return False, None
        return True, self._version_in(body)

    def _get(self):
        if self._connection is None:
            self._connection = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buffer = b""
        self._connection.sendall(self._request)
        head = self._receive_until(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status_line = lines[0].split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
            raise http.client.BadStatusLine(lines[0].decode("latin-1", "replace"))
        length, close = 0, False
        for line in lines[1:]:
            name, _colon, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip()) if value.strip().isdigit() else 0
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        body = self._receive_exactly(length)
        if close:
            self.close()
        return int(status_line[1]), body

    def _receive_until(self, marker):
        while marker not in self._buffer:
            self._receive()
        head, self._buffer = self._buffer.split(marker, 1)
        return head

    def _receive_exactly(self, length):
        while len(self._buffer) < length:
            self._receive()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return body

    def _receive(self):
        chunk = self._connection.recv(65536)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self._buffer += chunk
        if len(self._buffer) > 1 << 20:
            raise http.client.HTTPException("an answer of more than 1 MiB from %s: not a health endpoint" % self.url)

    def _version_in(self, body):
        # Parse only when the body changes: it is the same document sample after sample.
        if body != self._last_body:
            self._last_body = body
            try:
                document = json.loads(body.decode("utf-8"))
            except ValueError:
                document = None
            version = document.get("version") if isinstance(document, dict) else None
            self._last_version = version if isinstance(version, str) else None
        return self._last_version

    def close(self):
        """Drop the connection; the next sample opens a new one."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
            self._buffer = b""


def certain_counts(totals, outages, start):
    """The healthy counts per service that the samples prove: ``(timeline, lowest)``.

    ``totals`` is ``{service: number of instances}``; ``outages`` are ``(service, url, first, last)``,
    the times of an instance's first and last failing sample of one outage (an ongoing one ends at
    its latest sample); ``start`` is when every instance had been sampled once: earlier times count
    from there. ``timeline`` is a list of ``Change``, the counts at ``start`` first, then one per
    change; ``lowest`` is ``{service: (count, t, sorted urls down then)}`` at the first time each
    service was at its lowest. An instance counts as down on ``[first, last]``.
    """
    events = {service: [] for service in totals}
    for service, url, first, last in outages:
        if last >= start:
            # At one time, outages begin (0) before they end (1): closed intervals.
            events[service] += [(max(first, start), 0, url), (last, 1, url)]
    timeline, lowest = [], {}
    for service in sorted(totals):
        down = set()
        pending = sorted(events[service])
        index = 0
        while index < len(pending) and pending[index][0] == start and pending[index][1] == 0:
            down.add(pending[index][2])
            index += 1
        count = totals[service] - len(down)
        timeline.append(Change(start, service, count))
        lowest[service] = (count, start, sorted(down))
        for t, kind, url in pending[index:]:
            if kind == 0:
                down.add(url)
            else:
                down.discard(url)
            if totals[service] - len(down) != count:
                count = totals[service] - len(down)
                timeline.append(Change(t, service, count))
                if count < lowest[service][0]:
                    lowest[service] = (count, t, sorted(down))
    timeline.sort(key=lambda change: change.t)
    return timeline, lowest


class QuorumMonitor:
    """Samples every health URL of every service continuously and records the worst healthy count.

    ``targets`` maps a service to its health URLs. Results (readable any time, and after
    ``stop()``): ``min_healthy`` {service: lowest healthy count since start}, ``timeline`` (a list
    of ``Change(t, service, healthy)``, one per change of a count, starting with the counts at
    ``t`` ~ 0), both counting only what the samples prove (see the module's docstring),
    ``transitions`` (a list of ``Transition(t, service, url, healthy, version)``, one per change of
    one target's sample, starting with its first sample), ``versions_seen`` {service: set of
    versions that answered healthy}, ``samples`` (requests made), ``healthy_now()`` and
    ``versions_now()``.
    """

    def __init__(self, targets, interval=0.005, timeout=0.25, max_seconds=900.0):
        if not targets:
            raise ValueError("no services to monitor; targets must map a service to its health URLs")
        for service, urls in targets.items():
            if not urls or isinstance(urls, str):
                raise ValueError("service %s needs a list of health URLs, got %r" % (service, urls))
        if interval < 0 or timeout <= 0 or max_seconds <= 0:
            raise ValueError("interval must be >= 0 and timeout, max_seconds > 0 seconds; got %r, %r, %r"
                             % (interval, timeout, max_seconds))
        self.interval = interval
        self.timeout = timeout
        self.max_seconds = max_seconds
        self._targets = [_Target(service, url, timeout) for service, urls in targets.items() for url in urls]
        urls = [target.url for target in self._targets]
        repeated = sorted({url for url in urls if urls.count(url) > 1})
        if repeated:
            # One instance counted twice would hide a real drop below quorum.
            raise ValueError("health URL(s) listed more than once: %s" % ", ".join(repeated))
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._all_sampled = threading.Event()
        self._threads = []
        self._started_at = None
        self._counted_from = None
        self._totals = {service: len(urls) for service, urls in targets.items()}
        # Per target url: [first, last] failing sample of its ongoing outage; closed outages apart.
        self._open = {}
        self._outages = []
        self.transitions = []
        self._versions_seen = {service: set() for service in targets}
        self.expired = False
        self.failure = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def samples(self):
        """How many samples (health checks of one target) the monitor has taken so far."""
        return sum(target.samples for target in self._targets)

    @property
    def versions_seen(self):
        """{service: set of the versions its instances reported while healthy}, a copy."""
        with self._lock:
            return {service: set(versions) for service, versions in self._versions_seen.items()}

    def _certain(self):
        """``certain_counts`` of what was sampled so far (empty before every target was sampled once)."""
        with self._lock:
            if self._counted_from is None:
                return [], {}
            outages = self._outages + [(service, url, first, last) for url, (service, first, last) in self._open.items()]
            return certain_counts(self._totals, outages, self._counted_from)

    @property
    def min_healthy(self):
        """{service: the lowest healthy count the samples prove since start}."""
        return {service: count for service, (count, _t, _down) in self._certain()[1].items()}

    @property
    def timeline(self):
        """``Change(t, service, healthy)`` per change of a proven count, starting with the counts at ``t`` ~ 0."""
        return self._certain()[0]

    def elapsed(self):
        """Seconds since ``start()``, the clock of ``timeline`` and of ``assert_quorum``'s messages."""
        if self._started_at is None:
            raise RuntimeError("this QuorumMonitor has not been started")
        return time.monotonic() - self._started_at

    def start(self, timeout=None):
        """Start sampling and wait until every target has been sampled once; return self.

        ``timeout`` bounds that wait (default: twice the request timeout plus two seconds for
        threads to start on a busy machine). Raises RuntimeError, stopping again, if it expires.
        """
        if self._started_at is not None:
            raise RuntimeError("this QuorumMonitor was started already; make a new one for a new run")
        self._started_at = time.monotonic()
        for target in self._targets:
            thread = threading.Thread(target=self._watch, args=(target,), name="monitor %s" % target.url, daemon=True)
            self._threads.append(thread)
            thread.start()
        wait = 2 * self.timeout + 2.0 if timeout is None else timeout
        if not self._all_sampled.wait(wait):
            unsampled = [target.url for target in self._targets if target.healthy is None]
            self.stop()
            raise RuntimeError("the monitor could not sample %s within %.1fs" % (", ".join(unsampled), wait))
        return self

    def stop(self):
        """Stop sampling and wait for the threads (bounded by one request timeout each, at worst)."""
        self._stopping.set()
        deadline = time.monotonic() + 2 * self.timeout + self.interval + 1.0
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def healthy_now(self):
        """{service: number of instances whose latest sample was healthy}."""
        with self._lock:
            return {service: sum(1 for target in self._targets if target.service == service and target.healthy) for service in self._totals}

    def versions_now(self):
        """{service: {health URL: version it reports, or None while it is not healthy}}."""
        with self._lock:
            current = {service: {} for service in self._totals}
            for target in self._targets:
                current[target.service][target.url] = target.version
            return current

    def assert_quorum(self, quorums):
        """Raise AssertionError unless each service in ``quorums`` ({service: Q}) always had >= Q healthy.

        Also fails if the monitor did not watch the whole run: never started, stopped by
        ``max_seconds``, or a sampling thread crashed.
        """
        if not self._all_sampled.is_set():
            raise AssertionError("the monitor never sampled every target, so it proves nothing; start() it first")
        problems = []
        if self.failure:
            problems.append("a monitor thread crashed, so the run was not fully watched: %s" % self.failure)
        if self.expired:
            problems.append("the monitor stopped by itself after max_seconds=%gs, so it did not watch the whole run"
                            % self.max_seconds)
        lowest = self._certain()[1]
        for service, quorum in sorted(quorums.items()):
            if service not in lowest:
                problems.append("service %s is not monitored (monitored: %s)" % (service, ", ".join(sorted(lowest))))
            elif lowest[service][0] < quorum:
                count, t, down = lowest[service]
                problems.append("service %s dropped to %d healthy instances (quorum %d) at t=%.2fs; down then: %s"
                                % (service, count, quorum, t, ", ".join(down) or "none"))
        if problems:
            raise AssertionError("; ".join(problems))

    def _watch(self, target):
        try:
            while not self._stopping.is_set():
                if self.elapsed() >= self.max_seconds:
                    self.expired = True
                    self._stopping.set()
                    break
                healthy, version = target.sample()
                target.samples += 1
                self._record(target, healthy, version)
                self._stopping.wait(self.interval)
        except Exception:
            # A silently dead thread would freeze its target's last status: fail loudly instead.
            self.failure = "%s: %s" % (target.url, traceback.format_exc())
            self._stopping.set()
        finally:
            target.close()

    def _record(self, target, healthy, version):
        changed = healthy != target.healthy or version != target.version
        if healthy and not changed:
            return
        with self._lock:
            t = self.elapsed()
            if not healthy:
                first = self._open[target.url][1] if target.url in self._open else t
                self._open[target.url] = (target.service, first, t)
            elif target.url in self._open:
                self._outages.append((target.service, target.url) + self._open.pop(target.url)[1:])
            if not changed:
                return
            target.healthy, target.version = healthy, version
            self.transitions.append(Transition(t, target.service, target.url, healthy, version))
            if healthy and version is not None:
                self._versions_seen[target.service].add(version)
            if not self._all_sampled.is_set() and all(other.healthy is not None for other in self._targets):
                self._counted_from = t
                self._all_sampled.set()
