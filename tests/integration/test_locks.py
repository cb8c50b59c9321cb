# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service lock against a real ZooKeeper: fresh reads, kazoo interoperability, no leaked lock node.

Connection faults go through ``tests.bed.relay``: one client's connection is held or cut while
the server and the other sessions carry on, which is what a partition of one host does.
"""

from __future__ import annotations

import threading
import time

import pytest
from kazoo.exceptions import ConnectionLoss, LockTimeout

from ansible_collections.zkrollout.dc.plugins.module_utils.store.locks import ServiceLock, release_leftover_locks
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import service_lock
from ansible_collections.zkrollout.dc.tests.bed.relay import Relay


def _wait(condition, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))


@pytest.fixture
def relay(zk):
    host, port = zk.hosts.split(",")[0].rsplit(":", 1)
    relayed = Relay(host, port)
    yield relayed
    relayed.close()


def test_a_read_sent_behind_a_busy_lock_is_made_again_once_it_is_held(client, zk, zk_connect, layout):
    holder = zk_connect(zk.hosts)
    client.ensure_path(layout.root)
    # A contender of another implementation (kazoo's recipe) holds the lock: same node names.
    kazoo_lock = holder.Lock(layout.lock("A"), identifier="controller")
    assert kazoo_lock.acquire(timeout=5)
    reads = []

    def read():
        reads.append(client.exists(layout.root + "/written-by-the-holder") is not None)
        return reads[-1]

    def write_then_release():
        time.sleep(0.5)
        holder.create(layout.root + "/written-by-the-holder", b"")
        kazoo_lock.release()

    writer = threading.Thread(target=write_then_release)
    writer.start()
    with service_lock(client, layout, "A", "h1", timeout=10, read=read) as (lock, fresh):
        assert lock is not None
        assert reads == [False, True] and fresh is True
    writer.join()
    assert client.get_children(layout.lock("A")) == []


def test_our_lock_holds_off_kazoos_recipe_and_is_released_by_the_slot_transaction(client, zk, zk_connect, layout):
    other = zk_connect(zk.hosts)
    with service_lock(client, layout, "A", "h1") as (lock, _fresh):
        assert lock is not None and not lock.waited
        with pytest.raises(LockTimeout):
            other.Lock(layout.lock("A"), identifier="controller").acquire(timeout=0.5)
        transaction = client.transaction()
        transaction.delete(lock.node_path)
        assert not any(isinstance(result, Exception) for result in transaction.commit())
        lock.released_by_commit()
    assert other.Lock(layout.lock("A"), identifier="controller").acquire(timeout=2)


def _lock_held_through(relay, client, zk_connect, layout):
    """``(client, its session id, ServiceLock)``: A's lock held by a client connected through ``relay``."""
    partitioned = zk_connect(relay.hosts, session_timeout=12)
    lock = ServiceLock(partitioned, layout.lock("A"), "h1")
    client.ensure_path(layout.lock("A"))
    assert lock.acquire(timeout=5)
    return partitioned, partitioned.client_id, lock


def test_a_release_while_disconnected_longer_than_kazoos_retries_frees_the_lock_on_reconnect(client, zk, zk_connect, layout, relay):
    partitioned, session, lock = _lock_held_through(relay, client, zk_connect, layout)
    relay.cut()
    _wait(lambda: partitioned.state != "CONNECTED", what="the cut client to notice")
    releasing = threading.Thread(target=lock.release)
    releasing.start()
    # Longer than the ~4.5 s kazoo's lock recipe retries its release, shorter than the session.
    time.sleep(6)
    assert len(client.get_children(layout.lock("A"))) == 1
    relay.restore()
    releasing.join(timeout=15)
    _wait(lambda: partitioned.state == "CONNECTED", what="the reconnect")
    assert partitioned.client_id == session, "the session should have survived"
    _wait(lambda: release_leftover_locks(partitioned) == 0 and client.get_children(layout.lock("A")) == [], what="the lock node to go")
    assert ServiceLock(client, layout.lock("A"), "h2").acquire(timeout=1)


def test_a_release_lost_in_flight_is_deleted_once_the_connection_is_back(client, zk, zk_connect, layout, relay):
    partitioned, session, lock = _lock_held_through(relay, client, zk_connect, layout)
    relay.hold()
    releasing = threading.Thread(target=lock.release)
    releasing.start()
    time.sleep(0.3)
    # The delete went out and is lost with the connection: kazoo fails it, the node stays.
    relay.cut()
    releasing.join(timeout=10)
    assert not releasing.is_alive()
    assert len(client.get_children(layout.lock("A"))) == 1
    relay.restore()
    _wait(lambda: partitioned.state == "CONNECTED", what="the reconnect")
    assert partitioned.client_id == session, "the session should have survived"
    assert len(client.get_children(layout.lock("A"))) == 1, "the leaked node is still there before the clean-up"
    assert release_leftover_locks(partitioned) == 0
    assert client.get_children(layout.lock("A")) == []
    assert ServiceLock(client, layout.lock("A"), "h2").acquire(timeout=1)


def test_a_read_that_fails_behind_the_lock_leaves_no_lock_node(client, layout):
    client.ensure_path(layout.lock("A"))

    def read():
        # What a connection loss does to the guarded read (a frozen member): the lock's own create went through.
        raise ConnectionLoss("the read was lost with the connection")

    with pytest.raises(ConnectionLoss):
        with service_lock(client, layout, "A", "h1", read=read):
            pass
    assert client.get_children(layout.lock("A")) == []
    assert ServiceLock(client, layout.lock("A"), "h2").acquire(timeout=1)
