# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers of the controller-side integration tests: tree dumps, a fake fleet, releases, runners.

- ``dump_tree`` proves "nothing changed" (every node's bytes, whether it is ephemeral, and its
  data and child versions, so even a rewrite of the same bytes or a create-then-delete shows)
  and "the whole rollout landed".
- ``FakeFleet`` plays the agents' part of the tree (roster entries, registrations, ready queue
  members, upgrade slots, failure records) with the core's payload classes and ``Layout``
  paths, one ZooKeeper session per host like real agents, so a test drives a rollout to
  completion or to a failure without installing an agent.
- ``service`` and ``release`` build valid release specs that a test then breaks on purpose.
- ``ModuleRunner`` calls the collection's modules through pytest-ansible's ``ansible_adhoc``
  fixture; ``run_playbook`` runs ``ansible-playbook`` on playbooks/*.yml as a user would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kazoo.exceptions import NodeExistsError, NoNodeError
from pytest_ansible.module_dispatcher.v213 import ModuleDispatcherV213

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import plan_control, plan_seed, plan_stage, read_plan_apply
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import (
    SCHEMA,
    Failure,
    ReleaseSpec,
    ServiceSpec,
    Slot,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import four_letter

# ZooKeeper's own subtree (quotas, config) is not ours to compare.
ZOOKEEPER_INTERNAL = "/zookeeper"
COLLECTION = "zkrollout.dc"
COLLECTION_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = COLLECTION_ROOT / "playbooks"


@dataclass(frozen=True)
class Znode(object):
    """One node of a dump: its bytes, whether it is ephemeral, its data and child versions."""

    data: bytes
    ephemeral: bool
    version: int
    cversion: int


def dump_tree(client, root="/", depth=None):
    """``{path relative to root: Znode}`` for ``root`` and everything below it; {} if it is absent.

    The root itself has the key ``""``. With ``root="/"`` the whole server is dumped, except
    ZooKeeper's internal ``/zookeeper`` subtree. ``depth`` limits the levels below the root.
    """
    nodes = {}
    base = "" if root == "/" else root.rstrip("/")
    level, below = [root], 0
    while level and (depth is None or below <= depth):
        below += 1
        # One pipelined round trip per level of the tree, not two per node.
        requests = [(path, client.get_async(path), client.get_children_async(path)) for path in level if path != ZOOKEEPER_INTERNAL]
        level = []
        for path, node, children in requests:
            try:
                data, stat = node.get()
                names = children.get()
            except NoNodeError:
                continue
            nodes[path[len(base):] if path != "/" else ""] = Znode(data, stat.ephemeralOwner != 0, stat.version, stat.cversion)
            level.extend(path.rstrip("/") + "/" + name for name in names)
    return nodes


def wait_for_watch(bed, path, timeout=30.0):
    """Block until some session watches ``path`` on the single-node ``bed`` (ZooKeeper's ``wchp``).

    Lets a test act only once a waiter (in this process or in a module's) is really waiting.
    """
    deadline = time.monotonic() + timeout
    while path not in four_letter(bed.members[0].client_port, "wchp").split():
        if time.monotonic() > deadline:
            raise AssertionError("nobody watched %s within %.0fs" % (path, timeout))
        time.sleep(0.05)


@contextlib.contextmanager
def in_background(precondition, action):
    """Run ``precondition()`` then ``action()`` in a thread; re-raise an error of either when the block ends.

    Yields a dict that gets ``finished_at`` (time.monotonic()) once the action has returned.
    """
    outcome = {}

    def run():
        try:
            precondition()
            action()
            outcome["finished_at"] = time.monotonic()
        except BaseException as exc:  # surfaced in the test's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="fake-fleet", daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(60)
    assert not thread.is_alive(), "the fake fleet did not finish within 60s"
    if "error" in outcome:
        raise outcome["error"]


def server_view(client, root):
    """Everything a test's writes could touch: the whole tree under ``root`` and the server's top level.

    Shared servers hold every earlier test's root, so the whole server is not dumped each time;
    a write outside ``root`` still shows in the top level (a new node, or a changed data or child
    version of an existing one).
    """
    return {"top level": dump_tree(client, "/", depth=1), root: dump_tree(client, root)}


def describe_difference(before, after):
    """A short human list of what differs between two dumps (or server views), for assertion messages."""
    if set(before) == set(after) and all(isinstance(part, dict) for part in before.values()):
        parts = ["%s: %s" % (part, describe_difference(before[part], after[part])) for part in before if before[part] != after[part]]
        return "; ".join(parts) or "no difference"
    lines = []
    for path in sorted(set(before) | set(after)):
        if path not in after:
            lines.append("removed %s" % path)
        elif path not in before:
            lines.append("added %s %r" % (path, after[path].data[:80]))
        elif before[path] != after[path]:
            lines.append("changed %s: %r -> %r" % (path, before[path], after[path]))
    return "; ".join(lines[:20]) or "no difference"


class FakeFleet(object):
    """The agents' side of the tree, written by a test.

    ``hosts`` is the ZooKeeper connection string, ``layout`` the tree's Layout. Each host gets
    its own session on first use, so its registrations and ready queue members are ephemeral
    nodes owned by it, and ``go_offline`` (closing the session) removes them as a crash would.
    Persistent nodes (roster members, slots, failure records) are written by a shared session.
    """

    def __init__(self, hosts, layout, session_timeout=4.0):
        if not isinstance(layout, Layout):
            raise TypeError("FakeFleet needs a Layout")
        self.layout = layout
        self._options = zkclient.ConnectionOptions(hosts=hosts, root=layout.root, timeout=5.0, session_timeout=session_timeout)
        self._shared = zkclient.connect(self._options)
        self._sessions = {}

    def close(self):
        """Close every session (the hosts' ephemeral nodes vanish)."""
        for client in list(self._sessions.values()) + [self._shared]:
            zkclient.disconnect(client)
        self._sessions.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def session(self, host):
        """The kazoo client of ``host``'s agent, connected on first use."""
        if host not in self._sessions:
            self._sessions[host] = zkclient.connect(self._options)
        return self._sessions[host]

    # Roster and registrations.
    def join(self, host, versions):
        """Put ``host`` in the roster of each service of ``versions`` ({service: version}) and register each one.

        A version of None puts the service in the roster without registering it (offline).
        """
        for service, version in sorted(versions.items()):
            try:
                self._shared.create(self.layout.roster_member(service, host), b"", makepath=True)
            except NodeExistsError:  # a host re-joining
                pass
            if version is not None:
                self.register(service, host, version)

    def register(self, service, host, version):
        """Register ``host`` as a healthy instance of ``service`` at ``version`` (ephemeral).

        Like an agent, an existing registration is removed first, so watchers of the service's
        instance set see the change.
        """
        client = self.session(host)
        client.ensure_path(self.layout.current_service(service))
        client.ensure_path(self.layout.host(host))
        self.deregister(service, host)
        transaction = client.transaction()
        for path in self.layout.registration_nodes(service, host, version):
            transaction.create(path, b"", ephemeral=True)
        assert not any(isinstance(result, Exception) for result in transaction.commit()), "registering %s on %s failed" % (service, host)

    def deregister(self, service, host):
        """Remove ``host``'s registration of ``service`` if there is one."""
        version = read_snapshot(self._shared, self.layout, services=[service]).service(service).registrations.get(host)
        if version is not None:
            for path in reversed(self.layout.registration_nodes(service, host, version)):
                try:
                    self.session(host).delete(path)
                except NoNodeError:
                    pass

    def go_offline(self, host):
        """Close ``host``'s session: its registrations and ready queue members disappear."""
        client = self._sessions.pop(host, None)
        if client is not None:
            zkclient.disconnect(client)

    # The agents' part of staging.
    def get_ready(self, service, host):
        """Join ``service``'s ready queue (ephemeral sequential); returns the node's path."""
        return self.session(host).create(self.layout.ready_prefix(service, host), b"", ephemeral=True, sequence=True)

    def agent_connected(self, host):
        """Create the presence node of ``host``'s agent (ephemeral, in its session), as a connected agent does."""
        return self.session(host).create(self.layout.agent(host), b"", ephemeral=True, makepath=True)

    def take_slot(self, service, host, to_version, from_version=None, owner="agent", deadline=None, session=None, lease=None):
        """Hold an upgrade slot of ``service`` on ``host`` (persistent, as agents write it)."""
        slot = Slot(to_version=to_version, since=time.time(), from_version=from_version, owner=owner, deadline=deadline, session=session,
                    lease=lease)
        self._shared.create(self.layout.slot(service, host), slot.to_bytes())

    def release_slot(self, service, host):
        """Free ``host``'s upgrade slot of ``service``."""
        self._shared.delete(self.layout.slot(service, host))

    def record_failure(self, service, host, version, reason, stage="health", rolled_back_to=None):
        """Write the failure record an agent leaves when ``version`` fails on ``host``."""
        failure = Failure(version=version, stage=stage, reason=reason, at=time.time(), rolled_back_to=rolled_back_to)
        self._shared.create(self.layout.failure(service, host), failure.to_bytes())

    def upgrade(self, service, host, version):
        """One agent's whole turn: take a slot, deregister, come back at ``version``, release the slot."""
        current = read_snapshot(self._shared, self.layout).service(service).registrations.get(host)
        self.take_slot(service, host, version, from_version=current)
        self.deregister(service, host)
        self.register(service, host, version)
        self.release_slot(service, host)

    def fail_upgrade(self, service, host, version, reason):
        """An agent's failed turn: slot, deregister, roll back to the old version, record the failure."""
        current = read_snapshot(self._shared, self.layout).service(service).registrations[host]
        self.take_slot(service, host, version, from_version=current)
        self.deregister(service, host)
        self.register(service, host, current)
        self.record_failure(service, host, version, reason, rolled_back_to=current)
        self.release_slot(service, host)

    def roll_out(self, pause=0.0):
        """Upgrade every registered host of every service of the rollout, in deploy order.

        Reads the targets from the tree the controller seeded; ``pause`` seconds between hosts.
        """
        snapshot = read_snapshot(self._shared, self.layout)
        for service in snapshot.rollout.services:
            state = snapshot.service(service)
            for host in sorted(state.registrations):
                if state.registrations[host] != state.release.version:
                    time.sleep(pause)
                    self.upgrade(service, host, state.release.version)


# Release specs, valid unless a test breaks them.
def artifact(name, version):
    """An artifact of ``name`` at ``version``: an https URL and a checksum unique to both."""
    return {
        "url": "https://artifacts.example/%s-%s.tar.gz" % (name, version),
        "sha256": hashlib.sha256(("%s-%s" % (name, version)).encode()).hexdigest(),
    }


def service(name, version="2.0.0", quorum=1, **fields):
    """One service of a release spec (``zkrollout_release.services[]``)."""
    spec = {"name": name, "version": version, "artifact": artifact(name, version), "quorum": quorum}
    spec.update(fields)
    return spec


def release(*services, **fields):
    """A release spec (``zkrollout_release``) of ``services``; ``id``, ``parallel`` as keywords."""
    spec = {"services": list(services)}
    spec.update(fields)
    return spec


# Controller writes through the core, for a test's preconditions (the modules are tested elsewhere).
def seed(client, layout, spec, force=False):
    """Seed the release ``spec`` (a dict) as the rollout module does, signed; returns the applied Change."""
    parsed = ReleaseSpec.from_dict(spec)

    def planner(snapshot, missing):
        return plan_seed(snapshot, layout, parsed, missing, force=force, by="test", sign=release_signing.sign)

    return read_plan_apply(client, layout, planner)


def stage(client, layout, spec, rollout_id):
    """Stage one service ``spec`` (a dict from ``service()``) as the staging module does."""
    parsed = ServiceSpec.from_dict(dict(spec, schema=SCHEMA), "service %s" % spec["name"])

    def planner(snapshot, missing):
        return plan_stage(snapshot, layout, missing, parsed, rollout_id, sign=release_signing.sign)

    return read_plan_apply(client, layout, planner)


def control(client, layout, action, **fields):
    """``action`` (pause, resume, abort...) as the rollout_control module does; ``fields`` as ``plan_control`` takes them."""
    return read_plan_apply(client, layout, lambda snapshot, missing: plan_control(snapshot, layout, action, missing=missing, **fields))


# Running the collection's modules and playbooks.
class _KeywordDispatcher(ModuleDispatcherV213):
    """pytest-ansible's module dispatcher, plus the task keywords in ``options["task_keywords"]``."""

    def _build_play_ds(self, complex_args):
        play = super()._build_play_ds(complex_args)
        play["tasks"][0].update(self.options.get("task_keywords") or {})
        return play


class ModuleRunner(object):
    """Calls ``zkrollout.dc.<module>`` on localhost through pytest-ansible's ``ansible_adhoc``.

    ``runner("rollout", release=...)`` returns the module's result as a dict (with ``failed``
    when it failed); ``check_mode=True`` and ``diff=True`` set those task keywords, which
    pytest-ansible's dispatcher has no option for, through ``_KeywordDispatcher``. ``inventory``
    names localhost with this interpreter (the venv that has kazoo), because interpreter
    discovery on an explicit localhost may pick another Python. ``connection`` (zk_hosts,
    zk_root...) is added to every call.
    """

    def __init__(self, ansible_adhoc, inventory, **connection):
        self.connection = connection
        self._manager = ansible_adhoc(inventory=str(inventory), connection="local", host_pattern="localhost", task_keywords={})
        self._manager._dispatcher = _KeywordDispatcher

    def __call__(self, module, check_mode=False, diff=False, **args):
        self._manager.options["task_keywords"] = {"check_mode": check_mode, "diff": diff}
        call = getattr(self._manager.localhost, "%s.%s" % (COLLECTION, module))
        return dict(call(**dict(self.connection, **args))["localhost"])


def write_localhost_inventory(directory):
    """An inventory naming localhost with a local connection and this Python; returns its path."""
    path = Path(directory) / "localhost.ini"
    path.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable)
    return path


@dataclass(frozen=True)
class PlaybookRun(object):
    """The outcome of one ``ansible-playbook`` run, and how long it took (seconds, when measured)."""

    returncode: int
    stdout: str
    stderr: str
    elapsed: float = 0.0

    @property
    def output(self):
        """stdout and stderr together, for assertion messages."""
        return self.stdout + "\n" + self.stderr

    @property
    def custom_stats(self):
        """The ``set_stats`` data of the run (the "RUN:" line of the custom stats), or {}."""
        for line in self.stdout.splitlines():
            if line.strip().startswith("RUN: "):
                return json.loads(line.strip()[len("RUN: "):])
        return {}

    def task_result(self, task, host="localhost"):
        """The JSON result that the callback printed for ``task`` on ``host`` (results are JSON in tests)."""
        banner = self.stdout.find("TASK [%s]" % task)
        marker = "[%s] => " % host
        start = self.stdout.find(marker, banner)
        if banner < 0 or start < 0:
            raise AssertionError("no result of task %r in:\n%s" % (task, self.output))
        return json.JSONDecoder().raw_decode(self.stdout, start + len(marker))[0]

    def recap(self, host="localhost"):
        """``{ok: n, changed: n, failed: n, ...}`` of ``host`` from the play recap."""
        for line in self.stdout.splitlines():
            if line.startswith(host + " ") and "ok=" in line:
                return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}
        raise AssertionError("no play recap for %s in:\n%s" % (host, self.output))


def playbook_command(playbook, extra_vars=(), options=()):
    """The ``ansible-playbook`` command line for playbooks/<playbook> with ``-e`` ``extra_vars``."""
    command = [str(Path(sys.executable).with_name("ansible-playbook")), str(PLAYBOOKS / playbook)]
    for value in extra_vars:
        command += ["-e", value]
    return command + list(options)


def playbook_environment():
    """The environment of a test ``ansible-playbook``: this collection, tests/ansible.cfg, JSON results.

    JSON results make the custom stats line parseable; nothing asks for input (AWX style).
    """
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(COLLECTION_ROOT / "tests" / "ansible.cfg"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_SHOW_CUSTOM_STATS="true",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_RETRY_FILES_ENABLED="false",
    )
    return env


def run_playbook(playbook, extra_vars=(), options=(), timeout=120):
    """Run playbooks/<playbook> with ``-e`` ``extra_vars`` (strings or ``@file``), no stdin; return a PlaybookRun."""
    completed = subprocess.run(playbook_command(playbook, extra_vars, options), env=playbook_environment(), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout, cwd=str(COLLECTION_ROOT), check=False)
    return PlaybookRun(completed.returncode, completed.stdout, completed.stderr)


class PlaybookStream(object):
    """A running ``ansible-playbook`` whose output lines are collected as they arrive, each with its arrival time.

    stderr is merged into stdout, so the order of lines is the order a person sees them.
    """

    def __init__(self, process):
        self.process = process
        self.lines = []
        self.ended_at = None
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="playbook-output", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self._arrived:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._arrived.notify_all()
        self.process.wait()
        with self._arrived:
            self.ended_at = time.monotonic()
            self._arrived.notify_all()

    @property
    def output(self):
        """Everything printed so far, for assertion messages."""
        return "\n".join(line for _at, line in self.lines)

    def wait_for_line(self, predicate, timeout=30.0):
        """``(arrival time, line)`` of the first line that ``predicate(line)`` accepts; fails if the run ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for arrived in self.lines:
                    if predicate(arrived[1]):
                        return arrived
                if self.ended_at is not None:
                    raise AssertionError("the playbook ended without printing the line awaited:\n%s" % self.output)
                if not self._arrived.wait(deadline - time.monotonic()) and time.monotonic() >= deadline:
                    raise AssertionError("no such line within %.0fs; the playbook printed:\n%s" % (timeout, self.output))

    def finish(self, timeout=120.0):
        """Wait for the end of the run; returns its PlaybookRun (stdout holds stderr too)."""
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.process.kill()
            raise AssertionError("the playbook did not end within %.0fs:\n%s" % (timeout, self.output))
        return PlaybookRun(self.process.returncode, self.output + "\n", "")


@contextlib.contextmanager
def streamed_playbook(playbook, extra_vars=(), options=()):
    """Start playbooks/<playbook> like ``run_playbook`` and yield a PlaybookStream; the run is killed if the block fails."""
    process = subprocess.Popen(playbook_command(playbook, extra_vars, options), env=playbook_environment(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=str(COLLECTION_ROOT))
    stream = PlaybookStream(process)
    try:
        yield stream
    finally:
        if process.poll() is None and stream.ended_at is None:
            process.kill()
        process.wait(30)


class RunnerEvents(object):
    """The job events of an ansible-runner run, collected as they arrive (its ``event_handler``)."""

    def __init__(self):
        self.events = []
        self._arrived = threading.Condition()

    def add(self, event):
        """ansible-runner's event handler: keep ``event``; returning True lets runner keep it too."""
        with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()
        return True

    def seen(self, kind):
        """Whether an event of ``kind`` (such as ``playbook_on_stats``) has arrived."""
        with self._arrived:
            return any(event.get("event") == kind for event in self.events)

    def stdout(self):
        """The job's output so far, as AWX shows it: the events' stdout in order."""
        with self._arrived:
            return "\n".join(event.get("stdout", "") for event in self.events if event.get("stdout"))

    def wait_for(self, predicate, timeout=30.0):
        """The first event that ``predicate(event)`` accepts; fails if the run ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if any(event.get("event") == "playbook_on_stats" for event in self.events):
                    raise AssertionError("the job ended without the event awaited:\n%s" % self.stdout())
                if not self._arrived.wait(max(0.0, deadline - time.monotonic())) and time.monotonic() >= deadline:
                    raise AssertionError("no such event within %.0fs; the job printed:\n%s" % (timeout, self.stdout()))


def explain_rollout(report):
    """``report()``'s rollout report trimmed to what explains a stuck rollout, as JSON text."""
    try:
        full = report()
    except Exception as exc:  # a failing report must not hide the failure being explained
        return "(no report: %r)" % exc
    services = {name: {key: service[key] for key in ("verdict", "reason", "slots", "failures", "ready_queue")}
                for name, service in full["services"].items()}
    trimmed = {"state": full["state"], "reason": full["reason"], "deploy_queue": full["deploy_queue"], "hosts": full["hosts"], "services": services}
    return json.dumps(trimmed, indent=1, sort_keys=True)
