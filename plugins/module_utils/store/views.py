# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An agent's view of the tree: bounded by its own services, kept fresh by watches, never polled.

``AgentView`` holds the last read of the rollout node, the deploy queue and the agent's own
services (and the services they depend on), as Snapshot values. Nothing is re-read unless it
was *invalidated*: by a watch that fired, by the agent's own write, by a new session, or by the
long safety tick. A refresh re-reads only the invalidated parts, in pipelined requests.

Watches are planned by the agent (``agent.wakeups``) and armed here: a watch that a read can
carry rides on that read; the others are armed with one request each, sent together, and if
that request shows the node already changed since the read, the part is invalidated at once (no
change is lost between a read and its watch). Callbacks run on kazoo's thread and only record what fired
and wake the loop; all requests happen on the agent's own thread.
"""

from __future__ import annotations

import threading
import time

from ..core.layout import split_registration
from ..core.snapshot import Snapshot
from .client import NoNodeError
from .reads import Reader, read_parts

GLOBAL = ""  # the key of the rollout node and the deploy queue


class AgentView(object):
    """The watched, bounded view of one agent. ``refresh()`` returns a Snapshot of it."""

    def __init__(self, client, layout, services, wake):
        self.client = client
        self.layout = layout
        self.services = list(services)
        self.wake = wake
        self.notifications = 0
        self._lock = threading.Lock()
        self._armed = set()
        self._dirty = {GLOBAL} | set(self.services)
        # Parts whose watch fired since they were last read (an own invalidation is not in here),
        # and the services among them where a member ahead of us left the ready queue.
        self._notified = set()
        self._moved_up = set()
        self._keys = {}
        self._global = (None, -1, ())
        self._global_problems = ()
        self._states = {}
        self._listings = {}
        self._existing = set()
        self._read_at = {}

    # Invalidation.
    def invalidate(self, names=None):
        """Re-read ``names`` (service names, or GLOBAL) at the next refresh; everything if None."""
        with self._lock:
            self._dirty |= set(self._states) | {GLOBAL} | set(self.services) if names is None else set(names)

    def tick(self):
        """The safety tick: re-read what no armed watch keeps current.

        A service without a staging node whose release watch is armed has nothing else that can
        change unseen for its decisions (its own registration changes only by our own writes),
        and the rollout node and deploy queue are skipped while both their watches are armed.
        """
        layout = self.layout
        with self._lock:
            for name in set(self.services) | set(self._states):
                state = self._states.get(name)
                if state is None or state.release_version >= 0 or ("exists", layout.release(name)) not in self._armed:
                    self._dirty.add(name)
            if not {("exists", layout.rollout), ("children", layout.deploy)} <= self._armed:
                self._dirty.add(GLOBAL)

    def session_lost(self):
        """The connection or the session was lost: no watch of ours is left; re-read everything."""
        with self._lock:
            self._armed.clear()
            self._notified.clear()
            self._moved_up.clear()
        self.invalidate()

    def age(self, name):
        """Seconds since ``name`` was last read (infinite if never)."""
        return time.monotonic() - self._read_at.get(name, float("-inf"))

    @property
    def dirty(self):
        """True if the next refresh will read something."""
        return bool(self._dirty)

    def notified(self, name):
        """True if a watch on ``name``'s part fired since it was last read (``invalidate`` alone does not count)."""
        with self._lock:
            return name in self._notified

    def moved_up(self, name):
        """True if, since ``name`` was last read, a watched member of its ready queue (one ahead of us) left it."""
        with self._lock:
            return name in self._moved_up

    def _fired(self, kind, event):
        with self._lock:
            if event.path is None:
                # kazoo drops every watch when the connection is lost (SUSPENDED) and tells each
                # watcher with a path-less event; ZooKeeper will not send what changes meanwhile.
                self._armed.clear()
                self._dirty |= set(self._states) | {GLOBAL} | set(self.services)
            else:
                self._armed.discard((kind, event.path))
                self.notifications += 1
                keys = self._keys.get((kind, event.path))
                if keys is None:
                    # Armed under an older plan: on the view read since, a change there cannot
                    # change a decision (the plan of that view watches what can).
                    return
                self._dirty |= keys
                self._notified |= keys
                if kind == "exists":
                    self._moved_up |= {name for name in keys if name != GLOBAL and event.path.startswith(self.layout.ready_queue(name) + "/")}
        self.wake()

    def _on_children(self, event):
        self._fired("children", event)

    def _on_exists(self, event):
        self._fired("exists", event)

    # Reader's watcher interface: attach a planned watch to a read that can carry it.
    def callback(self, kind, path):
        """The callback for a read of ``path``, if a watch of that kind is planned and not armed."""
        with self._lock:
            if (kind, path) not in self._keys or (kind, path) in self._armed:
                return None
            self._armed.add((kind, path))
        return self._on_children if kind == "children" else self._on_exists

    def missed(self, kind, path):
        """The node was missing, so the read set no watch."""
        with self._lock:
            self._armed.discard((kind, path))

    # Reads.
    def refresh(self, dependencies=()):
        """Re-read what was invalidated and return the view as a Snapshot.

        ``dependencies`` are services the own services depend on: they are part of the view.
        """
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            self._notified -= dirty
            self._moved_up -= dirty
        names = [name for name in self.services + sorted(set(dependencies) - set(self.services))
                 if name in dirty or name not in self._states]
        reader = Reader(self.client, self)
        try:
            if GLOBAL in dirty or names:
                global_part, states = read_parts(reader, self.layout, names, with_global=GLOBAL in dirty)
                if global_part is not None:
                    self._global = global_part
                    self._global_problems = tuple(message for path, message in reader.problems
                                                  if path in (self.layout.rollout, self.layout.deploy))
                with self._lock:
                    self._states.update(states)
                self._read_at.update(dict.fromkeys(names, time.monotonic()))
        except Exception:
            # A read that failed may have left watches marked armed that the server never set.
            self.session_lost()
            raise
        self._listings.update(reader.listings)
        self._existing = self._known_nodes()
        with self._lock:
            for name in set(self._states) - set(self.services) - set(dependencies):
                del self._states[name]
        return self.snapshot()

    def snapshot(self):
        """The view as it was last read."""
        rollout, rollout_version, deploy_queue = self._global
        return Snapshot(rollout=rollout, rollout_version=rollout_version, deploy_queue=deploy_queue,
                        services=dict(self._states),
                        problems=self._global_problems + tuple(p for name in sorted(self._states) for p in self._states[name].problems))

    def _known_nodes(self):
        """Paths the last reads saw existing, for the race check when a watch is armed separately."""
        layout = self.layout
        known = set()
        if self._global[1] >= 0:
            known.add(layout.rollout)
        for name, state in self._states.items():
            if state.release_version >= 0:
                known.add(layout.release(name))
            known.update(layout.ready_member(name, member.node) for member in state.ready_queue)
            known.update(layout.registration(name, host, version) for host, version in state.registrations.items())
        return known

    # Watches.
    def plan(self, watches):
        """Set the watches to keep: ``{(kind, path): keys to invalidate when it fires}``."""
        with self._lock:
            self._keys = dict(watches)

    def arm(self):
        """Arm every planned watch that no read carried; invalidate what changed since it was read.

        The requests go out together (one round trip). Returns the number of watches armed.
        """
        with self._lock:
            missing = [key for key in self._keys if key not in self._armed]
            self._armed.update(missing)
        try:
            sent = [(kind, path, self.client.get_children_async(path, watch=self._on_children) if kind == "children"
                     else self.client.exists_async(path, watch=self._on_exists)) for kind, path in missing]
            for kind, path, answer in sent:
                if kind == "children":
                    try:
                        changed = sorted(answer.get()) != self._listings.get(path)
                    except NoNodeError:
                        # No node, no child watch: watch for its creation instead (it counts as armed).
                        changed = self.client.exists(path, watch=self._on_children) is not None or self._listings.get(path) is not None
                else:
                    changed = (answer.get() is not None) != (path in self._existing)
                if changed:
                    with self._lock:
                        self._dirty |= self._keys.get((kind, path), {GLOBAL})
        except Exception:
            self.session_lost()
            raise
        return len(missing)


def own_registrations(children, host):
    """The names among ``children`` of ``current/<svc>`` that register ``host``, with their versions.

    Also for the copies in a host's own parent (``hosts/<host>``), whose names start with the service instead.
    """
    found = {}
    for node in children or ():
        parsed = split_registration(node)
        if parsed is not None and parsed[0] == host:
            found[node] = parsed[1]
    return found
