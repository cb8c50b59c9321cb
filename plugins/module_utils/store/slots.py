# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The upgrade slot: the one coordination primitive that lets an instance stop.

A slot is the persistent node ``staging/<svc>/upgrading/<host>``. Agents and controllers (the
``zkrollout.dc.quorum`` strategy) take slots the same way, so they share one budget:

1. take the service's lock (``locks/<svc>``, ``store.locks``), bounded in time, and read a
   fresh snapshot of the services the decision needs, pipelined behind the lock's requests;
2. ask ``allow(snapshot)`` (the agent's ``decide``, or ``plan.slot_verdict``), while
   CONNECTED, whether the host may stop now;
3. create the slot node in one transaction that deletes our lock node (fence and release) and
   checks the versions read.

Guarantees: two takers of the same service never decide on the same snapshot; a slot outlives
the session that took it (a dead owner's instance stays counted as down) and carries its
owner and, for controllers, a deadline after which it may be released by an operator
(``rollout_control action=release_slot``). Releasing and adopting are version-checked against
the slot that was read, so a slot that changed hands is never released or taken over by mistake.
A controller that died holding slots is recovered by a re-run under the same owner, which
adopts them (``adopt_slot``: new session, new deadline) without asking the quorum again: its
hosts have counted as down all along.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

from ..core.layout import split_sequential
from ..core.model import PayloadError, Slot
from .client import BadVersionError, NoAuthError, NodeExistsError, NoNodeError, ReadBatch, RolledBackError, profile_of
from .locks import ServiceLock, release_leftover_locks
from .reads import decision_snapshot
from .views import own_registrations

LOCK_TIMEOUT = 5.0


@contextlib.contextmanager
def service_lock(client, layout, service, identifier, timeout=LOCK_TIMEOUT, read=None):
    """``with service_lock(...) as (lock, fresh):`` the service's lock (None if it stayed busy for ``timeout``).

    ``read()`` (optional) is the decision's read, sent right behind the lock's own requests; its
    result comes back as ``fresh`` and is read again if we had to wait for the lock, so it is
    always a read made while holding it. The lock serialises every decision that takes a slot
    or completes the service. A release that fails is never raised: the node is remembered and
    ``release_leftover_locks`` deletes it as soon as the connection is back.
    """
    release_leftover_locks(client)
    lock = ServiceLock(client, layout.lock(service), identifier)
    lock.send()
    try:
        fresh = read() if read is not None else None
        acquired = lock.acquire(timeout)
        if acquired and lock.waited and read is not None:
            fresh = read()
        yield (lock if acquired else None), fresh
    finally:
        # Whatever failed on the way (the read too): our contender node must not outlive this turn.
        lock.release()


def take_slot(client, layout, service, host, slot, allow, services=None, identifier=None, timeout=LOCK_TIMEOUT, leaving=(), checks=()):
    """Take the slot of ``host`` for ``service`` if ``allow(snapshot)`` says so on a fresh read.

    ``slot`` is the model.Slot payload to write; ``allow`` returns ``(allowed, reason)``;
    ``services`` are the services the decision reads (default: ``service`` alone); ``leaving``
    are nodes of ours deleted in the same transaction (the host's registration: its instance
    is about to stop); ``checks`` are ``(path, version)`` pairs the decision rested on besides
    (a down host's presence node: see ``layout.agent``). Returns ``(taken, reason, snapshot)``;
    never raises for a lost race or a busy lock.

    The slot is created in one transaction that deletes our own lock node (the fence, and the
    release of the lock) and checks the versions of the release entry and the rollout node the
    decision read. A create that kazoo queued while the session was lost and replays on a new
    session therefore fails (the lock node went with the old session), and so does one decided
    on a release or rollout state that changed meanwhile: nothing is stopped on a decision that
    no longer holds.
    """
    names = services or [service]
    with service_lock(client, layout, service, identifier or host, timeout, read=lambda: decision_snapshot(client, layout, names)) as (lock, snapshot):
        if lock is None:
            return False, "waiting: the lock of %s is busy" % service, None
        if not client.connected:
            return False, "waiting: the ZooKeeper session is not connected", None
        allowed, reason = allow(snapshot)
        if not allowed:
            return False, reason, snapshot
        transaction, what = client.transaction(), []
        transaction.delete(lock.node_path)
        what.append("the lock of %s was lost (session expired)" % service)
        if snapshot.service(service).release_version >= 0:
            transaction.check(layout.release(service), snapshot.service(service).release_version)
            what.append("the release of %s changed while deciding" % service)
        if snapshot.rollout_version >= 0:
            transaction.check(layout.rollout, snapshot.rollout_version)
            what.append("the rollout changed while deciding")
        transaction.create(layout.slot(service, host), slot.to_bytes())
        what.append("%s already has a slot of %s, or %s is not staged (%s missing)" % (host, service, service, layout.slots(service)))
        if snapshot.own_parents is not None and host in snapshot.own_parents:
            # Under an ACL profile, the copy in the host's own parent is what decisions count.
            transaction.create(layout.host_slot(host, service), b"")
            what.append("%s holds a slot of %s already (%s)" % (host, service, layout.host_slot(host, service)))
        for node in leaving:
            transaction.delete(node)
            what.append("%s was already gone" % node)
        for path, version in checks:
            transaction.check(path, version)
            what.append("%s changed while deciding (its host registered an instance, or its agent went)" % path)
        results = transaction.commit()
        failed = [(index, result) for index, result in enumerate(results) if isinstance(result, Exception) and not isinstance(result, RolledBackError)]
        if not failed:
            lock.released_by_commit()
            return True, reason, snapshot
        index, error = failed[0]
        return False, "waiting: %s (%s); deciding again" % (what[index], error.__class__.__name__), snapshot


def release_slot(client, layout, service, host, owner=None, leaving=(), _with_copy=True):
    """Delete the slot of ``host``; with ``owner`` (a string or a tuple of them), only if it still holds it.

    The delete is checked against the version that was read, so a slot that changed hands
    meanwhile stays. A slot whose payload is malformed is released only without ``owner``
    (an operator's ``force``). ``leaving`` are nodes of ours deleted in the same transaction (the
    ready-queue members of a host whose turn ends), so the next host in line is woken once and
    finds the slot free. Under an ACL profile the slot's copy in the host's own parent
    (``take_slot``) goes with it, also when the index already lost the slot (another host
    deleted it there). Returns True if a slot was deleted.
    """
    path = layout.slot(service, host)
    copy = layout.host_slot(host, service) if _with_copy and profile_of(client) is not None else None
    sent_copy = client.exists_async(copy) if copy else None
    try:
        data, stat = client.get(path)
    except NoNodeError:
        return sent_copy is not None and sent_copy.get() is not None and _delete_quietly(client, copy)
    if owner is not None:
        try:
            if Slot.from_bytes(data, path).owner not in (owner if isinstance(owner, tuple) else (owner,)):
                return False
        except PayloadError:
            return False
    with_copy = sent_copy is not None and sent_copy.get() is not None
    transaction = client.transaction()
    for node in leaving:
        transaction.delete(node)
    if with_copy:
        transaction.delete(copy)
    transaction.delete(path, version=stat.version)
    results = transaction.commit()
    if not any(isinstance(result, Exception) for result in results):
        return True
    if with_copy and isinstance(results[len(leaving)], NoAuthError):
        # A parent this identity may not change (the profile names another identity of the host now): the index's slot alone.
        return release_slot(client, layout, service, host, owner, leaving, _with_copy=False)
    if leaving and not isinstance(results[-1], (NoNodeError, BadVersionError)):
        # One of ours was already gone (its session ended): release the slot alone.
        return release_slot(client, layout, service, host, owner, _with_copy=_with_copy)
    return False


def _delete_quietly(client, path):
    """Delete ``path``; True if it was deleted by us, False if it was gone or is not ours to delete."""
    try:
        client.delete(path)
    except (NoNodeError, NoAuthError):
        return False
    return True


def finish_turn(client, layout, service, host, version, owner, presence=None, with_copy=False):
    """End ``host``'s turn in one transaction: register ``version``, free its slot, leave the ready queue.

    The next host in line is woken once, by a tree where the new instance already counts as
    healthy and the slot is free. Our own registration left by an older session is replaced,
    not trusted; ``with_copy`` (under an ACL profile) does the same for its copy in the host's own
    parent (``layout.registration_nodes``), and deletes the slot's copy there. The reads it needs are one request
    (``client.ReadBatch``). ``owner`` is as for ``release_slot``;
    ``presence`` (the agent's presence node) has its version bumped, as every registration does.
    Returns the registration's path, or None when the slot is not ours (any more) or the tree
    changed meanwhile: the caller then takes the steps one by one.
    """
    wanted, wanted_copy = layout.registration_nodes(service, host, version)
    parent, own_parent = layout.current_service(service), layout.host(host)
    # One multiRead: this is the step right before the next host's turn.
    batch = ReadBatch(client)
    sent = (batch.get_children(parent), batch.get_children(layout.ready_queue(service)), batch.get(layout.slot(service, host)))
    sent_copies = batch.get_children(own_parent) if with_copy else None
    # A slot's copy without ours being writable (our own parent was not found ours this session):
    # the steps one by one free it, or free the index's slot alone (``release_slot``).
    stray_copy = client.exists_async(layout.host_slot(host, service)) if not with_copy and profile_of(client) is not None else None
    try:
        if stray_copy is not None and stray_copy.get() is not None:
            return None
        current, ready, (data, slot_stat) = [answer.get() for answer in sent]
        copies = sent_copies.get() if with_copy else []
        if Slot.from_bytes(data, layout.slot(service, host)).owner not in (owner if isinstance(owner, tuple) else (owner,)):
            return None
    except (NoNodeError, PayloadError):
        return None
    # Every registration of ours there is replaced, the one of this version too: after the slot's
    # take (which deleted this session's own) only an older session can have left one.
    transaction = client.transaction()
    for node in own_registrations(current, host):
        transaction.delete(parent + "/" + node)
    for node in own_registrations(copies, service):
        transaction.delete(own_parent + "/" + node)
    slot_copy = layout.host_slot(host, service)
    if slot_copy.rsplit("/", 1)[1] in copies:
        transaction.delete(slot_copy)
    transaction.create(wanted, b"", ephemeral=True)
    if with_copy:
        transaction.create(wanted_copy, b"", ephemeral=True)
    for node in ready:
        if (split_sequential(node) or (None,))[0] == host:
            transaction.delete(layout.ready_member(service, node))
    transaction.delete(layout.slot(service, host), version=slot_stat.version)
    if presence:
        transaction.set_data(presence, b"")
    if any(isinstance(result, Exception) for result in transaction.commit()):
        return None
    return wanted


def presence_checks(client, layout, host):
    """The check that fences a slot decided on "connected agent, no registration" (down): ``[(presence node, version)]``, or [].

    Every registration of the host's agent bumps its presence node's version in the same
    transaction, so a slot taken on that verdict fails if the host registered meanwhile.
    """
    stat = client.exists(layout.agent(host))
    return [(layout.agent(host), stat.version)] if stat is not None else []


def announce_session(client, layout, owner):
    """Create the ephemeral node of this controller session (``layout.session``); returns its path.

    Slots record the session that took them: while this node lives, no other controller and no
    operator without ``force`` releases them.
    """
    path = layout.session("%x" % client.client_id[0])
    try:
        client.create(path, owner.encode("utf-8"), ephemeral=True, makepath=True)
    except NodeExistsError:
        pass
    return path


def zookeeper_now(client, session_path):
    """ZooKeeper's clock, in epoch seconds: the mtime of a rewrite of our own session node.

    Leases are judged by the server's clock (slot mtimes), never against a controller's own.
    """
    return client.set(session_path, client.get(session_path)[0]).mtime / 1000.0


def renew_slot(client, layout, service, host, owner, deadline, session=None):
    """Rewrite ``host``'s slot that ``owner`` holds (version-checked): its mtime, and so its lease, starts again.

    ``session`` (hex) records the session that holds it now, after a session change.

    Returns True if renewed; False when the slot is gone or changed hands.
    """
    path = layout.slot(service, host)
    try:
        data, stat = client.get(path)
        slot = Slot.from_bytes(data, path)
        if slot.owner != owner:
            return False
        client.set(path, dataclasses.replace(slot, deadline=deadline, session=session or slot.session).to_bytes(), version=stat.version)
    except (NoNodeError, BadVersionError, PayloadError):
        return False
    return True


def lease_expired(slot, mtime, now):
    """Whether a controller slot's lease ran out at ZooKeeper time ``now`` (``mtime``: the slot node's, in seconds).

    Slots written before leases fall back to their own-clock ``deadline``.
    """
    if slot.lease is not None:
        return mtime is not None and now > mtime + slot.lease
    return slot.deadline is not None and slot.deadline < time.time()


def adopt_slot(client, layout, service, host, owner, session, deadline, to_version=None):
    """Take over the slot of ``host`` that ``owner`` holds: record our ``session`` and a new ``deadline``.

    For a re-run of the controller that took it. ``to_version`` replaces the target if given.
    Returns the adopted Slot, or None when ``owner`` does not hold that slot (any more).
    """
    path = layout.slot(service, host)
    try:
        data, stat = client.get(path)
        slot = Slot.from_bytes(data, path)
    except (NoNodeError, PayloadError):
        return None
    if slot.owner != owner:
        return None
    adopted = dataclasses.replace(slot, session=session, deadline=deadline, to_version=to_version or slot.to_version)
    try:
        client.set(path, adopted.to_bytes(), version=stat.version)
    except (NoNodeError, BadVersionError):
        return None
    return adopted
