# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout tree at one moment, as immutable values: what every decision and report reads.

``store.reads`` builds these from ZooKeeper (the whole tree for controllers, a bounded view for
an agent); the rules (``core.rules``), ``decide`` and the reports only ever see these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .layout import host_copy_name, host_mark, split_host_mark, split_registration
from .model import ReleaseEntry, RolloutState


@dataclass(frozen=True)
class QueueMember(object):
    """A sequential child (ready queue or deploy queue): its node name, owner name and sequence."""

    node: str
    name: str
    sequence: int


@dataclass(frozen=True)
class ReleaseRefusal(object):
    """A release entry this host does not use (not signed by a trusted key, or for another service).

    Only its claimed rollout id and version are kept, to name it in the failure record; nothing
    else of an entry that did not verify is ever read.
    """

    rollout: str
    version: str
    reason: str


@dataclass(frozen=True)
class ServiceState(object):
    """Everything the tree says about one service.

    ``roster`` is the sorted hosts that run it; ``registrations`` maps each healthy host to the
    version it runs; ``slots`` and ``failures`` map hosts to their payloads (None: the node is
    there but its payload is malformed, which still counts: a held slot, a halting failure);
    ``problems`` names every malformed node of the service; ``missing_subtrees`` the sub-trees
    (ready, upgrading, failed) that a staged release lacks (deleted by hand): staging repairs them.
    ``refusal`` is set (and ``release`` None) when an agent refused the staged entry (core.signing).
    ``own_records`` (only in a snapshot ``confirmed`` under an ACL profile) maps each host whose
    own parent is genuine to the names of this service's nodes there (``<svc>@<version>``,
    ``slot:<svc>``, ``failed:<svc>``): what a writer deletes along with the index's nodes;
    ``listed_slots``/``listed_failures`` (there too) are the hosts whose node the index holds,
    counted or not (None: the keys of ``slots``/``failures``). ``forged_ready`` are the ready-queue
    members another host created, left out of ``ready_queue`` (``store.reads.genuine_head``).
    ``versions`` maps the path of each slot and failure record that was read to its data version:
    a writer deletes it against that version (``deletes_of``), so a slot renewed or rewritten
    after the read is not freed on what was decided about the old one.
    """

    name: str
    release: ReleaseEntry = None
    release_version: int = -1
    roster: tuple = ()
    registrations: dict = field(default_factory=dict)
    ready_queue: tuple = ()
    slots: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    problems: tuple = ()
    missing_subtrees: tuple = ()
    slot_mtimes: dict = field(default_factory=dict)
    refusal: ReleaseRefusal = None
    own_records: dict = field(default_factory=dict)
    listed_slots: frozenset = None
    listed_failures: frozenset = None
    forged_ready: tuple = ()
    versions: dict = field(default_factory=dict)

    def own_record(self, host, name):
        """True if ``host``'s own parent holds ``name`` (a snapshot not confirmed holds none)."""
        return name in self.own_records.get(host, ())

    def held_nodes(self, layout, kind, hosts=None):
        """The paths that hold ``kind`` (``"slot"`` or ``"failed"``) for ``hosts`` (default: all): the index's node and the host's copy.

        What a writer deletes to free a slot or clear a failure record: the index's node only
        where the index holds one (forged or not), the copy only where the host's own parent does.
        """
        slot = kind == "slot"
        listed = self.listed_slots if slot else self.listed_failures
        listed = frozenset(self.slots if slot else self.failures) if listed is None else listed
        hosts = sorted(listed | set(self.slots if slot else self.failures)) if hosts is None else hosts
        index = layout.slot if slot else layout.failure
        copy = layout.host_slot if slot else layout.host_failure
        return ([index(self.name, host) for host in hosts if host in listed] +
                [copy(host, self.name) for host in hosts if self.own_record(host, host_mark(kind, self.name))])

    def deletes_of(self, layout, kind, hosts=None):
        """``[(path, version)]``: what ``held_nodes`` names, each with the version read (-1 where none was: a copy, a node not readable)."""
        return [(path, self.versions.get(path, -1)) for path in self.held_nodes(layout, kind, hosts)]

    @property
    def ready_hosts(self):
        """Hosts in the ready queue, first come first; a host appears once (its oldest entry)."""
        seen = []
        for member in self.ready_queue:
            if member.name not in seen:
                seen.append(member.name)
        return seen


