# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The least-privilege ACL profile against a real ZooKeeper: one test per rule.

A rollout is seeded by the deployer's identity with the profile; a second agent identity holds
a slot and a failure record. Then, connected as an agent, every write the profile forbids fails
with NoAuthError and leaves the tree exactly as it was, and every write an agent makes succeeds,
its own nodes can be deleted again. The forbidden writes are sent by a client of the agent's
identity that does not apply the profile (an attacker's), so the server's ACLs are what refuses
them, not the collection's own client. The same for x509 identities over mutual TLS, where
ZooKeeper names a client by its certificate's subject (``x509:CN=h1,O=example``).
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import CREATOR_ALL_ACL, OPEN_ACL_UNSAFE

from ansible_collections.zkrollout.dc.plugins.module_utils.controller import writes
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import Op
from ansible_collections.zkrollout.dc.plugins.module_utils.core.acl import AclProfile, digest_id
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Failure, Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import profile_acl, request_bytes
from ansible_collections.zkrollout.dc.plugins.module_utils.store.commits import transaction_bytes
from ansible_collections.zkrollout.dc.plugins.module_utils.store.host import HostNodes
from ansible_collections.zkrollout.dc.plugins.module_utils.store.locks import ServiceLock
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import release_slot, take_slot
from ansible_collections.zkrollout.dc.tests.bed import tls as tls_material

from . import tree

pytestmark = pytest.mark.zookeeper

SERVICE = "web"
# An agent's identity is named after its host (core.acl.names_host): digest user h1 is host h1's agent.
DEPLOYER, AGENT, OTHER_AGENT, READER = "deployer:deployer-secret", "h1:h1-secret", "h2:h2-secret", "reader:reader-secret"
PROFILE = {
    "deployer": ["digest:" + DEPLOYER],
    "agents": ["digest:" + AGENT, "digest:" + OTHER_AGENT],
    "readers": ["digest:" + READER],
}


def _slot(host, version="2.0.0"):
    return Slot(to_version=version, since=time.time(), from_version="1.0.0", owner="agent:" + host)


def _failure(reason):
    return Failure(version="2.0.0", stage="health", reason=reason, at=time.time())


def _register(client, layout, host, version="1.0.0"):
    """Register ``host`` as its agent does: the index's node and the copy in the host's own parent, in one transaction."""
    client.ensure_path(layout.current_service(SERVICE))
    transaction = client.transaction()
    for path in layout.registration_nodes(SERVICE, host, version):
        transaction.create(path, b"", ephemeral=True)
    assert not any(isinstance(result, Exception) for result in transaction.commit())
    return layout.registration_nodes(SERVICE, host, version)


def _record_failure(client, layout, host, reason):
    """Record ``host``'s failure as its agent does: the index's record and the copy in the host's own parent, in one transaction."""
    transaction = client.transaction()
    transaction.create(layout.failure(SERVICE, host), _failure(reason).to_bytes())
    transaction.create(layout.host_failure(host, SERVICE), b"")
    assert not any(isinstance(result, Exception) for result in transaction.commit())


def _seed_rollout(deployer, other_agent, layout):
    """A staged release, its deploy entry and rollout node; the other agent's roster entry, registration, slot and failure record."""
    tree.seed(deployer, layout, tree.release(tree.service(SERVICE, version="2.0.0", quorum=1)))
    other_agent.create(layout.roster_member(SERVICE, "h2"), b"", makepath=True)
    _register(other_agent, layout, "h2")
    taken, reason, _snapshot = take_slot(other_agent, layout, SERVICE, "h2", _slot("h2"), allow=lambda snapshot: (True, "test"))
    assert taken, reason
    _record_failure(other_agent, layout, "h2", "h2 failed its health check")


@pytest.fixture
def digest_bed(zk, zk_connect, zk_root, layout):
    """Clients of the digest identities on a seeded tree: ``deployer``, ``agent``, ``reader`` with the
    profile, ``intruder`` of the agent's identity without it (any ACL it likes on what it creates)."""
    def connect(identity):
        return zk_connect(zk.hosts, root=zk_root, digest=identity, acl_profile=PROFILE)

    deployer, other = connect(DEPLOYER), connect(OTHER_AGENT)
    _seed_rollout(deployer, other, layout)
    return SimpleNamespace(deployer=deployer, agent=connect(AGENT), reader=connect(READER), other=other,
                           intruder=zk_connect(zk.hosts, root=zk_root, digest=AGENT))


# Forbidden writes of an agent: (test id, action(agent client, layout)).
def _deploy_entry(client, layout):
    return layout.deploy_entry(client.get_children(layout.deploy)[0])


FORBIDDEN = [
    ("set-release-entry", lambda c, lay: c.set(lay.release(SERVICE), c.get(lay.release(SERVICE))[0].replace(b"2.0.0", b"6.6.6"))),
    ("delete-release-entry-subtree", lambda c, lay: c.delete(lay.ready_queue(SERVICE))),
    ("create-release-under-staging", lambda c, lay: c.create(lay.release("evil"), b"{}")),
    ("create-subtree-under-release-entry", lambda c, lay: c.create(lay.release(SERVICE) + "/ready2")),
    ("create-entry-under-deploy", lambda c, lay: c.create(lay.deploy_prefix("evil"), b"{}", sequence=True)),
    ("delete-deploy-entry", lambda c, lay: c.delete(_deploy_entry(c, lay))),
    ("set-deploy-entry", lambda c, lay: c.set(_deploy_entry(c, lay), b"{}")),
    ("set-rollout", lambda c, lay: c.set(lay.rollout, c.get(lay.rollout)[0].replace(b'"running"', b'"aborted"'))),
    ("delete-rollout", lambda c, lay: c.delete(lay.rollout)),
    ("rewrite-other-agents-slot", lambda c, lay: c.set(lay.slot(SERVICE, "h2"), _slot("h2", "6.6.6").to_bytes())),
    ("rewrite-other-agents-failure", lambda c, lay: c.set(lay.failure(SERVICE, "h2"), _failure("forged").to_bytes())),
    ("change-acl-of-other-agents-slot", lambda c, lay: c.set_acls(lay.slot(SERVICE, "h2"), OPEN_ACL_UNSAFE)),
    ("change-acl-of-release-entry", lambda c, lay: c.set_acls(lay.release(SERVICE), OPEN_ACL_UNSAFE)),
    ("change-acl-of-staging", lambda c, lay: c.set_acls(lay.staging, OPEN_ACL_UNSAFE)),
    ("shrink-a-roster", lambda c, lay: c.delete(lay.roster_member(SERVICE, "h2"))),
    ("create-a-host-parent", lambda c, lay: c.create(lay.host("h3"), b"")),
    ("delete-its-own-host-parent", lambda c, lay: c.delete(lay.host("h1"))),
    ("register-under-another-hosts-parent", lambda c, lay: c.create(lay.host_registration("h2", SERVICE, "9.9.9"), b"", ephemeral=True)),
    ("delete-another-hosts-registration-copy", lambda c, lay: c.delete(lay.host_registration("h2", SERVICE, "1.0.0"))),
    ("delete-another-hosts-slot-copy", lambda c, lay: c.delete(lay.host_slot("h2", SERVICE))),
    ("delete-another-hosts-failure-copy", lambda c, lay: c.delete(lay.host_failure("h2", SERVICE))),
    ("forge-a-slot-copy-in-another-hosts-parent", lambda c, lay: c.create(lay.host_slot("h2", "other"), b"")),
    ("forge-a-failure-copy-in-another-hosts-parent", lambda c, lay: c.create(lay.host_failure("h2", "other"), b"")),
    ("delete-another-hosts-parent", lambda c, lay: c.delete(lay.host("h2"), recursive=True)),
    ("change-acl-of-another-hosts-parent", lambda c, lay: c.set_acls(lay.host("h2"), OPEN_ACL_UNSAFE)),
    ("change-acl-of-the-hosts-container", lambda c, lay: c.set_acls(lay.hosts, OPEN_ACL_UNSAFE)),
]


@pytest.mark.parametrize("write", [rule[1] for rule in FORBIDDEN], ids=[rule[0] for rule in FORBIDDEN])
def test_an_agent_identity_cannot_make_a_write_that_only_the_deployer_may(digest_bed, layout, write):
    before = tree.dump_tree(digest_bed.deployer, layout.root)

    with pytest.raises(NoAuthError):
        write(digest_bed.intruder, layout)

    assert tree.dump_tree(digest_bed.deployer, layout.root) == before


# Allowed writes of an agent: (test id, create(agent client, layout) -> path of the node it made).
def _take_slot(client, layout):
    taken, reason, _snapshot = take_slot(client, layout, SERVICE, "h1", _slot("h1"), allow=lambda snapshot: (True, "test"))
    assert taken, reason
    return layout.slot(SERVICE, "h1")


def _lock_contender(client, layout):
    lock = ServiceLock(client, layout.lock(SERVICE), "h1")
    assert lock.acquire(5.0)
    return lock.node_path


def _registration(client, layout):
    client.ensure_path(layout.current_service(SERVICE))
    return client.create(layout.registration(SERVICE, "h1", "1.0.0"), b"", ephemeral=True)


def _registration_copy(client, layout):
    return client.create(layout.host_registration("h1", SERVICE, "1.0.0"), b"", ephemeral=True)


ALLOWED = [
    ("registration", _registration),
    ("registration-copy", _registration_copy),
    ("ready-member", lambda c, lay: c.create(lay.ready_prefix(SERVICE, "h1"), b"", ephemeral=True, sequence=True)),
    ("slot", _take_slot),
    ("failure-record", lambda c, lay: c.create(lay.failure(SERVICE, "h1"), _failure("h1 failed").to_bytes())),
    ("slot-copy", lambda c, lay: c.create(lay.host_slot("h1", SERVICE), b"")),
    ("failure-copy", lambda c, lay: c.create(lay.host_failure("h1", SERVICE), b"")),
    ("lock-contender", _lock_contender),
    ("presence", lambda c, lay: c.create(lay.agent("h1"), b"", ephemeral=True)),
]


@pytest.mark.parametrize("create", [rule[1] for rule in ALLOWED], ids=[rule[0] for rule in ALLOWED])
def test_an_agent_identity_creates_rewrites_and_deletes_its_own_nodes(digest_bed, layout, create):
    deployer, agent = digest_bed.deployer, digest_bed.agent

    path = create(agent, layout)
    agent.set(path, agent.get(path)[0])
    acl = {(entry.id.scheme, entry.id.id): entry.perms for entry in deployer.get_acls(path)[0]}
    agent.delete(path)

    assert acl == {("digest", digest_id(*AGENT.split(":"))): 31, ("digest", digest_id(*DEPLOYER.split(":"))): 31,
                   ("digest", digest_id(*OTHER_AGENT.split(":"))): 1, ("digest", digest_id(*READER.split(":"))): 1}
    assert deployer.exists(path) is None


def test_the_first_agent_of_a_service_creates_its_per_service_parents_and_no_agent_deletes_them(digest_bed, layout):
    agent = digest_bed.agent
    parents = [layout.service_roster("db"), layout.current_service("db"), layout.lock("db")]

    for path in parents:
        agent.create(path)
    for path in parents:
        with pytest.raises(NoAuthError):
            agent.delete(path)


def test_an_agent_joins_a_roster_and_only_the_deployer_removes_it_from_there(digest_bed, layout):
    path = digest_bed.agent.create(layout.roster_member(SERVICE, "h1"), b"", makepath=True)

    with pytest.raises(NoAuthError):
        digest_bed.agent.delete(path)
    digest_bed.deployer.delete(path)


def test_another_agent_can_read_but_not_rewrite_an_agents_registration_or_presence(digest_bed, layout, zk, zk_connect):
    agent = digest_bed.agent
    nodes = [_registration(agent, layout), agent.create(layout.agent("h1"), b"", ephemeral=True)]
    other = zk_connect(zk.hosts, root=layout.root, digest=OTHER_AGENT)

    for path in nodes:
        other.get(path)
        with pytest.raises(NoAuthError):
            other.set(path, b"forged")


READER_WRITES = [
    ("roster-member", lambda c, lay: c.create(lay.roster_member(SERVICE, "h9"), b"", makepath=True)),
    ("ready-member", lambda c, lay: c.create(lay.ready_prefix(SERVICE, "h9"), b"", ephemeral=True, sequence=True)),
    ("failure-record", lambda c, lay: c.create(lay.failure(SERVICE, "h9"), _failure("h9").to_bytes())),
    ("presence", lambda c, lay: c.create(lay.agent("h9"), b"", ephemeral=True)),
    ("set-release-entry", FORBIDDEN[0][1]),
    ("delete-other-agents-slot", lambda c, lay: c.delete(lay.slot(SERVICE, "h2"))),
]


def test_a_reader_identity_reads_the_whole_tree(digest_bed, layout):
    assert tree.dump_tree(digest_bed.reader, layout.root) == tree.dump_tree(digest_bed.deployer, layout.root)


@pytest.mark.parametrize("write", [rule[1] for rule in READER_WRITES], ids=[rule[0] for rule in READER_WRITES])
def test_a_reader_identity_writes_nothing(digest_bed, layout, zk, zk_connect, write):
    reader = zk_connect(zk.hosts, root=layout.root, digest=READER)
    before = tree.dump_tree(digest_bed.deployer, layout.root)

    with pytest.raises(NoAuthError):
        write(reader, layout)

    assert tree.dump_tree(digest_bed.deployer, layout.root) == before


def test_a_session_without_an_identity_of_the_profile_reads_nothing(digest_bed, layout, zk, zk_connect):
    stranger = zk_connect(zk.hosts, digest="stranger:secret")

    with pytest.raises(NoAuthError):
        stranger.get(layout.release(SERVICE))


# x509 identities over mutual TLS: ZooKeeper names a client by its certificate's subject.
@pytest.fixture(scope="module")
def certificates(zk_mtls):
    """``{name: (certfile, keyfile)}`` for the deployer, two agents and a reader."""
    return {name: tls_material.client_certificate(zk_mtls.tls, name) for name in ("deployer", "h1", "h2", "reader")}


@pytest.fixture
def x509_bed(zk_mtls, zk_connect, zk_root, layout, certificates):
    """``(deployer, agent h1, intruder h1 without the profile)`` clients of x509 identities, on a seeded tree."""
    profile = {"deployer": ["x509:CN=deployer,O=example"], "agents": ["x509:CN=h1,O=example", "x509:CN=h2,O=example"],
               "readers": ["x509:CN=reader,O=example"]}

    def connect(name, **options):
        certfile, keyfile = certificates[name]
        return zk_connect(zk_mtls.secure_hosts, root=zk_root, tls=True, ca=zk_mtls.tls.ca_cert, certfile=certfile, keyfile=keyfile, **options)

    deployer = connect("deployer", acl_profile=profile)
    _seed_rollout(deployer, connect("h2", acl_profile=profile), layout)
    return deployer, connect("h1", acl_profile=profile), connect("h1")


def test_zookeeper_names_a_tls_client_by_its_certificate_subject(x509_bed, layout):
    agent = x509_bed[1]

    path = agent.create(layout.roster_member(SERVICE, "h1"), b"", makepath=True)

    assert ("x509", "CN=h1,O=example", 31) in [(entry.id.scheme, entry.id.id, entry.perms) for entry in agent.get_acls(path)[0]]


@pytest.mark.parametrize("write", [FORBIDDEN[0][1], FORBIDDEN[5][1], FORBIDDEN[9][1]],
                         ids=["set-release-entry", "delete-deploy-entry", "rewrite-other-agents-slot"])
def test_an_x509_agent_cannot_make_a_write_that_only_the_deployer_may(x509_bed, layout, write):
    deployer, _agent, intruder = x509_bed
    before = tree.dump_tree(deployer, layout.root)

    with pytest.raises(NoAuthError):
        write(intruder, layout)

    assert tree.dump_tree(deployer, layout.root) == before


@pytest.mark.parametrize("create", [_registration, _take_slot], ids=["registration", "slot"])
def test_an_x509_agent_registers_and_takes_a_slot(x509_bed, layout, create):
    deployer, agent, _intruder = x509_bed

    path = create(agent, layout)
    acl = {(entry.id.scheme, entry.id.id): entry.perms for entry in deployer.get_acls(path)[0]}
    agent.delete(path)

    assert acl == {("x509", "CN=h1,O=example"): 31, ("x509", "CN=deployer,O=example"): 31, ("x509", "CN=h2,O=example"): 1,
                   ("x509", "CN=reader,O=example"): 1}
    assert deployer.exists(path) is None


def test_the_rollout_module_seeds_under_the_profile_so_agents_can_only_read_the_release(ansible_adhoc, inventory, zk, zk_root, layout, zk_connect):
    deployer = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                                 zk_acl_profile=PROFILE)

    result = deployer("rollout", release=tree.release(tree.service(SERVICE)))

    assert result["changed"] is True, result
    agent, admin = zk_connect(zk.hosts, digest=AGENT), zk_connect(zk.hosts, digest=DEPLOYER)
    # ZooKeeper shows a digest's hash only to an identity with the admin right.
    acls = {(entry.id.scheme, entry.id.id): entry.perms for entry in admin.get_acls(layout.release(SERVICE))[0]}
    assert acls == {("digest", digest_id(*DEPLOYER.split(":"))): 31, ("digest", digest_id(*AGENT.split(":"))): 1,
                    ("digest", digest_id(*OTHER_AGENT.split(":"))): 1, ("digest", digest_id(*READER.split(":"))): 1}
    with pytest.raises(NoAuthError):
        agent.set(layout.release(SERVICE), b"{}")


