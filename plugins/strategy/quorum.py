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
  - A slot is taken under the service's lock, on a fresh read, when C(healthy - held slots - 1 >= quorum)
    and fewer than C(max_parallel) slots are held. Healthy hosts are the ones registered in
    C(<root>/current/<service>) (by the host's agent) and not holding a slot; offline and
    unreachable hosts count as down.
  - "Sliding window, no batch barrier as with C(serial) - as soon as a host has finished the play
    and its instance is registered healthy again, its slot is released and the next host starts.
    Hosts whose turn would break the quorum wait, with a message such as
    C(waiting: A has 3 healthy, quorum 3)."
  - A host that fails (or becomes unreachable) keeps its slot - its instance is in an unknown
    state and stays counted as down - and no further host starts once more hosts failed than
    C(max_fail_percentage) of the play allows (none by default).
  - Slots carry their owner (C(controller:<zkrollout_controller_id>)) and a deadline. If the
    controller dies, a re-run with the same controller id adopts its slots and continues;
    M(zkrollout.dc.rollout_control) with C(action=release_slot) frees them after the deadline.
  - ansible-core 2.19 prints a deprecation warning for strategy plugins that are not part of
    ansible-core; this plugin is optional and thin (the slot logic is the collection's shared
    core), and the agents need no strategy at all.
  - "Play variables: C(zkrollout_service) (required); C(zkrollout_quorum) (integer or percentage;
    default the quorum of C(<root>/staging/<service>)); C(zkrollout_max_parallel) (default that of
    the staging entry, else 1); C(zkrollout_version) (recorded in the slot and required of the
    registration before the slot is released; default the staging entry's version, else any);
    C(zkrollout_slot_timeout) (seconds until a slot counts as abandoned, default 3600);
    C(zkrollout_health_wait) (seconds to wait after the play for the host to register healthy,
    default 60; a host that does not is treated as failed and keeps its slot);
    C(zkrollout_wait_timeout) (seconds a host may wait for its turn, default 3600);
    C(zkrollout_controller_id) (default C(ansible-playbook@<controller host name>)); the host id is
    the host variable C(zkrollout_host_id), default C(inventory_hostname); and the connection
    variables of the playbooks, C(zkrollout_zk_hosts), C(zkrollout_zk_root), C(zkrollout_zk_tls),
    C(zkrollout_zk_ca) and the other C(zkrollout_zk_*)."
author:
  - zkrollout.dc contributors
notes:
  - Hosts need the zkrollout agent (role M(zkrollout.dc.agent)) to register their instances; a
    service upgraded by the play should use the agent's C(external) driver, so the agent reports
    its health without starting or stopping it.
"""

import socket
import threading
import time

from ansible.errors import AnsibleError
from ansible.plugins.strategy.free import StrategyModule as FreeStrategyModule
from ansible.template import Templar
from ansible.utils.display import Display

from ansible_collections.zkrollout.dc.plugins.module_utils.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.model import Slot, validate_version
from ansible_collections.zkrollout.dc.plugins.module_utils.plan import resolve_quorum, slot_verdict
from ansible_collections.zkrollout.dc.plugins.module_utils.slots import CONTROLLER_OWNER, controller_owner, release_slot, take_slot
from ansible_collections.zkrollout.dc.plugins.module_utils.snapshot import read_snapshot
from ansible_collections.zkrollout.dc.plugins.module_utils.status import service_hosts
from ansible_collections.zkrollout.dc.plugins.module_utils.zkclient import ConnectionOptions, ZkConnectionError, connect, disconnect

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


class QuorumGate(object):
    """Admits hosts to the play one slot at a time; see the plugin's DOCUMENTATION."""

    def __init__(self, settings, connection, host_ids, max_fail_percentage):
        self.service = settings["zkrollout_service"]
        if not self.service:
            raise AnsibleError("strategy zkrollout.dc.quorum needs the play variable zkrollout_service (the service this play upgrades)")
        self.quorum = settings["zkrollout_quorum"]
        self.max_parallel = settings["zkrollout_max_parallel"]
        self.version = settings["zkrollout_version"]
        self.slot_timeout = float(settings["zkrollout_slot_timeout"])
        self.health_wait = float(settings["zkrollout_health_wait"])
        self.wait_timeout = float(settings["zkrollout_wait_timeout"])
        self.owner = controller_owner(settings["zkrollout_controller_id"] or "ansible-playbook@%s" % socket.gethostname())
        self.host_ids = host_ids
        self.state = {name: WAITING for name in host_ids}
        self.finished_at = {}
        self.allowed_failures = int(len(host_ids) * (max_fail_percentage or 0) / 100)
        self.started = time.monotonic()
        self.next_check = 0.0
        self.last_reason = None
        self.woken = threading.Event()
        self.layout = Layout(connection.root)
        try:
            self.client = connect(connection)
        except ZkConnectionError as exc:
            raise AnsibleError("strategy zkrollout.dc.quorum: %s" % exc) from exc
        self.client.ensure_path(self.layout.slots(self.service))

    def close(self):
        """Disconnect; slots of failed hosts stay held on purpose."""
        disconnect(self.client)

    # Numbers from the play, else from the staging entry.
    def _numbers(self, snapshot):
        release = snapshot.service(self.service).release
        quorum = self.quorum if self.quorum is not None else (release.quorum if release else None)
        if quorum is None:
            raise AnsibleError("strategy zkrollout.dc.quorum: set zkrollout_quorum, or stage %s with a quorum" % self.service)
        resolved = max(1, resolve_quorum(quorum if isinstance(quorum, str) and quorum.endswith("%") else int(quorum),
                                         len(service_hosts(snapshot, self.service))))
        max_parallel = int(self.max_parallel or (release.max_parallel if release else 1))
        version = self.version or (release.version if release else None)
        return resolved, max_parallel, version

    def _slot_holder(self, snapshot, host_id):
        slot = snapshot.service(self.service).slots.get(host_id, "none")
        return None if slot == "none" else slot

    def _try_admit(self, name):
        host_id = self.host_ids[name]
        snapshot = read_snapshot(self.client, self.layout)
        held = self._slot_holder(snapshot, host_id)
        if held is not None and held.owner == self.owner:
            display.display("zkrollout.dc.quorum: %s resumes with the slot of %s it already holds" % (name, self.service))
            return True
        if held is not None and held.owner.startswith(CONTROLLER_OWNER) and held.deadline is not None and held.deadline < time.time():
            display.warning("zkrollout.dc.quorum: %s adopts the abandoned slot of %s left by %s" % (name, self.service, held.owner))
            release_slot(self.client, self.layout, self.service, host_id, owner=held.owner)
        _, _, version = self._numbers(snapshot)
        registration = snapshot.service(self.service).registrations.get(host_id)
        slot = Slot(to_version=validate_version(version or "unknown"), since=time.time(),
                    from_version=registration.version if registration else None, owner=self.owner,
                    session="%x" % self.client.client_id[0], deadline=time.time() + self.slot_timeout)

        def allow(fresh):
            quorum, max_parallel, _ = self._numbers(fresh)
            state = fresh.service(self.service)
            return slot_verdict(self.service, host_id, state.registrations, state.slots, quorum, max_parallel)

        taken, reason, _ = take_slot(self.client, self.layout, self.service, host_id, slot, allow, identifier=self.owner)
        if taken:
            display.display("zkrollout.dc.quorum: %s takes a slot of %s (%s)" % (name, self.service, reason))
        elif reason != self.last_reason:
            display.display("zkrollout.dc.quorum: %s %s" % (name, reason))
        self.last_reason = None if taken else reason
        return taken

    def _released(self, name, snapshot):
        """Release the slot of a host that finished once its instance is registered healthy again."""
        host_id = self.host_ids[name]
        _, _, version = self._numbers(snapshot)
        registration = snapshot.service(self.service).registrations.get(host_id)
        if registration is not None and (version is None or registration.version == version):
            release_slot(self.client, self.layout, self.service, host_id, owner=self.owner)
            display.display("zkrollout.dc.quorum: %s is healthy again on %s: slot of %s released" % (name, registration.version, self.service))
            return True
        if time.monotonic() - self.finished_at[name] > self.health_wait:
            raise _HostFailed("did not register healthy%s in %s within %ss after its play" % (
                " on %s" % version if version else "", self.layout.current_service(self.service), self.health_wait))
        return False

    def _arm_watches(self):
        for path in (self.layout.slots(self.service), self.layout.current_service(self.service)):
            if self.client.exists(path, watch=self._wake) is not None:
                self.client.get_children(path, watch=self._wake)

    def _wake(self, _event=None):
        # Runs on kazoo's thread: only signal.
        self.woken.set()

    def _names(self, *states):
        return [name for name, value in self.state.items() if value in states]

    @property
    def failures(self):
        """Hosts that failed their play or never came back healthy."""
        return len(self._names(FAILED))

    def admit(self, strategy, iterator, candidates):
        """The hosts the free strategy may schedule now; blocks while no admitted host has work.

        ZooKeeper is read only when a watch fired (a slot or a registration changed) or a one-second
        tick passed, although the free strategy asks many times a second.
        """
        by_name = {host.get_name(): host for host in candidates}
        while True:
            self._fail_lost_hosts(strategy, iterator, by_name)
            if self.woken.is_set() or time.monotonic() >= self.next_check:
                self.woken.clear()
                self.next_check = time.monotonic() + 1.0
                self._arm_watches()
                self._step(strategy, iterator, by_name)
            waiting = [name for name in self._names(WAITING) if name in by_name]
            halted = self.failures > self.allowed_failures
            if halted and waiting:
                display.warning("zkrollout.dc.quorum: %d host(s) failed (max_fail_percentage allows %d): %s will not start"
                                % (self.failures, self.allowed_failures, ", ".join(waiting)))
                for name in waiting:
                    self.state[name] = SKIPPED
                waiting = []
            active = [by_name[name] for name in self._names(ADMITTED, DONE) if name in by_name]
            if any(self._has_work(strategy, iterator, host) for host in active):
                return active
            if not waiting and not self._names(RELEASING):
                return active
            if time.monotonic() - self.started > self.wait_timeout:
                raise AnsibleError("strategy zkrollout.dc.quorum: %s still waiting for a slot of %s after %ss (%s)"
                                   % (", ".join(waiting), self.service, self.wait_timeout, self.last_reason))
            self.woken.wait(max(0.0, self.next_check - time.monotonic()))

    @staticmethod
    def _has_work(strategy, iterator, host):
        return iterator.get_next_task_for_host(host, peek=True)[1] is not None or strategy._blocked_hosts.get(host.get_name(), False)

    def _fail_lost_hosts(self, strategy, iterator, by_name):
        """An admitted host that failed or became unreachable keeps its slot: its instance counts as down."""
        for name in self._names(ADMITTED, RELEASING):
            host = by_name.get(name)
            if host is None or iterator.is_failed(host) or strategy._tqm._unreachable_hosts.get(name):
                display.warning("zkrollout.dc.quorum: %s failed; it keeps its slot of %s (its instance counts as down)" % (name, self.service))
                self.state[name] = FAILED

    def _step(self, strategy, iterator, by_name):
        """Release the slots of hosts that finished and registered healthy; admit the next host if the quorum allows."""
        snapshot = None
        for name in self._names(ADMITTED):
            if not self._has_work(strategy, iterator, by_name[name]):
                self.state[name] = RELEASING
                self.finished_at[name] = time.monotonic()
        for name in self._names(RELEASING):
            snapshot = snapshot or read_snapshot(self.client, self.layout)
            try:
                if self._released(name, snapshot):
                    self.state[name] = DONE
            except _HostFailed as exc:
                display.warning("zkrollout.dc.quorum: %s %s; it keeps its slot of %s" % (name, exc, self.service))
                self.state[name] = FAILED
                strategy._tqm._failed_hosts[name] = True
        # Sliding window: admit hosts one after the other for as long as the quorum allows.
        for name in [name for name in self._names(WAITING) if name in by_name]:
            if self.failures > self.allowed_failures or not self._try_admit(name):
                break
            self.state[name] = ADMITTED


class _HostFailed(Exception):
    """A host finished its play but never came back healthy."""


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
            return super().run(iterator, play_context)
        finally:
            play.max_fail_percentage = max_fail_percentage
            self._gate.close()
            self._gate = None

    def get_hosts_left(self, iterator):
        hosts = super().get_hosts_left(iterator)
        if self._gate is None:
            return hosts
        return self._gate.admit(self, iterator, hosts)
