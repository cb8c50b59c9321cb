# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole rollout on real agent processes under the least-privilege ACL profile.

Three hosts, each its own identity (digest, or x509 over mutual TLS), all listed in the
profile's ``agents``; the deployer creates the tree and seeds a signed release. The agents
register, queue, take slots, switch and free them with nothing but the rights the profile
gives them: the rollout completes, the independent monitor never sees the service below its
quorum, no agent was refused a write, and what each agent created belongs to its identity.
"""

from __future__ import annotations

import signal
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.runtime import IMMEDIATE_RETAKES
from ansible_collections.zkrollout.dc.plugins.module_utils.controller import report
from ansible_collections.zkrollout.dc.plugins.module_utils.core.acl import digest_id
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.store.commits import create_parents, missing_host_parents
from ansible_collections.zkrollout.dc.tests.bed import tls as tls_material
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import V1, V2, V3_BROKEN, ArtifactStore, rollout_beds

pytestmark = [pytest.mark.zookeeper]

HOSTS = ("h1", "h2", "h3")
QUORUM = 2
DEPLOYER = "deployer:deployer-secret"


@pytest.fixture(scope="module")
def store():
    """Every demo-service version, built once and served on 127.0.0.1."""
    with ArtifactStore(services=("A",)) as artifacts:
        yield artifacts


def _digest_hash(credentials):
    # The agents' configs name every identity by its hash: no host holds another's password.
    return "digest-hash:" + digest_id(*credentials.split(":", 1))


def _digest_identities(request, zk_connect, zk_root):
    zk = request.getfixturevalue("zk")
    passwords = {host: "%s:%s-secret" % (host, host) for host in HOSTS}
    profile = {"deployer": [_digest_hash(DEPLOYER)], "agents": [_digest_hash(passwords[host]) for host in HOSTS]}
    deployer = zk_connect(zk.hosts, root=zk_root, digest=DEPLOYER, acl_profile=profile)
    return (zk.hosts, deployer, lambda host: {"digest": passwords[host], "acl_profile": profile},
            lambda host: ("digest", digest_id(*passwords[host].split(":", 1))))


def _x509_identities(request, zk_connect, zk_root):
    zk_mtls = request.getfixturevalue("zk_mtls")
    certificates = {name: tls_material.client_certificate(zk_mtls.tls, name) for name in ("deployer",) + HOSTS}
    profile = {"deployer": ["x509:CN=deployer,O=example"], "agents": ["x509:CN=%s,O=example" % host for host in HOSTS]}

    def tls(name):
        return {"tls": True, "ca": zk_mtls.tls.ca_cert, "certfile": certificates[name][0], "keyfile": certificates[name][1]}

    deployer = zk_connect(zk_mtls.secure_hosts, root=zk_root, acl_profile=profile, **tls("deployer"))
    return (zk_mtls.secure_hosts, deployer, lambda host: dict(tls(host), acl_profile=profile),
            lambda host: ("x509", "CN=%s,O=example" % host))


IDENTITIES = {"digest": _digest_identities, "x509-over-mutual-tls": _x509_identities}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("identities", sorted(IDENTITIES))
def test_a_rollout_on_real_agents_completes_under_the_acl_profile(store, zk_connect, zk_root, request, identities):
    hosts, deployer, host_options, identity_of = IDENTITIES[identities](request, zk_connect, zk_root)
    layout = Layout(zk_root)
    # The containers are the deployer's: agents may not create them.
    for path in layout.containers():
        deployer.ensure_path(path)
    with rollout_beds(store, hosts, zk_root, deployer) as make:
        fleet = make(hosts=list(HOSTS), services=("A",), zookeeper=host_options).start()

        fleet.seed({"A": {"version": V2, "quorum": QUORUM}})
        fleet.wait_done(timeout=120)
        fleet.wait_all_on("A", V2)

        fleet.assert_quorum({"A": QUORUM}, request)
        assert "NoAuth" not in fleet.agent_logs(lines=100000)
        for host in HOSTS:
            acl = {(entry.id.scheme, entry.id.id): entry.perms for entry in deployer.get_acls(layout.roster_member("A", host))[0]}
            assert acl[identity_of(host)] == 31, acl
            assert all(acl[identity_of(other)] == 1 for other in HOSTS if other != host), acl
        release_acl = {(entry.id.scheme, entry.id.id): entry.perms for entry in deployer.get_acls(layout.release("A"))[0]}
        assert all(release_acl[identity_of(host)] == 1 for host in HOSTS), release_acl
        # The agents started before the seeding created their own parents: each wrote its copy once it appeared.
        for host in HOSTS:
            assert deployer.get_children(layout.host(host)) == ["A@%s" % V2], host
            parent_acl = {(entry.id.scheme, entry.id.id): entry.perms for entry in deployer.get_acls(layout.host(host))[0]}
            assert parent_acl[identity_of(host)] == 13 and all(parent_acl[identity_of(other)] == 1 for other in HOSTS if other != host)


def _compromised_h1(request, zk_connect, zk_root):
    """``(hosts, deployer, host_options, layout, intruder)``: digest identities, the containers, and h1's identity
    without the collection's client (what a compromised h1 can send)."""
    hosts, deployer, host_options, _identity_of = _digest_identities(request, zk_connect, zk_root)
    layout = Layout(zk_root)
    for path in layout.containers():
        deployer.ensure_path(path)
    return hosts, deployer, host_options, layout, zk_connect(hosts, root=zk_root, digest="h1:h1-secret")


