# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nodes one host's agent owns in the tree, and every write that keeps them.

``HostNodes`` is the agent's side of the store, next to its watched view (``store.views``) and
the slot primitive (``store.slots``): its roster memberships, its presence node, its
registrations (and, under an ACL profile, their copies in its own parent ``hosts/<host>``), its
ready-queue members and its failure records. It remembers what this session wrote
(``registered``, ``presence``, ``own_parent``, ``roster_written``) and forgets it all on a new
session (``new_session``): ephemeral nodes of an older session of ours are replaced, never
trusted.

Every call happens on the agent's loop or health thread; ``locks`` (one per service, shared with
the agent's switch and health probe) keep a registration and its copy from racing a health
verdict that deregisters.
"""

from __future__ import annotations

import time

from ..core.layout import check_name, split_registration, split_sequential
from ..core.model import FAILURE_REASON_CHARS, Failure, PayloadError, Slot, printable
from ..core.rules import LEGACY_AGENT_OWNER, agent_owner
from .client import NoAuthError, NodeExistsError, NoNodeError, RolledBackError, acl_entries, profile_of
from .slots import finish_turn, release_slot
from .views import own_registrations


class HostNodes(object):
    """What the agent of ``host`` writes for its ``services``; ``client`` is set once the agent connects."""

    def __init__(self, layout, host, services, locks, log, wake, client=None):
        self.client = client
        self.layout = layout
        self.host = host
        self.services = list(services)
        self.locks = locks
        self.log = log
        self.wake = wake
        # What this session wrote: per service the index path of our registration (or None),
        # our presence node, whether our own parent is ours to write copies in, and whether the
        # roster and the copies were written.
        self.registered = {}
        self.presence = None
        self.own_parent = False
        self.roster_written = False

    @property
    def owners(self):
        """The slot owners that are this host's agent (this version's name, and the older one)."""
        return (agent_owner(self.host), LEGACY_AGENT_OWNER)

    def new_session(self):
        """A new session: our ephemeral nodes may be gone, and those of the old one go when it expires; none is ours."""
        self.roster_written = False
        self.presence = None
        self.registered = {}

    def ensure_roster(self):
        """Once per session: the containers, our roster memberships, and none for services we no longer run."""
        if self.roster_written:
            return
        for path in self.layout.containers():
            self.client.ensure_path(path)
        self._ensure_own_parent()
        for name in self.services:
            try:
                self.client.create(self.layout.roster_member(name, self.host), b"", makepath=True)
            except NodeExistsError:
                pass
        for name in self.client.get_children(self.layout.roster):
            try:
                if name not in self.services and self.client.exists(self.layout.roster_member(check_name("service", name), self.host)):
                    self.client.delete(self.layout.roster_member(name, self.host))
            except (NoNodeError, ValueError):
                pass
            except NoAuthError:
                self.log.warning("this host no longer runs %s, but under the ACL profile only the deployer removes %s (zkrollout.dc."
                                 "rollout_control action=leave_roster service=%s host=%s): until it does, the service's quorum counts "
                                 "this host", name, self.layout.roster_member(name, self.host), name, self.host)
        self.roster_written = True

    def _ensure_own_parent(self):
        """Under an ACL profile, check ``hosts/<host>``, where the copies of our registrations go; then write the copies this session lacks.

        Only the deployer creates it (any zkrollout.dc module that writes creates it for each
        agent identity of the profile): until then we register in the shared listing alone, which
        decisions do not count, and a watch on its creation brings us back here. Without a
        profile no decision confirms a registration (anyone may write anything), so there are no
        copies to keep.
        """
        self.own_parent = False
        profile = profile_of(self.client)
        if profile is None:
            return
        path = self.layout.host(self.host)
        if self.client.exists(path, watch=self._parent_changed) is None:
            self.log.error("%s does not exist, so no decision counts this host's instances: under the ACL profile the deployer "
                           "creates it (re-run the rollout, or any zkrollout.dc module that writes, with this host's identity in "
                           "the profile's agents)", path)
            return
        refusal = profile.host_refusal(acl_entries(self.client.get_acls(path)[0]), self.host, own=True)
        if refusal is not None:
            self.log.error("%s is not this host's own, so no decision counts its instances: %s", path, refusal)
            return
        self.own_parent = True
        for name in sorted(self.registered):
            # Under the service's lock: a health verdict deregistering meanwhile must not see its copy come back.
            with self.locks[name]:
                registered = self.registered.get(name)
                if registered:
                    try:
                        self.client.create(self._copy_of(name, registered), b"", ephemeral=True)
                    except NodeExistsError:
                        pass

    def _parent_changed(self, _event):
        # Runs on kazoo's thread: only ask the loop to write the roster and the copies again.
        self.roster_written = False
        self.wake()

    def _copy_of(self, name, registered):
        """The copy in our own parent of our registration ``registered`` (an index path) of ``name``."""
        return self.layout.registration_nodes(name, self.host, split_registration(registered.rsplit("/", 1)[1])[1])[1]

    def announce_presence(self):
        """Create our presence node, after one full iteration of this session registered every healthy instance.

        Controllers read "connected agent, no registration" as *down* (stopping it costs no
        quorum), and "no agent" as *unknown*. Each later registration bumps the node's version
        in the same transaction, so a controller's slot decided on "down" fails if we
        registered meanwhile (``store.slots.take_slot`` checks that version).
        """
        path = self.layout.agent(self.host)
        try:
            self.client.create(path, b"", ephemeral=True)
        except NodeExistsError:
            stat = self.client.exists(path)
            if stat is not None and stat.ephemeralOwner != self.client.client_id[0]:
                # Left by an older session of ours: it goes when that session expires; replace it now.
                self.delete_quietly(path, stat.version)
                self.client.create(path, b"", ephemeral=True)
        except NoNodeError:
            self.client.ensure_path(self.layout.agents)
            self.client.create(path, b"", ephemeral=True)
        self.presence = path

    def _own_registrations(self, name):
        """``{node: version}`` of our registrations of ``name``, read fresh."""
        try:
            return own_registrations(self.client.get_children(self.layout.current_service(name)), self.host)
        except NoNodeError:
            return {}

    def register(self, name, version):
        """Register ``version`` of ``name`` as healthy: our own ephemeral node, and no other of ours.

        A node of that name left by an older session of ours is replaced, never trusted: it goes
        when that session expires. Registrations of another version are removed first.
        """
        with self.locks[name]:
            self._register(name, version)

    def _register(self, name, version):
        path, copy = self.layout.registration_nodes(name, self.host, version)
        ours = self.client.client_id[0]
        # Every version we have a node of, in the index or (under a profile) in our own parent:
        # another host may have deleted our index entry, never our copy.
        for other in sorted(set(self._own_versions(name)) - {version}):
            self._delete_registration(name, other)
        stat = self.client.exists(path)
        copy_stat = self.client.exists(copy) if self.own_parent else None
        # Left by an older session of ours: they go when that session expires; replace them now.
        if copy_stat is not None and copy_stat.ephemeralOwner != ours:
            self.delete_quietly(copy, copy_stat.version)
            copy_stat = None
        if stat is not None and stat.ephemeralOwner != ours:
            self.delete_quietly(path, stat.version)
            stat = None
        if stat is not None and (copy_stat is not None or not self.own_parent):
            self.registered[name] = path
            return
        self.client.ensure_path(self.layout.current_service(name))
        wanted = ([path] if stat is None else []) + ([copy] if self.own_parent and copy_stat is None else [])
        results = self._create_registration(wanted, self.presence)
        if any(isinstance(result, NodeExistsError) for result in results):
            raise NodeExistsError(path)
        if any(isinstance(result, Exception) for result in results):
            if copy in wanted and isinstance(results[wanted.index(copy)], (NoNodeError, NoAuthError)):
                # Our own parent is gone or not ours (see _ensure_own_parent): register in the listing alone until it is back.
                self.log.error("service %s: cannot write %s (%s): registered in %s alone, which decisions under the ACL profile do not count",
                               name, copy, results[wanted.index(copy)].__class__.__name__, self.layout.current_service(name))
                self.roster_written, self.own_parent = False, False
                wanted.remove(copy)
            # Our presence node is gone (an operator, or a session change in between): register alone, announce again later.
            self.presence = None
            errors = [result for result in self._create_registration(wanted, None) if isinstance(result, Exception)]
            if errors:
                raise next((error for error in errors if not isinstance(error, RolledBackError)), errors[0])
        self.registered[name] = path

    def _own_versions(self, name):
        """The versions of ``name`` we have a registration or (under a profile) a copy of, read fresh."""
        versions = set(self._own_registrations(name).values())
        if self.own_parent:
            try:
                versions |= set(own_registrations(self.client.get_children(self.layout.host(self.host)), name).values())
            except NoNodeError:
                pass
        return versions

    def _create_registration(self, paths, presence):
        transaction = self.client.transaction()
        for path in paths:
            transaction.create(path, b"", ephemeral=True)
        if presence:
            transaction.set_data(presence, b"")
        return transaction.commit()

    def deregister(self, name):
        """Remove our registrations of ``name``, if any."""
        with self.locks[name]:
            known = self.registered.get(name)
            # The node this session registered is known; only without one are the listings read.
            versions = [split_registration(known.rsplit("/", 1)[1])[1]] if known else sorted(self._own_versions(name))
            for version in versions:
                self._delete_registration(name, version)
            self.registered[name] = None

    def _delete_registration(self, name, version):
        """Delete our registration of ``version`` and its copy: the copy first, so that no decision counts an instance the index lost."""
        path, copy = self.layout.registration_nodes(name, self.host, version)
        if self.own_parent:
            try:
                self.delete_quietly(copy)
            except NoAuthError:
                pass  # a parent that is not ours (see _ensure_own_parent): nothing of ours is there
        self.delete_quietly(path)

    def leaving_registration(self, name):
        """The nodes of the registration this session made for ``name`` (deleted when its slot is taken), or []."""
        known = self.registered.get(name)
        if not known:
            return []
        copy = self._copy_of(name, known)
        return [known, copy] if self.own_parent and self.client.exists(copy) is not None else [known]

    def delete_quietly(self, path, version=-1):
        try:
            self.client.delete(path, version=version)
        except NoNodeError:
            pass

    def ready_members(self, name):
        try:
            children = self.client.get_children(self.layout.ready_queue(name))
        except NoNodeError:
            return []
        return [node for node in children if (split_sequential(node) or (None,))[0] == self.host]

    def leave_ready(self, name):
        """Delete our ready-queue members."""
        for node in self.ready_members(name):
            try:
                self.client.delete(self.layout.ready_member(name, node))
            except NoNodeError:
                pass

    def release_slot(self, name, leave_ready=False):
        """Delete this host's upgrade slot of ``name``, if any; with ``leave_ready``, its ready-queue members too, at once."""
        leaving = [self.layout.ready_member(name, node) for node in self.ready_members(name)] if leave_ready else []
        # Only a slot this host's agent took: a controller's (push mode) is not ours to free.
        if not release_slot(self.client, self.layout, name, self.host, owner=self.owners, leaving=leaving):
            for path in leaving:
                self.delete_quietly(path)

    def record_failure(self, name, version, stage, reason, rolled_back_to=None):
        """Write ``failed/<host>`` for the service (create or replace); under an ACL profile with its copy in our own parent, at once.

        The copy (``layout.host_failure``) is what halts the service for a decision: another host
        can delete the record from the shared listing, never the copy.
        """
        path = self.layout.failure(name, self.host)
        copy = self.layout.host_failure(self.host, name) if self.own_parent else None
        data = Failure(version=version, stage=stage, reason=printable(reason, FAILURE_REASON_CHARS), at=time.time(),
                       rolled_back_to=rolled_back_to).to_bytes()
        replace = False
        for _attempt in range(3):
            sent = [self.client.exists_async(node) for node in (path, copy) if node]
            stat, copy_stat = [answer.get() for answer in sent] + ([] if copy else [None])
            transaction = self.client.transaction()
            if stat is None:
                transaction.create(path, data)
            elif replace:
                # A record we may not rewrite (another host's agent created it, or an older identity
                # of ours): agents may delete records, so it is replaced by ours.
                transaction.delete(path)
                transaction.create(path, data)
            else:
                transaction.set_data(path, data)
            if copy and copy_stat is None:
                transaction.create(copy, b"")
            results = transaction.commit()
            errors = [result for result in results if isinstance(result, Exception) and not isinstance(result, RolledBackError)]
            if not errors:
                return
            if isinstance(results[0], NoNodeError) and stat is None:
                self.log.warning("service %s: cannot record the failure, the release was removed", name)
                return
            if isinstance(results[0], NoAuthError) and stat is not None:
                replace = True
            elif copy and isinstance(results[-1], (NoNodeError, NoAuthError)) and copy_stat is None:
                # Our own parent is gone or not ours (see _ensure_own_parent): record in the listing alone.
                self.log.error("service %s: cannot write %s (%s): the failure is recorded in %s alone, which decisions under the "
                               "ACL profile do not count", name, copy, results[-1].__class__.__name__, path)
                self.roster_written, self.own_parent, copy = False, False, None
        # Never dropped: the caller keeps its slot (and the service stays halted) until a later try records it.
        raise errors[0]

    def finish_turn(self, name, version):
        """End our turn of ``name`` on ``version`` in one transaction (``store.slots.finish_turn``); True if it did.

        On False nothing was written: the caller registers and releases step by step.
        """
        registration = finish_turn(self.client, self.layout, name, self.host, version, owner=self.owners, presence=self.presence,
                                   with_copy=self.own_parent)
        if registration is None:
            return False
        self.registered[name] = registration
        return True

    def slot_took_registration(self, name):
        """Our slot's transaction deleted our registration of ``name`` (``leaving_registration``): none is left."""
        self.registered[name] = None

    def join_ready(self, name):
        """Join the ready queue of ``name`` (an ephemeral sequential member), unless we are in it."""
        if not self.ready_members(name):
            self.client.create(self.layout.ready_prefix(name, self.host), b"", ephemeral=True, sequence=True)

    def holds_slot(self, name):
        """True if this host's slot of ``name`` exists and this agent took it (a fresh read; ZooKeeper errors propagate)."""
        path = self.layout.slot(name, self.host)
        try:
            data, _stat = self.client.get(path)
        except NoNodeError:
            return False
        try:
            return Slot.from_bytes(data, path).owner in self.owners
        except PayloadError:
            return False
