# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one agent does next for one service: a pure function of a snapshot and the local view.

``decide(host, snapshot, local, connected)`` returns a ``Decision``: one action and the
sentence saying why. The runtime performs the action and logs the sentence; ``status`` shows
it. Only stopping can break a quorum, so every path that leads to a stop (taking a slot)
requires a CONNECTED session and a snapshot; starting is always allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.plan import slot_verdict, upgrade_budget
from ..core.rules import (
    agent_slot,
    blocking_services,
    failure_facts,
    healthy_hosts,
    lagging_dependencies,
    most_popular_version,
    pending_dependencies,
    resolved_quorum,
    rollout_release,
    rollout_stage,
)

WAIT = "wait"
START = "start"
REGISTER = "register"
DEREGISTER = "deregister"
PREPARE = "prepare"
JOIN_READY = "join_ready"
LEAVE_READY = "leave_ready"
TAKE_SLOT = "take_slot"
ROLLBACK = "rollback"
RELEASE_SLOT = "release_slot"
RESUME = "resume"
REFUSE_RELEASE = "refuse_release"


@dataclass(frozen=True)
class LocalView(object):
    """What the agent knows locally about one service.

    ``running`` is the version of the running instance (None: not running), ``healthy`` the
    health verdict after rise/fall, ``prepared`` the verified versions on disk, ``progress``
    the persisted ServiceProgress; ``managed`` is False for the ``external`` driver, whose
    service the agent only reports on; ``own_registration`` is False when this session has not
    registered the running version itself: a registration of this host in the tree may then be
    left by an older session of ours (a restarted agent), which goes when that session expires.
    """

    service: str
    progress: object
    running: str = None
    healthy: bool = False
    prepared: frozenset = frozenset()
    managed: bool = True
    own_registration: bool = True


@dataclass(frozen=True)
class Decision(object):
    """One action, the version it concerns (if any), and why."""

    action: str
    reason: str
    version: str = None


def start_decision(host, snapshot, local):
    """What a host whose instance is down starts, and why (the seed's rule).

    (a) the target, if the service's rollout may switch it now (running or paused, not halted by
    a failure) or has finished: the instance is down already, so this costs no quorum (it is
    downloaded first if need be); (b) else the most popular version in ``current``; (c) else the
    last version this host ran. ``snapshot`` is None while disconnected: then only (c) applies,
    because starting is always allowed.
    """
    if snapshot is not None:
        release = rollout_release(snapshot, local.service)
        stage = rollout_stage(snapshot, local.service)
        failures = snapshot.service(local.service).failures
        rolling = stage == "rolling" and snapshot.rollout.active and not failures
        if release is not None and (rolling or stage == "finished" and host not in failures):
            if release.version in local.prepared:
                return Decision(START, "start %s: the target of rollout %s (%s)" % (release.version, release.rollout, stage), release.version)
            return Decision(PREPARE, "download %s, the target of rollout %s, to start it" % (release.version, release.rollout), release.version)
        popular = most_popular_version(snapshot, local.service, local.prepared)
        if popular is not None:
            return Decision(START, "start %s: the most popular version of %s in current" % (popular, local.service), popular)
    if local.progress.version in local.prepared:
        return Decision(START, "start %s: the last version this host ran" % local.progress.version, local.progress.version)
    return Decision(WAIT, "instance down: no usable version of %s on disk" % local.service)


def _take_turn(host, snapshot, service, candidates, action, version):
    """TAKE_SLOT/ROLLBACK if ``host`` is among the first k candidates and the quorum allows, else WAIT."""
    state = snapshot.service(service)
    release = state.release
    quorum = resolved_quorum(snapshot, service)
    healthy = healthy_hosts(snapshot, service)
    budget = upgrade_budget(len(healthy), len(state.slots), quorum, release.max_parallel)
    waiting = [h for h in candidates if h not in state.slots]
    position = waiting.index(host)
    if position >= budget:
        return Decision(WAIT, "waiting: %s is number %d in line for %s, budget %d (%d healthy, quorum %d, %d slots held)"
                        % (host, position + 1, service, budget, len(healthy), quorum, len(state.slots)))
    # The agent is the host's own: an instance it has not registered is down, not unknown.
    allowed, reason = slot_verdict(service, host, state.registrations, state.slots, quorum, release.max_parallel, confirmed_down=True)
    return Decision(action if allowed else WAIT, reason, version)


def monitor_decision(host, snapshot, local, connected):
    """For a service the agent does not manage: register it while healthy, nothing else."""
    if not connected or snapshot is None:
        return Decision(WAIT, "waiting: the ZooKeeper session is not connected")
    registration = snapshot.service(local.service).registrations.get(host)
    if local.running is None or not local.healthy:
        if registration is not None:
            return Decision(DEREGISTER, "the externally managed %s is %s: deregister" % (
                local.service, "not running" if local.running is None else "unhealthy"))
        return Decision(WAIT, "the externally managed %s is %s" % (local.service, "not running" if local.running is None else "not healthy yet"))
    if registration is None or registration != local.running or not local.own_registration:
        return Decision(REGISTER, "register the externally managed %s %s as healthy%s" % (
            local.service, local.running, "" if registration is None or registration != local.running else
            " (the registration in the tree was left by an older session of ours)"), local.running)
    return Decision(WAIT, "monitoring the externally managed %s %s" % (local.service, local.running))


