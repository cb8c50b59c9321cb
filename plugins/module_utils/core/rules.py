# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rules of a rollout over a Snapshot: the one place ``decide``, the reports and the strategy ask.

Healthy hosts, the resolved quorum, the upgrade budget, pending and lagging dependencies,
completion and the rollout stage of a service are defined here once. A report formats what
these functions say; it never re-derives them.
"""

from __future__ import annotations

from .plan import resolve_quorum, upgrade_budget

TERMINAL_STATES = ("done", "failed", "aborted")
AGENT_OWNER = "agent:"
# Slots written before owners named their host say only "agent".
LEGACY_AGENT_OWNER = "agent"
CONTROLLER_OWNER = "controller:"


def agent_owner(host):
    """Owner string of a slot taken by the agent of ``host``."""
    return AGENT_OWNER + host


def controller_owner(controller_id):
    """Owner string of a slot taken by a controller (one ansible-playbook run or its re-run)."""
    return CONTROLLER_OWNER + controller_id


def agent_slot(slot):
    """True for a slot an agent took; a controller's slot (push mode) is not an agent's to release."""
    return slot is not None and (slot.owner == LEGACY_AGENT_OWNER or slot.owner.startswith(AGENT_OWNER))


def slot_owner_alive(snapshot, host, slot):
    """Whether the owner of ``host``'s ``slot`` is connected: True, False, or None when the snapshot did not read liveness.

    An agent's slot lives with the presence node of that host's agent; a controller's with the
    node of the session that took it. A malformed slot's owner is unknown (None).
    """
    if slot is None or snapshot.live_agents is None:
        return None
    if agent_slot(slot):
        return host in snapshot.live_agents
    return bool(slot.session) and slot.session in snapshot.live_sessions


def service_hosts(snapshot, name):
    """Every host that runs ``name``: its roster hosts plus any host registered for it."""
    return sorted(set(snapshot.roster_of(name)) | set(snapshot.service(name).registrations))


def resolved_quorum(snapshot, name):
    """The release's quorum for ``name`` resolved against its hosts (at least 1), or None."""
    release = snapshot.service(name).release
    if release is None:
        return None
    return max(1, resolve_quorum(release.quorum, len(service_hosts(snapshot, name))))


def healthy_hosts(snapshot, name):
    """Hosts registered for ``name`` that hold no upgrade slot: the ones quorum counts."""
    state = snapshot.service(name)
    return sorted(set(state.registrations) - set(state.slots))


def strictest_limits(snapshot, name, quorum=None, max_parallel=None):
    """``(resolved quorum, max_parallel)`` for a caller with limits of its own (a play), never looser than the release's.

    The larger quorum and the smaller ``max_parallel`` of the two win, so a play variable can
    make the budget stricter than the staged release but never wider. Raises ValueError when
    neither side gives a quorum.
    """
    release = snapshot.service(name).release
    quorums = [value for value in (quorum, release.quorum if release else None) if value is not None]
    if not quorums:
        raise ValueError("no quorum for %s: stage it with a quorum or give one" % name)
    hosts = len(service_hosts(snapshot, name))
    parallels = [value for value in (max_parallel, release.max_parallel if release else None) if value]
    return max(max(1, resolve_quorum(value, hosts)) for value in quorums), min(parallels or [1])


def budget(snapshot, name):
    """How many more upgrade slots of ``name`` may be taken now (0 without a release)."""
    state = snapshot.service(name)
    if state.release is None:
        return 0
    return upgrade_budget(len(healthy_hosts(snapshot, name)), len(state.slots), resolved_quorum(snapshot, name), state.release.max_parallel)


def service_complete(snapshot, name):
    """True when the release target of ``name`` is reached.

    Every online instance runs the target, at least one is online and no slot is held. Offline
    hosts do not hold a rollout back: they start the target when they come back.
    """
    state = snapshot.service(name)
    if state.release is None or state.slots or not state.registrations:
        return False
    return all(version == state.release.version for version in state.registrations.values())


def remaining_services(snapshot):
    """The deploy queue without its complete services: what is still to roll, in deploy order.

    Completion is derived from the tree on every read, never written: agents write nothing in
    the deploy queue or the rollout node, which stay the deployer's (docs/security.md). A
    service is complete again only while it is: a host back online on an old version makes it
    incomplete, and what follows it in the queue waits until that host caught up.
    """
    return [name for name in snapshot.queued_services if not service_complete(snapshot, name)]