def test_a_module_refuses_an_acl_together_with_a_profile(ansible_adhoc, inventory, zk, zk_root):
    deployer = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                                 zk_acl_profile=PROFILE, zk_acl=["world:anyone:cdrwa"])

    result = deployer("rollout", release=tree.release(tree.service(SERVICE)))

    assert result.get("failed") and "zk_acl and zk_acl_profile exclude each other" in result["msg"], result


def test_the_size_checked_before_a_write_counts_the_acls_the_profile_gives(digest_bed, layout, zk, zk_connect):
    plain = zk_connect(zk.hosts, root=layout.root)
    ops = [Op("create", layout.release("db"), b"{}"), Op("create", layout.slot("db", "h1"), b"{}")]
    profile, by_hand = AclProfile.from_mapping(PROFILE), plain.transaction()
    for op in ops:
        by_hand.create(op.path, op.data, acl=profile_acl(profile, layout.kind(op.path)))

    size = transaction_bytes(digest_bed.deployer, ops)

    assert size == request_bytes(by_hand)
    assert size > transaction_bytes(plain, ops)


def test_the_profile_classifies_paths_below_a_chroot(zk, zk_connect, zk_root, layout):
    chroot = zk_root + "-chroot"
    zk_connect(zk.hosts).ensure_path(chroot)
    deployer = zk_connect(zk.hosts + chroot, root=layout.root, digest=DEPLOYER, acl_profile=PROFILE)

    tree.seed(deployer, layout, tree.release(tree.service(SERVICE)))

    acl = {(entry.id.scheme, entry.id.id): entry.perms for entry in deployer.get_acls(layout.release(SERVICE))[0]}
    assert acl[("digest", digest_id(*AGENT.split(":")))] == 1
    assert deployer.exists(layout.release(SERVICE)) and zk_connect(zk.hosts).exists(chroot + layout.release(SERVICE))


