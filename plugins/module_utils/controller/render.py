# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plain-text views of a rollout report: the hosts x services table and the deploy state.

Used by ``playbooks/status.yml`` (through the ``status_table`` filter), the demo's live view
and anything else that shows a rollout to a person.
"""

from __future__ import annotations


def _table(header, rows):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header] + rows]


def _cell(entry):
    if entry["state"] == "offline":
        return "offline"
    mark = "" if entry["version"] == entry["target"] or entry["target"] is None else "*"
    return "%s%s%s" % (entry["version"] or "-", mark, " (upgrading)" if entry["state"] == "upgrading" else "")


def host_lines(report):
    """Hosts x services: the version each host runs, 'offline', or '(upgrading)'; '*' marks off-target."""
    services = report["services_in_order"] or sorted(report["services"])
    rows = [[host] + [_cell(row[s]) if s in row else "" for s in services] for host, row in sorted(report["hosts"].items())]
    if not rows:
        return ["no host has registered yet"]
    return _table(["HOST"] + list(services), rows)


def service_lines(report):
    """One line per service: target, quorum, healthy, budget, ready queue, slots, verdict and reason."""
    rows = []
    for name in report["services_in_order"] or sorted(report["services"]):
        service = report["services"][name]
        rows.append([
            name, service["target"] or "-",
            "%s (%s)" % (service["quorum"], service["quorum_resolved"]) if service["quorum"] is not None else "-",
            "%d/%d" % (service["healthy"], len(service["hosts"])), service["budget"],
            ",".join(service["ready_queue"]) or "-", ",".join(service["slots"]) or "-",
            "%s: %s" % (service["verdict"], service["reason"]),
        ])
    return _table(["SERVICE", "TARGET", "QUORUM", "HEALTHY", "BUDGET", "READY", "SLOTS", "VERDICT"], rows) if rows else []


def failure_lines(report):
    """One line per recorded failure: service, host, stage and reason."""
    return [
        "%s on %s: %s failed for %s: %s" % (name, host, failure["stage"], failure["version"], failure["reason"])
        for name, service in sorted(report["services"].items()) for host, failure in sorted(service["failures"].items())
    ]


def abandoned_slot_lines(report):
    """One line per slot whose owner is no longer connected: who held it, what the host is, the command that frees it."""
    return [
        "%s on %s: held by %s, no longer connected; the host is %s. Free it with: %s" % (
            name, host, entry["owner"], entry["instance"], entry["free_with"])
        for name, service in sorted(report["services"].items()) for host, entry in sorted(service.get("abandoned_slots", {}).items())
    ]


def status_lines(report):
    """The whole status view as lines of text."""
    rollout = report["rollout"] or {}
    lines = ["rollout %s: %s (%s)" % (rollout.get("id", "-"), report["state"], report["reason"]),
             "deploy queue: %s" % (" -> ".join(report["deploy_queue"]) or "empty"), ""]
    lines += host_lines(report) + [""] + service_lines(report)
    abandoned = abandoned_slot_lines(report)
    if abandoned:
        lines += ["", "slots without a connected owner (each keeps its host counted as down):"] + ["  " + line for line in abandoned]
    failures = failure_lines(report)
    if failures:
        lines += ["", "failures:"] + ["  " + line for line in failures]
    if report["problems"]:
        lines += ["", "problems:"] + ["  " + line for line in report["problems"]]
    return lines
