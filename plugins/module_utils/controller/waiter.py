# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a rollout to finish, woken by ZooKeeper watches rather than a polling interval.

Each pass arms one-shot watches on the nodes whose change can move the rollout (rollout
state, deploy queue, and per service its registrations, slots and failures), reads a fresh
snapshot, records what changed since the previous pass as progress events, and sleeps until
a watch fires. ``tick`` only bounds the sleep in case a watch is lost with a connection.

A wait can be cut into *rounds* (``round_timeout``): a round ends at the first change it sees,
or after ``round_timeout`` seconds, and returns a ``WaitCursor``; the next round, given that
cursor as ``since``, reports what changed after it and keeps the wait's start (for ``timeout``)
and the time of the last host switch (for ``progress_deadline``). So a caller that runs rounds
one after the other can show every change as it happens, whatever runs the rounds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..store.commits import watch_listings, watch_node
from ..store.reads import read_snapshot
from .report import TERMINAL_STATES, rollout_report


class WaitError(ValueError):
    """A wait option (such as a cursor) that cannot be used; the message names it."""


def seen_state(report, previous=None):
    """What a cursor remembers of a rollout report: what ``progress_events`` compares, and per instance
    the version it last ran (``ran``), kept from ``previous`` while the host is seen without one (offline)."""
    known = (previous or {}).get("hosts", {})
    return {
        "state": report["state"],
        "deploy_queue": list(report["deploy_queue"]),
        "hosts": {host: {service: {"state": now["state"], "version": now["version"],
                                   "ran": now["version"] or known.get(host, {}).get(service, {}).get("ran")}
                         for service, now in row.items()}
                  for host, row in report["hosts"].items()},
        "services": {service: {"verdict": now["verdict"]} for service, now in report["services"].items()},
    }


def progress_events(previous, report, elapsed):
    """Human lines for what changed between two rollout reports (``previous`` may be None, or a ``seen_state``)."""
    stamp = "%7.1fs" % elapsed
    if previous is None:
        return ["%s rollout %s: %s" % (stamp, report["state"], report["reason"])]
    events = []
    if (previous["state"], previous["deploy_queue"]) != (report["state"], report["deploy_queue"]):
        events.append("%s rollout %s, deploy queue %s" % (stamp, report["state"], report["deploy_queue"] or "empty"))
    for host, row in sorted(report["hosts"].items()):
        before_row = previous["hosts"].get(host, {})
        for service, now in sorted(row.items()):
            was = before_row.get(service, {})
            if (was.get("state"), was.get("version")) != (now["state"], now["version"]):
                events.append("%s %s on %s: %s -> %s" % (
                    stamp, service, host, _instance(was.get("state", "unknown"), was.get("version")), _instance(now["state"], now["version"])))
    for service, now in sorted(report["services"].items()):
        was = previous["services"].get(service, {})
        if was.get("verdict") != now["verdict"]:
            events.append("%s %s: %s (%s)" % (stamp, service, now["verdict"], now["reason"]))
    return events


def _instance(state, version):
    return "%s %s" % (state, version) if version else state


def host_switched(previous, report):
    """True when some host started or ended a switch, or runs another version than it last ran, since ``previous``.

    A host that only went offline or came back on the version it ran did not switch: that is no
    progress of the rollout. A host seen offline between two versions did.
    """
    if previous is None:
        return False
    for host, row in report["hosts"].items():
        for service, now in row.items():
            was = previous["hosts"].get(host, {}).get(service)
            if was is None:
                continue
            if (was["state"] == "upgrading") != (now["state"] == "upgrading"):
                return True
            ran = was.get("ran") or was["version"]
            if None not in (ran, now["version"]) and ran != now["version"]:
                return True
    return False


def stall_reason(report, idle, progress_deadline):
    """The failure sentence of a stalled rollout: how long nothing switched, and what each unfinished service waits on."""
    waiting = ["%s %s: %s" % (name, service["verdict"], service["reason"]) for name, service in sorted(report["services"].items())
               if not service.get("complete")]
    return "no host switched for %.0fs (progress_deadline %gs) with the rollout %s; %s" % (
        idle, progress_deadline, report["state"], "; ".join(waiting) or report["reason"])