# What a decision that stops an instance counts under the profile: the hosts' own parents, not the shared listings.
def _counted(client, layout):
    """The registrations the fresh read of a slot decision counts, and its problems (the take itself is refused)."""
    taken, _reason, snapshot = take_slot(client, layout, SERVICE, "h1", _slot("h1"), allow=lambda snapshot: (False, "only looking"))
    assert not taken
    return snapshot.service(SERVICE).registrations, " ".join(snapshot.service(SERVICE).problems)


def test_a_registration_another_agent_forged_in_the_shared_listing_is_not_counted(digest_bed, layout):
    # h1's agent claims that h3 runs 1.0.0: it may add to current/web, not to hosts/h3.
    digest_bed.intruder.create(layout.registration(SERVICE, "h3", "1.0.0"), b"", ephemeral=True)
    digest_bed.intruder.create(layout.roster_member(SERVICE, "h3"), b"")

    counted, problems = _counted(digest_bed.agent, layout)

    assert counted == {"h2": "1.0.0"}, (problems, digest_bed.agent.get_acls(layout.host("h2")), digest_bed.agent.get_children(layout.host("h2")))
    assert "web 1.0.0 on h3 is not in that host's own parent: not counted" in problems


def test_a_registration_another_agent_deleted_from_the_shared_listing_still_counts(digest_bed, layout):
    digest_bed.intruder.delete(layout.registration(SERVICE, "h2", "1.0.0"))

    counted, problems = _counted(digest_bed.agent, layout)

    assert counted == {"h2": "1.0.0"}
    assert "web 1.0.0 on h2 is missing from the service's listing" in problems


