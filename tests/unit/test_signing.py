# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed releases: what a host accepts, what it refuses and why, and what the deployer's writes sign.

Keys are real Ed25519 keys made per test run; the snapshots are the real payload classes, so
``screen_releases`` and ``decide`` see exactly what an agent sees after a read.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.decide import REFUSE_RELEASE, TAKE_SLOT, WAIT, decide
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import plan_seed, plan_stage
from ansible_collections.zkrollout.dc.plugins.module_utils.core import signing
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import (
    SCHEMA,
    Artifact,
    Failure,
    PayloadError,
    ReleaseEntry,
    ReleaseSpec,
    ServiceSpec,
    Signature,
)

from .agent.test_decide import FIVE, FIVE_READY, local, service, tree

LAYOUT = Layout("/dc")
DEPLOYER = signing.load_private_key(signing.generate_private_pem())
OTHER = signing.load_private_key(signing.generate_private_pem())
TRUSTED = signing.TrustedKeys.from_texts([signing.public_pem(DEPLOYER)])


def entry(**changes):
    """A release entry of service app, unsigned."""
    fields = dict(rollout="r1", service="app", version="2.0", artifact=Artifact(url="https://artifacts.example/app-2.0.tar.gz", sha256="ab" * 32),
                  quorum=1)
    fields.update(changes)
    return ReleaseEntry(**fields)


def signed(key=DEPLOYER, **changes):
    """``entry(**changes)`` signed with ``key``."""
    return signing.sign_entry(entry(**changes), key)


def test_a_signed_entry_verifies_and_survives_the_round_trip_through_its_znode_bytes():
    parsed = ReleaseEntry.from_bytes(signed().to_bytes(), "/dc/staging/app")
    assert parsed.signature.key == signing.key_id(DEPLOYER.public_key())
    assert TRUSTED.refusal(parsed, "/dc/staging/app") is None


def test_signing_is_deterministic_so_seeding_the_same_release_twice_writes_the_same_bytes():
    assert signed().to_bytes() == signed().to_bytes()


def test_an_unsigned_entry_keeps_the_bytes_it_had_before_signatures_existed():
    assert b"signature" not in entry().to_bytes()


def test_an_unsigned_entry_is_refused_naming_the_trusted_keys():
    reason = TRUSTED.refusal(entry(), "/dc/staging/app")
    assert "/dc/staging/app is not signed" in reason and signing.key_id(DEPLOYER.public_key()) in reason


def test_an_entry_signed_by_an_untrusted_key_is_refused_naming_that_key():
    reason = TRUSTED.refusal(signed(OTHER), "/dc/staging/app")
    assert "signed by key %s, which this host does not trust" % signing.key_id(OTHER.public_key()) in reason


@pytest.mark.parametrize("tampered", [
    {"artifact": Artifact(url="https://evil.example/app-2.0.tar.gz", sha256="ab" * 32)},
    {"artifact": Artifact(url="https://artifacts.example/app-2.0.tar.gz", sha256="cd" * 32)},
    {"version": "2.1"},
    {"quorum": 0},
    {"max_parallel": 5},
    {"rollout": "r0"},
    {"depends_on": ["db"]},
], ids=["url", "sha256", "version", "quorum", "max_parallel", "rollout", "depends_on"])
def test_every_field_is_covered_by_the_signature(tampered):
    forged = dataclasses.replace(signed(), **tampered)
    assert "changed after signing" in TRUSTED.refusal(forged, "/dc/staging/app")


def test_a_signature_made_over_other_bytes_does_not_verify_as_a_release_entry():
    value = base64.b64encode(DEPLOYER.sign(entry().to_bytes())).decode("ascii")
    forged = dataclasses.replace(entry(), signature=Signature(key=signing.key_id(DEPLOYER.public_key()), value=value))
    assert "changed after signing" in TRUSTED.refusal(forged, "/dc/staging/app")


def test_several_trusted_keys_let_a_host_accept_either_while_a_key_is_rotated():
    both = signing.TrustedKeys.from_texts([signing.public_pem(DEPLOYER), signing.public_base64(OTHER)])
    assert both.refusal(signed(DEPLOYER), "p") is None
    assert both.refusal(signed(OTHER), "p") is None


