# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: quorum
short_description: Run a play on each host only while it holds an upgrade slot in ZooKeeper
version_added: 0.1.0
description:
  - A variant of the C(free) strategy for plays that upgrade hosts from the controller
    (package, config, restart). A host starts its first task only after taking an upgrade slot
    of the service in the same ZooKeeper accounting as the zkrollout agents, so several
    controllers and the agents share one budget, and hosts that are already down count against it.
  - A slot is taken under the service's lock, on a fresh read, when fewer than C(max_parallel)
    slots are held and C(healthy - 1 >= quorum), where healthy hosts are the ones registered in
    C(<root>/current/<service>) (by the host's agent) that hold no slot. Hosts that are not
    registered count against the quorum; one whose agent is connected is down and costs no quorum
    to stop, one without a connected agent is unknown (see below). Hosts are tried in inventory order; one that has to wait does not hold back a later
    host that may start.
  - "Sliding window, no batch barrier as with C(serial): as soon as a host has finished the play
    and its instance is registered healthy again, its slot is released and the next host starts.
    Hosts whose turn would break the quorum wait, with a message such as
    C(zkrollout.dc.quorum: h3 waiting: A has 3 healthy, quorum 3)."
  - A host that fails (or becomes unreachable, or does not register healthy within
    C(zkrollout_health_wait) seconds after its play) keeps its slot - its instance is in an
    unknown state and stays counted as down - and no further host starts once more hosts failed
    than C(max_fail_percentage) of the play allows (none by default). The play then fails.
  - "A host that is not registered counts as down (stopping it costs no quorum) only while its
    agent is connected (its node under C(<root>/agents)); the slot is then fenced on that node's
    version, which each registration bumps. Without a connected agent its state is unknown and
    it may stop only while the registered healthy hosts alone meet the quorum, so a wave of
    expired agent sessions never lets a play stop serving instances."
  - "Slots carry their owner (C(controller:<zkrollout_controller_id>)), the ZooKeeper session
    that took them (its ephemeral node under C(<root>/sessions)) and a lease of
    C(zkrollout_slot_timeout) seconds that the play renews while the host is in its play. If the
    controller dies, a re-run with the same controller id adopts its slots (new session, no new
    quorum check: those hosts counted as down all along) and continues. Another controller
    releases a slot only once its owner's session is gone and the lease ran out by ZooKeeper's
    clock (the slot node's mtime), never on its own clock; M(zkrollout.dc.rollout_control) with
    C(action=release_slot) frees a slot whose owner's session is gone (or, with C(force=true), any)."
  - ansible-core 2.19 prints a deprecation warning for strategy plugins that are not part of
    ansible-core; this plugin is optional and thin (the slot logic is the collection's shared
    core), and the agents need no strategy at all.
  - "Play variables: C(zkrollout_service) (required); C(zkrollout_quorum) (integer or percentage
    of the hosts of the service; default the quorum of C(<root>/staging/<service>); when both
    are set the larger one applies); a quorum that no host could ever stop under is refused before any host starts.
    C(zkrollout_max_parallel) (default that of the staging entry, else 1; when both are set the smaller one applies); C(zkrollout_version)
    (recorded in the slot and required of the registration before the slot is released; default
    the staging entry's version, else any registration releases the slot);
    C(zkrollout_slot_timeout) (the lease of a slot, renewed while the host's play runs: seconds
    without renewal, and without its owner's session, after which it counts as abandoned; default 3600);
    C(zkrollout_health_wait) (seconds to wait after the play for the host to register healthy,
    default 60); C(zkrollout_wait_timeout) (seconds the play may go without any host starting or
    finishing while hosts wait for a slot, default 3600); C(zkrollout_controller_id) (default
    C(ansible-playbook@<controller host name>)); the host id is the host variable
    C(zkrollout_host_id), default C(inventory_hostname); and the connection variables of the
    playbooks, C(zkrollout_zk_hosts), C(zkrollout_zk_root), C(zkrollout_zk_tls),
    C(zkrollout_zk_ca) and the other C(zkrollout_zk_*)."
author:
  - zkrollout.dc contributors (@zkrollout)
notes:
  - Hosts need the zkrollout agent (role M(zkrollout.dc.agent)) to register their instances; a
    service upgraded by the play should use the agent's C(external) driver, so the agent reports
    its health and version without starting or stopping it.
  - A registration lags the instance by the agent's health check (C(fall) failed checks). End the
    play with a health check of your own (for example M(ansible.builtin.uri) until it answers),
    and set C(zkrollout_version), so a slot is never released on the strength of a stale registration.
  - Two plays that run at the same time on the same service need different
    C(zkrollout_controller_id)s; the same id means "my own slots" and is meant for a re-run.
  - Do not combine with C(serial); the slots are the batches.
"""

import socket
import threading
import time

from ansible.errors import AnsibleError
from ansible.plugins.strategy.free import StrategyModule as FreeStrategyModule
from ansible.template import Templar
from ansible.utils.display import Display

from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import PayloadError, Slot, validate_owner, validate_quorum, validate_version
from ansible_collections.zkrollout.dc.plugins.module_utils.core.plan import PlanError, check_service, slot_verdict
from ansible_collections.zkrollout.dc.plugins.module_utils.core.rules import (
    CONTROLLER_OWNER,
    controller_owner,
    healthy_hosts,
    service_hosts,
    slot_owner_alive,
    strictest_limits,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import ZK_ERRORS, ConnectionOptions, ZkConnectionError, connect, disconnect
from ansible_collections.zkrollout.dc.plugins.module_utils.store.commits import create_parents, watch_listings
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.store.slots import (
    adopt_slot,
    announce_session,
    lease_expired,
    presence_checks,
    release_slot,
    renew_slot,
    take_slot,
    zookeeper_now,
)

display = Display()

# A host's way through the play: waiting -> admitted (holds a slot) -> releasing -> done, or failed
# (keeps its slot), or skipped (never started because too many hosts failed).
WAITING = "waiting"
ADMITTED = "admitted"
RELEASING = "releasing"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
SETTINGS = {
    "zkrollout_service": None,
    "zkrollout_quorum": None,
    "zkrollout_max_parallel": None,
    "zkrollout_version": None,
    "zkrollout_slot_timeout": 3600,
    "zkrollout_health_wait": 60,
    "zkrollout_wait_timeout": 3600,
    "zkrollout_controller_id": None,
}
# ZooKeeper is read when a watch fires, and at least this often.
TICK = 1.0
PREFIX = "zkrollout.dc.quorum: "


class QuorumGate(object):
    """Admits hosts to the play one slot at a time; see the plugin's DOCUMENTATION."""

    def __init__(self, settings, connection, host_ids, max_fail_percentage):
        self.service = settings["zkrollout_service"]
        if not self.service:
            raise AnsibleError("strategy zkrollout.dc.quorum needs the play variable zkrollout_service (the service this play upgrades)")
        try:
            self.quorum = None if settings["zkrollout_quorum"] is None else validate_quorum(settings["zkrollout_quorum"], field_name="zkrollout_quorum")
            self.version = None if not settings["zkrollout_version"] else validate_version(settings["zkrollout_version"], field_name="zkrollout_version")
            # Every slot of this play records the owner: one that readers refuse would leave slots nobody can read.
            self.owner = validate_owner(controller_owner(settings["zkrollout_controller_id"] or "ansible-playbook@%s" % socket.gethostname()),
                                        field_name="zkrollout_controller_id")
        except PayloadError as exc:
            raise AnsibleError("strategy zkrollout.dc.quorum: %s" % exc) from exc
        self.max_parallel = None if settings["zkrollout_max_parallel"] is None else _number(settings, "zkrollout_max_parallel", int, 1)
        self.slot_timeout = _number(settings, "zkrollout_slot_timeout", float, 1)
        self.health_wait = _number(settings, "zkrollout_health_wait", float, 0)
        self.wait_timeout = _number(settings, "zkrollout_wait_timeout", float, 1)
        self.host_ids = host_ids
        self.state = {name: WAITING for name in host_ids}
        self.finished_at = {}
        self.allowed_failures = int(len(host_ids) * (max_fail_percentage or 0) / 100)
        self.last_progress = time.monotonic()
        self.next_check = 0.0
        self.last_wait = None
        self.zk_trouble = None
        self.woken = threading.Event()
        self.layout = Layout(connection.root)
        try:
            self.client = connect(connection)
        except ZkConnectionError as exc:
            raise AnsibleError("strategy zkrollout.dc.quorum: %s" % exc) from exc
        self.session_path, self.renewed_at = None, 0.0
        try:
            self._ensure_session()
            self._announce(read_snapshot(self.client, self.layout, services=[self.service], liveness=True))
            # The sub-trees of a staged service: agents and modules expect all three once the staging node exists.
            create_parents(self.client, self.layout.release_children(self.service))
        except BaseException:
            self.close()
            raise

    def close(self):
        """Disconnect; slots of failed hosts stay held on purpose."""
        disconnect(self.client)

    # The numbers: the stricter of the play's and the staging entry's.
    def _numbers(self, snapshot):
        """``(resolved quorum, max_parallel, target version or None)`` on ``snapshot``."""
        release = snapshot.service(self.service).release
        try:
            resolved, max_parallel = strictest_limits(snapshot, self.service, self.quorum, self.max_parallel)
        except ValueError as exc:
            raise AnsibleError("strategy zkrollout.dc.quorum: set zkrollout_quorum, or stage %s with a quorum" % self.service) from exc
        version = self.version or (release.version if release else None)
        return resolved, max_parallel, version

    def _announce(self, snapshot):
        """Refuse numbers under which no host could ever stop; say what the play will do."""
        quorum, max_parallel, version = self._numbers(snapshot)
        hosts = service_hosts(snapshot, self.service)
        try:
            check_service(self.service, quorum, len(hosts), max_parallel)
        except PlanError as exc:
            raise AnsibleError("strategy zkrollout.dc.quorum: %s" % exc) from exc
        display.display(PREFIX + "%s has %d host(s), %d healthy, quorum %d, max_parallel %d, target %s; slots owned by %s expire after %gs"
                        % (self.service, len(hosts), len(healthy_hosts(snapshot, self.service)), quorum,
                           max_parallel, version or "any registered version", self.owner, self.slot_timeout))
        unknown = sorted(name for name, host_id in self.host_ids.items() if host_id not in hosts)
        if unknown:
            display.warning(PREFIX + "%s: not in the roster of %s and not registered, so counted as down; each slot is released only once "
                            "the host's agent registers it" % (", ".join(unknown), self.service))

    # The state of the play.
    def _names(self, *states):
        return [name for name, value in self.state.items() if value in states]

    @property
    def failures(self):
        """Hosts that failed their play or never came back healthy."""
        return len(self._names(FAILED))

    def admit(self, strategy, iterator, candidates):
        """The hosts the free strategy may schedule now; blocks while no admitted host has work.

        ZooKeeper is read only when a watch fired (a slot or a registration changed), a host
        finished its play, or a one-second tick passed, although the free strategy asks many
        times a second.
        """
        by_name = {host.get_name(): host for host in candidates}
        while True:
            self._note_hosts(strategy, iterator, by_name)
            if self.woken.is_set() or time.monotonic() >= self.next_check:
                self.woken.clear()
                self.next_check = time.monotonic() + TICK
                self._step(strategy, by_name)
            self._halt_if_too_many_failures(by_name)
            active = [by_name[name] for name in self._names(ADMITTED, DONE) if name in by_name]
            if any(self._has_work(strategy, iterator, host) for host in active):
                return active
            waiting = [name for name in self._names(WAITING) if name in by_name]
            if not waiting and not self._names(RELEASING):
                return active
            if waiting and time.monotonic() - self.last_progress > self.wait_timeout:
                raise AnsibleError("strategy zkrollout.dc.quorum: no host of %s started or finished for %gs; %s still wait for a slot (%s)"
                                   % (self.service, self.wait_timeout, ", ".join(waiting), self.last_wait or self.zk_trouble))
            self.woken.wait(max(0.0, self.next_check - time.monotonic()))

    @staticmethod
    def _has_work(strategy, iterator, host):
        return iterator.get_next_task_for_host(host, peek=True)[1] is not None or strategy._blocked_hosts.get(host.get_name(), False)

    def _note_hosts(self, strategy, iterator, by_name):
        """Failed or unreachable hosts keep their slots; hosts without work left go to releasing."""
        for name in self._names(ADMITTED, RELEASING):
            host = by_name.get(name)
            if strategy._tqm._unreachable_hosts.get(name):
                self._fail(strategy, name, "is unreachable")
            elif host is None or iterator.is_failed(host):
                self._fail(strategy, name, "failed")
            elif self.state[name] == ADMITTED and not self._has_work(strategy, iterator, host):
                self.state[name] = RELEASING
                self.finished_at[name] = time.monotonic()
                self.woken.set()

    def _fail(self, strategy, name, why, count=False):
        display.warning(PREFIX + "%s %s; it keeps its slot of %s (its instance counts as down until someone checks it)" % (name, why, self.service))
        self.state[name] = FAILED
        self.last_progress = time.monotonic()
        strategy._tqm._failed_hosts[name] = True
        if count:
            strategy._tqm._stats.increment("failures", name)

    def _halt_if_too_many_failures(self, by_name):
        waiting = [name for name in self._names(WAITING) if name in by_name]
        if waiting and self.failures > self.allowed_failures:
            display.warning(PREFIX + "%d host(s) failed (max_fail_percentage allows %d): %s will not start"
                            % (self.failures, self.allowed_failures, ", ".join(waiting)))
            for name in waiting:
                self.state[name] = SKIPPED

    # ZooKeeper.
    def _arm_watches(self):
        watch_listings(self.client, [self.layout.slots(self.service), self.layout.current_service(self.service)], self._wake)

    def _wake(self, _event=None):
        # Runs on kazoo's thread: only signal.
        self.woken.set()

    def _ensure_session(self):
        """Our session node, created again after a session change (slots are renewed under the new one)."""
        path = self.layout.session(self._session())
        if path != self.session_path:
            self.session_path = announce_session(self.client, self.layout, self.owner)
            self.renewed_at = 0.0

    def _renew_leases(self):
        """Rewrite the slots of hosts still in their play, every third of slot_timeout: a long play keeps its slots."""
        if time.monotonic() - self.renewed_at < self.slot_timeout / 3.0:
            return
        self.renewed_at = time.monotonic()
        for name in self._names(ADMITTED, RELEASING):
            if not renew_slot(self.client, self.layout, self.service, self.host_ids[name], self.owner, time.time() + self.slot_timeout,
                              session=self._session()):
                display.warning(PREFIX + "%s: its slot of %s is no longer held by %s (released by an operator?)" % (name, self.service, self.owner))

    def _step(self, strategy, by_name):
        """Release the slots of hosts that finished and registered healthy; admit waiting hosts the quorum allows."""
        try:
            self._arm_watches()
            self._ensure_session()
            self._renew_leases()
            snapshot = read_snapshot(self.client, self.layout, services=[self.service], liveness=True)
            for name in self._names(RELEASING):
                self._release_if_healthy(strategy, name, snapshot)
            self._admit_waiting(snapshot, by_name)
            self.zk_trouble = None
        except ZK_ERRORS as exc:  # pylint: disable=catching-non-exception
            # Nothing stops without a slot, so waiting out a ZooKeeper outage is safe.
            trouble = "ZooKeeper does not answer (%s): no host starts or releases its slot until it does" % exc.__class__.__name__
            if trouble != self.zk_trouble:
                display.warning(PREFIX + trouble)
            self.zk_trouble = trouble

    def _release_if_healthy(self, strategy, name, snapshot):
        host_id = self.host_ids[name]
        _unused, _unused, version = self._numbers(snapshot)
        registration = snapshot.service(self.service).registrations.get(host_id)
        if registration is not None and (version is None or registration == version):
            if release_slot(self.client, self.layout, self.service, host_id, owner=self.owner):
                display.display(PREFIX + "%s is healthy again on %s: slot of %s released" % (name, registration, self.service))
            else:
                display.warning(PREFIX + "%s is healthy again on %s, but its slot of %s was no longer held by %s (released by an operator?)"
                                % (name, registration, self.service, self.owner))
            self.state[name] = DONE
            self.last_progress = time.monotonic()
        elif time.monotonic() - self.finished_at[name] > self.health_wait:
            self._fail(strategy, name, "did not register healthy%s in %s within %gs after its play" % (
                " on %s" % version if version else "", self.layout.current_service(self.service), self.health_wait), count=True)

    def _admit_waiting(self, snapshot, by_name):
        """Admit waiting hosts in inventory order while the numbers allow; a host that must wait does not block a later one."""
        head_wait = None
        for name in [name for name in self._names(WAITING) if name in by_name]:
            if self.failures > self.allowed_failures:
                return
            host_id = self.host_ids[name]
            state = snapshot.service(self.service)
            quorum, max_parallel, _unused = self._numbers(snapshot)
            if host_id in state.slots:
                claim = self._claim_held(name, host_id, state.slots[host_id], snapshot)
                if claim is True:
                    self._admitted(name)
                    continue
                if claim is not None:
                    head_wait = head_wait or (name, claim)
                    continue
            else:
                allowed, reason = slot_verdict(self.service, host_id, state.registrations, state.slots, quorum, max_parallel,
                                               confirmed_down=host_id not in state.registrations and host_id in snapshot.live_agents)
                if not allowed:
                    head_wait = head_wait or (name, reason)
                    if len(state.slots) >= max_parallel:
                        break
                    continue
            taken, reason = self._take(name, host_id, snapshot)
            if not taken:
                head_wait = head_wait or (name, reason)
                break
            snapshot = read_snapshot(self.client, self.layout, services=[self.service], liveness=True)
        if head_wait and head_wait != self.last_wait:
            display.display(PREFIX + "%s %s" % head_wait)
        self.last_wait = head_wait

    def _claim_held(self, name, host_id, slot, snapshot):
        """A waiting host already has a slot: True if it is ours (adopted), None if it was abandoned and released, else why it waits."""
        if slot is not None and slot.owner == self.owner:
            adopted = adopt_slot(self.client, self.layout, self.service, host_id, self.owner, self._session(), time.time() + self.slot_timeout,
                                 to_version=self.version)
            if adopted is not None:
                display.display(PREFIX + "%s resumes with the slot of %s it already holds (taken %s ago, %s -> %s)"
                                % (name, self.service, _ago(adopted.since), adopted.from_version, adopted.to_version))
                return True
            return "waiting: its slot of %s changed hands while it was adopted" % self.service
        if (slot is not None and slot.owner.startswith(CONTROLLER_OWNER) and not slot_owner_alive(snapshot, host_id, slot)
                and lease_expired(slot, snapshot.service(self.service).slot_mtimes.get(host_id), zookeeper_now(self.client, self.session_path))):
            # Its owner's session is gone and it was not renewed for its whole lease (ZooKeeper's clock).
            if release_slot(self.client, self.layout, self.service, host_id, owner=slot.owner):
                display.warning(PREFIX + "%s: the slot of %s left by %s (session gone, lease of %s passed); released, %s queues for a new one"
                                % (name, self.service, slot.owner, "%gs" % slot.lease if slot.lease else "its deadline", name))
            return None
        owner = slot.owner if slot is not None else "an unknown owner (malformed slot)"
        until = " until %s" % time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(slot.deadline)) if slot is not None and slot.deadline else ""
        return "waiting: the slot of %s on %s is held by %s%s" % (self.service, host_id, owner, until)

    def _take(self, name, host_id, snapshot):
        _unused, _unused, version = self._numbers(snapshot)
        registration = snapshot.service(self.service).registrations.get(host_id)
        slot = Slot(to_version=version or "unknown", since=time.time(), from_version=registration,
                    owner=self.owner, session=self._session(), deadline=time.time() + self.slot_timeout, lease=self.slot_timeout)
        # A host that is not registered is down only while its agent is connected; the slot is
        # then fenced on its presence node's version, which every registration bumps.
        checks = presence_checks(self.client, self.layout, host_id) if registration is None else []

        def allow(fresh):
            quorum, max_parallel, _unused = self._numbers(fresh)
            state = fresh.service(self.service)
            return slot_verdict(self.service, host_id, state.registrations, state.slots, quorum, max_parallel, confirmed_down=bool(checks))

        taken, reason, _unused = take_slot(self.client, self.layout, self.service, host_id, slot, allow, identifier=self.owner, checks=checks)
        if taken:
            display.display(PREFIX + "%s takes a slot of %s (%s)" % (name, self.service, reason))
            self._admitted(name)
        return taken, reason

    def _admitted(self, name):
        self.state[name] = ADMITTED
        self.last_progress = time.monotonic()

    def _session(self):
        return "%x" % self.client.client_id[0]

    def summary(self):
        """One sentence on how the play's hosts ended, for the end of the play."""
        parts = ["%d done" % len(self._names(DONE))]
        for state, words in ((FAILED, "failed (holding their slots)"), (SKIPPED, "not started"), (WAITING, "never admitted")):
            if self._names(state):
                parts.append("%d %s: %s" % (len(self._names(state)), words, ", ".join(self._names(state))))
        return PREFIX + "%s: %s" % (self.service, "; ".join(parts))


def _number(settings, name, kind, minimum):
    """The play variable ``name`` as an int or float of at least ``minimum``, or an AnsibleError saying what is wrong."""
    try:
        value = kind(settings[name])
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise AnsibleError("strategy zkrollout.dc.quorum: %s must be a number >= %s, got %r" % (name, minimum, settings[name]))
    return value


def _ago(timestamp):
    """Seconds between ``timestamp`` and now, as ``42s``."""
    return "%ds" % max(0, round(time.time() - timestamp))


class StrategyModule(FreeStrategyModule):
    """The free strategy, gated by ZooKeeper upgrade slots."""

    def __init__(self, tqm):
        super().__init__(tqm)
        self._gate = None

    def _settings(self, iterator):
        variables = self._variable_manager.get_vars(play=iterator._play)
        templar = Templar(loader=self._loader, variables=variables)
        settings = {name: templar.template(variables[name]) if name in variables else default for name, default in SETTINGS.items()}
        connection_values = {name: templar.template(value) for name, value in variables.items() if name.startswith("zkrollout_zk_")}
        connection = ConnectionOptions.from_mapping(dict(connection_values, zkrollout_zk_timeout=connection_values.get("zkrollout_zk_timeout", 10)),
                                                    prefix="zkrollout_zk_")
        host_ids = {}
        for host in self._inventory.get_hosts(iterator._play.hosts):
            host_vars = self._variable_manager.get_vars(play=iterator._play, host=host)
            host_ids[host.get_name()] = Templar(loader=self._loader, variables=host_vars).template(host_vars.get("zkrollout_host_id", host.get_name()))
        return settings, connection, host_ids

    def run(self, iterator, play_context):
        play = iterator._play
        max_fail_percentage = play.max_fail_percentage
        settings, connection, host_ids = self._settings(iterator)
        self._gate = QuorumGate(settings, connection, host_ids, max_fail_percentage)
        # The gate applies max_fail_percentage itself; the free strategy would only warn that it cannot.
        play.max_fail_percentage = None
        try:
            result = super().run(iterator, play_context)
            display.display(self._gate.summary())
            # A host that failed only in the gate (never healthy again) fails the play too.
            if result == self._tqm.RUN_OK and self._gate.failures:
                result = self._tqm.RUN_FAILED_HOSTS
            return result
        finally:
            play.max_fail_percentage = max_fail_percentage
            self._gate.close()
            self._gate = None

    def get_hosts_left(self, iterator):
        hosts = super().get_hosts_left(iterator)
        if self._gate is None:
            return hosts
        return self._gate.admit(self, iterator, hosts)
