# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller modules (rollout, staging, deploy_queue, rollout_control, rollout_info) run as
Ansible runs them, through pytest-ansible's ``ansible_adhoc`` fixture, against a real ZooKeeper.

Every refusal, every validation error and every check-mode run is checked against a dump taken
before the task of the test's whole tree and of the server's top level: the task must leave
every znode byte-for-byte (and version-for-version) as it was. The agents' side of the tree is
played by ``tree.FakeFleet``; preconditions are seeded through the core (``tree.seed``), so each
test spends its Ansible run on the behaviour it proves.
"""

from __future__ import annotations

import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import overall_state
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import WriteRefused, plan_control, read_plan_apply
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import ReleaseSpec, Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import adopt_slot
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import LOOPBACK, free_ports

from . import tree
from .tree import release, service

pytestmark = [
    pytest.mark.zookeeper,
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore:Host management is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:AnsibleCollectionFinder has already been configured:UserWarning"),
]


def _three_hosts(fleet, versions=None):
    """h1..h3 run A, B and C at 1.0.0 (or ``versions``)."""
    for host in ("h1", "h2", "h3"):
        fleet.join(host, versions or {"A": "1.0.0", "B": "1.0.0", "C": "1.0.0"})


def _abc_release(**fields):
    """B depends on A and is declared first; C is independent: the deploy order is A, B, C."""
    return release(service("B", quorum=1, depends_on=["A"]), service("A", quorum="50%"), service("C", max_parallel=2), **fields)


def _assert_unchanged(tree_view, before, result):
    after = tree_view()
    assert after == before, "the task changed the tree (%s): %s" % (tree.describe_difference(before, after), result.get("msg"))


# Seeding.
def test_seeding_writes_every_staging_entry_the_deploy_queue_and_the_rollout_node(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    spec = _abc_release(id="r1")

    result = zkrollout("rollout", release=spec, by="awx job 42")

    assert result["changed"] is True, result
    assert result["rollout_id"] == "r1"
    assert result["deploy_order"] == ["A", "B", "C"]
    snapshot = read_snapshot(client, layout)
    expected = ReleaseSpec.from_dict(spec)
    for name in ("A", "B", "C"):
        assert snapshot.service(name).release == release_signing.sign(expected.service(name).release_entry("r1")), name
        for path in layout.release_children(name):
            assert client.exists(path) is not None, "seeding did not create %s" % path
    assert snapshot.queued_services == ["A", "B", "C"]
    assert [snapshot.deploy_entries[m.node].depends_on for m in snapshot.deploy_queue] == [[], ["A"], []]
    assert (snapshot.rollout.id, snapshot.rollout.state, snapshot.rollout.by) == ("r1", "running", "awx job 42")
    assert snapshot.rollout.services == ["A", "B", "C"]
    assert snapshot.rollout.spec_hash == expected.spec_hash
    assert snapshot.problems == ()


@pytest.mark.parametrize("rollout_id", ["r1", None], ids=["with-id", "generated-id"])
def test_seeding_the_same_release_again_reports_no_change_and_writes_nothing(zkrollout, fleet, client, rollout_id, layout, tree_view):
    _three_hosts(fleet)
    spec = _abc_release(**({"id": rollout_id} if rollout_id else {}))
    first = tree.seed(client, layout, spec)
    before = tree_view()

    again = zkrollout("rollout", release=spec)

    assert again["changed"] is False, again
    assert again["rollout_id"] == first.result["rollout_id"]
    assert "already seeded" in again["msg"]
    _assert_unchanged(tree_view, before, again)


def _delete_subtrees(client, layout, name):
    for path in (layout.ready_queue(name), layout.failures(name)):
        client.delete(path, recursive=True)


def test_a_staged_release_without_its_sub_trees_is_named_and_repaired_by_seeding_or_staging_again(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    spec = _abc_release(id="r1")
    tree.seed(client, layout, spec)
    _delete_subtrees(client, layout, "A")

    info = zkrollout("rollout_info")
    assert any(layout.ready_queue("A") in problem and "re-stage" in problem for problem in info["problems"]), info["problems"]

    again = zkrollout("rollout", release=spec)
    assert again["changed"] is True and "repaired" in again["msg"], again
    assert all(client.exists(path) for path in layout.release_children("A"))

    _delete_subtrees(client, layout, "B")
    entry = read_snapshot(client, layout).service("B").release
    staged = _stage(zkrollout, "B", version=entry.version, rollout_id="r1", quorum=str(entry.quorum), depends_on=list(entry.depends_on),
                    max_parallel=entry.max_parallel)
    assert staged["changed"] is True and "repaired" in staged["msg"], staged
    assert all(client.exists(path) for path in layout.release_children("B"))


def test_a_new_release_replaces_one_whose_sub_trees_are_gone(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    _delete_subtrees(client, layout, "C")

    result = zkrollout("rollout", release=release(service("C", version="3.0.0"), id="r2"), force=True)

    assert result["changed"] is True, result
    assert read_snapshot(client, layout).service("C").release.version == "3.0.0"
    assert all(client.exists(path) for path in layout.release_children("C"))


def test_check_mode_writes_nothing_and_shows_the_seeding_as_a_diff(zkrollout, fleet, tree_view):
    _three_hosts(fleet)
    before = tree_view()

    result = zkrollout("rollout", check_mode=True, diff=True, release=_abc_release(id="r1"))

    assert result["changed"] is True, result
    _assert_unchanged(tree_view, before, result)
    diff = result["diff"]
    assert diff["before"] == {"rollout": None, "staging": {}, "deploy": []}
    assert diff["after"]["deploy"] == ["A", "B", "C"]
    assert sorted(diff["after"]["staging"]) == ["A", "B", "C"]
    assert diff["after"]["staging"]["B"]["depends_on"] == ["A"]
    assert (diff["after"]["rollout"]["id"], diff["after"]["rollout"]["state"]) == ("r1", "running")


def test_check_mode_on_a_server_without_a_tree_creates_nothing(zkrollout, client, zk_root, tree_view):
    before = tree_view()

    result = zkrollout("rollout", check_mode=True, release=release(service("A")))

    assert result["changed"] is True, result
    _assert_unchanged(tree_view, before, result)
    assert client.exists(zk_root) is None


def test_seeding_under_a_nested_root_creates_the_root_and_its_missing_parents(zkrollout, client, zk_root):
    nested = Layout(zk_root + "/team/dc")

    result = zkrollout("rollout", zk_root=nested.root, release=release(service("A"), id="r1"))

    assert result["changed"] is True, result
    assert read_snapshot(client, nested).queued_services == ["A"]


def test_a_different_release_while_one_is_running_is_refused_naming_the_rollout_and_its_progress(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.upgrade("A", "h1", "2.0.0")
    before = tree_view()

    result = zkrollout("rollout", release=release(service("A", version="3.0.0"), id="r2"))

    assert result.get("failed") is True, result
    assert "rollout r1 is running" in result["msg"]
    assert "0 of 3 services complete, 1 of 9 instances on target" in result["msg"]
    assert "force: true" in result["msg"]
    _assert_unchanged(tree_view, before, result)


def test_force_replaces_a_running_rollout_with_the_new_release(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))

    result = zkrollout("rollout", release=release(service("A", version="3.0.0"), id="r2"), force=True)

    assert result["changed"] is True, result
    snapshot = read_snapshot(client, layout)
    assert (snapshot.rollout.id, snapshot.rollout.state, snapshot.rollout.services) == ("r2", "running", ["A"])
    assert snapshot.queued_services == ["A"]
    assert [name for name, state in snapshot.services.items() if state.release is not None] == ["A"]
    assert snapshot.service("A").release.version == "3.0.0"
    for gone in ("B", "C"):
        assert client.exists(layout.release(gone)) is None, "%s of rollout r1 was left staged" % gone


def test_force_never_replaces_a_rollout_while_a_host_holds_an_upgrade_slot(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.take_slot("A", "h2", "2.0.0", from_version="1.0.0")
    before = tree_view()

    result = zkrollout("rollout", release=release(service("A", version="3.0.0"), id="r2"), force=True)

    assert result.get("failed") is True, result
    assert "service A: h2 holds an upgrade slot" in result["msg"]
    _assert_unchanged(tree_view, before, result)


def test_a_finished_rollout_is_replaced_by_a_new_release_without_force(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.roll_out()

    result = zkrollout("rollout", release=release(service("A", version="3.0.0"), id="r2"))

    assert result["changed"] is True, result
    snapshot = read_snapshot(client, layout)
    assert (snapshot.rollout.id, snapshot.rollout.state, snapshot.queued_services) == ("r2", "running", ["A"])


def test_cancel_removes_the_whole_rollout_and_keeps_roster_and_registrations(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.get_ready("A", "h1")
    fleet.record_failure("C", "h3", "2.0.0", "health check timed out")

    result = zkrollout("rollout", state="absent", diff=True)

    assert result["changed"] is True, result
    assert result["rollout_id"] == "r1"
    assert result["diff"]["after"] == {"rollout": None, "staging": {}, "deploy": []}
    assert client.get_children(layout.staging) == []
    assert client.get_children(layout.deploy) == []
    assert client.exists(layout.rollout) is None
    snapshot = read_snapshot(client, layout)
    assert sorted(snapshot.hosts) == ["h1", "h2", "h3"]
    assert sorted(snapshot.service("A").registrations) == ["h1", "h2", "h3"]

    before = tree_view()
    again = zkrollout("rollout", state="absent")
    assert again["changed"] is False, again
    _assert_unchanged(tree_view, before, again)


def test_cancel_in_check_mode_writes_nothing(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    before = tree_view()

    result = zkrollout("rollout", state="absent", check_mode=True, diff=True)

    assert result["changed"] is True, result
    assert result["diff"]["before"]["rollout"]["id"] == "r1"
    _assert_unchanged(tree_view, before, result)


def test_cancel_is_refused_while_a_host_holds_an_upgrade_slot(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.take_slot("A", "h1", "2.0.0", from_version="1.0.0")
    before = tree_view()

    result = zkrollout("rollout", state="absent")

    assert result.get("failed") is True, result
    assert "A on h1" in result["msg"] and "release_slot" in result["msg"]
    _assert_unchanged(tree_view, before, result)


# Validation: every bad release fails before anything is written.
BAD_RELEASES = {
    "cycle": (
        release(service("A", depends_on=["C"]), service("B", depends_on=["A"]), service("C", depends_on=["B"])),
        ["dependency cycle A -> C -> B -> A", "depends_on"],
    ),
    "self-dependency": (
        release(service("A", depends_on=["A"])),
        ["(A)", "depends_on", "cannot depend on itself"],
    ),
    "unknown-dependency": (
        release(service("A"), service("B", depends_on=["A", "D"])),
        ["service B depends on unknown service D", "B.depends_on"],
    ),
    "duplicate-service": (
        release(service("A"), service("B"), service("A", version="2.1.0")),
        ["services[2] (A)", "service A is declared twice"],
    ),
    "missing-sha256": (
        release(service("A"), service("B", artifact={"url": "https://artifacts.example/B.tar.gz"})),
        ["services[1] (B)", "'artifact.sha256' is missing"],
    ),
    "short-sha256": (
        release(service("A", artifact={"url": "https://artifacts.example/A.tar.gz", "sha256": "abc123"})),
        ["services[0] (A)", "'artifact.sha256'", "64 hexadecimal digits"],
    ),
    "non-hex-sha256": (
        release(service("A", artifact={"url": "https://artifacts.example/A.tar.gz", "sha256": "z" * 64})),
        ["services[0] (A)", "'artifact.sha256'"],
    ),
    "version-with-a-space": (
        release(service("A"), service("C", version="2.0 beta")),
        ["services[1] (C)", "'version'", "2.0 beta"],
    ),
    "version-escaping-its-directory": (
        release(service("B", version="../../etc")),
        ["services[0] (B)", "'version'"],
    ),
    "ftp-url": (
        release(service("A", artifact={"url": "ftp://artifacts.example/A.tar.gz", "sha256": "a" * 64})),
        ["services[0] (A)", "'artifact.url'", "http, https, file"],
    ),
    "url-without-scheme": (
        release(service("A", artifact={"url": "artifacts.example/A.tar.gz", "sha256": "a" * 64})),
        ["services[0] (A)", "'artifact.url'"],
    ),
    "quorum-as-large-as-the-roster": (
        release(service("A"), service("B", quorum=3)),
        ["service B: quorum 3 needs 3 healthy of 3 hosts", "lower the quorum below 3"],
    ),
    "percentage-quorum-never-met": (
        release(service("C", quorum="100%")),
        ["service C: quorum 100% needs 3 healthy of 3 hosts"],
    ),
    "quorum-resolving-to-zero": (
        release(service("A", quorum=0)),
        ["service A: quorum 0 resolves to 0 of 3 hosts"],
    ),
    "max-parallel-zero": (
        release(service("A", max_parallel=0)),
        ["services[0] (A)", "'max_parallel'", "expected an integer >= 1"],
    ),
    "unknown-service-field": (
        release(service("A", colour="blue")),
        ["Unsupported parameters", "release.services.colour"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RELEASES))
def test_a_bad_release_fails_naming_service_and_field_and_leaves_every_znode_untouched(zkrollout, fleet, client, case, layout, tree_view):
    # A finished rollout is in place, so a valid release would rewrite staging, queue and state.
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r0"))
    fleet.roll_out()
    spec, expected = BAD_RELEASES[case]
    before = tree_view()

    result = zkrollout("rollout", release=dict(spec, id="r1"))

    assert result.get("failed") is True, result
    for words in expected:
        assert words in result["msg"], "%r is not in the message: %s" % (words, result["msg"])
    _assert_unchanged(tree_view, before, result)


def test_a_bad_release_on_a_server_without_a_tree_creates_no_znode(zkrollout, client, zk_root, tree_view):
    before = tree_view()

    result = zkrollout("rollout", release=BAD_RELEASES["cycle"][0])

    assert result.get("failed") is True, result
    _assert_unchanged(tree_view, before, result)
    assert client.exists(zk_root) is None


def test_seeding_warns_naming_the_service_that_no_roster_host_runs(zkrollout, fleet, layout, client):
    fleet.join("h1", {"A": "1.0.0"})
    fleet.join("h2", {"A": "1.0.0"})

    result = zkrollout("rollout", release=release(service("A"), service("B", quorum=2)))

    assert result["changed"] is True, result
    warnings = result.get("warnings", [])
    assert any("service B: no host in the roster runs it yet" in w for w in warnings), warnings
    assert not any("service A" in w for w in warnings), warnings
    assert read_snapshot(client, layout).queued_services == ["A", "B"]


# Staging and deploy queue: the two manual steps.
def _stage(zkrollout, name, version="2.0.0", **fields):
    spec = service(name, version=version, **fields)
    return zkrollout("staging", name=name, version=version, artifact=spec["artifact"], quorum=str(spec["quorum"]),
                     **{k: v for k, v in fields.items() if k != "quorum"})


def test_staging_adds_one_service_with_its_ready_slot_and_failure_subtrees(zkrollout, fleet, client, layout):
    _three_hosts(fleet)

    result = _stage(zkrollout, "A", quorum="2", rollout_id="r1", max_parallel=1)

    assert result["changed"] is True, result
    entry = read_snapshot(client, layout).service("A").release
    assert (entry.rollout, entry.version, entry.quorum, entry.artifact.to_dict()) == ("r1", "2.0.0", 2, tree.artifact("A", "2.0.0"))
    for path in layout.release_children("A"):
        assert client.exists(path) is not None, path
    assert client.get_children(layout.deploy) == [], "staging alone must not queue the service"


def test_staging_the_same_service_again_reports_no_change(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.stage(client, layout, service("A"), "r1")
    before = tree_view()

    again = _stage(zkrollout, "A", rollout_id="r1")

    assert again["changed"] is False, again
    _assert_unchanged(tree_view, before, again)


def test_staging_a_new_version_clears_the_ready_queue_and_the_failures(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.stage(client, layout, service("A"), "r1")
    fleet.get_ready("A", "h1")
    fleet.record_failure("A", "h2", "2.0.0", "health check failed: HTTP 500")

    result = _stage(zkrollout, "A", version="2.0.1", rollout_id="r1", diff=True)

    assert result["changed"] is True, result
    assert (result["diff"]["before"]["staging"]["A"]["version"], result["diff"]["after"]["staging"]["A"]["version"]) == ("2.0.0", "2.0.1")
    state = read_snapshot(client, layout).service("A")
    assert state.release.version == "2.0.1"
    assert state.ready_queue == () and state.failures == {}


def test_staging_in_check_mode_writes_nothing(zkrollout, fleet, tree_view):
    _three_hosts(fleet)
    before = tree_view()

    result = _stage(zkrollout, "A", rollout_id="r1", check_mode=True, diff=True)

    assert result["changed"] is True, result
    assert result["diff"]["after"]["staging"]["A"]["version"] == "2.0.0"
    _assert_unchanged(tree_view, before, result)


def test_staging_absent_removes_the_service_and_its_deploy_queue_entry(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))

    result = zkrollout("staging", name="C", state="absent")

    assert result["changed"] is True, result
    snapshot = read_snapshot(client, layout)
    assert client.exists(layout.release("C")) is None
    assert snapshot.queued_services == ["A", "B"]
    assert zkrollout("staging", name="C", state="absent")["changed"] is False


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"artifact": {"url": "https://artifacts.example/A.tar.gz", "sha256": "0" * 63}}, ["service A", "'artifact.sha256'"]),
        ({"artifact": {"url": "gopher://artifacts.example/A.tar.gz", "sha256": "0" * 64}}, ["service A", "'artifact.url'"]),
        ({"version": "2.0.0;rm -rf"}, ["service A", "'version'"]),
        ({"quorum": "3"}, ["service A: quorum 3 needs 3 healthy of 3 hosts"]),
    ],
    ids=["short-sha256", "gopher-url", "bad-version", "quorum-never-met"],
)
def test_staging_a_bad_service_fails_naming_service_and_field_and_writes_nothing(zkrollout, fleet, client, fields, expected, layout, tree_view):
    _three_hosts(fleet)
    tree.stage(client, layout, service("B"), "r1")
    before = tree_view()
    args = {"name": "A", "version": "2.0.0", "artifact": tree.artifact("A", "2.0.0"), "quorum": "1", "rollout_id": "r1"}
    args.update(fields)

    result = zkrollout("staging", **args)

    assert result.get("failed") is True, result
    for words in expected:
        assert words in result["msg"], "%r is not in the message: %s" % (words, result["msg"])
    _assert_unchanged(tree_view, before, result)


def test_deploy_queue_sets_the_order_explicitly_and_starts_the_rollout(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    for spec in (service("A"), service("C"), service("B", depends_on=["A"])):
        tree.stage(client, layout, spec, "r1")

    result = zkrollout("deploy_queue", services=["C", "A", "B"], by="operator")

    assert result["changed"] is True, result
    assert result["rollout_id"] == "r1"
    snapshot = read_snapshot(client, layout)
    assert snapshot.queued_services == ["C", "A", "B"]
    assert (snapshot.rollout.id, snapshot.rollout.state, snapshot.rollout.services, snapshot.rollout.by) == ("r1", "running", ["C", "A", "B"], "operator")

    before = tree_view()
    again = zkrollout("deploy_queue", services=["C", "A", "B"])
    assert again["changed"] is False, again
    _assert_unchanged(tree_view, before, again)


@pytest.mark.parametrize(
    "order, expected",
    [
        (["B", "A"], "service B depends on A, so A must come before B"),
        (["B"], "service B depends on A, which is not in the deploy queue"),
        (["A", "B", "D"], "service D is not staged"),
        (["A", "A", "B"], "each staged service once"),
    ],
    ids=["dependency-after-dependant", "dependency-missing", "not-staged", "listed-twice"],
)
def test_deploy_queue_refuses_an_impossible_order_and_writes_nothing(zkrollout, fleet, client, order, expected, layout, tree_view):
    _three_hosts(fleet)
    tree.stage(client, layout, service("A"), "r1")
    tree.stage(client, layout, service("B", depends_on=["A"]), "r1")
    before = tree_view()

    result = zkrollout("deploy_queue", services=order)

    assert result.get("failed") is True, result
    assert expected in result["msg"]
    _assert_unchanged(tree_view, before, result)


# Steering: pause, resume, abort, retry, release_slot.
def _rollout_state(client, layout):
    return read_snapshot(client, layout).rollout.state


def test_pause_and_resume_change_the_rollout_state_once(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))

    paused = zkrollout("rollout_control", action="pause", reason="incident 4711")
    assert paused["changed"] is True and paused["msg"] == "rollout r1 paused", paused
    snapshot = read_snapshot(client, layout)
    assert (snapshot.rollout.state, snapshot.rollout.reason) == ("paused", "incident 4711")
    assert zkrollout("rollout_control", action="pause")["changed"] is False

    resumed = zkrollout("rollout_control", action="resume")
    assert resumed["changed"] is True, resumed
    assert _rollout_state(client, layout) == "running"


def test_pause_in_check_mode_writes_nothing(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    before = tree_view()

    result = zkrollout("rollout_control", action="pause", check_mode=True, diff=True)

    assert result["changed"] is True, result
    assert (result["diff"]["before"]["rollout"]["state"], result["diff"]["after"]["rollout"]["state"]) == ("running", "paused")
    _assert_unchanged(tree_view, before, result)
    # Only what the pause changes differs: not the 'updated' time it also rewrites.
    was, now = result["diff"]["before"]["rollout"], result["diff"]["after"]["rollout"]
    assert sorted(name for name in set(was) | set(now) if was.get(name) != now.get(name)) == ["reason", "state"], result["diff"]


def test_the_seeding_diff_leaves_out_the_rollout_times_and_the_signature_bytes(zkrollout, fleet):
    _three_hosts(fleet)

    result = zkrollout("rollout", check_mode=True, diff=True, release=_abc_release(id="r1"))

    after = result["diff"]["after"]
    assert not {"created", "updated"} & set(after["rollout"]), after["rollout"]
    assert (after["rollout"]["by"], after["rollout"]["services"]) == ("ansible", ["A", "B", "C"])
    assert all(set(entry["signature"]) == {"key"} and len(entry["signature"]["key"]) == 16 for entry in after["staging"].values()), after


def test_an_aborted_rollout_cannot_be_resumed(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))

    aborted = zkrollout("rollout_control", action="abort")
    assert aborted["changed"] is True, aborted
    assert _rollout_state(client, layout) == "aborted"
    before = tree_view()

    resumed = zkrollout("rollout_control", action="resume")

    assert resumed.get("failed") is True, resumed
    assert "cannot resume rollout r1: it is aborted" in resumed["msg"]
    _assert_unchanged(tree_view, before, resumed)


def test_retry_clears_the_failures_of_a_service_and_the_rollout_runs_again(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.fail_upgrade("A", "h1", "2.0.0", "health check failed: HTTP 500")
    assert overall_state(read_snapshot(client, layout))[0] == "failed"

    result = zkrollout("rollout_control", action="retry", service="A")

    assert result["changed"] is True, result
    assert "cleared failures on h1" in result["msg"]
    snapshot = read_snapshot(client, layout)
    assert snapshot.service("A").failures == {}
    assert overall_state(snapshot)[0] == "running"


def test_retry_needs_the_service(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))

    result = zkrollout("rollout_control", action="retry")

    assert result.get("failed") is True, result
    assert "service" in result["msg"]


def test_release_slot_refuses_the_slot_of_a_connected_agent_unless_forced(zkrollout, fleet, client, layout, tree_view):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.take_slot("A", "h2", "2.0.0", from_version="1.0.0", owner="agent:h2")
    fleet.agent_connected("h2")
    before = tree_view()

    refused = zkrollout("rollout_control", action="release_slot", service="A", host="h2")
    assert refused.get("failed") is True, refused
    assert "held by agent:h2, whose ZooKeeper session is alive" in refused["msg"]
    _assert_unchanged(tree_view, before, refused)

    forced = zkrollout("rollout_control", action="release_slot", service="A", host="h2", force=True)
    assert forced["changed"] is True, forced
    assert client.exists(layout.slot("A", "h2")) is None


def test_release_slot_frees_the_slot_of_an_agent_that_is_gone_and_says_what_its_instance_is(zkrollout, fleet, client, layout):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.take_slot("A", "h2", "2.0.0", from_version="1.0.0", owner="agent:h2")
    fleet.agent_connected("h2")
    fleet.go_offline("h2")

    result = zkrollout("rollout_control", action="release_slot", service="A", host="h2")

    assert result["changed"] is True, result
    assert "owner agent:h2 no longer connected" in result["msg"] and "h2 is not registered" in result["msg"]
    assert client.exists(layout.slot("A", "h2")) is None


def test_release_slot_never_frees_a_live_controllers_slot_past_its_deadline_but_frees_it_once_the_session_is_gone(
        zkrollout, fleet, client, layout, zk, zk_connect):
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    controller = zk_connect(zk.hosts)
    session = "%x" % controller.client_id[0]
    controller.create(layout.session(session), b"controller:job-7", ephemeral=True, makepath=True)
    # Its own clock said the deadline passed (skew, or a long play): the session says otherwise.
    fleet.take_slot("A", "h3", "2.0.0", from_version="1.0.0", owner="controller:job-7", deadline=time.time() - 60, session=session, lease=60)

    refused = zkrollout("rollout_control", action="release_slot", service="A", host="h3")
    assert refused.get("failed") is True and "whose ZooKeeper session is alive" in refused["msg"], refused

    controller.stop()
    result = zkrollout("rollout_control", action="release_slot", service="A", host="h3")
    assert result["changed"] is True, result
    assert client.exists(layout.slot("A", "h3")) is None
    assert zkrollout("rollout_control", action="release_slot", service="A", host="h3")["changed"] is False


def test_release_slot_decided_on_a_gone_owner_is_not_committed_once_the_slot_was_rewritten_meanwhile(fleet, client, layout, zk, zk_connect):
    """The release is decided on the slot that was read: its delete is checked against that version.

    Between the read and the commit, the slot's controller comes back (a new session adopts the
    slot, rewriting it). The planned delete must fail, the plan is made again on a fresh read,
    and that one refuses: the owner's session is alive.
    """
    _three_hosts(fleet)
    tree.seed(client, layout, _abc_release(id="r1"))
    fleet.take_slot("A", "h3", "2.0.0", from_version="1.0.0", owner="controller:job-7", deadline=time.time() - 60, session="1234", lease=60)
    controller = zk_connect(zk.hosts)
    plans, calls = [], []

    def planner(snapshot, missing):
        calls.append(snapshot)
        change = plan_control(snapshot, layout, "release_slot", service="A", host="h3", missing=missing)
        if not plans:
            # The controller's new session adopts the slot: a rewrite, after the read this plan rests on.
            session = "%x" % controller.client_id[0]
            controller.create(layout.session(session), b"controller:job-7", ephemeral=True, makepath=True)
            adopt_slot(controller, layout, "A", "h3", "controller:job-7", session, time.time() + 60)
        plans.append(change)
        return change

    with pytest.raises(WriteRefused, match="whose ZooKeeper session is alive"):
        read_plan_apply(client, layout, planner)

    # Planned once on the gone owner, against the version read; refused on the second read.
    assert len(calls) == 2 and len(plans) == 1, plans
    assert [op.version for op in plans[0].ops] == [0], plans[0].ops
    data, _stat = client.get(layout.slot("A", "h3"))
    assert Slot.from_bytes(data, layout.slot("A", "h3")).session == "%x" % controller.client_id[0]


def test_steering_without_a_rollout_fails_saying_how_to_seed_one(zkrollout, tree_view):
    before = tree_view()

    result = zkrollout("rollout_control", action="pause")

    assert result.get("failed") is True, result
    assert "there is no rollout" in result["msg"] and "zkrollout.dc.rollout" in result["msg"]
    _assert_unchanged(tree_view, before, result)


# Reading the whole state.
def test_rollout_info_reports_hosts_services_verdicts_and_the_deploy_queue(zkrollout, fleet, client, layout):
    for host in ("h1", "h2", "h3", "h4"):
        fleet.join(host, {"A": "1.0.0", "B": "1.0.0"})
    fleet.go_offline("h4")
    tree.seed(client, layout, release(service("A", quorum=3), service("B", quorum=2, depends_on=["A"]), id="r1"))
    fleet.get_ready("A", "h2")

    info = zkrollout("rollout_info")

    assert info["changed"] is False
    assert (info["state"], info["reason"], info["deploy_queue"]) == ("running", "0 of 2 services complete", ["A", "B"])
    assert info["rollout"]["id"] == "r1"
    assert info["hosts"]["h1"]["A"] == {"state": "online", "version": "1.0.0", "target": "2.0.0"}
    assert info["hosts"]["h4"]["A"] == {"state": "offline", "version": None, "target": "2.0.0"}
    assert info["hosts"]["h4"]["B"] == {"state": "offline", "version": None, "target": "2.0.0"}
    a = info["services"]["A"]
    assert (a["target"], a["quorum"], a["quorum_resolved"], a["healthy"], a["budget"]) == ("2.0.0", 3, 3, 3, 0)
    assert (a["hosts"], a["online"], a["ready_queue"], a["slots"], a["failures"]) == (["h1", "h2", "h3", "h4"], ["h1", "h2", "h3"], ["h2"], {}, {})
    assert "%s: %s" % (a["verdict"], a["reason"]) == "blocked: quorum 3 needs 4 healthy, 3 online; host h4 offline"
    b = info["services"]["B"]
    assert (b["verdict"], b["reason"]) == ("waiting", "behind A in the deploy queue")
    assert info["progress"] == {"services_total": 2, "services_complete": 0, "instances_total": 8, "instances_on_target": 0}


def test_rollout_info_names_the_next_hosts_when_a_service_is_ready_to_roll(zkrollout, fleet, client, layout):
    _three_hosts(fleet, {"A": "1.0.0"})
    tree.seed(client, layout, release(service("A", quorum=1, max_parallel=2), id="r1"))
    fleet.get_ready("A", "h3")
    fleet.get_ready("A", "h1")
    fleet.take_slot("A", "h2", "2.0.0", from_version="1.0.0")

    a = zkrollout("rollout_info")["services"]["A"]

    assert (a["healthy"], a["budget"], a["ready_queue"], sorted(a["slots"])) == (2, 1, ["h3", "h1"], ["h2"])
    assert a["slots"]["h2"]["to"] == "2.0.0"
    assert (a["verdict"], a["reason"]) == ("ready", "ready to roll: 1 slot(s) free (2 healthy, quorum 1); next: h3")


def test_rollout_info_reports_a_failed_upgrade_with_its_host_and_reason(zkrollout, fleet, client, layout):
    _three_hosts(fleet, {"A": "1.0.0"})
    tree.seed(client, layout, release(service("A"), id="r1"))
    fleet.fail_upgrade("A", "h2", "2.0.0", "health check failed: HTTP 500")

    info = zkrollout("rollout_info")

    assert (info["state"], info["reason"]) == ("failed", "A on h2: health check failed: HTTP 500 (health)")
    a = info["services"]["A"]
    assert a["verdict"] == "halted" and "retry A with rollout_control" in a["reason"]
    assert a["failures"]["h2"]["reason"] == "health check failed: HTTP 500"


def test_rollout_info_on_a_server_without_a_tree_says_there_is_no_rollout(zkrollout):
    info = zkrollout("rollout_info")

    assert info.get("failed") is not True, info
    assert (info["state"], info["rollout"], info["hosts"], info["services"]) == ("none", None, {}, {})


def test_rollout_info_lists_a_malformed_znode_as_a_problem_and_reports_the_rest(zkrollout, fleet, client, layout):
    _three_hosts(fleet, {"A": "1.0.0"})
    tree.seed(client, layout, release(service("A"), id="r1"))
    client.create(layout.slot("A", "h9"), b"{not json")

    info = zkrollout("rollout_info")

    assert info.get("failed") is not True, info
    assert any(layout.slot("A", "h9") in problem for problem in info["problems"]), info["problems"]
    assert any(layout.slot("A", "h9") in warning for warning in info.get("warnings", [])), info.get("warnings")
    assert sorted(info["hosts"]) == ["h1", "h2", "h3"]


def test_a_malformed_failure_record_halts_its_service_in_the_report_and_is_named(zkrollout, fleet, client, layout):
    _three_hosts(fleet, {"A": "1.0.0"})
    tree.seed(client, layout, release(service("A"), id="r1"))
    client.create(layout.failure("A", "h2"), b'{"schema":1,"version":' + b"[" * 5000 + b"]" * 5000 + b"}")

    info = zkrollout("rollout_info")

    assert info.get("failed") is not True, info
    assert info["services"]["A"]["verdict"] == "halted", info["services"]["A"]
    assert "failure record is malformed" in info["services"]["A"]["reason"]
    assert info["services"]["A"]["failures"] == {"h2": {"malformed": True}}
    assert any(layout.failure("A", "h2") in problem for problem in info["problems"]), info["problems"]


# Connecting.
def test_a_module_against_servers_that_all_refuse_fails_at_once_naming_each_refusal(zkrollout):
    closed = ["%s:%d" % (LOOPBACK, port) for port in free_ports(2)]
    started = time.monotonic()

    result = zkrollout("rollout_info", zk_hosts=",".join(closed), zk_timeout=30)

    assert result.get("failed") is True, result
    assert time.monotonic() - started < 10, "the task waited %.0fs for servers that refuse" % (time.monotonic() - started)
    assert result["msg"].startswith("cannot connect to ZooKeeper at %s: no server accepts TCP connections (%s refused the connection; "
                                    "%s refused the connection)" % (",".join(closed), closed[0], closed[1])), result["msg"]