@pytest.mark.parametrize("value", ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"])
def test_a_trusted_key_that_does_not_load_is_named_by_its_place(value):
    with pytest.raises(signing.SigningError, match=r"trusted_keys\[1\]"):
        signing.TrustedKeys.from_texts([signing.public_pem(DEPLOYER), value])


def test_a_key_of_another_algorithm_is_refused_saying_which_algorithm_is_needed():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(signing.SigningError, match="Ed25519"):
        signing.load_private_key(pem)


def test_a_malformed_signature_field_is_a_payload_error_naming_it():
    raw = dict(entry().to_dict(), signature={"key": "xyz", "value": "abc"})
    with pytest.raises(PayloadError, match="signature.key"):
        ReleaseEntry.from_dict(raw, "/dc/staging/app")


# What the agent sees: screen_releases over a snapshot, then decide.
def snapshot_with(release, state="running", **service_fields):
    """Five healthy hosts of app, all ready, quorum 3, with ``release`` as the staged entry."""
    svc, hosts = service(current=FIVE, ready=FIVE_READY, quorum=3, **service_fields)
    return tree((dataclasses.replace(svc, release=release), hosts), state=state)


def test_a_verified_release_reaches_decide_unchanged():
    snapshot = snapshot_with(signing.sign_entry(service()[0].release, DEPLOYER))
    screened = signing.screen_releases(snapshot, TRUSTED, LAYOUT)
    assert screened is snapshot
    assert decide("h1", screened, local(), True).action == TAKE_SLOT


def test_a_refused_release_is_taken_out_and_the_host_records_the_refusal_instead_of_taking_a_turn():
    screened = signing.screen_releases(snapshot_with(service()[0].release), TRUSTED, LAYOUT)
    state = screened.service("app")
    assert state.release is None and state.refusal.version == "2.0"
    assert any("is not signed" in problem for problem in screened.problems)
    decision = decide("h1", screened, local(), True)
    assert decision.action == REFUSE_RELEASE and decision.version == "2.0"
    assert "refused the release of app" in decision.reason and "/dc/staging/app is not signed" in decision.reason


def test_a_host_that_already_recorded_a_failure_only_waits_on_a_refused_release():
    screened = signing.screen_releases(snapshot_with(service()[0].release, failed="h1=signature"), TRUSTED, LAYOUT)
    assert decide("h1", screened, local(), True).action == WAIT


def test_a_refused_release_of_a_finished_rollout_is_reported_but_not_recorded():
    screened = signing.screen_releases(snapshot_with(service()[0].release, state="done"), TRUSTED, LAYOUT)
    decision = decide("h1", screened, local(), True)
    assert decision.action == WAIT and "release of app is refused" in decision.reason


def test_an_entry_copied_under_another_services_node_is_refused_even_when_signatures_are_not_checked():
    foreign = signing.sign_entry(dataclasses.replace(service()[0].release, service="db"), DEPLOYER)
    screened = signing.screen_releases(snapshot_with(foreign), None, LAYOUT)
    assert screened.service("app").release is None
    assert "holds a release entry for service db, not app" in screened.service("app").refusal.reason


def test_without_trusted_keys_the_lab_opt_out_uses_unsigned_entries():
    snapshot = snapshot_with(service()[0].release)
    assert signing.screen_releases(snapshot, None, LAYOUT) is snapshot


# What the deployer's writes sign.
SPEC = ReleaseSpec.from_dict({"id": "r1", "services": [{"name": "app", "version": "2.0", "quorum": 1,
                                                        "artifact": {"url": "https://artifacts.example/app-2.0.tar.gz", "sha256": "ab" * 32}}]})


def seeded_snapshot(release, **service_fields):
    """The tree after SPEC was seeded with ``release`` as the staged entry."""
    svc, hosts = service(current="h1=1.0 h2=1.0", ready="h1 h2", **service_fields)
    snapshot = tree((dataclasses.replace(svc, release=release), hosts))
    return dataclasses.replace(snapshot, rollout=dataclasses.replace(snapshot.rollout, spec_hash=SPEC.spec_hash))


def sign_with(key):
    """The ``sign`` of plan_seed and plan_stage for ``key``."""
    return lambda staged: signing.sign_entry(staged, key)


def test_seeding_signs_every_entry_it_writes():
    empty = dataclasses.replace(seeded_snapshot(None), rollout=None, rollout_version=-1)
    change = plan_seed(empty, LAYOUT, SPEC, [], sign=sign_with(DEPLOYER))
    staged = [op for op in change.ops if op.path == LAYOUT.release("app") and op.kind == "create"]
    assert TRUSTED.refusal(ReleaseEntry.from_bytes(staged[0].data), "p") is None


def test_seeding_an_unsigned_rollout_again_with_a_key_signs_it_in_place_and_keeps_the_ready_queue():
    unsigned = SPEC.service("app").release_entry("r1")
    snapshot = seeded_snapshot(unsigned, failed="h1=signature h2=health")
    change = plan_seed(snapshot, LAYOUT, SPEC, [], sign=sign_with(DEPLOYER))
    assert [(op.kind, op.path) for op in change.ops] == [("set", LAYOUT.release("app")), ("delete", LAYOUT.failure("app", "h1"))]
    assert "signed app with key %s" % signing.key_id(DEPLOYER.public_key()) in change.message


def test_seeding_the_same_signed_release_again_changes_nothing():
    snapshot = seeded_snapshot(signing.sign_entry(SPEC.service("app").release_entry("r1"), DEPLOYER))
    assert not plan_seed(snapshot, LAYOUT, SPEC, [], sign=sign_with(DEPLOYER)).changed


def test_staging_with_a_new_key_re_signs_without_clearing_the_ready_queue():
    spec = ServiceSpec.from_dict(dict(SPEC.service("app").to_dict(), schema=SCHEMA))
    snapshot = seeded_snapshot(signing.sign_entry(spec.release_entry("r1"), OTHER))
    change = plan_stage(snapshot, LAYOUT, [], spec, "r1", sign=sign_with(DEPLOYER))
    assert [(op.kind, op.path) for op in change.ops] == [("set", LAYOUT.release("app"))]
    assert not any(op.path.startswith(LAYOUT.ready_queue("app")) for op in change.ops)


def test_a_signature_failure_record_is_an_ordinary_failure_payload():
    record = Failure(version="2.0", stage="signature", reason="not signed", at=1.0)
    assert Failure.from_bytes(record.to_bytes()).stage == "signature"
