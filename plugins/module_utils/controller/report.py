# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a snapshot means for people: per-host state, per-service verdicts, rollout progress.

Pure functions over a ``Snapshot``. ``rollout_report`` is what ``rollout_info`` returns and
what ``status.yml`` renders; ``verdict`` answers the seed's "ready to roll?" with a reason.
"""

from __future__ import annotations

from ..core.model import ROLLOUT_STATES
from ..core.plan import upgrade_budget
from ..core.rules import (
    TERMINAL_STATES,
    blocking_services,
    failure_facts,
    halting_failures,
    healthy_hosts,
    remaining_services,
    resolved_quorum,
    rollout_services,
    service_complete,
    service_hosts,
    slot_owner_alive,
)

# Every word ``verdict`` can answer, for readers that list them all (the exporter's state gauge).
VERDICTS = ("idle", "done", "halted", "paused", "aborted", "waiting", "blocked", "rolling", "ready")
# Every state ``overall_state`` can answer: the rollout node's states, or none without one.
OVERALL_STATES = ("none",) + ROLLOUT_STATES


def verdict(snapshot, name):
    """``(word, reason)`` for one service: one of VERDICTS (idle, done, halted, paused, aborted, waiting, blocked, rolling or ready)."""
    state = snapshot.service(name)
    release = state.release
    if release is None:
        return "idle", "%s is not staged in any rollout" % name
    if service_complete(snapshot, name):
        return "done", "all %d online hosts run %s" % (len(state.registrations), release.version)
    failures = halting_failures(snapshot, name)
    if failures:
        version, stage, reason = failure_facts(failures[sorted(failures)[0]])
        return "halted", "upgrade to %s failed on %s (%s: %s); fix the cause, then retry %s with rollout_control" % (
            version, ", ".join(sorted(failures)), stage, reason, name)
    rollout = snapshot.rollout
    if rollout is not None and rollout.state in ("paused", "aborted"):
        return rollout.state, "the rollout is %s: no new upgrade slots are taken" % rollout.state
    if name not in snapshot.queued_services:
        return "waiting", "%s is staged but not in the deploy queue" % name
    blocking = blocking_services(snapshot, name)
    if blocking and rollout is not None and rollout.parallel:
        return "waiting", "dependency %s is not complete" % ", ".join(blocking)
    if blocking:
        return "waiting", "behind %s in the deploy queue" % blocking[0]
    hosts = service_hosts(snapshot, name)
    healthy = healthy_hosts(snapshot, name)
    quorum = resolved_quorum(snapshot, name)
    budget = upgrade_budget(len(healthy), len(state.slots), quorum, release.max_parallel)
    abandoned = abandoned_slots(snapshot, name)
    if budget == 0:
        if len(state.slots) >= release.max_parallel and abandoned:
            return "blocked", "%d of %d slots held, by owners no longer connected: %s; free each with: %s" % (
                len(state.slots), release.max_parallel, ", ".join("%s (%s)" % (host, entry["owner"]) for host, entry in abandoned.items()),
                "; ".join(entry["free_with"] for entry in abandoned.values()))
        if len(state.slots) >= release.max_parallel:
            return "rolling", "%d of %d slots held (%s)" % (len(state.slots), release.max_parallel, ", ".join(sorted(state.slots)))
        offline = [h for h in hosts if h not in state.registrations and h not in state.slots]
        return "blocked", "quorum %d needs %d healthy, %d online%s" % (
            quorum, quorum + 1, len(healthy), "; host%s %s offline" % ("s" if len(offline) > 1 else "", ", ".join(offline)) if offline else "")
    waiting = [h for h in state.ready_hosts if h not in state.slots]
    if not waiting:
        behind = [h for h, version in sorted(state.registrations.items()) if version != release.version and h not in state.slots]
        if state.slots:
            return "rolling", "%d slot(s) held (%s)" % (len(state.slots), ", ".join(sorted(state.slots)))
        return "waiting", "no host is ready yet (%s still downloading or verifying %s)" % (", ".join(behind) or "none", release.version)
    return "ready", "ready to roll: %d slot(s) free (%d healthy, quorum %d); next: %s" % (
        budget, len(healthy), quorum, ", ".join(waiting[:budget]))


def overall_state(snapshot):
    """``(state, reason)`` of the whole rollout, as a waiter or a dashboard sees it.

    The rollout node's own terminal state wins. A running rollout with a halted service is
    reported failed; one whose services are all complete is done: completion is derived from
    the tree, and nobody writes ``done`` into the rollout node.
    """
    rollout = snapshot.rollout
    if rollout is None:
        return "none", "no rollout in the tree"
    if rollout.state in TERMINAL_STATES:
        return rollout.state, rollout.reason or "the rollout is %s" % rollout.state
    halted = [(name, host, failure) for name in rollout.services for host, failure in sorted(halting_failures(snapshot, name).items())]
    if halted:
        return "failed", "; ".join("%s on %s: %s (%s)" % (name, host, failure_facts(failure)[2], failure_facts(failure)[1]) for name, host, failure in halted)
    if all(service_complete(snapshot, name) for name in rollout.services):
        return "done", "every service runs its target"
    return rollout.state, "%d of %d services complete" % (sum(service_complete(snapshot, n) for n in rollout.services), len(rollout.services))


def host_report(snapshot):
    """``{host: {service: {state: online|offline|upgrading, version, target}}}`` for every host."""
    report = {}
    for host, names in sorted(snapshot.hosts.items()):
        row = {}
        for name in names:
            state = snapshot.service(name)
            version = state.registrations.get(host)
            row[name] = {
                "state": "upgrading" if host in state.slots else ("online" if version else "offline"),
                "version": version,
                "target": state.release.version if state.release else None,
            }
        report[host] = row
    return report


FREE_SLOT_COMMAND = ("ansible-playbook zkrollout.dc.control -e zkrollout_action=release_slot -e zkrollout_service=%s "
                     "-e zkrollout_host=%s")


def abandoned_slots(snapshot, name):
    """``{host: {owner, instance, free_with}}``: slots of ``name`` whose owner is no longer connected.

    Such a slot still counts its host as down (correctly: nobody vouches for its instance), and
    with max_parallel 1 it stops the service's rollout until it is freed. ``instance`` says what
    the tree knows of the host; ``free_with`` is the command that frees the slot
    (``rollout_control`` refuses while the owner is connected).
    """
    state = snapshot.service(name)
    found = {}
    for host, slot in sorted(state.slots.items()):
        if slot_owner_alive(snapshot, host, slot) is not False:
            continue
        registered = state.registrations.get(host)
        found[host] = {
            "owner": slot.owner,
            "instance": "registered on %s" % registered if registered else "not registered (down, or unknown)",
            "free_with": FREE_SLOT_COMMAND % (name, host),
        }
    return found


def service_report(snapshot, name):
    """Everything about one service: target, quorum, counts, budget, queue, slots, failures, verdict."""
    state = snapshot.service(name)
    release = state.release
    quorum = resolved_quorum(snapshot, name)
    healthy = healthy_hosts(snapshot, name)
    word, reason = verdict(snapshot, name)
    return {
        "service": name,
        "target": release.version if release else None,
        "quorum": release.quorum if release else None,
        "quorum_resolved": quorum,
        "max_parallel": release.max_parallel if release else None,
        "on_failure": release.on_failure if release else None,
        "depends_on": list(release.depends_on) if release else [],
        "hosts": service_hosts(snapshot, name),
        "online": sorted(state.registrations),
        "healthy": len(healthy),
        "on_target": sorted(h for h, version in state.registrations.items() if release and version == release.version),
        "budget": upgrade_budget(len(healthy), len(state.slots), quorum, release.max_parallel) if release else 0,
        "ready_queue": state.ready_hosts,
        "slots": {
            host: (slot.to_dict() if slot is not None else {"malformed": True}) for host, slot in sorted(state.slots.items())
        },
        "failures": {host: (failure.to_dict() if failure is not None else {"malformed": True}) for host, failure in sorted(state.failures.items())},
        "abandoned_slots": abandoned_slots(snapshot, name),
        "complete": service_complete(snapshot, name),
        "verdict": word,
        "reason": reason,
    }


def rollout_report(snapshot):
    """The whole state: rollout, deploy queue, hosts x services, per-service reports, problems."""
    state, reason = overall_state(snapshot)
    services = rollout_services(snapshot) or sorted(snapshot.services)
    reports = {name: service_report(snapshot, name) for name in sorted(set(services) | set(snapshot.services))}
    rollout = snapshot.rollout
    return {
        "state": state,
        "reason": reason,
        "rollout": rollout.to_dict() if rollout else None,
        # What is still to roll: complete services leave it (derived, see rules.remaining_services).
        "deploy_queue": remaining_services(snapshot),
        "services_in_order": services,
        "hosts": host_report(snapshot),
        "services": reports,
        "progress": {
            "services_total": len(rollout_services(snapshot)),
            "services_complete": sum(service_complete(snapshot, n) for n in rollout_services(snapshot)),
            "instances_total": sum(len(reports[n]["hosts"]) for n in rollout_services(snapshot)),
            "instances_on_target": sum(len(reports[n]["on_target"]) for n in rollout_services(snapshot)),
        },
        "problems": list(snapshot.problems),
    }


def service_summary(report, name):
    """What a template asks about one service of ``rollout_report``'s result: its state, target, health, quorum, versions, slots, failures.

    ``state`` is the service's verdict word (done, halted, paused, aborted, waiting, blocked,
    rolling, ready or idle); ``versions`` maps each of its hosts to the version it runs (None
    while it is not registered).
    """
    service = report["services"][name]
    return {
        "service": name,
        "state": service["verdict"],
        "reason": service["reason"],
        "target": service["target"],
        "complete": service["complete"],
        "healthy": service["healthy"],
        "quorum": service["quorum_resolved"],
        "max_parallel": service["max_parallel"],
        "budget": service["budget"],
        "versions": {host: report["hosts"][host][name]["version"] for host in service["hosts"]},
        "ready_queue": service["ready_queue"],
        "slots": service["slots"],
        "failures": service["failures"],
    }


def rollout_summary(report):
    """What a template asks about the whole rollout of ``rollout_report``'s result.

    Its id, state and reason, the services still to roll (head first), progress, and per
    service the state, reason, target and completion of ``service_summary``.
    """
    rollout = report["rollout"]
    return {
        "id": rollout["id"] if rollout else None,
        "state": report["state"],
        "reason": report["reason"],
        "deploy_queue": report["deploy_queue"],
        "services_in_order": report["services_in_order"],
        "services": {
            name: {key: summary[key] for key in ("state", "reason", "target", "complete")}
            for name, summary in ((name, service_summary(report, name)) for name in sorted(report["services"]))
        },
        "progress": report["progress"],
        "problems": report["problems"],
    }