def _held(client, layout):
    """The slots and failure records the fresh read of a slot decision counts, and its problems."""
    taken, _reason, snapshot = take_slot(client, layout, SERVICE, "h1", _slot("h1"), allow=lambda snapshot: (False, "only looking"))
    assert not taken
    state = snapshot.service(SERVICE)
    return sorted(state.slots), sorted(state.failures), " ".join(state.problems)


def test_a_slot_and_a_failure_record_another_agent_deleted_from_the_shared_listings_still_count(digest_bed, layout):
    # h1's agent frees h2's slot (one more host could start) and lifts h2's halt, in the index.
    digest_bed.intruder.delete(layout.slot(SERVICE, "h2"))
    digest_bed.intruder.delete(layout.failure(SERVICE, "h2"))

    slots, failures, problems = _held(digest_bed.agent, layout)

    assert (slots, failures) == (["h2"], ["h2"]), problems
    assert "slot of web on h2 is missing from the service's listing" in problems
    assert "failure record of web on h2 is missing from the service's listing" in problems


def test_a_slot_and_a_failure_record_another_agent_forged_in_the_shared_listings_are_not_counted(digest_bed, layout):
    other, intruder = digest_bed.other, digest_bed.intruder
    assert release_slot(other, layout, SERVICE, "h2", owner="agent:h2")
    other.delete(layout.host_failure("h2", SERVICE))
    other.delete(layout.failure(SERVICE, "h2"))
    intruder.create(layout.slot(SERVICE, "h2"), _slot("h2").to_bytes())
    intruder.create(layout.failure(SERVICE, "h2"), _failure("forged").to_bytes())

    slots, failures, problems = _held(digest_bed.agent, layout)

    assert (slots, failures) == ([], []), problems
    assert "slot of web on h2 is not in that host's own parent" in problems and "failure record of web on h2 is not in" in problems


