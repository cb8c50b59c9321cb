# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every value a controller writes is checked, before anything is sent, by the parser that reads it.

Each case runs a module (or a real ``ansible-playbook``) against a real ZooKeeper with a value that
agents would refuse to read, a release too large for one znode or one ZooKeeper request, or a
template hidden in a release given as extra vars. Each must fail with the model's message (path,
field, value, what is expected) and leave the test's whole tree and the server's top level exactly
as they were, check mode included.
"""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleError

from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import DEFAULT_JUTE_MAXBUFFER, MAX_PAYLOAD_BYTES
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import ConnectionOptions
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.plugins.strategy.quorum import SETTINGS, QuorumGate

from . import tree
from .tree import FakeFleet, release, service

pytestmark = [
    pytest.mark.zookeeper,
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Host management is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:AnsibleCollectionFinder has already been configured:UserWarning"),
]


@pytest.fixture
def fleet(zk, layout):
    """h1..h3 run A and B at 1.0.0."""
    with FakeFleet(zk.hosts, layout) as fake:
        for host in ("h1", "h2", "h3"):
            fake.join(host, {"A": "1.0.0", "B": "1.0.0"})
        yield fake


def _fails_naming(result, *words):
    assert result.get("failed") is True, result
    for expected in words:
        assert expected in result["msg"], "%r is not in the message: %s" % (expected, result["msg"])


def _assert_unchanged(tree_view, before, outcome):
    after = tree_view()
    assert after == before, "the task changed the tree (%s): %s" % (tree.describe_difference(before, after), outcome)


def _url_of_length(name, length):
    prefix = "https://artifacts.example/%s-" % name
    return prefix + "a" * (length - len(prefix))


# Values the model refuses, caught before anything is sent.
@pytest.mark.parametrize("rollout_id", ["bad/id", "r" * 500], ids=["slash", "500-characters"])
@pytest.mark.parametrize("check_mode", [False, True], ids=["applied", "check-mode"])
def test_staging_with_a_rollout_id_readers_refuse_fails_naming_it_and_writes_nothing(zkrollout, fleet, layout, tree_view, rollout_id, check_mode):
    before = tree_view()

    result = zkrollout("staging", name="A", version="2.0.0", artifact=tree.artifact("A", "2.0.0"), quorum="1", rollout_id=rollout_id,
                       check_mode=check_mode)

    _fails_naming(result, layout.release("A") + ": field 'rollout' has", rollout_id[:100], "expected an id such as 2026-11-22.1")
    _assert_unchanged(tree_view, before, result["msg"])


def test_seeding_with_a_by_longer_than_readers_accept_fails_naming_it_and_writes_nothing(zkrollout, fleet, layout, tree_view):
    before = tree_view()

    result = zkrollout("rollout", release=release(service("A")), by="b" * 300)

    _fails_naming(result, layout.rollout + ": field 'by' has", "(302 characters)", "at most 256 characters")
    _assert_unchanged(tree_view, before, result["msg"])


@pytest.mark.parametrize("by", ["ops\x1b[31m", "ops\x00", "ops\x9b2J"], ids=["escape", "nul", "c1-csi"])
def test_deploy_queue_with_control_characters_in_by_fails_naming_it_and_writes_nothing(zkrollout, fleet, client, layout, tree_view, by):
    tree.stage(client, layout, service("A"), "r1")
    before = tree_view()

    result = zkrollout("deploy_queue", services=["A"], by=by)

    _fails_naming(result, layout.rollout + ": field 'by' has %s" % json.dumps(by), "expected printable text")
    _assert_unchanged(tree_view, before, result["msg"])


def test_pausing_with_a_reason_longer_than_readers_accept_fails_and_writes_nothing(zkrollout, fleet, client, layout, tree_view):
    tree.seed(client, layout, release(service("A"), id="r1"))
    before = tree_view()

    result = zkrollout("rollout_control", action="pause", reason="incident " * 200)

    _fails_naming(result, "field 'reason'", "at most 1024 characters")
    _assert_unchanged(tree_view, before, result["msg"])


@pytest.mark.parametrize(
    "module, args, words",
    [
        ("staging", {"name": "../A", "state": "absent"}, ["field 'name' has \"../A\"", "use 1-128 letters"]),
        ("deploy_queue", {"services": ["A", "B/C"]}, ["field 'services[1]' has \"B/C\"", "use 1-128 letters"]),
        ("rollout_control", {"action": "release_slot", "service": "A", "host": "h1/../h2"}, ["field 'host' has \"h1/../h2\""]),
        ("rollout_control", {"action": "retry", "service": "A\nB"}, ["field 'service' has \"A\\nB\""]),
    ],
    ids=["unstage", "deploy-queue", "release-slot", "retry"],
)
def test_a_name_that_is_no_path_segment_fails_naming_it_and_writes_nothing(zkrollout, fleet, client, layout, tree_view, module, args, words):
    tree.seed(client, layout, release(service("A"), id="r1"))
    before = tree_view()

    result = zkrollout(module, **args)

    _fails_naming(result, *words)
    _assert_unchanged(tree_view, before, result["msg"])


@pytest.mark.parametrize(
    "url, expectation",
    [
        ("https:///A.tgz", "an https URL names a host"),
        ("https://user:secret@artifacts.example/A.tgz", "credentials must not live in the tree"),
        ("file:///srv/../../etc/passwd", "'.' or '..' segments"),
        ("https://artifacts.example/a/%2e%2e/A.tgz", "'.' or '..' segments"),
        ("https://artifacts.example\\A.tgz", "backslash"),
        ("file://fileserver/srv/A.tgz", "names no host (or localhost)"),
    ],
    ids=["no-host", "credentials", "file-dot-dot", "encoded-dot-dot", "backslash", "file-host"],
)
def test_seeding_an_artifact_url_readers_must_not_trust_fails_naming_service_and_field(zkrollout, fleet, tree_view, url, expectation):
    before = tree_view()
    spec = release(service("A"), service("B", artifact={"url": url, "sha256": "ab" * 32}))

    result = zkrollout("rollout", release=spec)

    _fails_naming(result, "services[1] (B)", "'artifact.url'", expectation)
    assert "secret" not in result["msg"]
    _assert_unchanged(tree_view, before, result["msg"])


# Sizes: one znode, one request.
def test_a_release_entry_above_the_payload_limit_fails_naming_node_size_and_limit(zkrollout, fleet, layout, tree_view):
    before = tree_view()
    url = _url_of_length("A", 1100 * 1024)

    result = zkrollout("rollout", release=release(service("A", artifact={"url": url, "sha256": "ab" * 32}), id="r1"))

    _fails_naming(result, layout.release("A") + ": the release entry is ", "bytes, more than the %d bytes a znode payload may hold" % MAX_PAYLOAD_BYTES)
    assert "ConnectionLoss" not in json.dumps(result)
    _assert_unchanged(tree_view, before, result["msg"])


def test_a_seeding_above_the_request_limit_fails_naming_its_size_the_limit_and_its_largest_node(zkrollout, fleet, layout, tree_view):
    fleet.join("h1", {name: "1.0.0" for name in ("C", "D", "E")})
    fleet.join("h2", {name: "1.0.0" for name in ("C", "D", "E")})
    services = [service(name, artifact={"url": _url_of_length(name, 220 * 1024), "sha256": "ab" * 32}) for name in ("A", "B", "C", "D", "E")]
    before = tree_view()

    result = zkrollout("rollout", release=release(*services, id="r1"))

    _fails_naming(result, "nothing was written: the transaction is ", "more than the %d bytes ZooKeeper takes in one request" % DEFAULT_JUTE_MAXBUFFER,
                  "its largest node is %s/" % layout.staging, "zk_jute_maxbuffer")
    _assert_unchanged(tree_view, before, result["msg"])


def test_a_large_seeding_within_the_request_limit_is_written_whole(zkrollout, fleet, client, layout):
    services = [service(name, artifact={"url": _url_of_length(name, 200 * 1024), "sha256": "ab" * 32}) for name in ("A", "B", "C", "D")]
    fleet.join("h1", {name: "1.0.0" for name in ("C", "D")})
    fleet.join("h2", {name: "1.0.0" for name in ("C", "D")})

    result = zkrollout("rollout", release=release(*services, id="r1"))

    assert result["changed"] is True, result.get("msg")
    snapshot = read_snapshot(client, layout)
    assert sorted(snapshot.queued_services) == ["A", "B", "C", "D"]
    assert all(len(snapshot.service(name).release.artifact.url) == 200 * 1024 for name in ("A", "B", "C", "D"))


def test_the_request_limit_follows_zk_jute_maxbuffer(zkrollout, fleet, tree_view):
    before = tree_view()

    result = zkrollout("rollout", release=release(service("A"), service("B"), id="r1"), zk_jute_maxbuffer=2048)

    _fails_naming(result, "more than the 2048 bytes ZooKeeper takes in one request")
    _assert_unchanged(tree_view, before, result["msg"])


# The strategy writes slots owned by its controller id.
def test_the_quorum_strategy_refuses_a_controller_id_readers_would_refuse_before_connecting(zk, zk_root):
    settings = dict(SETTINGS, zkrollout_service="A", zkrollout_controller_id="c" * 300)

    with pytest.raises(AnsibleError) as caught:
        QuorumGate(settings, ConnectionOptions(hosts=zk.hosts, root=zk_root), {"h1": "h1"}, 0)

    assert "field 'zkrollout_controller_id'" in str(caught.value) and "at most 256 characters" in str(caught.value)


# Release values given as extra vars are data, never templates.
def _playbook(zk, zk_root, name, *extra_vars):
    return tree.run_playbook(name, ["zkrollout_zk_hosts=%s" % zk.hosts, "zkrollout_zk_root=%s" % zk_root] + list(extra_vars))


@pytest.mark.parametrize("passed_as", ["file", "inline-json"])
@pytest.mark.parametrize("field", ["version", "url"])
def test_a_template_in_a_release_given_as_extra_vars_is_never_rendered_and_is_refused_as_a_value(zk, zk_root, fleet, tmp_path, tree_view,
                                                                                                 passed_as, field):
    ran = tmp_path / "the-lookup-ran"
    template = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % ran
    bad = service("A", version=template) if field == "version" else service("A", artifact={"url": template, "sha256": "ab" * 32})
    extra_vars = {"zkrollout_release": release(bad, id="r1")}
    release_file = tmp_path / "release.json"
    release_file.write_text(json.dumps(extra_vars))
    before = tree_view()

    run = _playbook(zk, zk_root, "rollout.yml", "@%s" % release_file if passed_as == "file" else json.dumps(extra_vars))

    assert run.returncode != 0, run.output
    assert not ran.exists(), "Ansible rendered the template in the release on the controller"
    assert "release.services[0] (A): field '%s' has %s" % ("version" if field == "version" else "artifact.url", json.dumps(template)) in run.output, \
        run.output
    _assert_unchanged(tree_view, before, run.output)


def test_rollout_playbook_with_a_by_longer_than_readers_accept_fails_and_writes_nothing(zk, zk_root, fleet, layout, tmp_path, tree_view):
    release_file = tmp_path / "release.json"
    release_file.write_text(json.dumps({"zkrollout_release": release(service("A"), id="r1")}))
    before = tree_view()

    run = _playbook(zk, zk_root, "rollout.yml", "@%s" % release_file, "zkrollout_by=%s" % ("b" * 300))

    assert run.returncode != 0, run.output
    assert "Traceback" not in run.output, run.output
    assert "Module failed: %s: field 'by' has" % layout.rollout in run.output and "at most 256 characters" in run.output, run.output
    _assert_unchanged(tree_view, before, run.output)
