# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Randomized, seeded fault schedules against real agents and a real 3-member ZooKeeper ensemble.

One schedule (``run_schedule(seed, ...)``): five hosts of real agent processes run A and B (B
depends on A) as real demo services on loopback; a rollout of both is seeded with a
``max_parallel`` drawn from the seed, and two to four faults drawn from ``FAULTS`` hit it at
seeded moments. The independent ``QuorumMonitor`` samples every instance's own ``/health``
throughout. Every schedule checks:

- **quorum**: the monitor never saw fewer healthy instances of a service than its quorum
  (``HOSTS - max_parallel``: the agents may use every slot; one less when the schedule kills an
  instance from outside);
- **dependency order**: no instance of B began its switch before the last A was healthy on
  its target, not counting the A of a host whose agent a fault cut off (a straggler, which
  follows A to its target afterwards by the documented rule);
- **convergence**: once the faults stopped, the rollout is done within a bound and every
  instance runs, registered and healthy, on its target;
- **nothing left over**: no slot, no lock node, and every agent connected again.

The same seed draws the same schedule (``describe``), so a failing seed is re-run alone:
``python -m tests.soak.run --seeds 17``.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field

from ansible_collections.zkrollout.dc.plugins.module_utils.controller import writes
from ansible_collections.zkrollout.dc.tests.integration import tree
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import V2, RolloutBed

HOSTS = 5
SESSION_TIMEOUT = 4.0
# When the faults begin, after seeding, and how long a schedule may take to converge after them.
FAULT_WINDOW = 8.0
CONVERGENCE = 120.0
# Parts of the tree nobody writes in a rollout: where a malformed node can be injected.
UNRELATED_SERVICE = "Z"


@dataclass
class Outcome(object):
    """What one schedule did and what it found; ``problems`` empty means every invariant held."""

    seed: int
    schedule: list
    max_parallel: int
    quorum: int
    min_healthy: dict = field(default_factory=dict)
    seconds: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def passed(self):
        """Every invariant held."""
        return not self.problems


# Faults: each is (name, function(bed, ensemble, rng)) and returns once the fault has been undone.
def _any_host(bed, rng):
    return rng.choice(bed.hosts)


def kill_agent(bed, _ensemble, rng):
    """SIGKILL one agent, restart it after 0.5-3 s."""
    host = _any_host(bed, rng)
    bed.fleet.kill(host)
    time.sleep(rng.uniform(0.5, 3.0))
    bed.fleet.start(host)
    return host


def freeze_agent(bed, _ensemble, rng):
    """SIGSTOP one agent past its session timeout (its ephemeral nodes go), then SIGCONT."""
    host = _any_host(bed, rng)
    bed.fleet.signal(host, signal.SIGSTOP)
    time.sleep(SESSION_TIMEOUT + rng.uniform(1.0, 3.0))
    bed.fleet.signal(host, signal.SIGCONT)
    return host


def freeze_slot_holder(bed, _ensemble, rng):
    """SIGSTOP an agent that has just taken a slot (or the next one to), past its session timeout, then SIGCONT."""
    deadline = time.monotonic() + 10.0
    holders = []
    while not holders and time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            holders = bed.slot_holders("A") + bed.slot_holders("B")
        time.sleep(0.01)
    host = rng.choice(holders) if holders else _any_host(bed, rng)
    bed.fleet.signal(host, signal.SIGSTOP)
    time.sleep(SESSION_TIMEOUT + rng.uniform(1.0, 3.0))
    bed.fleet.signal(host, signal.SIGCONT)
    return host


def kill_leader(_bed, ensemble, rng):
    """SIGKILL the ZooKeeper leader, restart it after 1-4 s."""
    leader = ensemble.leader()
    leader.stop(signal.SIGKILL)
    time.sleep(rng.uniform(1.0, 4.0))
    leader.start()
    return "member %d" % leader.myid