@pytest.mark.timeout(240)
def test_registrations_another_agent_deleted_from_the_listing_neither_stall_nor_shrink_the_rollout(store, zk_connect, zk_root, request):
    hosts, deployer, host_options, layout, intruder = _compromised_h1(request, zk_connect, zk_root)
    with rollout_beds(store, hosts, zk_root, deployer) as make:
        fleet = make(hosts=list(HOSTS), services=("A",), zookeeper=host_options).start()
        create_parents(deployer, missing_host_parents(deployer, layout))  # what a writing module does first
        fleet.wait_for(lambda: all(deployer.get_children(layout.host(host)) == ["A@%s" % V1] for host in HOSTS), 30, "every copy written")

        for host in ("h2", "h3"):
            intruder.delete(layout.registration("A", host, V1))
        # And a member for h9, which never takes a turn, at the head of the ready queue. The agents
        # are frozen (far shorter than their session timeout) from the seeding to the forgery, so
        # that none joins first.
        for host in HOSTS:
            fleet.fleet.signal(host, signal.SIGSTOP)
        try:
            fleet.seed({"A": {"version": V2, "quorum": QUORUM}})
            forged = intruder.create(layout.ready_prefix("A", "h9"), b"", ephemeral=True, sequence=True)
        finally:
            for host in HOSTS:
                fleet.fleet.signal(host, signal.SIGCONT)
        fleet.wait_for(lambda: len(deployer.get_children(layout.ready_queue("A"))) > 1, 30, "a host to join the ready queue")
        assert min(deployer.get_children(layout.ready_queue("A")), key=lambda node: node.rsplit("-", 1)[1]) == forged.rsplit("/", 1)[1]
        fleet.wait_done(timeout=120)
        fleet.wait_all_on("A", V2)

        fleet.assert_quorum({"A": QUORUM}, request)
        assert sorted(deployer.get_children(layout.current_service("A"))) == ["%s@%s" % (host, V2) for host in HOSTS]


@pytest.mark.timeout(240)
def test_a_failure_record_another_agent_deleted_from_the_listing_still_halts_the_rollout(store, zk_connect, zk_root, request):
    hosts, deployer, host_options, layout, intruder = _compromised_h1(request, zk_connect, zk_root)
    create_parents(deployer, missing_host_parents(deployer, layout))
    with rollout_beds(store, hosts, zk_root, deployer) as make:
        fleet = make(hosts=list(HOSTS), services=("A",), zookeeper=host_options, health={"deadline": 3.0}).start()

        fleet.seed({"A": {"version": V3_BROKEN, "quorum": QUORUM}})
        fleet.wait_for(lambda: deployer.get_children(layout.failures("A")) and not deployer.get_children(layout.slots("A")), 90,
                       "a failure of A recorded and its slot released")
        [failed] = deployer.get_children(layout.failures("A"))
        assert "failed:A" in deployer.get_children(layout.host(failed)), "the agent wrote no copy of its failure record"
        intruder.delete(layout.failure("A", failed))
        contenders_before = deployer.exists(layout.lock("A")).cversion
        # Long enough for the other hosts to take their turns, were the deleted record what halts.
        settle = 3 * fleet.fleet.loop_wait + 2.0
        time.sleep(settle)
        # Their views see no failure, the decision under the lock does: each tries again at its
        # wake-ups (a couple at once, then once per loop_wait), never in a loop. A lock contender
        # is a create and a delete in the lock's child list.
        tries = deployer.exists(layout.lock("A")).cversion - contenders_before
        bound = 2 * (len(HOSTS) - 1) * (IMMEDIATE_RETAKES + 2 + settle / fleet.fleet.loop_wait)
        assert tries <= bound, "the lock of A was taken %d times in %.1fs (at most %d expected)" % (tries // 2, settle, bound // 2)

        assert deployer.get_children(layout.slots("A")) == []
        assert [host for host in HOSTS if fleet.fleet.local_state(host).get("A").previous is not None] == [failed]
        assert report.verdict(fleet.snapshot(), "A")[0] == "halted"
        fleet.assert_quorum({"A": QUORUM}, request)
