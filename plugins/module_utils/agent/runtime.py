# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's level-triggered loop: refresh the view, decide, perform one step, log why.

Rules carried over from Patroni and kazoo's issue tracker (docs/architecture.md, "Agent"):
watch and connection callbacks only signal; every ZooKeeper call happens on the loop's thread;
nothing is stopped unless the session is CONNECTED; ephemeral nodes left by an older session
of ours are replaced, not trusted.

The agent reads only its own bounded view (``store.views.AgentView``): the rollout node, the
deploy queue and its own services. Each loop probes the local instances (no ZooKeeper request)
and decides on the view; the view re-reads only what a watch, an own write, a new session or
the long ``safety_tick`` invalidated, and ``agent.wakeups`` plans which watches to keep. A host
woken while it waits in a service's ready queue tries its turn first, on the fresh read the take
makes under the service lock anyway, and reads its view after.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time

from ..core.layout import Layout
from ..core.model import Slot
from ..core.rules import agent_owner, rollout_stage, services_ahead
from ..core.signing import screen_releases
from ..store.client import (
    KazooException,
    KazooTimeoutError,
    RequestCounter,
    build_client,
)
from ..store.host import HostNodes
from ..store.locks import release_leftover_locks
from ..store.slots import take_slot
from ..store.views import AgentView
from . import decide as actions
from .artifacts import ArtifactError, prepare, prepared_versions
from .decide import Decision, LocalView, decide
from .drivers import DriverError, make_driver
from .health import HealthTracker
from .localstate import LocalState
from .wakeups import plan as watch_plan

AGENT_VERSION = "zkrollout-agent/0.1.0"
# A host whose instance is down decides what to start on a view at most this old (seconds).
DOWN_REFRESH = 5.0
# status.json is rewritten at least this often (seconds), and whenever what it says changes.
STATUS_REFRESH = 5.0
# An idle agent (every decision `wait`, nothing to retry) iterates when woken, and at least this
# often (seconds, or loop_wait if longer): status.json stays fresh and the safety tick on time.
IDLE_WAIT = STATUS_REFRESH


# Slot takes refused by the fresh read that are retried at once, before the agent waits for a wake-up.
IMMEDIATE_RETAKES = 2


