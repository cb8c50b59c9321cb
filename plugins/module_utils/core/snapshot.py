# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout tree at one moment, as immutable values: what every decision and report reads.

``store.reads`` builds these from ZooKeeper (the whole tree for controllers, a bounded view for
an agent); the rules (``core.rules``), ``decide`` and the reports only ever see these values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .layout import split_registration
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


def confirmed(snapshot, names, records, problems=()):
    """``snapshot`` with the registrations of ``names`` taken from the hosts' own parents instead of the service-wide index.

    ``records`` maps each host whose own parent is genuine (``AclProfile.host_refusal``) to its
    children (``<svc>@<version>``); a host missing there counts as not registered. So a
    registration another agent forged in ``current/<svc>`` is not counted, and one it deleted
    there still is. Each disagreement with the index, and each of ``problems`` (``(host,
    sentence)``), becomes a problem of the service, named by path.
    """
    services = dict(snapshot.services)
    for name in names:
        state = snapshot.service(name)
        versions = {}
        for host, children in records.items():
            for node in children:
                parsed = split_registration(node)
                if parsed is not None and parsed[0] == name:
                    versions[host] = min(versions[host], parsed[1]) if host in versions else parsed[1]
        notes = [sentence for host, sentence in problems if host in set(state.roster) | set(state.registrations)]
        for host, version in sorted(state.registrations.items()):
            if versions.get(host) != version:
                notes.append("the registration of %s %s on %s is not in that host's own parent: not counted (written by another "
                             "host, or the instance just changed)" % (name, version, host))
        for host, version in sorted(versions.items()):
            if host not in state.registrations:
                notes.append("the registration of %s %s on %s is missing from the service's listing (deleted by another host?): "
                             "counted from that host's own parent" % (name, version, host))
        services[name] = replace(state, registrations=versions, problems=state.problems + tuple(notes))
    return replace(snapshot, services=services)