@dataclass(frozen=True)
class WaitCursor(object):
    """Where a wait stands between two rounds: what it has shown, since when it waits, when a host last switched.

    ``started`` and ``switched`` are wall-clock times (rounds may run in different processes).
    """

    rollout: str
    started: float
    switched: float
    seen: dict

    def to_dict(self):
        """The cursor as returned to the caller, to be given back as ``since``."""
        return {"rollout": self.rollout, "started": self.started, "switched": self.switched, "seen": self.seen}

    @classmethod
    def from_dict(cls, raw, where="since"):
        """A cursor from a previous round's result; WaitError names what is wrong."""
        if not isinstance(raw, dict) or set(raw) != {"rollout", "started", "switched", "seen"}:
            raise WaitError("%s must be the 'cursor' a previous round of rollout_wait returned (a mapping of rollout, started, "
                            "switched and seen), got %r" % (where, raw if not isinstance(raw, dict) else sorted(raw)))
        for name in ("started", "switched"):
            if isinstance(raw[name], bool) or not isinstance(raw[name], (int, float)):
                raise WaitError("%s.%s must be a time in seconds, got %r" % (where, name, raw[name]))
        if raw["rollout"] is not None and not isinstance(raw["rollout"], str):
            raise WaitError("%s.rollout must be a rollout id, got %r" % (where, raw["rollout"]))
        seen = raw["seen"]
        shape = isinstance(seen, dict) and isinstance(seen.get("state"), str) and isinstance(seen.get("deploy_queue"), list) and all(
            isinstance(seen.get(part), dict) and all(isinstance(row, dict) for row in seen[part].values()) for part in ("hosts", "services"))
        if shape:
            shape = all(isinstance(cell, dict) and {"state", "version"} <= set(cell) for row in seen["hosts"].values() for cell in row.values())
        if not shape:
            raise WaitError("%s.seen is not what a round of rollout_wait returns; pass the previous round's cursor unchanged" % where)
        return cls(rollout=raw["rollout"], started=float(raw["started"]), switched=float(raw["switched"]), seen=seen)


@dataclass(frozen=True)
class Waited(object):
    """The outcome of a wait (or of one round of it).

    ``finished`` is False only when a round ended with the rollout still going; then ``cursor``
    continues the wait. ``stalled`` holds the failure sentence when ``progress_deadline`` passed.
    """

    report: dict
    events: list
    elapsed: float
    finished: bool
    timed_out: bool = False
    stalled: str = None
    cursor: WaitCursor = None


def _arm_watches(client, layout, report, wake):
    """Arm one-shot watches on every node whose change can move the rollout."""
    watch_node(client, layout.rollout, wake)
    watch_listings(client, [layout.deploy] + [path for service in report["services_in_order"]
                                              for path in (layout.current_service(service), layout.slots(service), layout.failures(service))], wake)


def _rollout_id(report):
    return (report["rollout"] or {}).get("id")


def _settled_report(client, layout):
    report = rollout_report(read_snapshot(client, layout))
    if report["state"] in TERMINAL_STATES:
        # A snapshot is read node by node, so the read that first shows the end can miss the
        # last instance between its deregistration and its new registration. Agents register
        # before they release their slot, so a second read shows the settled tree.
        settled = rollout_report(read_snapshot(client, layout))
        report = settled if settled["state"] == report["state"] else report
    return report


def wait_for_rollout(client, layout, timeout, tick=30.0, progress_deadline=None, round_timeout=None, since=None, clock=time.time):
    """Wait until the rollout is done, failed or aborted, ``timeout`` seconds pass, or it stalls.

    ``timeout`` and ``progress_deadline`` (seconds without any host switching) count from the
    start of the whole wait, which ``since`` (a WaitCursor) carries across rounds. With
    ``round_timeout`` the call also returns, unfinished, at the first change or after that many
    seconds. Returns a ``Waited``.
    """
    now = clock()
    woken = threading.Event()

    def wake(_event):
        # Watch callbacks run on kazoo's thread: only signal, never call ZooKeeper from here.
        woken.set()

    report = rollout_report(read_snapshot(client, layout))
    rollout_id = _rollout_id(report)
    if since is not None and since.rollout == rollout_id:
        started, switched, previous = since.started, since.switched, since.seen
    else:
        # A first round, or the rollout was replaced since the cursor: start over on this one.
        started = since.started if since is not None else now
        switched, previous = now, None
    round_ends = None if round_timeout is None else now + round_timeout
    events = []
    while True:
        woken.clear()
        # Arm before reading, so a change that lands during the read still wakes the next pass.
        _arm_watches(client, layout, report, wake)
        report = _settled_report(client, layout)
        now = clock()
        if host_switched(previous, report):
            switched = now
        changes = progress_events(previous, report, now - started)
        events.extend(changes)
        previous = seen_state(report, previous)
        cursor = WaitCursor(rollout=_rollout_id(report), started=started, switched=switched, seen=previous)
        outcome = dict(report=report, events=events, elapsed=round(now - started, 3), cursor=cursor)
        if report["state"] in TERMINAL_STATES or report["state"] == "none":
            return Waited(finished=True, **outcome)
        if now >= started + timeout:
            return Waited(finished=True, timed_out=True, **outcome)
        if progress_deadline is not None and now - switched >= progress_deadline:
            return Waited(finished=True, stalled=stall_reason(report, now - switched, progress_deadline), **outcome)
        if round_ends is not None and (changes or now >= round_ends):
            return Waited(finished=False, **outcome)
        wakes = [started + timeout, now + tick] + ([switched + progress_deadline] if progress_deadline is not None else []) + (
            [round_ends] if round_ends is not None else [])
        woken.wait(max(0.0, min(wakes) - now))
