# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The upgrade slot: the one coordination primitive that lets an instance stop.

A slot is the persistent node ``staging/<svc>/upgrading/<host>``. Agents and controllers (the
``zkrollout.dc.quorum`` strategy) take slots the same way, so they share one budget:

1. take the service's lock (``locks/<svc>``, a kazoo Lock), bounded in time;
2. read a fresh snapshot of the services the decision needs, while CONNECTED;
3. ask ``allow(snapshot)`` (the agent's ``decide``, or ``plan.slot_verdict``) whether the host
   may stop now;
4. create the slot node in a transaction fenced by our lock node and the versions read, then
   release the lock.

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
import weakref

from ..core.model import PayloadError, RolloutState, Slot
from .client import BadVersionError, KazooException, KazooTimeoutError, LockTimeout, NodeExistsError, NoNodeError, RolledBackError
from .reads import read_snapshot

LOCK_TIMEOUT = 5.0


# Lock nodes whose release failed while the session lived on (a connection drop longer than the
# retries): until they are deleted, nobody else can take a turn on that service.
_UNRELEASED = weakref.WeakKeyDictionary()


def release_leftover_locks(client):
    """Delete the lock nodes of ``client``'s session whose release failed; returns how many are left.

    Cheap when there are none (no request), so the agent calls it on every loop while connected.
    """
    paths = _UNRELEASED.get(client)
    for path in sorted(paths or ()):
        try:
            client.delete(path)
        except NoNodeError:
            pass
        except (KazooException, KazooTimeoutError):
            continue
        paths.discard(path)
    return len(paths or ())


@contextlib.contextmanager
def service_lock(client, layout, service, identifier, timeout=LOCK_TIMEOUT):
    """``with service_lock(...) as lock:`` the service's lock, or None if it stayed busy for ``timeout``.

    The lock serialises every decision that takes a slot or completes the service. A release
    that fails is never raised: the node is remembered and ``release_leftover_locks`` deletes it
    as soon as the connection is back (the session, and so the node, may well have survived).
    """
    release_leftover_locks(client)
    lock = client.Lock(layout.lock(service), identifier=identifier)
    try:
        acquired = lock.acquire(timeout=timeout)
    except LockTimeout:
        acquired = False
    try:
        yield lock if acquired else None
    finally:
        if acquired:
            node = lock.path + "/" + lock.node
            try:
                lock.release()
            except (KazooException, KazooTimeoutError):
                _UNRELEASED.setdefault(client, set()).add(node)


def complete_service(client, layout, service, identifier, still_complete):
    """Remove ``service`` from the deploy queue if ``still_complete(snapshot)`` holds on a fresh read under its lock.

    The last service also sets the rollout ``done``, in the same transaction; every other
    completion checks the rollout node's version, so a pause or an abort that happened meanwhile
    wins. Returns a sentence saying what happened.
    """
    with service_lock(client, layout, service, identifier) as lock:
        if lock is None:
            return "the lock of %s is busy: completion is decided again later" % service
        snapshot = read_snapshot(client, layout, services=[service])
        if not still_complete(snapshot):
            return "%s is no longer complete on a fresh read: not removed from the deploy queue" % service
        members = [member for member in snapshot.deploy_queue if member.name == service]
        transaction = client.transaction()
        transaction.check(lock.path + "/" + lock.node, -1)
        for member in members:
            stat = client.exists(layout.deploy_entry(member.node))
            if stat is None:
                return "another agent completed %s first" % service
            transaction.delete(layout.deploy_entry(member.node), version=stat.version)
        if len(members) == len(snapshot.deploy_queue):
            values = snapshot.rollout.to_dict()
            values.update(state="done", updated=time.time(), reason="every service runs its target")
            transaction.set_data(layout.rollout, RolloutState.from_dict(values).to_bytes(), version=snapshot.rollout_version)
        else:
            transaction.check(layout.rollout, snapshot.rollout_version)
        if any(isinstance(result, Exception) for result in transaction.commit()):
            return "the tree changed while completing %s (another agent, a pause or an abort): decided again later" % service
        return "%s complete: removed from the deploy queue" % service


def take_slot(client, layout, service, host, slot, allow, services=None, identifier=None, timeout=LOCK_TIMEOUT):
    """Take the slot of ``host`` for ``service`` if ``allow(snapshot)`` says so on a fresh read.

    ``slot`` is the model.Slot payload to write; ``allow`` returns ``(allowed, reason)``;
    ``services`` are the services the decision reads (default: ``service`` alone). Returns
    ``(taken, reason, snapshot)``; never raises for a lost race or a busy lock.

    The slot is created in one transaction with a check of our own lock node and of the
    versions of the release entry and the rollout node the decision read. A create that kazoo
    queued while the session was lost and replays on a new session therefore fails (the lock
    node went with the old session), and so does one decided on a release or rollout state that
    changed meanwhile: nothing is stopped on a decision that no longer holds.
    """
    with service_lock(client, layout, service, identifier or host, timeout) as lock:
        if lock is None:
            return False, "waiting: the lock of %s is busy" % service, None
        if not client.connected:
            return False, "waiting: the ZooKeeper session is not connected", None
        snapshot = read_snapshot(client, layout, services=services or [service])
        allowed, reason = allow(snapshot)
        if not allowed:
            return False, reason, snapshot
        transaction = client.transaction()
        transaction.check(lock.path + "/" + lock.node, -1)
        if snapshot.service(service).release_version >= 0:
            transaction.check(layout.release(service), snapshot.service(service).release_version)
        if snapshot.rollout_version >= 0:
            transaction.check(layout.rollout, snapshot.rollout_version)
        transaction.create(layout.slot(service, host), slot.to_bytes())
        failed = [result for result in transaction.commit() if isinstance(result, Exception) and not isinstance(result, RolledBackError)]
        if not failed:
            return True, reason, snapshot
        return False, _refusal(layout, service, host, failed[0]), snapshot


def _refusal(layout, service, host, error):
    """Why a fenced slot transaction failed, as a sentence."""
    if isinstance(error, NodeExistsError):
        return "%s already has a slot of %s" % (host, service)
    if isinstance(error, BadVersionError):
        return "waiting: the release of %s or the rollout changed while deciding; deciding again" % service
    if isinstance(error, NoNodeError):
        return "waiting: the lock of %s was lost (session expired) or %s is not staged (%s missing); deciding again" % (
            service, service, layout.slots(service))
    return "waiting: taking the slot of %s failed (%s)" % (service, error.__class__.__name__)


def release_slot(client, layout, service, host, owner=None, leaving=()):
    """Delete the slot of ``host``; with ``owner`` (a string or a tuple of them), only if it still holds it.

    The delete is checked against the version that was read, so a slot that changed hands
    meanwhile stays. A slot whose payload is malformed is released only without ``owner``
    (an operator's ``force``). ``leaving`` are nodes of ours deleted in the same transaction (the
    ready-queue members of a host whose turn ends), so the next host in line is woken once and
    finds the slot free. Returns True if a slot was deleted.
    """
    path = layout.slot(service, host)
    try:
        data, stat = client.get(path)
    except NoNodeError:
        return False
    if owner is not None:
        try:
            if Slot.from_bytes(data, path).owner not in (owner if isinstance(owner, tuple) else (owner,)):
                return False
        except PayloadError:
            return False
    transaction = client.transaction()
    for node in leaving:
        transaction.delete(node)
    transaction.delete(path, version=stat.version)
    results = transaction.commit()
    if not any(isinstance(result, Exception) for result in results):
        return True
    if leaving and not isinstance(results[-1], (NoNodeError, BadVersionError)):
        # One of ours was already gone (its session ended): release the slot alone.
        return release_slot(client, layout, service, host, owner)
    return False


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
