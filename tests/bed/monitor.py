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
within ``timeout`` is down. Whenever a target's status flips, the healthy count of its service
is recomputed under one lock, ``min_healthy`` is lowered if needed and the change is appended to
``timeline``. A count uses each target's latest sample, so it may lag reality by one sample
(``interval`` plus a request, a few milliseconds). Each target's own changes are kept too, in
``transitions`` (``Transition(t, service, url, healthy, version)``, starting with each target's
first sample), for measurements of when each instance went down and came back on which version.

Cost, measured on the 2-core test machine while other test runs kept it busy: at the default
5 ms interval one target gets ~150 samples/s; ten targets get ~110/s each and cost about 0.35
of a core in the monitor plus 0.5 in the services they poll; at ``interval=0.02`` the same ten
cost about 0.25 of a core in all. An outage shorter than one sample (``interval`` plus a
request) can be missed; raise ``timeout`` on a very busy machine, where a slow answer would
otherwise count as down (the safe direction, but a spurious failure).

No loop is unbounded: threads stop by themselves after ``max_seconds``, and ``assert_quorum``
then fails, because the run was not watched to its end.
"""

from __future__ import annotations

import collections
import http.client
import json
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
    """One health URL, its latest sample and the connection that samples it (owned by one thread)."""

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
        self._connection = None
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
            self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self._connection.request("GET", self.path)
        response = self._connection.getresponse()
        return response.status, response.read()

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


class QuorumMonitor:
    """Samples every health URL of every service continuously and records the worst healthy count.

    ``targets`` maps a service to its health URLs. Results (readable any time, and after
    ``stop()``): ``min_healthy`` {service: lowest healthy count since start}, ``timeline`` (a list
    of ``Change(t, service, healthy)``, one per change of a count, starting with the counts at
    ``t`` ~ 0), ``transitions`` (a list of ``Transition(t, service, url, healthy, version)``, one per
    change of one target's sample, starting with its first sample), ``versions_seen`` {service: set
    of versions that answered healthy}, ``samples`` (requests made), ``healthy_now()`` and
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
        self._healthy = {service: 0 for service in targets}
        self._lowest_at = {}
        self.min_healthy = {}
        self.timeline = []
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
            return dict(self._healthy)

    def versions_now(self):
        """{service: {health URL: version it reports, or None while it is not healthy}}."""
        with self._lock:
            current = {service: {} for service in self._healthy}
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
        with self._lock:
            for service, quorum in sorted(quorums.items()):
                if service not in self.min_healthy:
                    problems.append("service %s is not monitored (monitored: %s)" % (service, ", ".join(sorted(self.min_healthy))))
                elif self.min_healthy[service] < quorum:
                    t, down = self._lowest_at[service]
                    problems.append("service %s dropped to %d healthy instances (quorum %d) at t=%.2fs; down then: %s"
                                    % (service, self.min_healthy[service], quorum, t, ", ".join(down) or "none"))
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
                if healthy != target.healthy or version != target.version:
                    self._record(target, healthy, version)
                self._stopping.wait(self.interval)
        except Exception:
            # A silently dead thread would freeze its target's last status: fail loudly instead.
            self.failure = "%s: %s" % (target.url, traceback.format_exc())
            self._stopping.set()
        finally:
            target.close()

    def _record(self, target, healthy, version):
        with self._lock:
            t = self.elapsed()
            flipped = healthy != target.healthy
            target.healthy, target.version = healthy, version
            self.transitions.append(Transition(t, target.service, target.url, healthy, version))
            if healthy and version is not None:
                self._versions_seen[target.service].add(version)
            if not self._all_sampled.is_set():
                if all(other.healthy is not None for other in self._targets):
                    self._first_counts(t)
                return
            if flipped:
                self._recount(target.service, t)

    def _first_counts(self, t):
        for service in self._healthy:
            count = self._count(service)
            self._healthy[service] = self.min_healthy[service] = count
            self._lowest_at[service] = (t, self._down(service))
            self.timeline.append(Change(t, service, count))
        self._all_sampled.set()

    def _recount(self, service, t):
        count = self._count(service)
        self._healthy[service] = count
        self.timeline.append(Change(t, service, count))
        if count < self.min_healthy[service]:
            self.min_healthy[service] = count
            self._lowest_at[service] = (t, self._down(service))

    def _count(self, service):
        return sum(1 for target in self._targets if target.service == service and target.healthy)

    def _down(self, service):
        return [target.url for target in self._targets if target.service == service and not target.healthy]
