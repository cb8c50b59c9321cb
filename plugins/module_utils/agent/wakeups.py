# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which znodes one agent watches: only those whose change can change its own decision.

A pure function of the agent's view, so "who is woken by what" is unit tested without
ZooKeeper. Every agent watches the rollout node, the deploy queue, and the release entry and
failure records of its own services (they change a few times per rollout, not per host).
Beyond that, per service, as kazoo's Lock watches only its predecessor:

- a host whose ready-queue position is below ``max_parallel`` is a *candidate*: it watches the
  slot set and the registrations, because any change there can give it its turn;
- any other host in the ready queue watches the ``max_parallel`` members just ahead of it: its
  position can fall below ``max_parallel`` only when one of them leaves;
- in a rollback, the same among the hosts on the target (their registrations are the line);
- a candidate of a service that waits for others (ahead in the deploy queue, or its
  dependencies in a parallel rollout) watches their slots and registrations, since their
  completion (derived from those, never written) gives it its turn; a candidate whose
  dependency lags watches that dependency's registrations; a host whose slot a controller holds
  watches the slot set;
- a host in its own turn (its agent's slot) is no candidate: nothing the others do changes a
  switch that runs, and its own commits invalidate its view; nor is a candidate whose turn the
  view shows open (``rules.open_turn``): it takes the turn in the same iteration, and a refused
  take re-reads the view. Only a candidate that must wait watches the others.

So one host's upgrade wakes at most a few agents, whatever the size of the fleet.
"""

from __future__ import annotations

from ..core.rules import agent_slot, blocking_services, lagging_dependencies, open_turn
from ..store.views import GLOBAL

CHILDREN = "children"
EXISTS = "exists"


def base_watches(layout, services, dependencies):
    """Watches every agent keeps: rollout, deploy queue, own releases and failures, dependency releases.

    Returns ``{(kind, path): keys}``: the parts of the view to re-read when it fires (a service
    name, or GLOBAL for the rollout node and the deploy queue).
    """
    watches = {(EXISTS, layout.rollout): {GLOBAL}, (CHILDREN, layout.deploy): {GLOBAL}}
    for name in services:
        watches[(EXISTS, layout.release(name))] = {name}
        watches[(CHILDREN, layout.failures(name))] = {name}
    for name in dependencies:
        watches.setdefault((EXISTS, layout.release(name)), set()).add(name)
    return watches


def _line_watches(host, line, limit, ahead_path):
    """Watches of a host in a line (a queue): None if it is not in it, else candidate or predecessors."""
    if host not in line:
        return None
    position = line.index(host)
    if position < limit:
        return True, set()
    return False, {(EXISTS, ahead_path(other)) for other in line[position - limit:position]}


def service_watches(layout, host, snapshot, service):
    """``{(kind, path)}`` that ``host`` watches for ``service`` beyond the base set.

    Each of them re-reads ``service`` when it fires; a dependency's registrations re-read that
    dependency too (``plan``).
    """
    state = snapshot.service(service)
    release = state.release
    if release is None:
        return set()
    limit = release.max_parallel
    watches = set()
    candidate = False
    queue = state.ready_queue
    in_queue = _line_watches(host, state.ready_hosts, limit,
                             lambda other: layout.ready_member(service, next(m.node for m in queue if m.name == other)))
    if in_queue is not None:
        candidate, predecessors = in_queue
        watches |= predecessors
    on_target = sorted(h for h, version in state.registrations.items() if version == release.version)
    if state.failures and release.on_failure == "rollback":
        in_line = _line_watches(host, on_target, limit, lambda other: layout.registration(service, other, release.version))
        if in_line is not None:
            candidate = candidate or in_line[0]
            watches |= in_line[1]
    if host in state.slots and agent_slot(state.slots[host]):
        # Our own turn: the switch runs to its end whatever the others do, and our own commits
        # invalidate the view. Only the predecessors' watches stay (our place after the turn).
        candidate = False
    if candidate and open_turn(snapshot, service, host):
        # Our turn is open on this view: we take it in this iteration, and a refused take
        # re-reads the view (and plans again). Nothing the others do is waited for.
        candidate = False
    if candidate or (host in state.slots and not agent_slot(state.slots[host])):
        watches |= {(CHILDREN, layout.slots(service)), (CHILDREN, layout.current_service(service))}
    if candidate and snapshot.rollout is not None:
        watches |= {(CHILDREN, layout.current_service(dep)) for dep in lagging_dependencies(snapshot, service)}
        for ahead in blocking_services(snapshot, service):
            watches |= {(CHILDREN, layout.slots(ahead)), (CHILDREN, layout.current_service(ahead))}
    return watches


def plan(layout, host, snapshot, services, dependencies):
    """Every watch of ``host``: ``{(kind, path): keys to re-read when it fires}``."""
    watches = base_watches(layout, services, dependencies)
    for name in services:
        for kind, path in service_watches(layout, host, snapshot, name):
            keys = watches.setdefault((kind, path), set())
            keys.add(name)
            # A watch on another service's registrations or slots (one ahead, a dependency) re-reads that service too.
            keys.update(other for other in set(services) | set(dependencies) if path in (layout.current_service(other), layout.slots(other)))
    return watches