def decide(host, snapshot, local, connected):
    """The next action of ``host`` for ``local.service``; see the module docstring."""
    service = local.service
    progress = local.progress
    if not local.managed:
        return monitor_decision(host, snapshot, local, connected)
    if progress.in_switch:
        return Decision(RESUME, "resume the unfinished %s (step %s) towards %s" % (progress.phase, progress.step or "start", progress.target), progress.target)
    if local.running is None:
        # A dead instance must not stay counted as healthy while it is being started again.
        if connected and snapshot is not None and host in snapshot.service(service).registrations:
            return Decision(DEREGISTER, "%s is not running: deregister it before starting it again" % service)
        return start_decision(host, snapshot if connected else None, local)
    if not connected or snapshot is None:
        return Decision(WAIT, "waiting: the ZooKeeper session is not connected; stopping nothing")
    state = snapshot.service(service)
    registration = state.registrations.get(host)
    if not local.healthy:
        if registration is not None:
            return Decision(DEREGISTER, "health check of %s %s failing: deregister" % (service, local.running))
        return Decision(WAIT, "waiting: %s %s is not healthy yet" % (service, local.running))
    if registration is None or registration != local.running or not local.own_registration:
        # A node left by an older session of ours is not trusted: it goes when that session expires.
        return Decision(REGISTER, "register %s %s as healthy%s" % (
            service, local.running, "" if registration is None or registration != local.running else
            " (the registration in the tree was left by an older session of ours)"), local.running)
    release = rollout_release(snapshot, service)
    if host in state.slots:
        slot = state.slots[host]
        if not agent_slot(slot):
            return Decision(WAIT, "waiting: the slot of %s on %s is held by %s, not by this agent"
                            % (service, host, slot.owner if slot is not None else "an unknown owner (malformed slot)"))
        return Decision(RELEASE_SLOT, "the slot of %s on %s is left from an interrupted run and this agent is idle: release it" % (service, host))
    rollout = snapshot.rollout
    if release is None:
        refusal = state.refusal
        if refusal is None:
            return Decision(WAIT, "idle: no rollout of %s" % service)
        if rollout is not None and rollout.active and refusal.rollout == rollout.id and host not in state.failures:
            # Recorded as this host's failure, so the refusal halts the service and every report shows why.
            return Decision(REFUSE_RELEASE, "refused the release of %s: %s" % (service, refusal.reason), refusal.version)
        return Decision(WAIT, "idle: the release of %s is refused: %s" % (service, refusal.reason))
    target = release.version
    if local.running == target:
        if host in state.ready_hosts:
            return Decision(LEAVE_READY, "%s runs the target %s: leave the ready queue" % (service, target))
        if state.failures and release.on_failure == "rollback" and rollout.state == "running" and progress.previous in local.prepared:
            candidates = sorted(h for h, version in state.registrations.items() if version == target)
            return _take_turn(host, snapshot, service, candidates, ROLLBACK, progress.previous)
        return Decision(WAIT, "on target %s %s" % (service, target))
    if host in state.failures:
        version, stage, reason = failure_facts(state.failures[host])
        return Decision(WAIT, "halted here: %s %s failed at %s (%s); waiting for a retry" % (service, version, stage, reason))
    stage = rollout_stage(snapshot, service)
    # A straggler (partitioned, or its agent was down, while its instance kept running the old
    # version) still follows a finished service to its target, one quorum-checked turn at a time.
    if rollout.state not in ("running", "paused") and not (stage == "finished" and rollout.state == "done"):
        return Decision(WAIT, "rollout %s is %s: nothing to do for %s" % (rollout.id, rollout.state, service))
    if target not in local.prepared:
        return Decision(PREPARE, "download and verify %s %s" % (service, target), target)
    if state.missing_subtrees:
        return Decision(WAIT, "waiting: the release of %s lacks %s (deleted by hand?): re-stage %s (zkrollout.dc.staging, or re-run the "
                        "rollout) to repair it" % (service, ", ".join(state.missing_subtrees), service))
    if host not in state.ready_hosts:
        return Decision(JOIN_READY, "%s %s is verified and unpacked: join the ready queue" % (service, target), target)
    if rollout.state == "paused":
        return Decision(WAIT, "waiting: rollout %s is paused" % rollout.id)
    if state.failures:
        return Decision(WAIT, "waiting: %s is halted by the failure on %s" % (service, ", ".join(sorted(state.failures))))
    if stage not in ("rolling", "finished"):
        if rollout.parallel:
            return Decision(WAIT, "waiting: %s depends on %s, not complete yet" % (service, ", ".join(pending_dependencies(snapshot, service))))
        return Decision(WAIT, "waiting: %s is not at the head of the deploy queue (behind %s)" % (service, blocking_services(snapshot, service)[0]))
    lagging = lagging_dependencies(snapshot, service)
    if lagging:
        return Decision(WAIT, "waiting: %s depends on %s, which still has instances not on its target" % (service, ", ".join(lagging)))
    return _take_turn(host, snapshot, service, state.ready_hosts, TAKE_SLOT, target)
