# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reads of the rollout tree into Snapshot values, in a bounded number of round trips.

``read_snapshot(client, layout)`` reads the whole tree for controllers (reports, seeding, the
strategy); ``read_snapshot(client, layout, services=[...])`` reads the rollout node, the deploy
queue and only the named services, which is what an agent's decision needs. Requests are
pipelined level by level, so the number of round trips does not depend on the fleet: the
versions of every instance come from one child listing per service (``<host>@<version>``
registrations) and the roster of a service is one listing too. Only slots and failure records
are read node by node, and there are few of them.

Malformed nodes never abort a read: each becomes a ``problems`` entry naming the path and what
is wrong. A slot or a failure whose payload does not parse still counts (held, halting).
"""

from __future__ import annotations

import weakref

from ..core.layout import LayoutError, check_name, split_registration, split_sequential
from ..core.model import DeployEntry, Failure, PayloadError, ReleaseEntry, RolloutState, Slot
from ..core.snapshot import QueueMember, ServiceState, Snapshot, confirmed
from .client import NoAuthError, NoNodeError, ReadBatch, acl_entries, profile_of

# Per client: the hosts whose own parent was found genuine, with the (czxid, aversion) it had then.
_GENUINE_HOSTS = weakref.WeakKeyDictionary()


class _Batch(object):
    """Requests already sent; ``result()`` waits for their answers (sending first lets batches share a round trip)."""

    def __init__(self, collect, pending):
        self._collect = collect
        self._pending = pending

    def result(self):
        """The answers, as the reader's matching method returns them."""
        return self._collect(self._pending)


class Reader(object):
    """Pipelined reads that collect problems (``(path, sentence)``) instead of raising.

    ``watcher`` (optional) decides which reads carry a watch: ``watcher.callback(kind, path)``
    returns the callback to attach (``kind`` is ``children`` or ``exists``) or None, and
    ``watcher.missed(kind, path)`` hears that a read which carried a watch found no node, so the
    watch was not set. The
    agent's view uses it to arm exactly the watches it planned; ``listings`` keeps every child
    listing read, for the view to compare with later. ``batched`` (reads without watches): the
    reads sent before an answer is awaited go out as one multiRead request (``client.ReadBatch``).
    """

    def __init__(self, client, watcher=None, batched=False):
        self.client = client
        self.watcher = watcher
        self.problems = []
        self.listings = {}
        self.mtimes = {}
        self._batched = batched and watcher is None
        self._batch = None

    def _send(self, kind, path, watch):
        """The async answer to one read: in the open multi-read batch (``batched``), else a request of its own."""
        if self._batched:
            if self._batch is None or self._batch.sent:
                self._batch = ReadBatch(self.client)
            return self._batch.get_children(path) if kind == "children" else self._batch.get(path)
        if kind == "children":
            return self.client.get_children_async(path, watch=watch)
        return self.client.get_async(path, watch=watch)

    def _watch(self, kind, path):
        return self.watcher.callback(kind, path) if self.watcher is not None else None

    def _missed(self, kind, path):
        if self.watcher is not None:
            self.watcher.missed(kind, path)

    def send_children(self, paths):
        """Send the child listings of ``paths`` now; ``.result()`` of the returned batch waits for them."""
        pending = []
        for path in paths:
            watch = self._watch("children", path)
            pending.append((path, watch, self._send("children", path, watch)))
        return _Batch(self._children_results, pending)

    def _children_results(self, pending):
        result = {}
        for path, watch, async_result in pending:
            try:
                result[path] = sorted(async_result.get())
            except NoNodeError:
                if watch is not None:
                    self._missed("children", path)
                result[path] = None
        self.listings.update(result)
        return result

    def children(self, paths):
        """``{path: sorted children}``; a missing node maps to None."""
        return self.send_children(paths).result()

    def send_payloads(self, paths, payload_cls, empty_ok=False):
        """Send the data reads of ``paths`` now; ``.result()`` of the returned batch waits for them (see ``payloads``)."""
        pending = []
        for path in paths:
            watch = self._watch("exists", path)
            pending.append((path, watch, self._send("data", path, watch)))
        return _Batch(lambda batch: self._payload_results(batch, payload_cls, empty_ok), pending)

    def _payload_results(self, pending, payload_cls, empty_ok):
        result = {}
        for path, watch, async_result in pending:
            try:
                data, stat = async_result.get()
            except NoNodeError:
                if watch is not None:
                    self._missed("exists", path)
                continue
            except NoAuthError:
                # Created with an ACL that hides it from us (not by the collection's client): it counts, unread.
                self.problems.append((path, "%s cannot be read with this session's identity (NoAuth): it was not created with the "
                                            "tree's ACL profile; the deployer should inspect and delete it" % path))
                result[path] = (None, -1)
                continue
            self.mtimes[path] = stat.mtime / 1000.0
            if empty_ok and not data:
                result[path] = (None, stat.version)
                continue
            try:
                result[path] = (payload_cls.from_bytes(data, path), stat.version)
            except PayloadError as exc:
                self.problems.append((path, str(exc)))
                result[path] = (None, stat.version)
        return result

    def payloads(self, paths, payload_cls, empty_ok=False):
        """``{path: (payload, znode version)}`` for the nodes that exist.

        A node whose data does not parse maps to ``(None, version)`` and adds a problem.
        """
        return self.send_payloads(paths, payload_cls, empty_ok).result()

    def valid_names(self, parent, names, kind):
        """Keep children that are valid host or service names; report the others."""
        kept = []
        for name in names or ():
            try:
                kept.append(check_name(kind, name))
            except LayoutError:
                self.problems.append((parent, "ignored node %s/%s: not a valid %s name" % (parent, name, kind)))
        return kept

    def queue_members(self, parent, names, what):
        """Sequential children ``<name>-<seq>`` in sequence order; stray names are reported."""
        members = []
        for node in names or ():
            parsed = split_sequential(node)
            if parsed is None:
                self.problems.append((parent, "ignored %s node %s/%s: expected <name>-<10 digits>" % (what, parent, node)))
            else:
                members.append(QueueMember(node=node, name=parsed[0], sequence=parsed[1]))
        return tuple(sorted(members, key=lambda member: member.sequence))

    def registrations(self, parent, names):
        """``{host: version}`` from registration names ``<host>@<version>``; strays are reported."""
        registered = {}
        for node in names or ():
            parsed = split_registration(node)
            if parsed is None:
                self.problems.append((parent, "ignored registration %s/%s: expected <host>@<version>" % (parent, node)))
                continue
            host, version = parsed
            if host in registered:
                # Two live registrations of one host: keep the one that holds the rollout back.
                self.problems.append((parent, "host %s is registered twice in %s (%s and %s)" % (host, parent, registered[host], version)))
                version = min(registered[host], version)
            registered[host] = version
        return registered