@dataclass(frozen=True)
class Snapshot(object):
    """The rollout tree at one moment.

    ``live_agents`` (hosts whose agent is connected) and ``live_sessions`` (controller
    sessions) are None when the read did not ask for them (an agent's own view).
    ``own_parents`` are the hosts whose own parent was found genuine, in a snapshot ``confirmed``
    under an ACL profile; None otherwise.
    """

    rollout: RolloutState = None
    rollout_version: int = -1
    deploy_queue: tuple = ()
    deploy_entries: dict = field(default_factory=dict)
    services: dict = field(default_factory=dict)
    problems: tuple = ()
    exists: bool = True
    live_agents: frozenset = None
    live_sessions: frozenset = None
    own_parents: frozenset = None

    def service(self, name):
        """The ServiceState of ``name`` (empty if the tree knows nothing of it)."""
        return self.services.get(name) or ServiceState(name=name)

    def roster_of(self, service):
        """Sorted hosts that run ``service`` (its roster)."""
        return list(self.service(service).roster)

    def roster_sizes(self):
        """Number of roster hosts per service."""
        return {name: len(state.roster) for name, state in self.services.items() if state.roster}

    @property
    def hosts(self):
        """``{host: sorted services}`` for every host in a roster or registered somewhere."""
        hosts = {}
        for name, state in sorted(self.services.items()):
            for host in set(state.roster) | set(state.registrations):
                hosts.setdefault(host, []).append(name)
        return hosts

    @property
    def queued_services(self):
        """Services in the deploy queue, head first."""
        return [member.name for member in self.deploy_queue]

    @property
    def slots_held(self):
        """``[(service, host, Slot)]`` for every held upgrade slot."""
        return [(name, host, slot) for name, state in sorted(self.services.items()) for host, slot in sorted(state.slots.items())]


def _own_marks(children, name):
    """``(versions, marks)`` of service ``name`` in one host's own parent: registered versions, and ``slot``/``failed`` copies."""
    versions, marks = [], set()
    for node in children:
        registration, mark = split_registration(node), split_host_mark(node)
        if registration is not None and registration[0] == name:
            versions.append(registration[1])
        elif mark is not None and mark[1] == name:
            marks.add(mark[0])
    return versions, marks


def _confirm_held(kind, name, index, marked, records):
    """``(confirmed, notes)`` for the slots or failure records ``index`` of ``name`` against the copies ``marked`` (hosts).

    A node of a host without a genuine own parent cannot be checked and counts, which only makes
    a decision stricter; one whose host's parent lacks the copy was written by another host and
    does not count; a copy whose node is missing from the index (deleted by another host) counts,
    with an unknown payload (None), which still holds a slot or halts.
    """
    held, notes = {}, []
    for host, payload in sorted(index.items()):
        if host not in records or host in marked:
            held[host] = payload
        else:
            notes.append("the %s of %s on %s is not in that host's own parent: not counted (written by another host)" % (kind, name, host))
    for host in sorted(marked - set(index)):
        held[host] = None
        notes.append("the %s of %s on %s is missing from the service's listing (deleted by another host?): counted from that host's "
                     "own parent" % (kind, name, host))
    return held, notes


def confirmed(snapshot, names, records, problems=()):
    """``snapshot`` with what a decision counts for ``names`` taken from the hosts' own parents instead of the service-wide index.

    ``records`` maps each host whose own parent is genuine (``AclProfile.host_refusal``) to its
    children (``<svc>@<version>``, ``slot:<svc>``, ``failed:<svc>``). Registrations come from
    there alone: a host missing there counts as not registered, so a registration another agent
    forged in ``current/<svc>`` is not counted, and one it deleted there still is. Slots and
    failure records are confirmed the same way (``_confirm_held``), so no other host can free a
    slot (and with it ``max_parallel``) or lift a halt. Each disagreement with the index, and each
    of ``problems`` (``(host, sentence)``), becomes a problem of the service, named by path.
    """
    services = dict(snapshot.services)
    for name in names:
        state = snapshot.service(name)
        versions, slot_marks, failure_marks, own = {}, set(), set(), {}
        for host, children in records.items():
            found, marks = _own_marks(children, name)
            if found:
                versions[host] = min(found)
            if "slot" in marks:
                slot_marks.add(host)
            if "failed" in marks:
                failure_marks.add(host)
            own[host] = frozenset([host_copy_name(name, version) for version in found] + [host_mark(mark, name) for mark in marks])
        notes = [sentence for host, sentence in problems if host in set(state.roster) | set(state.registrations)]
        for host, version in sorted(state.registrations.items()):
            if versions.get(host) != version:
                notes.append("the registration of %s %s on %s is not in that host's own parent: not counted (written by another "
                             "host, or the instance just changed)" % (name, version, host))
        for host, version in sorted(versions.items()):
            if host not in state.registrations:
                notes.append("the registration of %s %s on %s is missing from the service's listing (deleted by another host?): "
                             "counted from that host's own parent" % (name, version, host))
        slots, slot_notes = _confirm_held("slot", name, state.slots, slot_marks, records)
        failures, failure_notes = _confirm_held("failure record", name, state.failures, failure_marks, records)
        services[name] = replace(state, registrations=versions, slots=slots, failures=failures, own_records=own,
                                 listed_slots=frozenset(state.slots), listed_failures=frozenset(state.failures),
                                 problems=state.problems + tuple(notes + slot_notes + failure_notes))
    return replace(snapshot, services=services, own_parents=frozenset(records))
