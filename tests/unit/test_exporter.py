# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet exporter's families over snapshots built from the real payload classes (no ZooKeeper)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.exporter.cli import parse_listen
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.exporter.collector import SERVICE_GAUGES, FleetCollector, TreeRead
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import OVERALL_STATES, VERDICTS, rollout_report
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact, DeployEntry, Failure, ReleaseEntry, RolloutState, Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.core.snapshot import QueueMember, ServiceState, Snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.exposition import registry_of, render

NOW = 1700000000.0


def release(name, version="2.0.0", quorum=2, max_parallel=2):
    return ReleaseEntry(rollout="r1", service=name, version=version, artifact=Artifact(url="https://artifacts.example/%s.tgz" % name, sha256="ab" * 32),
                        quorum=quorum, max_parallel=max_parallel)


def fleet(failed=False, rollout_state="running"):
    """A rolls to 2.0.0 on h1..h6: h1 done, h2 upgrading, h3 ready, h6 offline; B (not staged) runs on h1."""
    slot = Slot(to_version="2.0.0", from_version="1.0.0", since=NOW, owner="agent:h2")
    a = ServiceState(name="A", release=release("A"), release_version=0, roster=("h1", "h2", "h3", "h4", "h5", "h6"),
                     registrations={"h1": "2.0.0", "h3": "1.0.0", "h4": "1.0.0", "h5": "1.0.0"},
                     ready_queue=(QueueMember(node="h3-0000000001", name="h3", sequence=1),), slots={"h2": slot},
                     failures={"h4": Failure(version="2.0.0", stage="health", reason="it broke", at=NOW)} if failed else {})
    b = ServiceState(name="B", roster=("h1",), registrations={"h1": "1.0.0"})
    rollout = RolloutState(id="r1", state=rollout_state, spec_hash="cd" * 32, services=["A"], by="deployer")
    queue = (QueueMember(node="A-0000000001", name="A", sequence=1),)
    return Snapshot(rollout=rollout, rollout_version=0, deploy_queue=queue, deploy_entries={"A-0000000001": DeployEntry(service="A")},
                    services={"A": a, "B": b}, live_agents=frozenset({"h1", "h2", "h3", "h4", "h5"}), live_sessions=frozenset())


def scrape(read):
    """``{(name, sorted label items): value}`` and the family types, as a Prometheus server would read the exporter."""
    families = list(text_string_to_metric_families(render(registry_of(FleetCollector(lambda: read)))))
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}
    return values, {family.name: family.type for family in families}


def good_read(snapshot):
    return TreeRead(snapshot=snapshot, report=rollout_report(snapshot), connected=True, duration=0.01, errors_total=2)


def test_per_service_healthy_quorum_budget_and_slots_are_what_the_report_says():
    values, types = scrape(good_read(fleet()))
    a = (("service", "A"),)
    assert values[("zkrollout_fleet_service_healthy", a)] == 4
    assert values[("zkrollout_fleet_service_quorum", a)] == 2
    assert values[("zkrollout_fleet_service_budget", a)] == 1
    assert values[("zkrollout_fleet_service_slots_held", a)] == 1
    assert values[("zkrollout_fleet_service_max_parallel", a)] == 2
    assert values[("zkrollout_fleet_service_hosts", a)] == 6
    assert values[("zkrollout_fleet_service_online", a)] == 4
    assert values[("zkrollout_fleet_service_ready_queue", a)] == 1
    assert values[("zkrollout_fleet_service_on_target", a)] == 1
    assert values[("zkrollout_fleet_service_complete", a)] == 0
    assert values[("zkrollout_fleet_service_target_info", (("service", "A"), ("version", "2.0.0")))] == 1
    assert all(types[name] == "gauge" for name, _help, _key, _value in SERVICE_GAUGES)


def test_every_service_gauge_matches_the_report_for_every_service():
    snapshot = fleet(failed=True)
    report = rollout_report(snapshot)
    values, _types = scrape(good_read(snapshot))
    for name, service in report["services"].items():
        for metric, _help, key, value in SERVICE_GAUGES:
            if service[key] is None:
                assert (metric, (("service", name),)) not in values
            else:
                assert values[(metric, (("service", name),))] == value(service[key]), (metric, name)


def test_a_service_that_is_not_staged_has_no_quorum_target_or_max_parallel():
    values, _types = scrape(good_read(fleet()))
    b = (("service", "B"),)
    assert ("zkrollout_fleet_service_quorum", b) not in values
    assert ("zkrollout_fleet_service_max_parallel", b) not in values
    assert not [key for key in values if key[0] == "zkrollout_fleet_service_target_info" and ("service", "B") in key[1]]
    assert values[("zkrollout_fleet_service_state", (("service", "B"), ("state", "idle")))] == 1


@pytest.mark.parametrize("failed, rollout_state, service_state, overall", [
    (False, "running", "ready", "running"),
    (True, "running", "halted", "failed"),
    (False, "paused", "paused", "paused"),
])
def test_the_state_gauges_set_exactly_one_known_state(failed, rollout_state, service_state, overall):
    values, _types = scrape(good_read(fleet(failed=failed, rollout_state=rollout_state)))
    a_states = {dict(labels)["state"]: value for (name, labels), value in values.items()
                if name == "zkrollout_fleet_service_state" and ("service", "A") in labels}
    assert set(a_states) == set(VERDICTS)
    assert {state for state, value in a_states.items() if value == 1} == {service_state}
    rollout_states = {dict(labels)["state"]: value for (name, labels), value in values.items() if name == "zkrollout_fleet_rollout_state"}
    assert set(rollout_states) == set(OVERALL_STATES)
    assert {state for state, value in rollout_states.items() if value == 1} == {overall}