def _leaf(path):
    return path.rsplit("/", 1)[1]


def _about(layout, service, path):
    """True if ``path`` is part of what the tree holds for ``service``."""
    parents = (layout.release(service), layout.current_service(service), layout.service_roster(service))
    return any(path == parent or path.startswith(parent + "/") for parent in parents)


def read_parts(reader, layout, names, with_global=False):
    """``(global part or None, {name: ServiceState})``: the services ``names`` and, ``with_global``, the rollout node and deploy queue.

    Every first-level request goes out before any answer is awaited, so the whole read takes
    one round trip, plus one for the payloads of the slots and failure records there are.
    """
    listings = [layout.deploy] if with_global else []
    for name in names:
        listings += [layout.service_roster(name), layout.current_service(name)] + layout.release_children(name)
    sent_children = reader.send_children(listings)
    # An empty staging node holds only slots: a controller took them for a service not being rolled out.
    sent_releases = reader.send_payloads([layout.release(name) for name in names], ReleaseEntry, empty_ok=True)
    sent_rollout = reader.send_payloads([layout.rollout] if with_global else [], RolloutState)
    children, releases, rollout_read = sent_children.result(), sent_releases.result(), sent_rollout.result()
    global_part = None
    if with_global:
        rollout, rollout_version = rollout_read.get(layout.rollout, (None, -1))
        global_part = (rollout, rollout_version, reader.queue_members(layout.deploy, children[layout.deploy], "deploy queue"))
    slot_paths, failure_paths = [], []
    for name in names:
        slot_paths += [layout.slot(name, h) for h in reader.valid_names(layout.slots(name), children[layout.slots(name)], "host")]
        failure_paths += [layout.failure(name, h) for h in reader.valid_names(layout.failures(name), children[layout.failures(name)], "host")]
    sent_slots = reader.send_payloads(slot_paths, Slot)
    sent_failures = reader.send_payloads(failure_paths, Failure)
    slots, failures = sent_slots.result(), sent_failures.result()
    profile = profile_of(reader.client)
    services = {}
    for name in names:
        release, release_version = releases.get(layout.release(name), (None, -1))
        ready, forged = reader.queue_members(layout.ready_queue(name), children[layout.ready_queue(name)], "ready queue"), ()
        if profile is not None and ready:
            held = {_leaf(path) for path in slots if path.startswith(layout.slots(name) + "/")}
            ready, forged = genuine_head(reader, layout, name, ready, held, release.max_parallel if release is not None else 1, profile)
        lacking = [path for path in layout.release_children(name) if children[path] is None]
        if release is not None and lacking:
            reader.problems.append((layout.release(name), "%s lacks its sub-trees %s: re-stage the service (zkrollout.dc.staging, or "
                                    "re-run the rollout) to repair it" % (layout.release(name), ", ".join(lacking))))
        services[name] = ServiceState(
            name=name,
            release=release,
            release_version=release_version,
            roster=tuple(reader.valid_names(layout.service_roster(name), children[layout.service_roster(name)], "host")),
            registrations=reader.registrations(layout.current_service(name), children[layout.current_service(name)]),
            ready_queue=ready,
            forged_ready=forged,
            slots={_leaf(path): payload for path, (payload, _version) in slots.items() if path.startswith(layout.slots(name) + "/")},
            failures={_leaf(path): payload for path, (payload, _version) in failures.items() if path.startswith(layout.failures(name) + "/")},
            problems=tuple(message for path, message in reader.problems if _about(layout, name, path)),
            missing_subtrees=tuple(path for path in layout.release_children(name) if release is not None and children[path] is None),
            slot_mtimes={_leaf(path): reader.mtimes[path] for path in slots if path in reader.mtimes and path.startswith(layout.slots(name) + "/")},
            versions={path: version for path, (_payload, version) in list(slots.items()) + list(failures.items())
                      if version >= 0 and (path.startswith(layout.slots(name) + "/") or path.startswith(layout.failures(name) + "/"))},
        )
    return global_part, services


