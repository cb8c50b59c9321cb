# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's Prometheus endpoint: gauges per service, counters per action, escaped labels."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.metrics import render_metrics, serve_metrics

# One sample line of the text exposition format: name{label="value",...} number.
SAMPLE = re.compile(r'\A[a-zA-Z_:][a-zA-Z0-9_:]*\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\} -?[0-9.e+]+\Z')


def status(host="web-01", connection="CONNECTED"):
    """A status dict shaped like the one Agent._write_status builds."""
    return {
        "host": host,
        "connection": connection,
        "updated": 1700000000.5,
        "services": {
            "app": {"running": "2.0", "healthy": True, "prepared": ["1.0", "2.0"],
                    "progress": {"phase": "switching", "step": "started"},
                    "decision": {"action": "resume", "reason": "resume the unfinished switching", "at": 1700000000.25}},
            "db": {"running": None, "healthy": False, "prepared": [], "progress": {}, "decision": None},
        },
        "decisions_total": {"wait": 41, "take_slot": 1},
        "zookeeper": {"requests": 17, "notifications": 3},
        "problems": ["ignored node /dc/roster/app/x y: not a valid host name"],
    }


def samples(text):
    return [line for line in text.splitlines() if not line.startswith("#")]


def parsed(text):
    """``[(sample name, {labels}, value)]`` in exposition order, as a Prometheus server reads them."""
    return [(sample.name, sample.labels, sample.value) for family in text_string_to_metric_families(text) for sample in family.samples]


def test_every_metric_is_a_documented_gauge_or_counter_with_one_line_per_service():
    text = render_metrics(status())
    assert text.endswith("\n")
    web = {"host": "web-01"}
    assert parsed(text) == [
        ("zkrollout_agent_connected", web, 1),
        ("zkrollout_service_info", dict(web, service="app", version="2.0"), 1),
        ("zkrollout_service_healthy", dict(web, service="app"), 1),
        ("zkrollout_service_healthy", dict(web, service="db"), 0),
        ("zkrollout_service_switching", dict(web, service="app"), 1),
        ("zkrollout_service_switching", dict(web, service="db"), 0),
        ("zkrollout_last_decision_timestamp_seconds", dict(web, service="app"), 1700000000.25),
        ("zkrollout_last_decision_timestamp_seconds", dict(web, service="db"), 0),
        ("zkrollout_decisions_total", dict(web, action="take_slot"), 1),
        ("zkrollout_decisions_total", dict(web, action="wait"), 41),
        ("zkrollout_agent_zookeeper_requests_total", web, 17),
        ("zkrollout_agent_watch_notifications_total", web, 3),
        ("zkrollout_agent_problems", web, 1),
    ]
    for line in samples(text):
        assert SAMPLE.match(line), line
    families = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert families == [("zkrollout_agent_connected", "gauge"), ("zkrollout_service_info", "gauge"), ("zkrollout_service_healthy", "gauge"),
                        ("zkrollout_service_switching", "gauge"), ("zkrollout_last_decision_timestamp_seconds", "gauge"),
                        ("zkrollout_decisions_total", "counter"), ("zkrollout_agent_zookeeper_requests_total", "counter"),
                        ("zkrollout_agent_watch_notifications_total", "counter"), ("zkrollout_agent_problems", "gauge")]
    assert re.findall(r"^# HELP (\S+) ", text, re.M) == [name for name, _unused in families]


@pytest.mark.parametrize("connection", ["SUSPENDED", "LOST", "NOT STARTED"])
def test_a_session_that_is_not_connected_reads_0(connection):
    assert ("zkrollout_agent_connected", {"host": "web-01"}, 0) in parsed(render_metrics(status(connection=connection)))


def test_a_service_that_is_not_running_has_no_version_line():
    assert [labels for name, labels, _value in parsed(render_metrics(status())) if name == "zkrollout_service_info"] == [
        {"host": "web-01", "service": "app", "version": "2.0"}]


@pytest.mark.parametrize("host, label", [
    ('we"b', 'we\\"b'),
    ("we\\b", "we\\\\b"),
    ("we\nb", "we\\nb"),
])
def test_label_values_are_escaped(host, label):
    text = render_metrics(status(host=host))
    assert re.search(r'^zkrollout_agent_connected\{host="%s"\} 1' % re.escape(label), text, re.M), text
    for line in samples(text):
        assert SAMPLE.match(line), line
    assert {labels["host"] for _name, labels, _value in parsed(text)} == {host}


def test_an_empty_status_before_the_first_iteration_still_renders():
    assert parsed(render_metrics({})) == [("zkrollout_agent_connected", {"host": ""}, 0)]


def test_a_scrape_reads_the_status_of_that_moment():
    current = {"status": status(connection="LOST")}
    server = serve_metrics(lambda: current["status"], bind="127.0.0.1", port=0)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        before = parsed(opener.open(server.url, timeout=5).read().decode())
        current["status"] = status(connection="CONNECTED")
        after = parsed(opener.open(server.url, timeout=5).read().decode())
    finally:
        server.stop()
    assert ("zkrollout_agent_connected", {"host": "web-01"}, 0) in before
    assert ("zkrollout_agent_connected", {"host": "web-01"}, 1) in after


def test_the_server_serves_metrics_on_loopback_and_nothing_else():
    server = serve_metrics(status, bind="127.0.0.1", port=0)
    try:
        base = "http://127.0.0.1:%d" % server.port
        assert server.url == base + "/metrics"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(base + "/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            assert response.read().decode() == render_metrics(status())
        openmetrics = urllib.request.Request(base + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with opener.open(openmetrics, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.read().decode().endswith("# EOF\n")
        with pytest.raises(urllib.error.HTTPError) as raised:
            opener.open(base + "/", timeout=5)
        assert raised.value.code == 404
    finally:
        server.stop()
