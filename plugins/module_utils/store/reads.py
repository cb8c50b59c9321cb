# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A consistent-enough read of the whole rollout tree, as immutable values.

``read_snapshot(client, layout)`` reads every node of the tree with pipelined asynchronous
requests (one round trip per level, not one per node) and returns a ``Snapshot``. Malformed
payloads do not abort the read: each becomes a ``problems`` entry naming the path, so
monitoring still shows everything else. Deciding code (status, seeding, the agent) works on
snapshots only.
"""

from __future__ import annotations

from ..core.layout import LayoutError, split_sequential
from ..core.model import DeployEntry, Failure, PayloadError, Registration, ReleaseEntry, RolloutState, RosterEntry, Slot
from ..core.snapshot import QueueMember, ServiceState, Snapshot

try:
    from kazoo.exceptions import NoNodeError
except ImportError:  # zkclient.require_kazoo() reports the missing library where it matters
    NoNodeError = LookupError


class _Reader(object):
    """Pipelined reads that collect payload problems instead of raising."""

    def __init__(self, client):
        self.client = client
        self.problems = []

    def children(self, paths):
        """``{path: sorted children}``; a missing node has no children."""
        pending = [(path, self.client.get_children_async(path)) for path in paths]
        result = {}
        for path, async_result in pending:
            try:
                result[path] = sorted(async_result.get())
            except NoNodeError:
                result[path] = []
        return result

    def payloads(self, paths, payload_cls, empty_ok=False):
        """``{path: (payload, znode version)}`` for the nodes that exist.

        A node whose data does not parse maps to ``(None, version)`` and adds a problem.
        """
        pending = [(path, self.client.get_async(path)) for path in paths]
        result = {}
        for path, async_result in pending:
            try:
                data, stat = async_result.get()
            except NoNodeError:
                continue
            if empty_ok and not data:
                result[path] = (None, stat.version)
                continue
            try:
                result[path] = (payload_cls.from_bytes(data, path), stat.version)
            except PayloadError as exc:
                self.problems.append(str(exc))
                result[path] = (None, stat.version)
        return result


def _by_leaf(payloads):
    """``{last path segment: payload}`` of the nodes that parsed."""
    return {path.rsplit("/", 1)[1]: payload for path, (payload, _version) in payloads.items() if payload is not None}


def _named_children(layout_fn, names, problems, kind):
    """Keep children whose names are valid ids; report the others."""
    kept = []
    for name in names:
        try:
            layout_fn(name)
            kept.append(name)
        except LayoutError:
            problems.append("ignored %s node %r: not a valid name" % (kind, name))
    return kept


def read_snapshot(client, layout):
    """Read the whole tree under ``layout.root`` into a Snapshot."""
    reader = _Reader(client)
    if client.exists(layout.root) is None:
        return Snapshot(exists=False)
    top = reader.children([layout.hosts, layout.current, layout.staging, layout.deploy])
    problems = reader.problems
    hosts = _named_children(layout.host, top[layout.hosts], problems, "roster")
    current_services = _named_children(layout.current_service, top[layout.current], problems, "current")
    staged_services = _named_children(layout.release, top[layout.staging], problems, "staging")

    roster = _by_leaf(reader.payloads([layout.host(h) for h in hosts], RosterEntry))
    rollout_read = reader.payloads([layout.rollout], RolloutState).get(layout.rollout, (None, -1))

    deploy_queue = []
    for node in top[layout.deploy]:
        parsed = split_sequential(node)
        if parsed is None:
            problems.append("ignored deploy queue node %s/%s: expected <service>-<10 digits>" % (layout.deploy, node))
        else:
            deploy_queue.append(QueueMember(node=node, name=parsed[0], sequence=parsed[1]))
    deploy_queue.sort(key=lambda member: member.sequence)
    deploy_entries = _by_leaf(reader.payloads([layout.deploy_entry(m.node) for m in deploy_queue], DeployEntry))

    registrations_paths = reader.children([layout.current_service(s) for s in current_services])
    # An empty staging node holds only slots: a controller took them for a service not being rolled out.
    releases = reader.payloads([layout.release(s) for s in staged_services], ReleaseEntry, empty_ok=True)
    sub_paths = [p for s in staged_services for p in layout.release_children(s)]
    sub_children = reader.children(sub_paths)

    services = {}
    for name in sorted(set(current_services) | set(staged_services)):
        registered_hosts = _named_children(layout.host, registrations_paths.get(layout.current_service(name), []), problems, "registration")
        registrations = reader.payloads([layout.registration(name, h) for h in registered_hosts], Registration)
        ready = []
        if name in staged_services:
            for node in sub_children[layout.ready_queue(name)]:
                parsed = split_sequential(node)
                if parsed is None:
                    problems.append("ignored ready queue node %s/%s: expected <host>-<10 digits>" % (layout.ready_queue(name), node))
                else:
                    ready.append(QueueMember(node=node, name=parsed[0], sequence=parsed[1]))
        ready.sort(key=lambda member: member.sequence)
        slot_hosts = _named_children(layout.host, sub_children.get(layout.slots(name), []) if name in staged_services else [], problems, "slot")
        failed_hosts = _named_children(layout.host, sub_children.get(layout.failures(name), []) if name in staged_services else [], problems, "failure")
        slots = reader.payloads([layout.slot(name, h) for h in slot_hosts], Slot)
        failures = reader.payloads([layout.failure(name, h) for h in failed_hosts], Failure)
        release, release_version = releases.get(layout.release(name), (None, -1))
        services[name] = ServiceState(
            name=name,
            release=release,
            release_version=release_version,
            registrations=_by_leaf(registrations),
            ready_queue=tuple(ready),
            # A slot whose payload is malformed still marks its host as down for quorum purposes.
            slots={path.rsplit("/", 1)[1]: payload for path, (payload, _version) in slots.items()},
            failures=_by_leaf(failures),
        )

    return Snapshot(
        rollout=rollout_read[0],
        rollout_version=rollout_read[1],
        deploy_queue=tuple(deploy_queue),
        deploy_entries=deploy_entries,
        roster=roster,
        services=services,
        problems=tuple(problems),
    )
