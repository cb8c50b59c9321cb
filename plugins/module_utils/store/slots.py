# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The upgrade slot: the one coordination primitive that lets an instance stop.

A slot is the persistent node ``staging/<svc>/upgrading/<host>``. Agents and controllers (the
``zkrollout.dc.quorum`` strategy) take slots the same way, so they share one budget:

1. take the service's lock (``locks/<svc>``, a kazoo Lock), bounded in time;
2. read a fresh snapshot while CONNECTED;
3. ask ``allow(snapshot)`` (the agent's ``decide``, or ``plan.slot_verdict``) whether the host
   may stop now;
4. create the slot node, then release the lock.

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

import dataclasses

from ..core.model import PayloadError, Slot
from .reads import read_snapshot

try:
    from kazoo.exceptions import BadVersionError, LockTimeout, NodeExistsError, NoNodeError
except ImportError:  # zkclient.require_kazoo() reports the missing library where it matters

    class BadVersionError(Exception):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class LockTimeout(Exception):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class NodeExistsError(Exception):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class NoNodeError(Exception):
        """Stands in for kazoo's class so this module imports without kazoo."""


LOCK_TIMEOUT = 5.0


def take_slot(client, layout, service, host, slot, allow, identifier=None, timeout=LOCK_TIMEOUT):
    """Take the slot of ``host`` for ``service`` if ``allow(snapshot)`` says so on a fresh read.

    ``slot`` is the model.Slot payload to write; ``allow`` returns ``(allowed, reason)``.
    Returns ``(taken, reason, snapshot)``; never raises for a lost race or a busy lock.
    """
    lock = client.Lock(layout.lock(service), identifier=identifier or host)
    try:
        if not lock.acquire(timeout=timeout):
            return False, "waiting: the lock of %s is busy" % service, None
    except LockTimeout:
        return False, "waiting: the lock of %s is busy" % service, None
    try:
        if not client.connected:
            return False, "waiting: the ZooKeeper session is not connected", None
        snapshot = read_snapshot(client, layout)
        allowed, reason = allow(snapshot)
        if not allowed:
            return False, reason, snapshot
        try:
            client.create(layout.slot(service, host), slot.to_bytes())
        except NodeExistsError:
            return False, "%s already has a slot of %s" % (host, service), snapshot
        except NoNodeError:
            return False, "%s is not staged: nowhere to hold a slot (%s missing)" % (service, layout.slots(service)), snapshot
        return True, reason, snapshot
    finally:
        lock.release()


def release_slot(client, layout, service, host, owner=None):
    """Delete the slot of ``host``; with ``owner``, only if that owner still holds it.

    Returns True if a slot was deleted.
    """
    path = layout.slot(service, host)
    try:
        data, stat = client.get(path)
    except NoNodeError:
        return False
    if owner is not None:
        try:
            if Slot.from_bytes(data, path).owner != owner:
                return False
        except PayloadError:
            return False
    try:
        client.delete(path, version=stat.version)
    except NoNodeError:
        return False
    return True


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