class Agent(object):
    """One host's agent. ``run()`` loops until ``stop()``; ``iteration()`` is one step."""

    def __init__(self, config, logger=None, client=None):
        self.config = config
        self.host = config.host
        self.layout = Layout(config.zookeeper.root)
        self.log = logger or logging.getLogger("zkrollout.agent")
        self.state = LocalState(os.path.join(config.state_dir, "state.json"))
        log_dir = os.path.join(config.state_dir, "logs")
        self.drivers = {name: make_driver(service, log_dir) for name, service in config.services.items()}
        self.health = {name: HealthTracker(service) for name, service in config.services.items()}
        self.decisions = {}
        self.counters = {}
        self._seen_version = {}
        # Per service: the last health verdict (running version, healthy) of its worker, and a
        # lock the switch holds so the worker never probes mid-switch.
        self._verdicts = {}
        self._local_locks = {name: threading.RLock() for name in config.services}
        self._workers = {}
        # A started client handed in by the caller (tests, benchmarks) is used as is and never closed.
        self.client = client
        self._own_client = client is None
        self.view = None
        self.requests = RequestCounter()
        self.woken = threading.Event()
        self.stopping = threading.Event()
        self._session = None
        self._refused = {}
        # The nodes this host owns in the tree (roster, presence, registrations, ready queue, failure records).
        self.nodes = HostNodes(self.layout, self.host, config.service_names, self._local_locks, self.log, self.woken.set, client=client)
        self._next_tick = 0.0
        self.snapshot = None
        self.status = {}
        self._status_summary, self._status_written = None, 0.0

    # Connection: callbacks only signal.
    def connect(self):
        """Start the ZooKeeper client in the background; the loop works while it connects."""
        if self._own_client:
            self.client = self.requests.attach(build_client(self.config.zookeeper, logger=logging.getLogger("zkrollout.agent.kazoo")))
        self.nodes.client = self.client
        self.view = AgentView(self.client, self.layout, self.config.service_names, self.woken.set)
        self.client.add_listener(self._on_connection_state)
        if self._own_client:
            self.client.start_async()

    def _on_connection_state(self, state):
        # Runs on kazoo's thread: only signal. kazoo drops every watch when the connection is
        # lost, even if the session survives, so the view forgets them; the loop compares the
        # session id to know when its ephemeral nodes are gone too (refresh_view).
        if state != "CONNECTED" and self.view is not None:
            self.view.session_lost()
        self.woken.set()

    @property
    def connected(self):
        """True only while the session is CONNECTED (not SUSPENDED or LOST)."""
        return self.client is not None and self.client.state == "CONNECTED"

    def stop(self):
        """Ask the loop to end after its current step."""
        self.stopping.set()
        self.woken.set()

    def close(self):
        """Close the ZooKeeper session (its ephemeral nodes go with it); running instances stay up."""
        if self.client is not None and self._own_client:
            for step in (self.client.stop, self.client.close):
                try:
                    step()
                except (KazooException, KazooTimeoutError):
                    pass

    # The loop.
    def run(self, once=False):
        """Wait for the session (bounded), then loop until ``stop()``; with ``once``, do one iteration.

        The wait matters at start: a host whose instance is down starts what the tree says (the
        target of a finished rollout); only without a session after ``timeout`` does it fall back
        to the last version it ran.
        """
        self.connect()
        if self.config.trusted_keys is None:
            self.log.warning("release signatures are NOT checked (allow_unsigned_releases: true): anyone who can write %s "
                             "chooses what this host downloads and runs", self.layout.root)
        if not once:
            for name in self.config.service_names:
                self._workers[name] = threading.Thread(target=self._health_worker, args=(name,), name="health-%s" % name, daemon=True)
                self._workers[name].start()
        deadline = time.monotonic() + self.config.zookeeper.timeout
        while not self.connected and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.05)
        try:
            while not self.stopping.is_set():
                self.woken.clear()
                try:
                    idle = self.iteration()
                except Exception:  # pylint: disable=broad-except
                    # Nothing read from ZooKeeper may stop the loop: instances left stopped would
                    # never be started again. The traceback says what to fix; the next loop retries.
                    self.log.exception("this iteration failed; the agent goes on")
                    idle = False
                if once:
                    break
                self.woken.wait(self.wait_after(idle))
        finally:
            self.close()

    def local_view(self, name):
        """The LocalView of ``name``: its worker's last health verdict (probed here when no worker runs)."""
        config = self.config.services[name]
        progress = self.state.get(name)
        if progress.version is None and config.initial_version:
            progress = self.state.update(name, version=config.initial_version)
        worker = self._workers.get(name)
        if worker is None or not worker.is_alive() or name not in self._verdicts:
            self.probe(name)
        verdict = self._verdicts.get(name)
        running, healthy = verdict if verdict is not None else (self.drivers[name].running_version(progress), False)
        own = running is not None and self.nodes.registered.get(name) == self.layout.registration(name, self.host, running)
        return LocalView(service=name, progress=progress, running=running, healthy=healthy, prepared=prepared_versions(config),
                         managed=config.driver != "external", own_registration=own)

    # Health: one worker per service, apart from the decision loop.
    def _health_worker(self, name):
        """Probe ``name`` every health interval until the agent stops, whatever the loop is doing."""
        interval = self.config.services[name].health.interval
        while not self.stopping.is_set():
            try:
                self.probe(name)
            except Exception:  # pylint: disable=broad-except
                self.log.exception("service %s: the health probe failed; probing again in %gs", name, interval)
            self.stopping.wait(interval)

    def probe(self, name):
        """One health probe of ``name``; a failing instance that we registered is deregistered at once.

        A blocked decision loop (another service's long health wait, a download) must never leave
        a dead instance registered: deregistration happens here, within ``fall * interval``. While
        a switch of ``name`` runs, the switch checks health itself and this probe is skipped.
        """
        lock = self._local_locks[name]
        if not lock.acquire(blocking=False):
            return
        try:
            progress = self.state.get(name)
            if progress.in_switch:
                return
            running = self.drivers[name].running_version(progress)
            if running != self._seen_version.get(name):
                # Another version (or none) runs now: its health starts from scratch, so a new
                # version is registered only after it passed its own `rise` checks.
                self.health[name].reset()
                self._seen_version[name] = running
            healthy = self.health[name].update(running)
            changed = self._verdicts.get(name) != (running, healthy)
            self._verdicts[name] = (running, healthy)
            failing = self.nodes.registered.get(name) and (running is None or not healthy)
            if failing and self.connected:
                self.nodes.deregister(name)
                self.log.info("service %s: %s: deregistered at once", name, "not running" if running is None else "health check failing")
        finally:
            lock.release()
        if changed:
            self.woken.set()

    def wait_after(self, idle):
        """Seconds to wait for a wake-up after an iteration: ``loop_wait`` while something is in
        progress, else until the safety tick or status.json's refresh is due.

        An idle iteration decided `wait` for every service on a view no watch, own write or new
        session invalidated: the next one, on the same inputs, would decide the same. What can
        change a decision wakes the loop (a watch, a health verdict, a connection state), so
        only what is in progress (an action, a refused take, an error to retry, a read that
        failed, no session) is paced by ``loop_wait``.
        """
        if not idle:
            return self.config.loop_wait
        return max(self.config.loop_wait, min(IDLE_WAIT, self._next_tick - time.monotonic()))

    def iteration(self):
        """Refresh the view if something changed, then decide and perform one step per service.

        Returns True if it was idle (see ``wait_after``).
        """
        if self.connected:
            self._check_session()
            self._take_turns_at_once()
        snapshot = self.refresh_view() if self.connected else None
        idle = snapshot is not None and self.connected
        for name in self.config.service_names:
            # One service's trouble (a systemctl that hangs, a full disk) must not stop the others.
            try:
                idle &= self._bootstrap(name)
                local = self.local_view(name)
                if local.running is None and snapshot is not None and local.managed and self.view.age(name) > DOWN_REFRESH:
                    # What a host whose instance is down starts depends on the registrations of
                    # others ("most popular"): decide that on a recent read, not on an old cache.
                    self.view.invalidate([name])
                    snapshot = self.refresh_view()
                decision = decide(self.host, snapshot, local, snapshot is not None and self.connected)
                self._record(name, decision)
                self.perform(name, decision, snapshot)
                if decision.action == actions.WAIT:
                    self._refused.pop(name, None)
                    continue
                idle = False
                if self._refused.get(name, 0) <= IMMEDIATE_RETAKES:
                    # Our own write changed what we saw: read it again rather than wait for a watch.
                    self.view.invalidate([name])
                    self.woken.set()
            except (KazooException, KazooTimeoutError, DriverError, OSError, ValueError) as exc:
                idle = False
                self.log.error("service %s: this step failed: %s: %s", name, exc.__class__.__name__, exc)
            except Exception:  # pylint: disable=broad-except
                idle = False
                self.log.exception("service %s: this step failed unexpectedly; the other services go on", name)
        if snapshot is not None and self.nodes.presence is None and self.connected:
            self.nodes.announce_presence()
        self._write_status()
        return idle and self.nodes.presence is not None and not self.view.dirty

    def refresh_view(self):
        """The view as a Snapshot, re-read where invalidated; watches planned and armed. None on a read error."""
        self._check_session()
        if time.monotonic() >= self._next_tick:
            # Jittered, so a fleet restarted at once does not tick in step.
            self._next_tick = time.monotonic() + self.config.safety_tick * random.uniform(0.8, 1.2)
            self.view.tick()
        try:
            self.nodes.ensure_roster()
            release_leftover_locks(self.client)
            if self.view.dirty or self.snapshot is None:
                self._read_view()
            if self.view.arm() and self.view.dirty:
                # A watched node changed between its read and its watch: read it again now.
                self._read_view()
                self.view.arm()
        except (KazooException, KazooTimeoutError) as exc:
            self.log.warning("cannot read the rollout tree: %s", exc.__class__.__name__)
            return None
        return self.snapshot

    def _check_session(self):
        session = self.client.client_id
        if session != self._session:
            # A new session: no watch of ours survived, and our ephemeral nodes may be gone.
            self._session = session
            self.nodes.new_session()
            self.view.session_lost()

    def _take_turns_at_once(self):
        """Take the turn of a service whose watch woke us while we are next in line, before the view is read again.

        The take reads what its decision needs afresh under the service lock anyway (``_take_slot``),
        so reading the view first would only delay the hand-off (the next host goes down a few
        milliseconds after the previous one answered again). Only a watch that fired on the
        service starts this (never our own invalidation), and never while a refused take is
        being retried: each wake-up costs at most one lock take per service. A refused take
        changes nothing, and the loop goes on to read the view and decide as always.
        """
        # Not before this session wrote its roster and copies (refresh_view), nor behind a lock node of ours left over.
        if self.snapshot is None or not self.nodes.roster_written or release_leftover_locks(self.client):
            return
        for name in self.config.service_names:
            if self._refused.get(name) or not self.view.notified(name) or not self._next_in_line(name):
                continue
            try:
                local = self.local_view(name)
                target = self.snapshot.service(name).release.version
                if local.managed and not local.progress.in_switch and local.running not in (None, target) and local.healthy:
                    self._take_slot(name, Decision(actions.TAKE_SLOT, "", target), at_once=True)
            except (KazooException, KazooTimeoutError, DriverError, OSError, ValueError) as exc:
                self.log.error("service %s: taking the turn failed: %s: %s", name, exc.__class__.__name__, exc)

    def _next_in_line(self, name):
        """True if, in the view, ``name`` is rolling and this host waits in its ready queue without a slot, next for a turn.

        The view may be older than the change that woke us (a host behind the first
        ``max_parallel`` watches only the members just ahead of it, ``agent.wakeups``), so such a
        host's position there says little: the wake-up plan already picks the few hosts whose
        turn a change can give. A candidate (among the first ``max_parallel``) watches what the
        candidates ahead of it watch, so its view of them is as fresh as theirs: behind one that
        waits too, it leaves the turn (and the lock) to that one and decides on its view. A
        service the view shows halted, paused or waiting for others is left to the loop's fresh
        view (its turn comes with a change of another service), unless a member just ahead of us
        left the ready queue: that host ended its turn, so the service rolls although our view of
        the services ahead of it, which we did not watch from back there, still shows them rolling.
        """
        snapshot = self.snapshot
        state = snapshot.service(name)
        if not (snapshot.rollout is not None and snapshot.rollout.state == "running" and state.release is not None and not state.failures
                and self.host not in state.slots and self.host in state.ready_hosts):
            return False
        if self.view.moved_up(name):
            # A member just ahead of us left the line: almost always at the end of its turn. Behind
            # the first max_parallel we watched nothing else, so our place and the services ahead
            # (a previous service of the deploy queue, complete meanwhile) are older than that.
            return True
        if rollout_stage(snapshot, name) not in ("rolling", "finished"):
            return False
        position = state.ready_hosts.index(self.host)
        return position >= state.release.max_parallel or all(host in state.slots for host in state.ready_hosts[:position])

    def _read_view(self):
        known = set(self.snapshot.problems) if self.snapshot is not None else set()
        self.snapshot = self.trusted(self.view.refresh(self._dependencies()))
        if set(self._dependencies()) - set(self.snapshot.services):
            # A release named a dependency the view does not hold yet: read it too.
            self.snapshot = self.trusted(self.view.refresh(self._dependencies()))
        self.view.plan(watch_plan(self.layout, self.host, self.snapshot, self.config.service_names, self._dependencies()))
        for problem in self.snapshot.problems:
            if problem not in known:
                # Named once when it appears (status lists it as long as it lasts): what to fix, where.
                self.log.warning("malformed node in this agent's view, read conservatively: %s", problem)

    def trusted(self, snapshot):
        """``snapshot`` without the release entries this host must not use (core.signing): every decision reads this."""
        return screen_releases(snapshot, self.config.trusted_keys, self.layout)

    def _dependencies(self):
        """Services our own services depend on or wait for in the deploy queue, as far as the view knows: they are part of it."""
        if self.snapshot is None:
            return ()
        names = set(self.config.service_names)
        for name in self.config.service_names:
            release = self.snapshot.service(name).release
            names.update(release.depends_on if release is not None else ())
            names.update(services_ahead(self.snapshot, name))
        return sorted(names - set(self.config.service_names))

    def _decision_services(self, name):
        """What a turn of ``name`` is decided on: ``name``, its dependencies and the services ahead of it, own ones too."""
        release = self.snapshot.service(name).release if self.snapshot is not None else None
        related = set(release.depends_on if release is not None else ()) | set(services_ahead(self.snapshot, name) if self.snapshot else ())
        return [name] + sorted(related - {name})

    def _record(self, name, decision):
        previous = self.decisions.get(name)
        self.decisions[name] = (decision, time.time())
        self.counters[decision.action] = self.counters.get(decision.action, 0) + 1
        if decision.action != actions.WAIT or previous is None or previous[0] != decision:
            self.log.info("service %s: %s: %s", name, decision.action, decision.reason)

    def _bootstrap(self, name):
        """Fetch a fresh host's initial version (verified like any release) when nothing is on disk."""
        config = self.config.services[name]
        if config.initial_artifact is None or prepared_versions(config):
            return True
        try:
            prepare(config, config.initial_version, config.initial_artifact)
        except ArtifactError as exc:
            self.log.error("service %s: initial version %s: %s failed: %s", name, config.initial_version, exc.stage, exc.reason)
            return False
        return True

    # Actions.
    def perform(self, name, decision, snapshot):
        """Carry out one decision."""
        action = decision.action
        if action == actions.WAIT:
            return
        if action == actions.START:
            self._start(name, decision.version)
        elif action == actions.REGISTER:
            self.nodes.register(name, decision.version)
        elif action == actions.DEREGISTER:
            self.nodes.deregister(name)
        elif action == actions.PREPARE:
            self._prepare(name, decision.version, snapshot)
        elif action == actions.JOIN_READY:
            self.nodes.join_ready(name)
        elif action == actions.LEAVE_READY:
            self.nodes.leave_ready(name)
        elif action == actions.RELEASE_SLOT:
            self.nodes.release_slot(name)
        elif action in (actions.TAKE_SLOT, actions.ROLLBACK):
            self._take_slot(name, decision)
        elif action == actions.RESUME:
            self.resume(name)
        elif action == actions.REFUSE_RELEASE:
            self.log.error("service %s: %s", name, decision.reason)
            self.nodes.record_failure(name, decision.version, "signature", decision.reason)

    def _start(self, name, version):
        with self._local_locks[name]:
            self._start_locked(name, version)

    def _start_locked(self, name, version):
        pid = self.drivers[name].start(version)
        # The agent checks the health of what it starts itself (rise passes), so the version
        # counts as seen: the next iteration must not throw that verdict away.
        self.health[name].reset()
        self._seen_version[name] = version
        self._verdicts[name] = (version, False)
        self.state.update(name, version=version, pid=pid, since=time.time())

    def _prepare(self, name, version, snapshot):
        release = snapshot.service(name).release
        try:
            prepare(self.config.services[name], version, release.artifact)
        except ArtifactError as exc:
            self.log.error("service %s: %s of %s failed: %s", name, exc.stage, version, exc.reason)
            self.nodes.record_failure(name, version, exc.stage, exc.reason)

    def _take_slot(self, name, decision, at_once=False):
        """Take the slot (service lock, fresh read, decide again while CONNECTED), then switch.

        ``at_once`` (``_take_turns_at_once``): the decision was not made on a fresh view; the
        fresh read decides alone, and a refusal is not recorded (the loop decides next).
        """
        view = self.local_view(name)
        slot = Slot(to_version=decision.version, from_version=view.running, since=time.time(),
                    owner=agent_owner(self.host), session="%x" % self.client.client_id[0])

        def allow(snapshot):
            again = decide(self.host, self.trusted(snapshot), view, self.connected)
            return (again.action, again.version) == (decision.action, decision.version), again.reason

        # The registration this session made goes in the slot's own transaction: the instance is about to stop.
        registered = self.nodes.registered.get(name)
        taken, reason, _unused = take_slot(self.client, self.layout, name, self.host, slot, allow, services=self._decision_services(name),
                                           leaving=self.nodes.leaving_registration(name))
        if at_once:
            if not taken:
                return
            self._record(name, Decision(decision.action, reason, decision.version))
            self.view.invalidate([name])
        if not taken:
            self._record(name, Decision(actions.WAIT, reason))
            # The fresh read disagreed with the view: read what the decision rests on again. At once
            # for a lost race or two; then at the next wake-up (a watch, or loop_wait): a view that
            # keeps disagreeing (an index entry another host deleted) must not make the agent take
            # the lock in a loop.
            self.view.invalidate(self._decision_services(name))
            self._refused[name] = self._refused.get(name, 0) + 1
            return
        self._refused.pop(name, None)
        with self._local_locks[name]:
            if registered:
                self.nodes.slot_took_registration(name)
            self.state.update(name, phase="switching", step="slot_taken", previous=view.running, target=decision.version,
                              since=time.time(), reason="")
            self._resume(name, deregistered=bool(registered))

    def resume(self, name):
        """Drive an unfinished switch or rollback forward from its persisted step (the health worker waits)."""
        with self._local_locks[name]:
            self._resume(name)

    def _resume(self, name, deregistered=False):
        progress = self.state.get(name)
        driver, health = self.drivers[name], self.health[name]

        def alive():
            return driver.running_version(self.state.get(name)) is not None

        if progress.phase == "switching":
            if progress.step == "slot_taken":
                # Only stopping can break the quorum: stop only while CONNECTED and still holding the
                # slot, read again right before the stop. Even just after the fenced create: a loop
                # frozen past its session timeout may find its slot freed by an operator (whose
                # rollout_control saw no connected agent) and the turn taken by another host.
                if not self.connected:
                    return
                if not deregistered:
                    self.nodes.deregister(name)
                if not self.nodes.holds_slot(name):
                    self.log.warning("service %s: the upgrade slot is no longer ours before the stop; switch abandoned", name)
                    self.state.update(name, phase="idle", step="")
                    return
                driver.stop(progress)
                progress = self.state.update(name, step="stopped", pid=None)
            if progress.step == "stopped":
                self._start(name, progress.target)
                progress = self.state.update(name, step="started")
            if progress.step == "started":
                healthy, why = health.wait_healthy(progress.target, alive, self.stopping)
                self._verdicts[name] = (progress.target, healthy)
                if not healthy and self.stopping.is_set():
                    # Interrupted, not failed: the step stays "started", so the next run checks again.
                    return
                if not healthy:
                    self.log.error("service %s: %s failed its health check (%s): rolling back to %s", name, progress.target, why, progress.previous)
                    progress = self.state.update(name, phase="rolling_back", step="failed", reason=why)
                elif not self.connected:
                    return
                else:
                    if self.nodes.finish_turn(name, progress.target):
                        # Registered, slot freed and ready queue left in one transaction.
                        self.state.update(name, phase="idle", step="", since=time.time())
                        self.log.info("service %s: switched %s -> %s", name, progress.previous, progress.target)
                        return
                    self.nodes.register(name, progress.target)
                    progress = self.state.update(name, step="registered")
            if progress.step == "registered":
                if not self.connected:
                    return
                # Registered first: the slot is freed (with the ready-queue place) only once the
                # new instance counts as healthy again.
                self.nodes.release_slot(name, leave_ready=True)
                self.state.update(name, phase="idle", step="", since=time.time())
                self.log.info("service %s: switched %s -> %s", name, progress.previous, progress.target)
                return
        if progress.phase == "rolling_back":
            self._roll_back(name, progress, alive)

    def _roll_back(self, name, progress, alive):
        """Back to the previous version while still holding the slot; record the failure; release."""
        driver, health = self.drivers[name], self.health[name]
        if progress.step == "failed":
            driver.stop(progress)
            progress = self.state.update(name, step="stopped_failed", pid=None)
        if progress.step == "stopped_failed":
            if progress.previous is not None:
                self._start(name, progress.previous)
            progress = self.state.update(name, step="started_previous")
        if progress.step == "started_previous":
            healthy = progress.previous is not None and health.wait_healthy(progress.previous, alive, self.stopping)[0]
            self._verdicts[name] = (progress.previous, healthy)
            if not self.connected or (not healthy and self.stopping.is_set()):
                return
            if healthy:
                self.nodes.register(name, progress.previous)
            # The failure is written before the slot is freed, so no other host takes a turn on a halted service.
            self.nodes.record_failure(name, progress.target, "health", progress.reason or "health check failed",
                                      rolled_back_to=progress.previous if healthy else None)
            self.nodes.leave_ready(name)
            progress = self.state.update(name, step="recorded")
        if progress.step == "recorded":
            if not self.connected:
                return
            self.nodes.release_slot(name)
            self.state.update(name, phase="idle", step="", target=None, since=time.time())

    # Status.
    @property
    def signature_policy(self):
        """How this host checks release signatures, in words (status and ``zkrollout-agent status``)."""
        keys = self.config.trusted_keys
        if keys is None:
            return "NOT CHECKED (allow_unsigned_releases: true)"
        return "required, trusted keys %s" % ", ".join(sorted(keys.keys))

    def _write_status(self):
        # An idle agent loops every loop_wait: the file is rebuilt and rewritten when something a
        # reader cares about changed (not just the clocks and counters), and every STATUS_REFRESH seconds.
        summary = repr((self.client.state if self.client is not None else None, self.snapshot.problems if self.snapshot is not None else (),
                        sorted(self._verdicts.items()), self.state.as_dict(),
                        sorted((name, decision.action, decision.reason) for name, (decision, _at) in self.decisions.items())))
        if summary == self._status_summary and time.monotonic() - self._status_written < STATUS_REFRESH:
            return
        self.status = {
            "host": self.host,
            "connection": self.client.state if self.client is not None else "NOT STARTED",
            "updated": time.time(),
            "services": {
                name: {
                    "running": self.drivers[name].running_version(self.state.get(name)),
                    "healthy": self.health[name].healthy,
                    "prepared": sorted(prepared_versions(self.config.services[name])),
                    "progress": self.state.as_dict().get(name, {}),
                    "decision": {"action": self.decisions[name][0].action, "reason": self.decisions[name][0].reason,
                                 "at": self.decisions[name][1]} if name in self.decisions else None,
                }
                for name in self.config.service_names
            },
            "decisions_total": dict(self.counters),
            "zookeeper": {"requests": self.requests.requests, "notifications": self.view.notifications if self.view else 0},
            "problems": list(self.snapshot.problems) if self.snapshot is not None else [],
            "release_signatures": self.signature_policy,
        }
        path = os.path.join(self.config.state_dir, "status.json")
        temp = path + ".tmp"
        with open(temp, "w") as out:
            json.dump(self.status, out, sort_keys=True, indent=1)
        os.replace(temp, path)
        self._status_summary, self._status_written = summary, time.monotonic()