def test_a_ready_member_another_agent_forged_at_the_head_of_the_queue_is_skipped(digest_bed, layout):
    # h1's agent puts h2 (which never takes a turn) ahead of everyone, then joins itself.
    forged = digest_bed.intruder.create(layout.ready_prefix(SERVICE, "h2"), b"", ephemeral=True, sequence=True, acl=CREATOR_ALL_ACL)
    open_to_all = digest_bed.intruder.create(layout.ready_prefix(SERVICE, "h2"), b"", ephemeral=True, sequence=True)
    digest_bed.agent.create(layout.ready_prefix(SERVICE, "h1"), b"", ephemeral=True, sequence=True)

    seen = read_snapshot(digest_bed.agent, layout, services=[SERVICE]).service(SERVICE)
    listed = read_snapshot(digest_bed.intruder, layout, services=[SERVICE]).service(SERVICE)

    assert seen.ready_hosts == ["h1"], seen.problems
    assert "ignored ready member %s: created by digest:h1, not by h2's identity" % forged in " ".join(seen.problems)
    assert "ignored ready member %s: created by world:anyone, not by h2's identity" % open_to_all in " ".join(seen.problems)
    assert listed.ready_hosts == ["h2", "h1"]


def test_a_slot_whose_index_node_another_agent_deleted_is_freed_by_its_holder_copy_and_all(digest_bed, layout):
    digest_bed.intruder.delete(layout.slot(SERVICE, "h2"))

    assert release_slot(digest_bed.other, layout, SERVICE, "h2", owner="agent:h2")

    assert "slot:%s" % SERVICE not in digest_bed.deployer.get_children(layout.host("h2"))
    assert _held(digest_bed.agent, layout)[0] == []


