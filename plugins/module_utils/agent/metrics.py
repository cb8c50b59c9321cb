# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's Prometheus endpoint: one collector over the agent's status, read when scraped.

``AgentCollector(get_status)`` builds every family from the status dict the loop last wrote
(see ``Agent._write_status``), so the loop counts nothing twice and an agent that is never
scraped does no metrics work at all. ``cli`` imports this module only when ``metrics.port`` is
set, so an agent without an endpoint never loads prometheus_client either.
"""

from __future__ import annotations

from ..exposition import PROMETHEUS_IMPORT_ERROR, Collector, MetricsServer, registry_of, render

if PROMETHEUS_IMPORT_ERROR is None:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Per-service gauges: (name, help, value of one service's status).
SERVICE_GAUGES = (
    ("zkrollout_service_healthy", "1 while the health check passes (after rise/fall).", lambda s: int(bool(s["healthy"]))),
    ("zkrollout_service_switching", "1 while a switch or rollback is unfinished.", lambda s: int((s["progress"] or {}).get("phase", "idle") != "idle")),
    ("zkrollout_last_decision_timestamp_seconds", "When the last decision was taken.", lambda s: (s["decision"] or {}).get("at", 0)),
)


class AgentCollector(Collector):
    """The agent's families, built from ``get_status()`` at each scrape."""

    def __init__(self, get_status):
        self.get_status = get_status

    def collect(self):
        """Yield the metric families of the current status (an empty status yields the connection gauge only)."""
        status = self.get_status() or {}
        host = str(status.get("host", ""))
        services = sorted((status.get("services") or {}).items())
        yield _per_host(GaugeMetricFamily, "zkrollout_agent_connected", "1 while the ZooKeeper session is CONNECTED.", host,
                        int(status.get("connection") == "CONNECTED"))
        info = GaugeMetricFamily("zkrollout_service_info", "Version the instance runs (1 per running version).", labels=["host", "service", "version"])
        for name, service in services:
            if service["running"]:
                info.add_metric([host, name, str(service["running"])], 1)
        yield info
        for metric, help_text, value in SERVICE_GAUGES:
            family = GaugeMetricFamily(metric, help_text, labels=["host", "service"])
            for name, service in services:
                family.add_metric([host, name], value(service))
            yield family
        decisions = CounterMetricFamily("zkrollout_decisions", "Decisions taken, by action.", labels=["host", "action"])
        for action, count in sorted((status.get("decisions_total") or {}).items()):
            decisions.add_metric([host, action], count)
        yield decisions
        zookeeper = status.get("zookeeper")
        if zookeeper is not None:
            yield _per_host(CounterMetricFamily, "zkrollout_agent_zookeeper_requests", "Requests the agent sent to ZooKeeper (a transaction is one).",
                            host, zookeeper.get("requests", 0))
            yield _per_host(CounterMetricFamily, "zkrollout_agent_watch_notifications", "Watch notifications the agent received.",
                            host, zookeeper.get("notifications", 0))
        if "problems" in status:
            yield _per_host(GaugeMetricFamily, "zkrollout_agent_problems", "Malformed nodes in the agent's view of the tree (its status names them).",
                            host, len(status["problems"] or ()))


def _per_host(family_class, name, help_text, host, value):
    family = family_class(name, help_text, labels=["host"])
    family.add_metric([host], value)
    return family


def agent_registry(get_status):
    """A private registry with the AgentCollector of ``get_status``."""
    return registry_of(AgentCollector(get_status), "the agent's metrics.port")


def render_metrics(status):
    """The Prometheus text a scrape returns for one status dict."""
    return render(agent_registry(lambda: status))


def serve_metrics(get_status, bind="127.0.0.1", port=0):
    """A started MetricsServer of the agent's status on ``bind:port``."""
    return MetricsServer(agent_registry(get_status), bind, port, name="zkrollout-agent-metrics").start()
