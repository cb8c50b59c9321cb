# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed releases on real parts: real agent processes refuse what the deployer did not sign.

Someone who can write the tree but does not hold the deployer's key writes a release entry
(unsigned, signed by another key, or a signed entry with quorum 0 or another artifact). Every
host must refuse it before downloading anything: a failure record of stage ``signature`` per
host, no version directory, no instance restarted, and the independent monitor sees every
instance stay on its first version. Re-seeding the same release with the deployer's key signs
it in place and the rollout then completes. The modules refuse to write unsigned releases
unless told to.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller import report
from ansible_collections.zkrollout.dc.plugins.module_utils.core import signing
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact, ReleaseEntry
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import V1, V2, V3_BROKEN

from . import tree

pytestmark = [pytest.mark.zookeeper]

STRANGER = signing.load_private_key(signing.generate_private_pem())
QUORUM = 2


def _unsigned(entry):
    return entry


def _by_a_stranger(entry):
    return signing.sign_entry(entry, STRANGER)


def _quorum_lowered_after_signing(entry):
    return dataclasses.replace(release_signing.sign(entry), quorum=0, max_parallel=3)


def _artifact_swapped_after_signing(store):
    broken = store.artifact("A", V3_BROKEN)
    return lambda entry: dataclasses.replace(release_signing.sign(entry), artifact=Artifact(url=broken["url"], sha256=broken["sha256"]))


FORGERIES = [
    pytest.param(lambda store: _unsigned, "is not signed", id="unsigned"),
    pytest.param(lambda store: _by_a_stranger, "which this host does not trust", id="signed_by_an_untrusted_key"),
    pytest.param(lambda store: _quorum_lowered_after_signing, "changed after signing", id="quorum_lowered_after_signing"),
    pytest.param(_artifact_swapped_after_signing, "changed after signing", id="artifact_swapped_after_signing"),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("forge, said", FORGERIES)
def test_every_host_refuses_a_release_the_deployer_did_not_sign_and_switches_nothing(bed, request, forge, said):
    fleet = bed(hosts=3, services=("A",)).start()
    pids_before = fleet.instance_pids("A")

    fleet.seed({"A": {"version": V2, "quorum": QUORUM}}, sign=forge(fleet.store))

    fleet.wait_for(lambda: len(fleet.snapshot().service("A").failures) == 3, 40, "a refusal of A recorded by every host")
    # Long enough for a host to prepare and take a slot, were the refusal not a halt.
    time.sleep(3 * fleet.fleet.loop_wait + 1.0)
    snapshot = fleet.snapshot()
    state = snapshot.service("A")
    assert {failure.stage for failure in state.failures.values()} == {"signature"}
    assert all(said in failure.reason for failure in state.failures.values()), state.failures
    assert report.overall_state(snapshot)[0] == "failed"
    assert not state.slots and not state.ready_queue
    assert fleet.instance_pids("A") == pids_before
    assert fleet.monitor.versions_seen["A"] == {V1}
    for host in fleet.hosts:
        install_dir = fleet.fleet.config(host)["services"]["A"]["install_dir"]
        versions = sorted(os.listdir(os.path.join(install_dir, "versions")))
        assert versions == [V1], "%s prepared %s from a release it refused" % (host, versions)
    fleet.assert_quorum({"A": QUORUM}, request)


@pytest.mark.timeout(150)
def test_re_seeding_an_unsigned_release_with_the_deployers_key_signs_it_in_place_and_the_rollout_completes(bed, request):
    fleet = bed(hosts=3, services=("A",)).start()
    fleet.seed({"A": {"version": V2, "quorum": QUORUM}}, sign=_unsigned)
    fleet.wait_for(lambda: len(fleet.snapshot().service("A").failures) == 3, 40, "a refusal of A recorded by every host")

    change = fleet.seed({"A": {"version": V2, "quorum": QUORUM}})

    assert "signed A with key" in change.message, change.message
    fleet.wait_done(timeout=60)
    fleet.wait_all_on("A", V2)
    assert not fleet.snapshot().service("A").failures
    fleet.assert_quorum({"A": QUORUM}, request)


# The modules: no signing key, no release written (unless told so); with a key, entries verify.
@pytest.fixture
def roster(zk, layout):
    """Hosts h1 and h2 run A at 1.0.0 (their agents' side of the tree, written by the test)."""
    with tree.FakeFleet(zk.hosts, layout) as fake:
        for host in ("h1", "h2"):
            fake.join(host, {"A": V1})
        yield fake


def _release(store):
    return tree.release({"name": "A", "version": V2, "quorum": 1, "artifact": store.artifact("A", V2)}, id="r1")


def test_the_rollout_module_without_a_signing_key_fails_and_writes_nothing(zkrollout, roster, store, tree_view, monkeypatch):
    monkeypatch.delenv("ZKROLLOUT_SIGNING_KEY_FILE", raising=False)
    before = tree_view()

    result = zkrollout("rollout", release=_release(store))

    assert result.get("failed"), result
    assert "no signing key" in result["msg"] and "allow_unsigned" in result["msg"]
    assert tree_view() == before


def test_the_rollout_module_with_allow_unsigned_writes_unsigned_entries_and_warns(zkrollout, roster, store, client, layout, monkeypatch):
    monkeypatch.delenv("ZKROLLOUT_SIGNING_KEY_FILE", raising=False)

    result = zkrollout("rollout", release=_release(store), allow_unsigned=True)

    assert result["changed"], result
    assert any("UNSIGNED" in warning for warning in result.get("warnings", [])), result
    assert read_snapshot(client, layout).service("A").release.signature is None


def test_the_staging_module_signs_with_key_content_from_the_environment(zkrollout, roster, store, client, layout, monkeypatch):
    monkeypatch.delenv("ZKROLLOUT_SIGNING_KEY_FILE", raising=False)
    with open(release_signing.private_key_file()) as key_file:
        monkeypatch.setenv("ZKROLLOUT_SIGNING_KEY", key_file.read())

    result = zkrollout("staging", name="A", version=V2, artifact=store.artifact("A", V2), quorum="1", rollout_id="r1")

    assert result["changed"], result
    data, _stat = client.get(layout.release("A"))
    trusted = signing.TrustedKeys.from_texts([release_signing.public_pem()])
    assert trusted.refusal(ReleaseEntry.from_bytes(data), layout.release("A")) is None
    assert "BEGIN PRIVATE KEY" not in repr(result)


def test_a_signing_key_that_is_not_ed25519_fails_the_task_naming_the_file(zkrollout, roster, store, tree_view, tmp_path):
    key_file = tmp_path / "release.key"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    before = tree_view()

    result = zkrollout("rollout", release=_release(store), signing_key=str(key_file))

    assert result.get("failed"), result
    assert str(key_file) in result["msg"] and "openssl genpkey -algorithm ed25519" in result["msg"]
    assert tree_view() == before