def test_an_operator_frees_a_slot_another_agent_forged_in_the_index(ansible_adhoc, inventory, zk, zk_root, layout, digest_bed):
    # A slot forged for h1 counts for no decision, but it keeps h1 from creating its own.
    digest_bed.intruder.create(layout.slot(SERVICE, "h1"), _slot("h1").to_bytes(), acl=CREATOR_ALL_ACL)
    deployer = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                                 zk_acl_profile=PROFILE)

    refused = deployer("rollout_control", action="release_slot", service=SERVICE, host="h1")
    forced = deployer("rollout_control", action="release_slot", service=SERVICE, host="h1", force=True)

    assert refused.get("failed") and "malformed" in refused["msg"], refused
    assert forced["changed"] is True, forced
    assert digest_bed.deployer.exists(layout.slot(SERVICE, "h1")) is None


def test_unstaging_deletes_ready_members_another_agent_forged(digest_bed, layout):
    assert release_slot(digest_bed.other, layout, SERVICE, "h2", owner="agent:h2")
    digest_bed.intruder.create(layout.ready_prefix(SERVICE, "h2"), b"", ephemeral=True, sequence=True, acl=CREATOR_ALL_ACL)

    change = writes.read_plan_apply(digest_bed.deployer, layout, lambda snapshot, _missing: writes.plan_unstage(snapshot, layout, SERVICE))

    assert change.changed and digest_bed.deployer.exists(layout.release(SERVICE)) is None
    assert "failed:%s" % SERVICE not in digest_bed.deployer.get_children(layout.host("h2"))


