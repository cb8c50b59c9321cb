# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The core's client factory (plugins/module_utils/zkclient.py) against real ZooKeeper servers,
and the test bed's fault helpers that later fault tests rely on."""

from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest
from kazoo.client import KazooState
from kazoo.exceptions import NoAuthError

from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import ConnectionOptions, ZkConnectionError
from ansible_collections.zkrollout.dc.tests.bed import tls as tls_material
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import LOOPBACK, ZooKeeper, free_ports

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(120)]

# A failed connect may take its timeout plus the core's diagnosis (one TCP probe per server,
# at most 2 s each); anything beyond this slack means the timeout was not honoured.
FAILURE_SLACK = 4.0


def _expect_connection_error(options):
    started = time.monotonic()
    with pytest.raises(ZkConnectionError) as raised:
        zkclient.connect(options)
    elapsed = time.monotonic() - started
    assert elapsed < options.timeout + FAILURE_SLACK, "gave up after %.1fs, timeout %.1fs" % (elapsed, options.timeout)
    return str(raised.value)


def _wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "waited %.0fs for %s" % (timeout, what)
        time.sleep(0.05)


def _write_and_read_back(client, path):
    client.create(path, b"written", makepath=True)
    assert client.get(path)[0] == b"written"


def test_connects_to_a_single_node(zk, zk_connect, zk_root):
    client = zk_connect(zk.hosts)

    assert client.state == KazooState.CONNECTED
    _write_and_read_back(client, zk_root + "/node")


def test_session_disconnects_when_its_block_fails(zk):
    options = ConnectionOptions(hosts=zk.hosts, timeout=5.0, session_timeout=4.0)

    with pytest.raises(RuntimeError):
        with zkclient.session(options) as client:
            assert client.connected
            raise RuntimeError("the block fails")

    assert not client.connected
    assert client.state == KazooState.LOST


def test_connects_to_the_three_node_ensemble_and_every_member_sees_its_writes(zk_ensemble, zk_connect, zk_root):
    client = zk_connect(zk_ensemble.hosts)
    _write_and_read_back(client, zk_root + "/node")

    for member in zk_ensemble.members:
        reader = zk_connect(member.hosts)
        reader.sync(zk_root + "/node")
        assert reader.get(zk_root + "/node")[0] == b"written", "member %d misses the write" % member.myid


def test_the_bed_names_one_leader_and_two_followers(zk_ensemble):
    leader = zk_ensemble.leader()

    assert leader.mode() == "leader"
    assert sorted(m.myid for m in zk_ensemble.followers()) == sorted(
        m.myid for m in zk_ensemble.members if m is not leader
    )


def _client_on_a_follower(bed, zk_connect, **options):
    # kazoo picks a member at random; a few tries land on a follower (each with chance 2/3).
    for _attempt in range(12):
        client = zk_connect(bed.hosts, **options)
        member = bed.member_of_session(client.client_id[0])
        if member is not None and member.mode() == "follower":
            return client, member
        zkclient.disconnect(client)
    pytest.fail("12 clients in a row did not land on a follower of %s" % bed.hosts)


def test_an_ensemble_client_keeps_its_session_when_its_member_stops(zk_ensemble, zk_connect, zk_root):
    client, member = _client_on_a_follower(zk_ensemble, zk_connect)
    client.create(zk_root + "/alive", ephemeral=True, makepath=True)
    session_id = client.client_id[0]

    member.stop()

    assert not member.running
    client.retry(client.create, zk_root + "/after-stop", b"still working")
    assert client.retry(client.get, zk_root + "/after-stop")[0] == b"still working"
    assert client.client_id[0] == session_id
    assert client.exists(zk_root + "/alive") is not None, "the session's ephemeral node vanished"
    assert zk_ensemble.member_of_session(session_id) not in (None, member)


@pytest.mark.parametrize("connection_retries", [
    pytest.param(3, id="module-default"),
    pytest.param(-1, id="agent-reconnects-forever"),
])
def test_a_client_keeps_its_session_through_a_quorum_outage_shorter_than_the_session(
        zk_ensemble, zk_connect, zk_root, connection_retries):
    client = zk_connect(zk_ensemble.hosts, session_timeout=4.0, connection_retries=connection_retries)
    client.create(zk_root + "/alive", ephemeral=True, makepath=True)
    session_id = client.client_id[0]
    leader, follower = zk_ensemble.leader(), zk_ensemble.followers()[0]

    leader.stop()
    with follower.frozen():
        # One member of three left: no quorum, no member serves, for about a quarter of the session.
        time.sleep(1.0)

    assert client.retry(client.exists, zk_root + "/alive") is not None
    assert client.client_id[0] == session_id