def freeze_follower(_bed, ensemble, rng):
    """SIGSTOP one ZooKeeper follower for 1-5 s."""
    followers = ensemble.followers()
    if not followers:
        return "no follower"
    member = rng.choice(followers)
    member.freeze()
    time.sleep(rng.uniform(1.0, 5.0))
    member.thaw()
    return "member %d" % member.myid


def kill_instance(bed, _ensemble, rng):
    """SIGKILL one demo service instance; returns once its agent has it healthy again (bounded), so two never overlap.

    An instance killed from outside is down whatever the agents do: a schedule with this fault
    leaves the quorum one instance of slack for it (``quorum_of``).
    """
    host, name = _any_host(bed, rng), rng.choice(bed.services)
    bed.fleet.kill_service(host, name)
    deadline = time.monotonic() + 20.0
    time.sleep(0.5)
    while time.monotonic() < deadline and bed.versions_by_host(name).get(host) is None:
        time.sleep(0.1)
    return "%s on %s" % (name, host)


def pause_and_resume(bed, _ensemble, rng):
    """A second controller pauses the rollout for 1-3 s and resumes it."""
    for action in ("pause", "resume"):
        with contextlib.suppress(writes.WriteRefused):
            tree.control(bed.client, bed.layout, action)
        if action == "pause":
            time.sleep(rng.uniform(1.0, 3.0))
    return "paused and resumed"


def malformed_node(bed, _ensemble, rng):
    """Someone writes a malformed release (deeply nested JSON) for a service no host runs."""
    depth = rng.choice((50, 5000))
    with contextlib.suppress(Exception):
        bed.client.create(bed.layout.release(UNRELATED_SERVICE), b"[" * depth + b"]" * depth, makepath=True)
    return "depth %d" % depth


FAULTS = {
    "kill_agent": kill_agent,
    "freeze_agent": freeze_agent,
    "freeze_slot_holder": freeze_slot_holder,
    "kill_leader": kill_leader,
    "freeze_follower": freeze_follower,
    "kill_instance": kill_instance,
    "pause_and_resume": pause_and_resume,
    "malformed_node": malformed_node,
}


def draw(seed):
    """``(max_parallel, [(at seconds after seeding, fault name)])`` of schedule ``seed``: the same every time."""
    rng = random.Random(seed)
    max_parallel = rng.choice((1, 2))
    faults = sorted((round(rng.uniform(0.0, FAULT_WINDOW), 2), rng.choice(sorted(FAULTS))) for _unused in range(rng.randint(2, 4)))
    return max_parallel, faults


def quorum_of(max_parallel, faults):
    """The quorum of a schedule: as tight as ``max_parallel`` allows, one looser when an instance is killed from outside."""
    return HOSTS - max_parallel - (1 if any(name == "kill_instance" for _at, name in faults) else 0)


def describe(seed):
    """One line saying what schedule ``seed`` does."""
    max_parallel, faults = draw(seed)
    steps = ", ".join("%s at %.1fs" % (name, at) for at, name in faults)
    return "seed %d: max_parallel %d, quorum %d; %s" % (seed, max_parallel, quorum_of(max_parallel, faults), steps)


# Faults that leave a host's agent without a session for a while: that host may miss a turn.
AGENT_FAULTS = ("kill_agent", "freeze_agent", "freeze_slot_holder")


def _apply(bed, ensemble, seed, faults, log, cut_off):
    """Run the faults at their moments, one after another (each waits until it is undone); ``cut_off`` gets the hosts of agent faults."""
    rng = random.Random(seed * 7919 + 1)
    started = time.monotonic()
    for at, name in faults:
        time.sleep(max(0.0, started + at - time.monotonic()))
        try:
            target = FAULTS[name](bed, ensemble, rng)
            if name in AGENT_FAULTS:
                cut_off.add(target)
            log.append("%.1fs %s (%s)" % (time.monotonic() - started, name, target))
        except Exception as exc:  # pylint: disable=broad-except
            log.append("%.1fs %s could not be applied: %s: %s" % (time.monotonic() - started, name, exc.__class__.__name__, exc))


