# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The service lock, with its requests pipelined ahead of the read it guards.

The lock is ZooKeeper's lock recipe with the node names of kazoo's ``Lock`` (an ephemeral
sequential ``<uuid>__lock__<sequence>`` under ``locks/<svc>``; the lowest sequence holds it), so
agents and controllers of any version share it. It differs from kazoo's in how few round trips a
turn costs:

- ``send()`` sends the create of our contender node and the listing of all contenders, without
  waiting. The decision's read is sent right behind them, on the same session. ZooKeeper answers
  a session's requests in order, so if the listing shows our node first, that read was served
  after every earlier holder had let go: it is fresh. Lock and read cost one round trip.
- Whoever waited for a predecessor (``waited``) reads again once it holds the lock.
- The slot transaction deletes our lock node itself (``store.slots.take_slot``): that both
  fences the commit (the delete fails once the session that decided has gone) and releases the
  lock, in one request.

A contender node whose create got no answer (the connection dropped) may still exist on the
server, and one whose delete failed certainly does; both block the service for everyone as long
as our session lives. They are remembered per client and deleted by ``release_leftover_locks``
as soon as the connection is back.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
import weakref

from .client import KazooException, KazooTimeoutError, NoNodeError

_CONTENDER = re.compile(r"__lock__(\d{10})$")

# Per client: contender nodes of ours (a full path, or a parent and our uuid prefix when the
# create got no answer) that still have to be deleted.
_LEFTOVERS = weakref.WeakKeyDictionary()


def _sequence(node):
    match = _CONTENDER.search(node)
    return int(match.group(1)) if match else None


def remember_leftover(client, parent, prefix=None, node=None):
    """Remember a contender node of ours to delete later: by name, or by our ``prefix`` when the name is unknown."""
    _LEFTOVERS.setdefault(client, set()).add((parent, prefix, node))


def release_leftover_locks(client):
    """Delete the lock nodes of ``client``'s session whose release failed or whose create got no answer.

    Returns how many are left. Cheap when there are none (no request), so the agent calls it on
    every loop while connected.
    """
    entries = _LEFTOVERS.get(client)
    for entry in sorted(entries or (), key=str):
        parent, prefix, node = entry
        try:
            names = [node] if node else [name for name in client.get_children(parent) if name.startswith(prefix)]
            for name in names:
                try:
                    client.delete(parent + "/" + name)
                except NoNodeError:
                    pass
        except NoNodeError:
            pass
        except (KazooException, KazooTimeoutError):
            continue
        entries.discard(entry)
    return len(entries or ())


class ServiceLock(object):
    """One attempt at ``path``'s lock: ``send()``, the guarded read, then ``acquire(timeout)``; ``release()`` always."""

    def __init__(self, client, path, identifier):
        self.client = client
        self.path = path
        self.prefix = uuid.uuid4().hex + "__lock__"
        self.data = str(identifier or "").encode("utf-8")
        self.node = None
        self.waited = False
        self._sent = None

    @property
    def node_path(self):
        """The full path of our contender node (None before it exists or after release)."""
        return self.path + "/" + self.node if self.node else None

    def send(self):
        """Send our contender's create and the contender listing; ``acquire`` awaits the answers."""
        self._sent = (self.client.create_async(self.path + "/" + self.prefix, self.data, ephemeral=True, sequence=True),
                      self.client.get_children_async(self.path))

    def acquire(self, timeout):
        """True once our node is the lowest contender, False when ``timeout`` seconds passed first.

        Kazoo errors propagate; the node is then remembered for ``release_leftover_locks``.
        """
        deadline = time.monotonic() + timeout
        if self._sent is None:
            self.send()
        try:
            children = self._created_and_listed()
            while True:
                own = _sequence(self.node)
                ahead = [name for name in children if _sequence(name) is not None and _sequence(name) < own]
                if not ahead:
                    return True
                self.waited = True
                if not self._wait_for(max(ahead, key=_sequence), deadline):
                    self.release()
                    return False
                children = self.client.get_children(self.path)
        except (KazooException, KazooTimeoutError):
            if self.node:
                remember_leftover(self.client, self.path, node=self.node)
            else:
                remember_leftover(self.client, self.path, prefix=self.prefix)
            self.node, self._sent = None, None
            raise

    def _created_and_listed(self):
        created, listed = self._sent
        try:
            self.node = created.get().rsplit("/", 1)[1]
            return listed.get()
        except NoNodeError:
            if self.node:
                raise
        # The first taker of this service: create the lock's parent and try once more.
        self.client.ensure_path(self.path)
        self.send()
        created, listed = self._sent
        self.node = created.get().rsplit("/", 1)[1]
        return listed.get()

    def _wait_for(self, predecessor, deadline):
        """Wait until ``predecessor`` is deleted or the connection changes; False at the deadline."""
        event = threading.Event()

        def wake(*_args):
            event.set()
            return True

        self.client.add_listener(wake)
        try:
            if self.client.exists(self.path + "/" + predecessor, watch=wake) is None:
                return True
            remaining = deadline - time.monotonic()
            return remaining > 0 and event.wait(remaining)
        finally:
            self.client.remove_listener(wake)

    def released_by_commit(self):
        """Our node was deleted by a transaction that also did the guarded write."""
        self.node, self._sent = None, None

    def release(self):
        """Delete our node; a failed delete is remembered (never raised) for ``release_leftover_locks``.

        Also after a failure between ``send()`` and ``acquire()`` (the guarded read raised): the
        create may have succeeded without our knowing the node's name, so our prefix is looked
        for. Such a node would otherwise block the service for as long as our session lives.
        """
        node, sent, self.node, self._sent = self.node, self._sent, None, None
        if node:
            try:
                self.client.delete(self.path + "/" + node)
            except NoNodeError:
                pass
            except (KazooException, KazooTimeoutError):
                remember_leftover(self.client, self.path, node=node)
        elif sent is not None:
            remember_leftover(self.client, self.path, prefix=self.prefix)
            release_leftover_locks(self.client)