def test_a_chroot_in_the_hosts_string_confines_the_client(zk, zk_connect, zk_root):
    admin = zk_connect(zk.hosts)
    admin.ensure_path(zk_root + "/app")
    client = zk_connect(zk.hosts + zk_root + "/app")

    client.create("/inside", b"x")

    assert admin.get(zk_root + "/app/inside")[0] == b"x"
    assert client.get_children("/") == ["inside"]


def test_a_port_nobody_listens_on_fails_at_once_naming_host_and_refusal():
    port = free_ports(1)[0]
    # A long timeout: the refusal must end the attempt, not the timeout.
    options = ConnectionOptions(hosts="%s:%d" % (LOOPBACK, port), timeout=20.0)

    started = time.monotonic()
    with pytest.raises(ZkConnectionError) as raised:
        zkclient.connect(options)

    assert time.monotonic() - started < 1.0, "a refused connection waited %.1fs" % (time.monotonic() - started)
    assert str(raised.value) == ("cannot connect to ZooKeeper at %s:%d: no server accepts TCP connections (%s:%d refused the connection); "
                                 "check zk_hosts and that ZooKeeper is running and listening there" % (LOOPBACK, port, LOOPBACK, port))


def test_one_refusing_server_of_two_does_not_stop_the_client_from_connecting_to_the_other(zk, zk_connect):
    client = zk_connect("%s:%d,%s" % (LOOPBACK, free_ports(1)[0], zk.hosts))

    assert client.connected


@contextlib.contextmanager
def _silent_listener():
    # A listening socket nobody serves: TCP connects, no handshake is ever answered.
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        yield "%s:%d" % silent.getsockname()


def test_a_listener_that_never_answers_fails_within_the_timeout_saying_it_never_answered():
    with _silent_listener() as address:
        message = _expect_connection_error(ConnectionOptions(hosts=address, timeout=2.0, session_timeout=2.0))

    assert "%s accepts TCP connections but never answered the ZooKeeper handshake" % address in message
    assert "no session was established" in message


def test_tls_to_a_listener_that_never_answers_says_the_tls_handshake_got_no_answer(zk_tls):
    with _silent_listener() as address:
        message = _expect_connection_error(ConnectionOptions(hosts=address, timeout=2.0, session_timeout=2.0, tls=True,
                                                             ca=zk_tls.tls.ca_cert))

    assert "%s accepts TCP connections but never answered the TLS handshake" % address in message


def test_tls_to_a_plaintext_port_fails_saying_the_tls_handshake_failed(zk_tls):
    options = ConnectionOptions(hosts=zk_tls.hosts, timeout=2.0, session_timeout=2.0, tls=True, ca=zk_tls.tls.ca_cert)

    message = _expect_connection_error(options)

    assert zk_tls.hosts + " (TLS)" in message
    assert "%s accepts TCP connections but the TLS handshake failed" % zk_tls.hosts in message
    assert "is it a plaintext port?" in message


def test_tls_connects_with_the_servers_ca_and_checks_its_host_name(zk_tls, zk_connect, zk_root):
    client = zk_connect(zk_tls.secure_hosts, tls=True, ca=zk_tls.tls.ca_cert, check_hostname=True)

    _write_and_read_back(client, zk_root + "/over-tls")


def test_a_plain_client_on_the_tls_port_fails_with_a_clear_error(zk_tls):
    options = ConnectionOptions(hosts=zk_tls.secure_hosts, timeout=2.0, session_timeout=2.0)

    message = _expect_connection_error(options)

    assert zk_tls.secure_hosts in message
    assert "no session was established" in message
    assert "%s accepts TCP connections but closed each one at the ZooKeeper handshake: is it a TLS port" % zk_tls.secure_hosts in message


def test_tls_with_a_ca_that_did_not_sign_the_server_fails_with_a_clear_error(zk_tls, foreign_tls):
    options = ConnectionOptions(hosts=zk_tls.secure_hosts, timeout=2.0, session_timeout=2.0, tls=True,
                                ca=foreign_tls.ca_cert)

    message = _expect_connection_error(options)

    assert zk_tls.secure_hosts + " (TLS)" in message
    assert "no session was established" in message


