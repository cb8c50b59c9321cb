# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real agent process's metrics endpoint, scraped while it upgrades itself; and one without prometheus_client."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.zkrollout.dc.tests.bed.agents import AGENT_MODULE
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import free_ports

from .agent_rollouts import V1, V2


def _with_metrics(fleet, ports):
    """Make each agent serve its metrics on 127.0.0.1:``ports[host]`` (as the role writes ``metrics`` into the config)."""
    config = fleet.fleet.config
    fleet.fleet.config = lambda host: dict(config(host), metrics={"bind": "127.0.0.1", "port": ports[host]})
    return fleet


def _scrape(port):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open("http://127.0.0.1:%d/metrics" % port, timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def _scraped_when(port, condition):
    """The scrape if ``condition(values)`` holds, else None (for ``wait_for``)."""
    values = _scrape(port)
    return values if condition(values) else None


def test_a_running_agent_serves_its_state_and_the_metrics_follow_its_upgrade(bed):
    ports = dict(zip(("h1", "h2"), free_ports(2), strict=True))
    fleet = _with_metrics(bed(hosts=2, services=("A",)), ports).start()
    host, port = "h1", ports["h1"]
    before = fleet.wait_for(lambda: _scraped_when(port, lambda values: values.get(("zkrollout_agent_connected", (("host", host),))) == 1), 15,
                            "the agent's metrics to say it is connected")
    assert before[("zkrollout_service_info", (("host", host), ("service", "A"), ("version", V1)))] == 1
    assert before[("zkrollout_service_healthy", (("host", host), ("service", "A")))] == 1
    assert before[("zkrollout_agent_zookeeper_requests_total", (("host", host),))] > 0

    fleet.seed({"A": {"version": V2, "quorum": 1}})
    fleet.wait_done(timeout=60)
    on_v2 = ("zkrollout_service_info", (("host", host), ("service", "A"), ("version", V2)))
    after = fleet.wait_for(lambda: _scraped_when(port, lambda values: on_v2 in values), 15, "the agent's metrics to show %s" % V2)
    assert ("zkrollout_service_info", (("host", host), ("service", "A"), ("version", V1))) not in after
    assert after[("zkrollout_decisions_total", (("action", "take_slot"), ("host", host)))] >= 1
    assert after[("zkrollout_service_switching", (("host", host), ("service", "A")))] == 0


def test_an_agent_asked_for_metrics_without_prometheus_client_refuses_to_start_and_says_what_to_install(bed, tmp_path):
    fleet = _with_metrics(bed(hosts=1, services=("A",)), {"h1": 9464})
    [host] = fleet.hosts
    config = fleet.fleet.write_config(host)
    # A package of that name that fails to import, as on a host whose venv lacks the library.
    (tmp_path / "prometheus_client").mkdir()
    (tmp_path / "prometheus_client" / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + [p for p in sys.path if p]))
    for command in ("check", "run"):
        result = subprocess.run([sys.executable, "-m", AGENT_MODULE, "--config", config, command], capture_output=True, text=True, env=env,
                                timeout=60, check=False)
        assert result.returncode == 2, result
        assert "metrics.port in %s needs the prometheus_client Python library" % config in result.stderr
        assert "pip install prometheus_client" in result.stderr
    # The same host without an endpoint needs no prometheus_client at all.
    del fleet.fleet.config
    without_metrics = fleet.fleet.write_config(host)
    result = subprocess.run([sys.executable, "-m", AGENT_MODULE, "--config", without_metrics, "check"], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert result.returncode == 0, result