def services_ahead(snapshot, name):
    """Services whose completion ``name`` waits for: those before it in the deploy queue, or in a parallel rollout its dependencies."""
    release = snapshot.service(name).release
    if snapshot.rollout is not None and snapshot.rollout.parallel:
        return list(release.depends_on) if release is not None else []
    queue = snapshot.queued_services
    return queue[:queue.index(name)] if name in queue else []


def blocking_services(snapshot, name):
    """The services ahead of ``name`` (``services_ahead``) that are not complete: ``name`` rolls when there are none."""
    remaining = remaining_services(snapshot)
    return [other for other in services_ahead(snapshot, name) if other in remaining]


def pending_dependencies(snapshot, name):
    """Dependencies of ``name`` still in the deploy queue and not complete."""
    release = snapshot.service(name).release
    if release is None:
        return []
    queue = snapshot.queued_services
    return [dep for dep in release.depends_on if dep in queue and not service_complete(snapshot, dep)]


def lagging_dependencies(snapshot, name):
    """Dependencies of ``name`` with an online instance that does not run its target yet.

    A host that was away (partitioned, agent down) can bring an old instance of a dependency back
    online after that dependency finished; its dependants wait until it has caught up.
    """
    release = snapshot.service(name).release
    lagging = []
    for dep in release.depends_on if release is not None else ():
        dep_release = snapshot.service(dep).release
        versions = snapshot.service(dep).registrations.values()
        if dep_release is not None and any(version != dep_release.version for version in versions):
            lagging.append(dep)
    return lagging


def rollout_services(snapshot):
    """Services of the current rollout in deploy order (the rollout node's list)."""
    return list(snapshot.rollout.services) if snapshot.rollout else []


def rollout_release(snapshot, service):
    """The service's release entry if it belongs to the rollout in the tree, else None."""
    release = snapshot.service(service).release
    rollout = snapshot.rollout
    if release is None or rollout is None or rollout.id != release.rollout or service not in rollout.services:
        return None
    return release


def rollout_stage(snapshot, service):
    """``finished``, ``rolling`` (may switch now), ``pending`` (waits for others) or None (no rollout).

    A service is finished while it is complete (or not in the deploy queue). Sequential releases
    roll the first incomplete service of the queue; ``parallel`` releases roll every incomplete
    service whose dependencies are complete.
    """
    if rollout_release(snapshot, service) is None:
        return None
    if service not in remaining_services(snapshot):
        return "finished"
    return "pending" if blocking_services(snapshot, service) else "rolling"


def open_turn(snapshot, name, host):
    """True if, on ``snapshot``, ``name`` rolls and ``host`` waits in its ready queue within the budget: its turn is open now.

    What else a turn needs is the host's own (its instance healthy, the target on disk): an
    agent whose turn is open takes it in the same iteration, on a fresh read under the lock.
    """
    state = snapshot.service(name)
    rollout = snapshot.rollout
    if state.release is None or rollout is None or rollout.state != "running" or state.failures or host in state.slots:
        return False
    if rollout_stage(snapshot, name) not in ("rolling", "finished") or lagging_dependencies(snapshot, name):
        return False
    waiting = [other for other in state.ready_hosts if other not in state.slots]
    return host in waiting and waiting.index(host) < budget(snapshot, name)


def most_popular_version(snapshot, service, candidates):
    """The version most registered instances of ``service`` run, among ``candidates``; ties go to the lower version string."""
    counts = {}
    for version in snapshot.service(service).registrations.values():
        if version in candidates:
            counts[version] = counts.get(version, 0) + 1
    if not counts:
        return None
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0]


def halting_failures(snapshot, name):
    """The failure records that halt ``name`` (none without a release)."""
    state = snapshot.service(name)
    return state.failures if state.release is not None and state.failures else {}


def failure_facts(failure):
    """``(version, stage, reason)`` of a failure record; a malformed one (None) still halts, and says so."""
    if failure is None:
        return "an unknown version", "an unknown stage", "the failure record is malformed (see problems); rewrite or delete it, then retry"
    return failure.version, failure.stage, failure.reason
