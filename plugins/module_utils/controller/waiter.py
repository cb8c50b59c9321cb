# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Wait for a rollout to finish, woken by ZooKeeper watches rather than a polling interval.

Each round arms one-shot watches on the nodes whose change can move the rollout (rollout
state, deploy queue, and per service its registrations, slots and failures), reads a fresh
snapshot, records what changed since the previous round as progress events, and sleeps until
a watch fires. ``tick`` only bounds the sleep in case a watch is lost with a connection.
"""

from __future__ import annotations

import threading
import time

from ..store.commits import watch_listings, watch_node
from ..store.reads import read_snapshot
from .report import TERMINAL_STATES, rollout_report


def progress_events(previous, report, elapsed):
    """Human lines for what changed between two rollout reports (``previous`` may be None)."""
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
                events.append("%s %s on %s: %s %s -> %s %s" % (
                    stamp, service, host, was.get("state", "unknown"), was.get("version") or "", now["state"], now["version"] or ""))
    for service, now in sorted(report["services"].items()):
        was = previous["services"].get(service, {})
        if was.get("verdict") != now["verdict"]:
            events.append("%s %s: %s (%s)" % (stamp, service, now["verdict"], now["reason"]))
    return events


def _arm_watches(client, layout, report, wake):
    """Arm one-shot watches on every node whose change can move the rollout."""
    watch_node(client, layout.rollout, wake)
    watch_listings(client, [layout.deploy] + [path for service in report["services_in_order"]
                                              for path in (layout.current_service(service), layout.slots(service), layout.failures(service))], wake)


def wait_for_rollout(client, layout, timeout, tick=30.0, clock=time.monotonic):
    """Wait until the rollout is done, failed or aborted, or ``timeout`` seconds pass.

    Returns ``(report, events, timed_out)``: the last rollout report, the progress lines and
    whether the timeout ended the wait.
    """
    started = clock()
    deadline = started + timeout
    woken = threading.Event()

    def wake(_event):
        # Watch callbacks run on kazoo's thread: only signal, never call ZooKeeper from here.
        woken.set()

    events, previous = [], None
    report = rollout_report(read_snapshot(client, layout))
    while True:
        woken.clear()
        # Arm before reading, so a change that lands during the read still wakes the next round.
        _arm_watches(client, layout, report, wake)
        report = rollout_report(read_snapshot(client, layout))
        if report["state"] in TERMINAL_STATES:
            # A snapshot is read node by node, so the read that first shows the end can miss the
            # last instance between its deregistration and its new registration. Agents register
            # before they release their slot, so a second read shows the settled tree.
            settled = rollout_report(read_snapshot(client, layout))
            report = settled if settled["state"] == report["state"] else report
        events.extend(progress_events(previous, report, clock() - started))
        previous = report
        if report["state"] in TERMINAL_STATES or report["state"] == "none":
            return report, events, False
        remaining = deadline - clock()
        if remaining <= 0:
            return report, events, True
        woken.wait(min(remaining, tick))