def genuine_head(reader, layout, name, members, held, wanted, profile):
    """``(kept, forged)``: the ready queue ``members`` of ``name`` without the members near its head that another host's agent created.

    Under an ACL profile any agent may add to the ready queue; a member forged at the head, for
    a host that never takes its turn, would stall the service for every agent. Each member's
    ACL names its creator (``AclProfile.creator_refusal``), so members are checked from the
    head until ``wanted`` (the release's ``max_parallel``) hosts not holding a slot (``held``)
    were found with a genuine member: the ones whose turn is next. The rest of the queue is kept
    as it is, unchecked. Nothing is remembered between reads (a name can be reused by a new
    node), so a read costs about ``wanted`` ACL reads more per service. Forged members become problems.
    """
    kept, forged, hosts, position = [], [], set(), 0
    while position < len(members) and len(hosts) < wanted:
        batch = members[position:position + max(1, wanted - len(hosts))]
        position += len(batch)
        asked = [(member, reader.client.get_acls_async(layout.ready_member(name, member.node))) for member in batch]
        for member, answer in asked:
            try:
                refusal = profile.creator_refusal(acl_entries(answer.get()[0]), member.name)
            except NoNodeError:
                continue
            except NoAuthError:
                refusal = "its ACL cannot be read with this session's identity, so it was not created with the tree's ACL profile"
            if refusal is None:
                kept.append(member)
                if member.name not in held:
                    hosts.add(member.name)
            else:
                forged.append(member)
                reader.problems.append((layout.ready_queue(name), "ignored ready member %s: %s (forged by another host)"
                                        % (layout.ready_member(name, member.node), refusal)))
    return tuple(kept) + tuple(members[position:]), tuple(forged)