def run_schedule(seed, store, ensemble, client, root):
    """Run schedule ``seed`` on a fresh bed under ``root``; return its Outcome."""
    max_parallel, faults = draw(seed)
    quorum = quorum_of(max_parallel, faults)
    outcome = Outcome(seed=seed, schedule=faults, max_parallel=max_parallel, quorum=quorum)
    began = time.monotonic()
    with RolloutBed(store, ensemble.hosts, root, client, hosts=HOSTS, services=("A", "B"), session_timeout=SESSION_TIMEOUT) as bed:
        bed.start()
        bed.seed({"A": {"version": V2, "quorum": quorum, "max_parallel": max_parallel},
                  "B": {"version": V2, "quorum": quorum, "max_parallel": max_parallel, "depends_on": ["A"]}}, rollout_id="soak-%d" % seed)
        log = []
        # On this thread: a ZooKeeper member gets SIGKILL when the thread that started it ends
        # (tests/bed/zookeeper.py), so a member restarted by a fault must not belong to a helper thread.
        cut_off = set()
        _apply(bed, ensemble, seed, faults, log, cut_off)
        ensemble.heal()
        outcome.schedule = log
        try:
            bed.wait_done(timeout=CONVERGENCE)
            for name in ("A", "B"):
                bed.wait_all_on(name, V2, timeout=60.0)
        except AssertionError as exc:
            # The wait's message holds the rollout report: what each host runs, slots, verdicts.
            outcome.problems.append("no convergence: %s" % "\n    ".join(str(exc).splitlines()[:40]))
        outcome.min_healthy = dict(bed.monitor.min_healthy)
        for name in ("A", "B"):
            if outcome.min_healthy.get(name, 0) < quorum:
                outcome.problems.append("quorum: %s dropped to %s healthy (quorum %d)" % (name, outcome.min_healthy.get(name), quorum))
        # A host whose agent had no session when A completed is a straggler by the documented rule
        # (docs/architecture.md, "Stragglers"): it follows A to its target later, so it is not
        # held against B. Every other host's A must be on its target before any B goes down.
        stragglers = {bed.url(host, "A") for host in cut_off}
        reached = {url: t for url, t in bed.history.reached("A", V2).items() if url not in stragglers}
        started = bed.history.switch_started("B", V2)
        if reached and started and min(started.values()) < max(reached.values()):
            outcome.problems.append("dependency order: B began switching %.2fs before the last A was on %s; A reached it at %s; B "
                                    "switches began at %s; faults: %s; A history %s; B history %s" % (
                                        max(reached.values()) - min(started.values()), V2, _times(reached), _times(started),
                                        "; ".join(log), bed.history.of("A"), bed.history.of("B")))
        outcome.problems += _leftovers(bed)
        if outcome.problems:
            outcome.problems.append("agent logs:\n" + bed.agent_logs(lines=8))
    outcome.seconds = time.monotonic() - began
    return outcome


def _times(by_url):
    return ", ".join("%s %.2fs" % (url.rsplit(":", 1)[-1], t) for url, t in sorted(by_url.items(), key=lambda item: item[1]))


def _leftovers(bed):
    """Slots or lock nodes left behind, and agents not connected again."""
    problems = []
    deadline = time.monotonic() + 20.0
    while True:
        problems = []
        snapshot = bed.snapshot()
        for name in ("A", "B"):
            if snapshot.service(name).slots:
                problems.append("leftover slots of %s: %s" % (name, sorted(snapshot.service(name).slots)))
            with contextlib.suppress(Exception):
                locks = bed.client.get_children(bed.layout.lock(name))
                if locks:
                    problems.append("leftover lock nodes of %s: %s" % (name, locks))
        missing = sorted(set(bed.hosts) - set(snapshot.live_agents or ()))
        if missing:
            problems.append("agents not connected again: %s" % ", ".join(missing))
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.5)