def test_per_host_versions_online_upgrading_and_agents():
    values, _types = scrape(good_read(fleet()))
    assert values[("zkrollout_fleet_host_version_info", (("host", "h1"), ("service", "A"), ("version", "2.0.0")))] == 1
    assert values[("zkrollout_fleet_host_version_info", (("host", "h1"), ("service", "B"), ("version", "1.0.0")))] == 1
    assert not [key for key in values if key[0] == "zkrollout_fleet_host_version_info" and ("host", "h2") in key[1]]
    assert values[("zkrollout_fleet_host_online", (("host", "h2"), ("service", "A")))] == 0
    assert values[("zkrollout_fleet_host_upgrading", (("host", "h2"), ("service", "A")))] == 1
    assert values[("zkrollout_fleet_host_online", (("host", "h6"), ("service", "A")))] == 0
    assert values[("zkrollout_fleet_host_on_target", (("host", "h1"), ("service", "A")))] == 1
    assert values[("zkrollout_fleet_host_on_target", (("host", "h3"), ("service", "A")))] == 0
    # B has no target: whether a host runs it is not a question.
    assert ("zkrollout_fleet_host_on_target", (("host", "h1"), ("service", "B"))) not in values
    assert values[("zkrollout_fleet_agent_connected", (("host", "h5"),))] == 1
    assert values[("zkrollout_fleet_agent_connected", (("host", "h6"),))] == 0


def test_rollout_progress_and_identity():
    values, _types = scrape(good_read(fleet()))
    assert values[("zkrollout_fleet_rollout_info", (("by", "deployer"), ("rollout", "r1")))] == 1
    assert values[("zkrollout_fleet_rollout_services", ())] == 1
    assert values[("zkrollout_fleet_rollout_services_complete", ())] == 0
    assert values[("zkrollout_fleet_rollout_instances", ())] == 6
    assert values[("zkrollout_fleet_rollout_instances_on_target", ())] == 1
    assert values[("zkrollout_fleet_deploy_queue", ())] == 1


def test_an_exporter_that_read_the_tree_says_so_and_counts_its_problems():
    snapshot = Snapshot(problems=("ignored node /dc/roster/A/x y: not a valid host name",), live_agents=frozenset(), live_sessions=frozenset())
    values, types = scrape(good_read(snapshot))
    assert values[("zkrollout_fleet_up", ())] == 1
    assert values[("zkrollout_fleet_zookeeper_connected", ())] == 1
    assert values[("zkrollout_fleet_problems", ())] == 1
    assert values[("zkrollout_fleet_tree_exists", ())] == 1
    assert values[("zkrollout_fleet_read_errors_total", ())] == 2
    assert types["zkrollout_fleet_read_errors"] == "counter"
    assert values[("zkrollout_fleet_rollout_state", (("state", "none"),))] == 1


def test_a_failed_read_gives_up_0_and_no_fleet_values():
    values, _types = scrape(TreeRead(error="not connected to ZooKeeper", connected=False, errors_total=3))
    assert values == {
        ("zkrollout_fleet_up", ()): 0,
        ("zkrollout_fleet_zookeeper_connected", ()): 0,
        ("zkrollout_fleet_read_duration_seconds", ()): 0,
        ("zkrollout_fleet_read_errors_total", ()): 3,
    }


@pytest.mark.parametrize("listen, expected", [
    ("127.0.0.1:9465", ("127.0.0.1", 9465)),
    ("[::1]:9465", ("::1", 9465)),
    (":9465", ("0.0.0.0", 9465)),
])
def test_listen_addresses(listen, expected):
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9465", "localhost", "127.0.0.1:99999", "127.0.0.1:http"])
def test_a_bad_listen_address_is_refused_with_an_example(listen):
    with pytest.raises(ValueError, match="expected address:port, for example 127.0.0.1:9465"):
        parse_listen(listen)


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "zkrollout-fleet.json"


def _queries(dashboard):
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"])
    return exprs


def test_the_dashboard_queries_only_metrics_the_exporter_serves():
    dashboard = json.loads(DASHBOARD.read_text())
    text = render(registry_of(FleetCollector(lambda: good_read(fleet(failed=True)))))
    served = {family.name for family in text_string_to_metric_families(text)}
    served |= {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
    queried = {name for expr in _queries(dashboard) for name in re.findall(r"\bzkrollout_[a-z_]+", expr)}
    assert queried, "the dashboard queries no zkrollout metric"
    assert sorted(queried - served) == []


def test_the_dashboard_has_the_panels_operators_look_for():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {panel["title"] for panel in dashboard["panels"] if panel["type"] != "row"}
    assert {"Rollout state", "Healthy vs quorum", "Slots held and budget", "Service state", "Versions per host"} <= titles
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(target["refId"] for target in panel["targets"]), panel["title"]