def read_snapshot(client, layout, services=None, liveness=None, batched=False):
    """Read the tree under ``layout.root`` into a Snapshot.

    With ``services``, only those services are read (plus the rollout node and the deploy
    queue); without, every service named anywhere in the tree, and the deploy entries' payloads.
    ``liveness`` (default: when reading the whole tree) also lists the agents' presence nodes
    and the controllers' session nodes, one listing each, in the same round trip. Under an ACL
    profile (``client.profile_of``) what the snapshot counts is confirmed by the hosts' own
    parents (``confirm_own_records``), so reports, controllers' plans and decisions alike see
    neither what an agent forged in the shared listings nor miss what it deleted there.
    ``batched``: each level of reads is one multiRead request (``Reader``).
    """
    reader = Reader(client, batched=batched)
    whole = services is None
    if whole and client.exists(layout.root) is None:
        return Snapshot(exists=False)
    liveness = whole if liveness is None else liveness
    sent_liveness = reader.send_children([layout.agents, layout.sessions] if liveness else [])
    if whole:
        top = reader.children([layout.roster, layout.current, layout.staging])
        services = sorted(set().union(*(reader.valid_names(parent, top[parent], "service") for parent in top)))
    (rollout, rollout_version, deploy_queue), states = read_parts(reader, layout, list(services), with_global=True)
    alive = sent_liveness.result()
    deploy_entries = {}
    if whole:
        payloads = reader.payloads([layout.deploy_entry(m.node) for m in deploy_queue], DeployEntry)
        deploy_entries = {_leaf(path): payload for path, (payload, _version) in payloads.items() if payload is not None}
    snapshot = Snapshot(
        rollout=rollout,
        rollout_version=rollout_version,
        deploy_queue=deploy_queue,
        deploy_entries=deploy_entries,
        services=states,
        problems=tuple(message for _path, message in reader.problems),
        live_agents=frozenset(alive.get(layout.agents) or ()) if liveness else None,
        live_sessions=frozenset(alive.get(layout.sessions) or ()) if liveness else None,
    )
    profile = profile_of(client)
    return snapshot if profile is None else confirm_own_records(client, layout, snapshot, sorted(states), profile)


def confirm_own_records(client, layout, snapshot, names, profile):
    """``snapshot`` with the registrations, slots and failure records of ``names`` confirmed by each host's own parent (``core.snapshot.confirmed``).

    One pipelined listing per host of those services (roster, or a node in the index), plus,
    the first time a host's parent is seen (or after it was re-created or its ACL changed), its
    ACL. That is the price of the ACL profile, paid by the reads of controllers and by the
    decision that stops an instance, never by an agent's own view: every agent may add to and
    remove from the service-wide listings, only the host itself to its own parent.
    """
    hosts = sorted(set().union(*(set(state.roster) | set(state.registrations) | set(state.slots) | set(state.failures)
                                 for state in (snapshot.service(name) for name in names))))
    sent = [(host, client.get_children_async(layout.host(host), include_data=True)) for host in hosts]
    known = _GENUINE_HOSTS.setdefault(client, {})
    records, unchecked, problems = {}, [], []
    for host, answer in sent:
        try:
            children, stat = answer.get()
        except NoNodeError:
            continue
        records[host] = children
        if known.get(host) != (stat.czxid, stat.aversion):
            unchecked.append((host, (stat.czxid, stat.aversion), client.get_acls_async(layout.host(host))))
    for host, listed, answer in unchecked:
        try:
            acls, stat = answer.get()
        except NoNodeError:
            records.pop(host)
            continue
        if (stat.czxid, stat.aversion) != listed:
            # Re-created or re-ACLed between the two reads: count nothing of it this time.
            records.pop(host)
            continue
        refusal = profile.host_refusal(acl_entries(acls), host)
        if refusal is not None:
            records.pop(host)
            known.pop(host, None)
            problems.append((host, "%s is not that host's own: %s" % (layout.host(host), refusal)))
        else:
            known[host] = (stat.czxid, stat.aversion)
    return confirmed(snapshot, names, records, problems)


def decision_snapshot(client, layout, names):
    """The fresh read a decision that stops an instance rests on: ``read_snapshot`` of ``names`` (confirmed under an ACL profile).

    It is on the critical path of every hand-off, so its reads go out as multiRead requests:
    one for the listings and payloads of every service, one for the slots and failure records
    there are. Sent one by one, the same twenty-odd reads cost the client a loop turn each, which
    made this read several times slower than a round trip on a busy host.
    """
    return read_snapshot(client, layout, services=names, batched=True)