def test_an_agent_replaces_a_failure_record_it_may_not_rewrite_and_writes_its_copy(digest_bed, layout):
    # h1's failure record, created by another identity (an older one of h1's, or a forger): h1 may delete it, not rewrite it.
    digest_bed.other.create(layout.failure(SERVICE, "h1"), _failure("not h1's words").to_bytes())
    nodes = HostNodes(layout, "h1", [SERVICE], {}, logging.getLogger("test"), lambda: None, client=digest_bed.agent)
    nodes.own_parent, nodes.roster_written = True, True

    nodes.record_failure(SERVICE, "2.0.0", "health", "h1 failed its health check")

    data, _stat = digest_bed.deployer.get(layout.failure(SERVICE, "h1"))
    assert Failure.from_bytes(data, layout.failure(SERVICE, "h1")).reason == "h1 failed its health check"
    assert "failed:%s" % SERVICE in digest_bed.deployer.get_children(layout.host("h1"))
    assert sorted(_held(digest_bed.agent, layout)[1]) == ["h1", "h2"]


def test_a_retry_clears_a_failure_counted_from_the_hosts_own_parent(ansible_adhoc, inventory, zk, zk_root, layout, digest_bed):
    deployer = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                                 zk_acl_profile=PROFILE)
    digest_bed.intruder.delete(layout.failure(SERVICE, "h2"))
    halted = deployer("rollout_info")

    retried = deployer("rollout_control", action="retry", service=SERVICE)

    assert halted["services"][SERVICE]["failures"], halted["services"][SERVICE]
    assert retried["changed"] is True and "cleared failures on h2" in retried["msg"], retried
    assert sorted(digest_bed.deployer.get_children(layout.host("h2"))) == ["slot:%s" % SERVICE, "%s@1.0.0" % SERVICE]
    assert _held(digest_bed.agent, layout)[:2] == (["h2"], [])


def test_a_host_parent_left_open_from_before_the_profile_counts_nothing(digest_bed, layout, zk, zk_connect):
    # hosts/h3 was created without the profile (open to anyone): h1's agent fills it and the listing.
    zk_connect(zk.hosts, root=layout.root, digest=DEPLOYER).create(layout.host("h3"), b"", acl=OPEN_ACL_UNSAFE)
    intruder = digest_bed.intruder
    intruder.create(layout.host_registration("h3", SERVICE, "1.0.0"), b"", ephemeral=True)
    intruder.create(layout.registration(SERVICE, "h3", "1.0.0"), b"", ephemeral=True)

    counted, problems = _counted(digest_bed.agent, layout)

    assert counted == {"h2": "1.0.0"}
    assert "%s is not that host's own" % layout.host("h3") in problems and "world:anyone may add or remove" in problems