def test_a_server_requiring_client_certificates_accepts_one_signed_by_its_ca(zk_mtls, zk_connect, zk_root):
    client = zk_connect(zk_mtls.secure_hosts, tls=True, ca=zk_mtls.tls.ca_cert,
                        certfile=zk_mtls.tls.client_cert, keyfile=zk_mtls.tls.client_key)

    _write_and_read_back(client, zk_root + "/mutual")


def test_an_encrypted_client_key_works_with_its_password(zk_mtls, zk_connect, zk_root):
    client = zk_connect(zk_mtls.secure_hosts, tls=True, ca=zk_mtls.tls.ca_cert,
                        certfile=zk_mtls.tls.client_cert, keyfile=zk_mtls.tls.client_key_encrypted,
                        keyfile_password=tls_material.CLIENT_KEY_PASSWORD)

    _write_and_read_back(client, zk_root + "/encrypted-key")


@pytest.mark.parametrize("certificate", ["none", "foreign"])
def test_a_server_requiring_client_certificates_refuses_clients_without_a_trusted_one(zk_mtls, foreign_tls, certificate):
    client_files = {"certfile": foreign_tls.client_cert, "keyfile": foreign_tls.client_key} if certificate == "foreign" else {}
    options = ConnectionOptions(hosts=zk_mtls.secure_hosts, timeout=2.0, session_timeout=2.0, tls=True,
                                ca=zk_mtls.tls.ca_cert, **client_files)

    message = _expect_connection_error(options)

    assert zk_mtls.secure_hosts + " (TLS)" in message


def test_a_digest_acl_node_is_readable_by_its_user_only(zk, zk_connect, zk_root):
    path = zk_root + "/secret"
    owner = zk_connect(zk.hosts, digest="deployer:s3cret", acl=["digest:deployer:s3cret:cdrwa"])
    owner.create(path, b"classified", makepath=True)

    assert owner.get(path)[0] == b"classified"
    acls = owner.get_acls(path)[0]
    assert [(acl.id.scheme, acl.id.id.split(":")[0], acl.perms) for acl in acls] == [("digest", "deployer", 31)]
    for intruder in (zk_connect(zk.hosts), zk_connect(zk.hosts, digest="deployer:wrong")):
        with pytest.raises(NoAuthError):
            intruder.get(path)


def test_expire_session_really_expires_it_on_the_server(zk, zk_connect, zk_root):
    client = zk_connect(zk.hosts)
    states = []
    client.add_listener(states.append)
    client.create(zk_root + "/ephemeral", ephemeral=True, makepath=True)
    session_id = client.client_id[0]

    zk.expire_session(client)

    assert KazooState.LOST in states
    observer = zk_connect(zk.hosts)
    assert observer.exists(zk_root + "/ephemeral") is None, "the expired session's ephemeral node survived"
    _wait_for(lambda: client.connected, 5.0, "the client to connect again after LOST")
    assert client.client_id[0] != session_id, "kazoo should carry on with a new session"


def test_a_frozen_member_is_stopped_and_silent_and_catches_up_after_thaw(zk_ensemble, zk_connect, zk_root):
    client = zk_connect(zk_ensemble.hosts)
    # Freeze a follower this client does not talk to, so the client need not fail over.
    client_member = zk_ensemble.member_of_session(client.client_id[0])
    member = next(m for m in zk_ensemble.followers() if m is not client_member)

    with member.frozen():
        assert member.process_state == "T"
        assert member.mode() is None
        client.retry(client.create, zk_root + "/while-frozen", b"x", makepath=True)
        # Longer than syncLimit (1 s): the leader drops the member, which must rejoin after thaw.
        time.sleep(1.2)

    assert member.process_state in ("S", "R")
    assert member.mode() == "follower"
    reader = zk_connect(member.hosts)
    reader.sync(zk_root + "/while-frozen")
    assert reader.exists(zk_root + "/while-frozen") is not None


def test_stopping_the_bed_kills_its_processes_and_removes_its_directory():
    bed = ZooKeeper(size=1).start()
    pid, directory = bed.members[0].pid, bed.directory

    bed.stop()

    assert not os.path.exists(directory)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
