# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure halves of the inventory and lookup plugins: groups and host variables from a Snapshot,
the group names Ansible accepts, and the summaries the lookup returns (no server)."""

from __future__ import annotations

import pytest

from ansible_collections.zkrollout.dc.plugins.inventory.zookeeper import safe_group_name
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.inventory import fleet_inventory, service_group, version_group
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import rollout_report, rollout_summary, service_summary
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact, ReleaseEntry, RolloutState, Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.core.snapshot import QueueMember, ServiceState, Snapshot


def _snapshot(live_agents=("h1", "h2")):
    """web on h1 (2.0, the target), h2 (upgrading, holds a slot) and h3 (down); cache on h1 at 1.0, not staged."""
    release = ReleaseEntry(rollout="r1", service="web", version="2.0", quorum=1, max_parallel=1,
                           artifact=Artifact(url="https://artifacts.example/web-2.0.tar.gz", sha256="ab" * 32))
    web = ServiceState(name="web", release=release, release_version=0, roster=("h1", "h2", "h3"), registrations={"h1": "2.0"},
                       slots={"h2": Slot(to_version="2.0", from_version="1.0", since=1.0, owner="agent:h2")})
    cache = ServiceState(name="cache", roster=("h1",), registrations={"h1": "1.0"})
    rollout = RolloutState(id="r1", state="running", spec_hash="cd" * 32, services=["web"])
    return Snapshot(rollout=rollout, rollout_version=0, deploy_queue=(QueueMember(node="web-0000000001", name="web", sequence=1),),
                    services={"web": web, "cache": cache}, live_agents=frozenset(live_agents), live_sessions=frozenset())


def test_hosts_are_grouped_by_service_by_registered_version_and_by_agent_presence():
    groups = fleet_inventory(_snapshot())["groups"]

    assert groups == {
        "zkrollout_service_web": ["h1", "h2", "h3"],
        "zkrollout_service_cache": ["h1"],
        "zkrollout_web_2.0": ["h1"],
        "zkrollout_cache_1.0": ["h1"],
        "zkrollout_online": ["h1", "h2"],
        "zkrollout_offline": ["h3"],
    }


def test_host_variables_give_each_service_its_version_target_state_and_health():
    hosts = fleet_inventory(_snapshot())["hosts"]

    assert hosts["h1"] == {
        "zkrollout_online": True,
        "zkrollout_services": {
            "cache": {"version": "1.0", "target": None, "state": "online", "healthy": True},
            "web": {"version": "2.0", "target": "2.0", "state": "online", "healthy": True},
        },
    }
    assert hosts["h2"]["zkrollout_services"]["web"] == {"version": None, "target": "2.0", "state": "upgrading", "healthy": False}
    assert hosts["h3"] == {"zkrollout_online": False, "zkrollout_services": {"web": {"version": None, "target": "2.0", "state": "offline",
                                                                                     "healthy": False}}}


def test_an_empty_tree_has_no_hosts_and_empty_presence_groups():
    assert fleet_inventory(Snapshot(exists=False)) == {"hosts": {}, "groups": {"zkrollout_online": [], "zkrollout_offline": []}, "problems": []}


@pytest.mark.parametrize(
    "raw, safe",
    [
        (version_group("web", "2.0.0"), "zkrollout_web_2_0_0"),
        (version_group("web", "1.2.3+build-7"), "zkrollout_web_1_2_3_build_7"),
        (service_group("web-front.eu"), "zkrollout_service_web_front_eu"),
        ("zkrollout_online", "zkrollout_online"),
    ],
)
def test_group_names_become_valid_variable_names(raw, safe):
    assert safe_group_name(raw) == safe


def test_the_service_summary_is_the_reports_verdict_counts_and_versions_by_host():
    report = rollout_report(_snapshot())

    summary = service_summary(report, "web")

    assert summary["state"] == report["services"]["web"]["verdict"] == "rolling"
    assert summary["versions"] == {"h1": "2.0", "h2": None, "h3": None}
    assert (summary["target"], summary["healthy"], summary["quorum"], summary["budget"]) == ("2.0", 1, 1, 0)
    assert list(summary["slots"]) == ["h2"]


def test_the_rollout_summary_names_the_rollout_what_is_left_and_each_services_state():
    summary = rollout_summary(rollout_report(_snapshot()))

    assert (summary["id"], summary["state"], summary["deploy_queue"]) == ("r1", "running", ["web"])
    assert summary["services"]["web"]["state"] == "rolling"
    assert summary["services"]["cache"] == {"state": "idle", "reason": "cache is not staged in any rollout", "target": None, "complete": False}