def test_seeding_gives_each_agent_identity_its_own_parent(digest_bed, layout, zk, zk_connect):
    admin = zk_connect(zk.hosts, root=layout.root, digest=DEPLOYER)

    acls = {host: {(entry.id.scheme, entry.id.id): entry.perms for entry in admin.get_acls(layout.host(host))[0]} for host in ("h1", "h2")}

    agent, other, deployer = (("digest", digest_id(*identity.split(":"))) for identity in (AGENT, OTHER_AGENT, DEPLOYER))
    assert acls["h1"][agent] == acls["h2"][other] == 13  # read, create, delete
    assert acls["h1"][other] == acls["h2"][agent] == 1
    assert acls["h1"][deployer] == 31


def test_without_a_profile_the_shared_listing_is_what_counts(zk, zk_connect, zk_root, layout):
    plain = zk_connect(zk.hosts, root=zk_root)
    tree.seed(plain, layout, tree.release(tree.service(SERVICE, version="2.0.0", quorum=1)))
    plain.create(layout.registration(SERVICE, "h3", "1.0.0"), b"", ephemeral=True, makepath=True)

    assert _counted(plain, layout)[0] == {"h3": "1.0.0"}


def test_the_deployer_removes_a_host_from_a_roster_with_rollout_control(ansible_adhoc, inventory, zk, zk_root, layout, digest_bed):
    deployer = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                                 zk_acl_profile=PROFILE)
    digest_bed.agent.create(layout.roster_member(SERVICE, "h1"), b"")

    refused = deployer("rollout_control", action="leave_roster", service=SERVICE, host="h2")
    removed = deployer("rollout_control", action="leave_roster", service=SERVICE, host="h1")
    again = deployer("rollout_control", action="leave_roster", service=SERVICE, host="h1")

    assert refused.get("failed") and "h2 is registered as a healthy instance and holds an upgrade slot of web" in refused["msg"], refused
    assert removed["changed"] is True and again["changed"] is False, (removed, again)
    assert digest_bed.deployer.get_children(layout.service_roster(SERVICE)) == ["h2"]


def test_a_host_added_to_the_profile_later_can_write_once_the_deployer_runs_again(ansible_adhoc, inventory, zk, zk_root, layout, zk_connect):
    deployer = zk_connect(zk.hosts, root=zk_root, digest=DEPLOYER, acl_profile=PROFILE)
    tree.seed(deployer, layout, tree.release(tree.service(SERVICE, version="2.0.0", quorum=1)))
    grown = dict(PROFILE, agents=PROFILE["agents"] + ["digest:h3:h3-secret"])
    newcomer = zk_connect(zk.hosts, root=zk_root, digest="h3:h3-secret", acl_profile=grown)
    with pytest.raises(NoAuthError):
        newcomer.create(layout.ready_prefix(SERVICE, "h3"), b"", ephemeral=True, sequence=True)

    again = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                              zk_acl_profile=grown)("rollout", release=tree.release(tree.service(SERVICE, version="2.0.0", quorum=1)))

    assert again["changed"] is True and "the own parents of h3" in again["msg"] and "the profile's ACL on" in again["msg"], again
    newcomer.create(layout.ready_prefix(SERVICE, "h3"), b"", ephemeral=True, sequence=True)
    _register(newcomer, layout, "h3")
    assert deployer.get_children(layout.host("h3")) == ["%s@1.0.0" % SERVICE]


def test_prepare_creates_the_tree_and_each_hosts_own_parent_so_agents_can_start_before_any_release(ansible_adhoc, inventory, zk, zk_root,
                                                                                                   layout, zk_connect):
    deployer = tree.ModuleRunner(ansible_adhoc, inventory, zk_hosts=zk.hosts, zk_root=zk_root, zk_timeout=5.0, zk_digest=DEPLOYER,
                                 zk_acl_profile=PROFILE)
    agent = zk_connect(zk.hosts, root=zk_root, digest=AGENT, acl_profile=PROFILE)

    checked = deployer("rollout_control", check_mode=True, action="prepare")
    assert agent.exists(layout.roster) is None
    prepared = deployer("rollout_control", action="prepare")
    again = deployer("rollout_control", action="prepare")

    assert checked["changed"] is True and prepared["changed"] is True and again["changed"] is False, (checked, prepared, again)
    assert "the own parents of h1, h2" in prepared["msg"], prepared
    agent.create(layout.service_roster(SERVICE), b"")
    _register(agent, layout, "h1")
    assert agent.get_children(layout.host("h1")) == ["%s@1.0.0" % SERVICE]
    assert agent.exists(layout.rollout) is None
