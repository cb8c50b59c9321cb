# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A controller killed in the middle of seeding leaves either the whole rollout or nothing.

A child process runs the real rollout module (its ``main()``, as AnsiballZ would, with the
module arguments on its command line) and is SIGKILLed at chosen moments:

- stepped: the child announces every ZooKeeper request (kazoo's single ``_call`` entry point)
  before and after issuing it, and waits for a go; the test kills it right there. Every write
  request is a kill point, before and after, plus read points and the moment after the module
  exited. Until the first write request nothing may have changed; once the module has exited
  the rollout must be complete; in between, one of the two.
- swept: the child seeds freely and is killed after delays swept across its seeding time.

Each trial has its own root with the same history (roster, registrations, a running rollout
with a ready queue member and a failure record, replaced with force; or no tree at all), so
the complete state is known byte for byte from one unkilled reference run; only the rollout
node's timestamps differ between runs and are left out of the comparison.

The child is the module rather than a whole ``ansible-playbook``: ansible-core 2.19 detaches
its workers into sessions of their own, so killing ansible-playbook leaves the module running,
and the second of interpreter start-up jitter before the module's first request would make
kills land at arbitrary places; here they land exactly between two requests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.core import layout as layout_module
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Failure, ReleaseSpec, canonical_json
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import four_letter

from . import tree
from .tree import Znode, dump_tree, release, service

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(240)]

# The directory holding ansible_collections/, so the child imports the same core as the tests.
COLLECTIONS_PATH = str(Path(os.path.abspath(layout_module.__file__)).parents[6])
NEW_RELEASE = release(service("A", version="3.0.0", quorum=2), service("D", version="1.0.0", depends_on=["A"]), id="r1")
OLD_RELEASE = release(service("A", quorum=1), service("B", depends_on=["A"]), service("C"), id="r0")
READ_REQUESTS = ("Exists", "GetData", "GetChildren", "GetChildren2", "Sync", "GetACL")

CHILD = r"""
import sys

from kazoo.client import KazooClient


def pause(event):
    sys.stderr.write("@@ %s\n" % event)
    sys.stderr.flush()
    if not sys.stdin.readline():
        sys.exit(3)


stepped = "--stepped" in sys.argv
if stepped:
    sys.argv.remove("--stepped")
issue = KazooClient._call


def announced(client, request, async_object):
    if not getattr(announced, "told", False):
        announced.told = True
        sys.stderr.write("@@ session %x\n" % client._session_id)
        sys.stderr.flush()
    if stepped:
        pause("before %s" % type(request).__name__)
    issued = issue(client, request, async_object)
    if stepped:
        pause("after %s" % type(request).__name__)
    return issued


KazooClient._call = announced

from ansible_collections.zkrollout.dc.plugins.modules import rollout

pause("started")
try:
    rollout.main()
finally:
    pause("exited")
"""


class SeedingChild(object):
    """A child process running the rollout module on ``NEW_RELEASE`` under ``root``; see CHILD."""

    def __init__(self, hosts, root, stepped):
        args = {"ANSIBLE_MODULE_ARGS": {"zk_hosts": hosts, "zk_root": root, "zk_timeout": 5.0, "release": NEW_RELEASE,
                                        "force": True, "by": "atomicity test"}}
        env = dict(os.environ, PYTHONPATH=COLLECTIONS_PATH)
        self.result = tempfile.TemporaryFile()
        self.process = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)] + (["--stepped"] if stepped else []),
                                        stdin=subprocess.PIPE, stdout=self.result, stderr=subprocess.PIPE, env=env, text=True,
                                        bufsize=1, start_new_session=True)
        self.noise = []
        self.session = None

    def next_event(self):
        """The next event the child announces, then paused; fails the test if the child died."""
        while True:
            line = self.process.stderr.readline()
            if not line:
                self.process.wait(10)
                raise AssertionError("the child exited (%s): %s" % (self.process.returncode, "".join(self.noise)[-2000:]))
            if line.startswith("@@ session "):
                self.session = int(line.split()[2], 16)
            elif line.startswith("@@ "):
                return line[3:].strip()
            else:
                self.noise.append(line)

    def go(self):
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def module_result(self):
        """The module's JSON result, once it has exited."""
        self.result.seek(0)
        return json.loads(self.result.read().decode())

    def kill(self):
        """SIGKILL the child (its own process group, started by us) and reap it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stderr, self.result):
            stream.close()


def _prepare(client, layout):
    """The history every trial root shares: roster, registrations, rollout r0 with a ready host and a failure."""
    for host in ("h1", "h2", "h3"):
        for name in ("A", "B", "C"):
            client.create(layout.roster_member(name, host), b"", makepath=True)
            client.ensure_path(layout.current_service(name))
            client.create(layout.registration(name, host, "1.0.0"), b"", ephemeral=True)
    tree.seed(client, layout, OLD_RELEASE)
    client.create(layout.ready_prefix("A", "h1"), b"", ephemeral=True, sequence=True)
    client.create(layout.failure("B", "h2"), Failure(version="2.0.0", stage="health", reason="HTTP 500", at=1.0).to_bytes())


def _without_timestamps(dump):
    """The dump with the rollout node's ``created``/``updated`` left out (they differ between runs)."""
    stable = dict(dump)
    rollout = stable.get("/rollout")
    if rollout is not None:
        fields = {key: value for key, value in json.loads(rollout.data).items() if key not in ("created", "updated")}
        stable["/rollout"] = Znode(canonical_json(fields), rollout.ephemeral, rollout.version, rollout.cversion)
    return stable


