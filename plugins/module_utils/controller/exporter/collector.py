# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's metric families: what ``rollout_report`` says, as Prometheus gauges.

``fleet_families(snapshot, report)`` is pure: every value comes from the controller report
(``controller.report``), the one place that says what the tree means, and only the agents'
presence is taken from the snapshot, which the report does not list. ``exporter_families``
says how the exporter's own read went. ``TreeReader`` does the reading: the whole tree in the
bounded number of round trips of ``store.reads.read_snapshot``, at most once per
``min_interval`` whatever the number of scrapers, and a read that fails or a tree the report
cannot make sense of becomes an error, never an exception out of a scrape.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

from ...exposition import PROMETHEUS_IMPORT_ERROR, Collector
from ...store.client import ZK_ERRORS
from ...store.reads import read_snapshot
from ..report import OVERALL_STATES, VERDICTS, rollout_report

if PROMETHEUS_IMPORT_ERROR is None:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Per-service gauges: (name, help, report key, value of the report's entry). Keys that are None
# for a service that is not staged (quorum, max_parallel) give no sample for it.
SERVICE_GAUGES = (
    ("zkrollout_fleet_service_hosts", "Hosts in the service's roster.", "hosts", len),
    ("zkrollout_fleet_service_online", "Instances registered (online and healthy as their agent last saw them).", "online", len),
    ("zkrollout_fleet_service_healthy", "Instances that count for quorum: registered and holding no upgrade slot.", "healthy", int),
    ("zkrollout_fleet_service_quorum", "Instances that must stay healthy (the release's quorum resolved against the roster).", "quorum_resolved", int),
    ("zkrollout_fleet_service_budget", "Instances that quorum and max_parallel let go down now (the state says whether the service may roll).",
     "budget", int),
    ("zkrollout_fleet_service_max_parallel", "Upgrade slots the release allows at once.", "max_parallel", int),
    ("zkrollout_fleet_service_slots_held", "Upgrade slots held.", "slots", len),
    ("zkrollout_fleet_service_abandoned_slots", "Upgrade slots whose owner is no longer connected (free them with rollout_control).",
     "abandoned_slots", len),
    ("zkrollout_fleet_service_ready_queue", "Hosts in the ready queue.", "ready_queue", len),
    ("zkrollout_fleet_service_failures", "Failure records (each halts the service unless on_failure is continue).", "failures", len),
    ("zkrollout_fleet_service_on_target", "Instances registered at the target version.", "on_target", len),
    ("zkrollout_fleet_service_complete", "1 once every online instance runs the target and no slot is held.", "complete", int),
)
# Rollout progress gauges: (name, help, key of the report's progress).
PROGRESS_GAUGES = (
    ("zkrollout_fleet_rollout_services", "Services in the rollout.", "services_total"),
    ("zkrollout_fleet_rollout_services_complete", "Services of the rollout that are complete.", "services_complete"),
    ("zkrollout_fleet_rollout_instances", "Instances of the rollout's services.", "instances_total"),
    ("zkrollout_fleet_rollout_instances_on_target", "Instances of the rollout's services that run their target.", "instances_on_target"),
)


@dataclass(frozen=True)
class TreeRead(object):
    """One read of the tree: the snapshot and its report, or the error that prevented them."""

    snapshot: object = None
    report: dict = None
    error: str = None
    connected: bool = False
    duration: float = 0.0
    errors_total: int = 0


def _gauge(name, help_text, labels, rows):
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in rows:
        family.add_metric([str(v) for v in values], value)
    return family


def _states(name, help_text, labels, known, rows):
    """A gauge with a ``state`` label: 1 for the current state, 0 for every other known one."""
    family = GaugeMetricFamily(name, help_text, labels=list(labels) + ["state"])
    for values, current in rows:
        for state in list(known) + ([current] if current not in known else []):
            family.add_metric([str(v) for v in values] + [state], int(state == current))
    return family


def exporter_families(read):
    """How the last read went: up, connected, duration, errors so far, problems found, whether the tree exists."""
    ok = read.report is not None
    yield _gauge("zkrollout_fleet_up", "1 if the tree was read for this scrape; 0 if not (the exporter logs why).", [], [((), int(ok))])
    yield _gauge("zkrollout_fleet_zookeeper_connected", "1 while the exporter's ZooKeeper session is connected.", [], [((), int(read.connected))])
    yield _gauge("zkrollout_fleet_read_duration_seconds", "How long the last read of the tree took.", [], [((), read.duration)])
    errors = CounterMetricFamily("zkrollout_fleet_read_errors", "Reads of the tree that failed since the exporter started.")
    errors.add_metric([], read.errors_total)
    yield errors
    if ok:
        yield _gauge("zkrollout_fleet_problems", "Malformed or unexpected znodes in the tree (the exporter logs each one when it appears).", [],
                     [((), len(read.report["problems"]))])
        yield _gauge("zkrollout_fleet_tree_exists", "1 if the rollout tree's root exists.", [], [((), int(read.snapshot.exists))])


def fleet_families(snapshot, report):
    """The families of the rollout, its services and its hosts, from ``report = rollout_report(snapshot)``."""
    rollout = report["rollout"]
    yield _states("zkrollout_fleet_rollout_state", "The rollout's overall state (1 for the current one).", [], OVERALL_STATES, [((), report["state"])])
    yield _gauge("zkrollout_fleet_rollout_info", "The rollout in the tree (1), by id and by who seeded it.", ["rollout", "by"],
                 [((rollout["id"], rollout["by"]), 1)] if rollout else [])
    for name, help_text, key in PROGRESS_GAUGES:
        yield _gauge(name, help_text, [], [((), report["progress"][key])])
    yield _gauge("zkrollout_fleet_deploy_queue", "Services still to roll (the deploy queue without its complete services).", [],
                 [((), len(report["deploy_queue"]))])
    services = sorted(report["services"].items())
    yield _states("zkrollout_fleet_service_state", "The service's verdict (1 for the current one), as rollout_info's verdict says it.",
                  ["service"], VERDICTS, [((name,), service["verdict"]) for name, service in services])
    yield _gauge("zkrollout_fleet_service_target_info", "The version the service is rolled to (1).", ["service", "version"],
                 [((name, service["target"]), 1) for name, service in services if service["target"] is not None])
    for metric, help_text, key, value in SERVICE_GAUGES:
        yield _gauge(metric, help_text, ["service"], [((name,), value(service[key])) for name, service in services if service[key] is not None])
    cells = [(host, name, cell) for host, row in sorted(report["hosts"].items()) for name, cell in sorted(row.items())]
    yield _gauge("zkrollout_fleet_host_version_info", "The version a host's instance is registered with (1).", ["host", "service", "version"],
                 [((host, name, cell["version"]), 1) for host, name, cell in cells if cell["version"]])
    yield _gauge("zkrollout_fleet_host_online", "1 while a host's instance is registered (online), 0 while it is not.", ["host", "service"],
                 [((host, name), int(cell["version"] is not None)) for host, name, cell in cells])
    yield _gauge("zkrollout_fleet_host_upgrading", "1 while a host holds an upgrade slot of the service.", ["host", "service"],
                 [((host, name), int(cell["state"] == "upgrading")) for host, name, cell in cells])
    yield _gauge("zkrollout_fleet_host_on_target", "1 if a host's instance runs the service's target version.", ["host", "service"],
                 [((host, name), int(host in report["services"][name]["on_target"])) for host, name, cell in cells if cell["target"]])
    if snapshot.live_agents is not None:
        hosts = sorted(set(report["hosts"]) | set(snapshot.live_agents))
        yield _gauge("zkrollout_fleet_agent_connected", "1 while the host's agent holds its presence node (its session is alive).", ["host"],
                     [((host,), int(host in snapshot.live_agents)) for host in hosts])


class FleetCollector(Collector):
    """The exporter's collector: ``read()`` (a TreeReader's) at each scrape, then its families."""

    def __init__(self, read):
        self.read = read

    def collect(self):
        """Yield the exporter's families and, if the read succeeded, the fleet's."""
        read = self.read()
        yield from exporter_families(read)
        if read.report is not None:
            yield from fleet_families(read.snapshot, read.report)


class TreeReader(object):
    """Reads the tree for scrapes, at most once per ``min_interval`` seconds; ``read()`` returns a TreeRead."""

    def __init__(self, client, layout, min_interval=1.0, logger=None, clock=time.monotonic):
        self.client = client
        self.layout = layout
        self.min_interval = min_interval
        self.log = logger or logging.getLogger("zkrollout.exporter")
        self.clock = clock
        self._lock = threading.Lock()
        self._last, self._last_at = None, None
        self._errors = 0
        self._problems = frozenset()

    def read(self):
        """The last read if it is recent enough, else a new one (concurrent scrapes share it)."""
        with self._lock:
            if self._last is not None and self.clock() - self._last_at < self.min_interval:
                return self._last
            started = self.clock()
            read = self._read()
            self._last_at = self.clock()
            self._last = dataclasses.replace(read, duration=self._last_at - started, errors_total=self._errors)
            return self._last

    def _read(self):
        connected = bool(self.client.connected)
        error = snapshot = report = None
        if not connected:
            error = "not connected to ZooKeeper (session %s); kazoo keeps reconnecting" % self.client.state
        else:
            try:
                snapshot = read_snapshot(self.client, self.layout)
                report = rollout_report(snapshot)
            except ZK_ERRORS as exc:
                error = "reading the tree under %s failed: %s%s" % (self.layout.root, exc.__class__.__name__, ": %s" % exc if str(exc) else "")
            except Exception as exc:  # pylint: disable=broad-except
                # A tree the report cannot make sense of must cost one scrape, not the exporter.
                self.log.exception("the report of the tree under %s failed", self.layout.root)
                error = "the report of the tree under %s failed: %s" % (self.layout.root, exc)
        if error is not None:
            self._errors += 1
            self.log.warning(error)
            return TreeRead(error=error, connected=connected)
        problems = frozenset(report["problems"])
        for problem in sorted(problems - self._problems):
            self.log.warning("problem in the tree: %s", problem)
        self._problems = problems
        return TreeRead(snapshot=snapshot, report=report, connected=connected)