def _outcome(before, after, reference):
    """"nothing" (``after`` is ``before``), "whole" (it is the unkilled ``reference``) or what is partial."""
    if after == before:
        return "nothing"
    if _without_timestamps(after) == _without_timestamps(reference):
        return "whole"
    return "partial: %s" % tree.describe_difference(_without_timestamps(reference), _without_timestamps(after))


def _assert_whole_rollout(client, layout):
    snapshot = read_snapshot(client, layout)
    spec = ReleaseSpec.from_dict(NEW_RELEASE)
    assert (snapshot.rollout.id, snapshot.rollout.state, snapshot.rollout.services) == ("r1", "running", ["A", "D"])
    assert snapshot.queued_services == ["A", "D"]
    assert {name: state.release for name, state in snapshot.services.items() if state.release_version >= 0} == {
        name: release_signing.sign(spec.service(name).release_entry("r1")) for name in ("A", "D")}
    for name in ("A", "D"):
        for path in layout.release_children(name):
            assert client.exists(path) is not None, path
    assert snapshot.problems == ()


def _dump_after(child, bed, client, root):
    """Dump ``root`` once every request the killed ``child`` sent has been applied.

    The server drops the child's connection only after reading (and queueing) everything it
    sent; a sync queued after that, on this single-node bed, completes after those requests.
    """
    if child.session is not None:
        deadline = time.monotonic() + 30
        while "sid=0x%x," % child.session in four_letter(bed.members[0].client_port, "cons"):
            assert time.monotonic() < deadline, "the server kept the killed child's connection for 30s"
            time.sleep(0.02)
    client.sync(root)
    return dump_tree(client, root)


class Trials(object):
    """Numbered trial roots under the test's root, each prepared with the same history (or none)."""

    def __init__(self, client, zk_root, history):
        self.client, self.zk_root, self.history = client, zk_root, history
        self.count = 0
        client.ensure_path(zk_root)

    def new(self):
        self.count += 1
        layout = Layout("%s/trial-%03d" % (self.zk_root, self.count))
        if self.history:
            _prepare(self.client, layout)
        return layout


@pytest.mark.parametrize("history", [True, False], ids=["replacing-a-running-rollout", "on-a-server-without-a-tree"])
def test_a_seeding_killed_between_any_two_zookeeper_requests_leaves_the_whole_rollout_or_nothing(zk, client, zk_root, history):
    trials = Trials(client, zk_root, history)
    reference = trials.new()
    child = SeedingChild(zk.hosts, reference.root, stepped=True)
    events = []
    try:
        while not events or events[-1] != "exited":
            events.append(child.next_event())
            child.go()
        child.process.wait(10)
        assert child.module_result()["changed"] is True, child.module_result()
    finally:
        child.kill()
    complete = dump_tree(client, reference.root)
    _assert_whole_rollout(client, reference)
    writes = [i for i, event in enumerate(events) if event.split()[0] in ("before", "after") and event.split()[1] not in READ_REQUESTS]
    assert [events[i] for i in writes] == ["before Transaction", "after Transaction"], "seeding is not one transaction: %s" % events
    first_write = writes[0]
    reads = [i for i in range(first_write) if events[i].startswith("before")]
    kill_points = sorted({0, reads[0], reads[len(reads) // 2], first_write - 1, len(events) - 1, *writes})

    outcomes = {}
    for point in kill_points:
        layout = trials.new()
        before = dump_tree(client, layout.root)
        child = SeedingChild(zk.hosts, layout.root, stepped=True)
        try:
            for _request in range(point):
                child.next_event()
                child.go()
            assert child.next_event() == events[point]
        finally:
            child.kill()
        outcome = _outcome(before, _dump_after(child, zk, client, layout.root), complete)
        outcomes["%d %s" % (point, events[point])] = outcome
        if point <= first_write:
            assert outcome == "nothing", "killed at %r (event %d): %s" % (events[point], point, outcome)
        elif events[point] == "exited":
            assert outcome == "whole", "killed after the module exited: %s" % outcome
        else:
            assert outcome in ("nothing", "whole"), "killed at %r (event %d): %s" % (events[point], point, outcome)
    assert set(outcomes.values()) == {"nothing", "whole"}, outcomes


def test_a_seeding_killed_after_swept_delays_leaves_the_whole_rollout_or_nothing(zk, client, zk_root):
    trials = Trials(client, zk_root, history=True)
    reference = trials.new()
    child = SeedingChild(zk.hosts, reference.root, stepped=False)
    try:
        assert child.next_event() == "started"
        started = time.monotonic()
        child.go()
        assert child.next_event() == "exited"
        seeding_time = time.monotonic() - started
    finally:
        child.kill()
    complete = dump_tree(client, reference.root)
    _assert_whole_rollout(client, reference)

    # Delays grow in tenths of the reference's run time until the rollout is seen whole twice.
    outcomes = []
    while len(outcomes) < 40 and [outcome for _delay, outcome in outcomes[-2:]] != ["whole", "whole"]:
        delay = seeding_time * len(outcomes) / 10
        layout = trials.new()
        before = dump_tree(client, layout.root)
        child = SeedingChild(zk.hosts, layout.root, stepped=False)
        try:
            assert child.next_event() == "started"
            child.go()
            time.sleep(delay)
        finally:
            child.kill()
        outcome = _outcome(before, _dump_after(child, zk, client, layout.root), complete)
        outcomes.append((round(delay, 4), outcome))
        assert outcome in ("nothing", "whole"), "killed %.4fs into seeding: %s" % (delay, outcome)
    assert outcomes[0][1] == "nothing" and outcomes[-1][1] == "whole", outcomes
