#!/usr/bin/env python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How close the agents' own rollout of A -> B -> C comes to its lower bound, and how fast they hand a slot on.

Builds its own test fleet (network namespaces ``zkp-*`` on 10.231.83.0/24, sshd per host, a real
ZooKeeper and an artifact server on the bridge), installs the agent on every host over SSH with the
role, as the end-to-end tests do (tests/integration/e2e_support.py), and gives every host its own
start-up delay of the demo services (uniform in ``startup * (1 -+ jitter)``, seeded). Then it seeds
A -> B -> C (B depends on A, C on B) with ``playbooks/rollout.yml`` twice, with ``max_parallel`` 1 and
then 2 (quorum ``N - k``), and waits until the hosts are done.

Everything it reports comes from the independent monitor's samples of the services' own ``/health``
(never from ZooKeeper): T, the mean time an instance is down (healthy on the old version -> healthy on
the target); the makespan (first instance down -> last instance healthy on its target); the lower bound
``sum over A, B, C of ceil(N/k) * T``; their ratio; the hand-off latency per service (each time an
instance answers healthy on its target, the time until the next instance of the service goes down),
p50 and p99; and the lowest healthy count per service against its quorum. A breakdown of where the
hand-off time goes (from the benchmark's own watches on the slot and registration znodes) is printed
below the table as a diagnosis only. Run as root, after ``make setup``::

    source scripts/env.sh && python benchmarks/rollout_speed.py [--hosts 9] [--startup 1.0] [--jitter 0.5] [--seed 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import sys
import threading
import time

from kazoo.recipe.watchers import ChildrenWatch

from ansible_collections.zkrollout.dc.tests.integration.e2e_support import (  # first: it makes the collection's plugins importable
    MONITOR_TIMEOUT,
    V1,
    V2,
    EndToEndFleet,
    other_good_version,
)

# isort: split
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import TERMINAL_STATES
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import split_registration
from ansible_collections.zkrollout.dc.tests.bed.environment import FleetEnvironment
from ansible_collections.zkrollout.dc.tests.bed.monitor import QuorumMonitor

# Apart from every other fleet: tests zkr/10.231.77, molecule zkm/78, demo zkd/79, strategy tests zks/80,
# strategy benchmark zkb/81.
PREFIX, SUBNET = "zkp", "10.231.83"
CHAIN = (("A", []), ("B", ["A"]), ("C", ["B"]))
VARIANTS = (1, 2)
TARGET_RATIO, TARGET_P50, TARGET_P99 = 1.10, 0.050, 0.200
SETTLE_TIMEOUT = 60.0


def per_host_delays(hosts, startup, jitter, seed):
    """``{host: seconds}`` of start-up delay, uniform in ``startup * (1 -+ jitter)``, the same for the same seed."""
    draw = random.Random(seed)
    return {host: round(draw.uniform(startup * (1 - jitter), startup * (1 + jitter)), 3) for host in hosts}


def percentile(values, fraction):
    """Linear interpolation between the closest ranks (``fraction`` 0.5 is the median); None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class PacedEnvironment(FleetEnvironment):
    """The e2e environment, but each host's demo services start with that host's own start-up delay.

    The delay is the demo service's ``startup_delay`` knob. The tarball (and its sha256) is the same
    for every host, so the host's command passes ``--config`` naming a ``service.json`` of the
    host's own, one per version (the agent substitutes ``{version}``); ``service.py`` is still the
    one the agent downloaded and verified.
    """

    def __init__(self, delays, health_interval, rise, startup_interval=None, **settings):
        super().__init__(hosts=len(delays), **settings)
        self.delays = delays
        self.health_interval = health_interval
        self.startup_interval = startup_interval or health_interval
        self.rise = rise

    def _config_template(self, host, name):
        return os.path.join(host.directory, "startup", "%s-{version}.json" % name)

    def write_inventory(self):
        for host in self.fleet.hosts:
            os.makedirs(os.path.join(host.directory, "startup"), exist_ok=True)
            for name in self.services:
                for version in (V1, V2):
                    with open(self._config_template(host, name).format(version=version), "w") as out:
                        json.dump({"service": name, "version": version, "startup_delay": self.delays[host.name], "broken": False}, out)
        return super().write_inventory()

    def agent_services(self, host):
        services = super().agent_services(host)
        deadline = max(10.0, 3 * self.delays[host.name] + 10)
        for name, entry in services.items():
            entry["command"] = entry["command"] + ["--config", self._config_template(host, name)]
            entry["health"].update(interval=self.health_interval, startup_interval=self.startup_interval, rise=self.rise, deadline=deadline)
        return services


class SpeedFleet(EndToEndFleet):
    """EndToEndFleet (role over SSH, rollout.yml, bounded waits, checked clean-up) on a PacedEnvironment."""

    def __init__(self, environment):
        super().__init__(hosts=environment.size)
        self.environment = environment

    def start_monitor(self, interval=0.02, max_seconds=900.0):
        """The independent monitor on every instance's /health, sampling every ``interval``."""
        self.stop_monitor()
        self.history = None
        self.monitor = QuorumMonitor(self.environment.health_targets(), interval=interval, timeout=MONITOR_TIMEOUT,
                                     max_seconds=max_seconds).start()
        return self.monitor

    def wait_settled(self, timeout):
        """Wait (bounded) until every host is registered on one version of every service and no slot is held."""
        def settled():
            try:
                return self.settled_versions()
            except AssertionError:
                return None

        return self.wait_for(settled, timeout, "the fleet to settle on one version per service", interval=0.5)


class ZnodeTimeline(object):
    """Diagnosis only: when each host's upgrade slot and registration appeared and went, as our own session saw it.

    ``events`` = [(t, kind, service, host, present)], kind "slot" or "registration", on the monitor's clock.
    """

    def __init__(self, client, layout, services, clock):
        self.client = client
        self.layout = layout
        self.services = services
        self.clock = clock
        self.events = []
        self._lock = threading.Lock()
        self._stopped = False

    def start(self):
        for name in self.services:
            for kind, path in (("slot", self.layout.slots(name)), ("registration", self.layout.current_service(name))):
                self._follow(kind, name, path)
        return self

    def stop(self):
        self._stopped = True

    def _follow(self, kind, name, path):
        last = [None]

        def changed(children):
            if self._stopped:
                return False
            t = self.clock()
            # Registrations are named <host>@<version>; the timeline is per host.
            now = {(split_registration(child) or (child,))[0] for child in children}
            with self._lock:
                if last[0] is not None:
                    self.events.extend((t, kind, name, host, True) for host in sorted(now - last[0]))
                    self.events.extend((t, kind, name, host, False) for host in sorted(last[0] - now))
                last[0] = now
            return None

        ChildrenWatch(self.client, path, changed)

    def times(self, kind, service, present):
        """``{host: [t...]}`` of one kind of event."""
        found = {}
        with self._lock:
            for t, event_kind, name, host, event_present in self.events:
                if (event_kind, name, event_present) == (kind, service, present):
                    found.setdefault(host, []).append(t)
        return found


def down_and_up(transitions, old, new):
    """``(down, up)`` of one instance: the last time it stopped answering healthy on ``old`` before it first answered healthy on ``new``."""
    down = up = None
    previous = None
    for change in transitions:
        state = (change.healthy, change.version)
        if previous == (True, old) and state != (True, old):
            down = change.t
        if state == (True, new):
            up = change.t
            break
        previous = state
    return down, up


def handoffs_to_next_down(downs, ups):
    """Each time an instance answers healthy on its target: seconds until the next instance goes down (none after the last)."""
    later_downs = sorted(downs)
    gaps = []
    for up in sorted(ups):
        following = [down for down in later_downs if down > up]
        if following:
            gaps.append(following[0] - up)
    return gaps


def handoffs_slot_matched(downs, ups, k):
    """The j-th instance to come up frees the slot that the (k + j)-th instance to go down takes: their gaps."""
    downs, ups = sorted(downs), sorted(ups)
    return [downs[k + j] - ups[j] for j in range(len(downs) - k)]


def breakdown(fleet, timeline, service, down, up):
    """Per hand-off of ``service``: (rise, register->release, release->next take, take->down) seconds, from our znode watches."""
    registered = timeline.times("registration", service, True)
    released = timeline.times("slot", service, False)
    taken = timeline.times("slot", service, True)
    takes = sorted((t, host) for host, times in taken.items() for t in times)
    used = set()
    parts = []
    for t_release, host in sorted((times[-1], host) for host, times in released.items()):
        t_register = min((t for t in registered.get(host, ()) if t >= up.get(host, math.inf)), default=None)
        following = [(t, other) for t, other in takes if t > t_release and other != host and other not in used]
        if t_register is None or not following or host not in up:
            continue
        t_take, nxt = following[0]
        used.add(nxt)
        if nxt not in down:
            continue
        parts.append((t_register - up[host], t_release - t_register, t_take - t_release, down[nxt] - t_take))
    return parts


def measure(fleet, k, quorum, services, timeline):
    """The numbers of one variant, from the monitor's transitions (and the timeline, for the breakdown only)."""
    monitor = fleet.monitor
    hosts, n = fleet.hosts, len(fleet.hosts)
    by_url = {}
    for change in monitor.transitions:
        by_url.setdefault(change.url, []).append(change)
    rows, problems = {}, []
    all_downs, all_ups, all_handoffs, all_matched, all_parts = [], [], [], [], []
    for name, old, new in services:
        down, up = {}, {}
        for host in hosts:
            t_down, t_up = down_and_up(by_url.get(fleet.url(host, name), []), old, new)
            if t_down is None or t_up is None:
                problems.append("%s on %s: the monitor did not see it go from %s to %s (down %s, up %s)" % (name, host, old, new, t_down, t_up))
                continue
            down[host], up[host] = t_down, t_up
        if len(down) < n:
            continue
        handoffs = handoffs_to_next_down(down.values(), up.values())
        matched = handoffs_slot_matched(down.values(), up.values(), k)
        parts = breakdown(fleet, timeline, name, down, up)
        mean_down = statistics.mean(up[host] - down[host] for host in hosts)
        rows[name] = {
            "T": mean_down,
            "span": max(up.values()) - min(down.values()),
            "bound": math.ceil(n / k) * mean_down,
            "handoff_p50": percentile(handoffs, 0.5), "handoff_p99": percentile(handoffs, 0.99),
            "slot_handoff_p50": percentile(matched, 0.5), "slot_handoff_p99": percentile(matched, 0.99),
            "handoffs": handoffs, "slot_handoffs": matched,
            "min_healthy": monitor.min_healthy[name], "quorum": quorum,
            "down": down, "up": up, "first_down": min(down.values()), "last_up": max(up.values()),
        }
        all_downs += list(down.values())
        all_ups += list(up.values())
        all_handoffs += handoffs
        all_matched += matched
        all_parts += parts
    result = {"max_parallel": k, "hosts": n, "quorum": quorum, "services": rows, "problems": problems}
    if len(rows) == len(services):
        bound = sum(row["bound"] for row in rows.values())
        makespan = max(all_ups) - min(all_downs)
        gaps = {"%s->%s" % (a, b): rows[b]["first_down"] - rows[a]["last_up"] for (b, depends_on) in CHAIN for a in depends_on}
        result.update(
            T=statistics.mean(row["T"] for row in rows.values()), makespan=makespan, lower_bound=bound, ratio=makespan / bound,
            handoff_p50=percentile(all_handoffs, 0.5), handoff_p99=percentile(all_handoffs, 0.99),
            slot_handoff_p50=percentile(all_matched, 0.5), slot_handoff_p99=percentile(all_matched, 0.99),
            service_gaps=gaps,
            dependency_order=["%s began going down %.0f ms before the last instance of %s was healthy on its target"
                              % (pair.split("->")[1], -1000 * gap, pair.split("->")[0])
                              for pair, gap in gaps.items() if gap < 0],
            breakdown={label: {"p50": percentile([part[i] for part in all_parts], 0.5), "max": max((part[i] for part in all_parts), default=None)}
                       for i, label in enumerate(("health rise", "register->release", "release->next take", "take->down"))},
            breakdown_count=len(all_parts))
    duration = monitor.elapsed()
    result["monitor_sample_period_ms"] = 1000.0 * duration * len(hosts) * len(services) / max(1, monitor.samples)
    try:
        monitor.assert_quorum({name: quorum for name, _old, _new in services})
        result["quorum_verdict"] = None
    except AssertionError as exc:
        result["quorum_verdict"] = str(exc)
    return result


def run_variant(fleet, k, args):
    """Seed A -> B -> C with max_parallel k and quorum N - k, wait until done, measure."""
    n = len(fleet.hosts)
    quorum = n - k
    versions = fleet.wait_settled(SETTLE_TIMEOUT)
    services = [(name, versions[name], other_good_version(versions[name])) for name, _deps in CHAIN]
    release = fleet.release("speed-k%d-%s" % (k, time.strftime("%Y%m%d-%H%M%S")),
                            [(name, new, quorum, k, dict(CHAIN)[name]) for name, _old, new in services])
    fleet.start_monitor(interval=args.monitor_interval, max_seconds=args.timeout + 2 * SETTLE_TIMEOUT)
    print("max_parallel %d: seeding %s (quorum %d) with playbooks/rollout.yml" % (k, ", ".join("%s %s->%s" % s for s in services), quorum), flush=True)
    fleet.seed(release)
    timeline = ZnodeTimeline(fleet.client, fleet.layout, [name for name, _o, _n in services], fleet.monitor.elapsed).start()
    try:
        fleet.wait_for(lambda: fleet.report()["state"] in TERMINAL_STATES, args.timeout, "the rollout to end", interval=0.5)
        state = fleet.report()["state"]
        took = time.monotonic() - fleet.seeded_at
        if state != "done":
            raise AssertionError("max_parallel %d: the rollout ended %s, not done:\n%s" % (k, state, fleet.describe()))

        def all_on_target():
            now = fleet.monitor.versions_now()
            return all(now[name][fleet.url(host, name)] == new for name, _old, new in services for host in fleet.hosts)

        fleet.wait_for(all_on_target, SETTLE_TIMEOUT, "the monitor to see every instance healthy on its target", interval=0.2)
    finally:
        timeline.stop()
        fleet.stop_monitor()
    result = measure(fleet, k, quorum, services, timeline)
    result["seed_to_done"] = took
    print("max_parallel %d: done %.1fs after seeding" % (k, took), flush=True)
    return result


def mark(value, target, unit=1.0, digits=2):
    """``value`` (scaled by ``unit``) and ok/MISS against ``target``; "-" without a value."""
    if value is None:
        return "-"
    return "%.*f %s" % (digits, value * unit, "ok" if value <= target else "MISS")


def seconds(value):
    return "-" if value is None else "%.2f" % value


def print_table(results):
    print()
    print("| max_parallel | service | N | T (s) | makespan (s) | lower bound (s) | ratio (target <= %.2f) | hand-off p50 ms (<= %d) "
          "| hand-off p99 ms (<= %d) | min healthy / quorum |" % (TARGET_RATIO, TARGET_P50 * 1000, TARGET_P99 * 1000))
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in results:
        k, n = result["max_parallel"], result["hosts"]
        for name, row in result["services"].items():
            verdict = "ok" if row["min_healthy"] >= row["quorum"] else "VIOLATED"
            print("| %d | %s | %d | %.2f | %.2f (span) | %.2f | %s | %s | %s | %d / %d %s |" % (
                k, name, n, row["T"], row["span"], row["bound"], mark(row["span"] / row["bound"], TARGET_RATIO),
                mark(row["handoff_p50"], TARGET_P50, 1000, 0), mark(row["handoff_p99"], TARGET_P99, 1000, 0), row["min_healthy"], row["quorum"], verdict))
        if "makespan" in result:
            lowest = min(row["min_healthy"] for row in result["services"].values())
            print("| **%d** | **A->B->C** | %d | %.2f | **%.2f** | %.2f | **%s** | %s | %s | %d / %d %s |" % (
                k, n, result["T"], result["makespan"], result["lower_bound"], mark(result["ratio"], TARGET_RATIO),
                mark(result["handoff_p50"], TARGET_P50, 1000, 0), mark(result["handoff_p99"], TARGET_P99, 1000, 0), lowest, result["quorum"],
                "ok" if result["quorum_verdict"] is None else "VIOLATED"))
    print()
    for result in results:
        k = result["max_parallel"]
        if "makespan" not in result:
            print("max_parallel %d: incomplete: %s" % (k, "; ".join(result["problems"]) or result.get("error", "")))
            continue
        print("max_parallel %d: slot-matched hand-off (j-th up -> (k+j)-th down) p50 %.0f ms, p99 %.0f ms; between services %s; "
              "seed -> done %.1fs; monitor sample period ~%.0f ms" % (
                  k, 1000 * result["slot_handoff_p50"], 1000 * result["slot_handoff_p99"],
                  ", ".join("%s %.0f ms" % (pair, 1000 * gap) for pair, gap in result["service_gaps"].items()), result["seed_to_done"],
                  result["monitor_sample_period_ms"]))
        print("  where a hand-off's time goes (znode watches, %d hand-offs, p50 / max ms): %s" % (result["breakdown_count"], "; ".join(
            "%s %s / %s" % (label, "-" if part["p50"] is None else "%.0f" % (1000 * part["p50"]), "-" if part["max"] is None else "%.0f" % (1000 * part["max"]))
            for label, part in result["breakdown"].items())))
    for result in results:
        if result.get("quorum_verdict"):
            print("\n!!!!!!!! QUORUM VIOLATED with max_parallel %d: %s !!!!!!!!" % (result["max_parallel"], result["quorum_verdict"]))
        for problem in result.get("dependency_order", ()):
            print("\n!!!!!!!! DEPENDENCY ORDER BROKEN with max_parallel %d: %s !!!!!!!!" % (result["max_parallel"], problem))


def _interrupt(signum, _frame):
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the finally below tears the fleet down.
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=9, help="fleet size N (default 9)")
    parser.add_argument("--startup", type=float, default=1.0, help="mean start-up delay of a demo service, seconds (default 1.0)")
    parser.add_argument("--jitter", type=float, default=0.5, help="per-host start-up delay is uniform in startup * (1 -+ jitter) (default 0.5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-host start-up delays (default 1)")
    parser.add_argument("--health-interval", type=float, default=0.2, help="the agents' health check interval, seconds (default 0.2, as in e2e)")
    parser.add_argument("--startup-interval", type=float, default=None,
                        help="the pace of the rise checks of a just-started instance, seconds (default: --health-interval)")
    parser.add_argument("--rise", type=int, default=2, help="the agents' consecutive passing health checks (default 2, as in e2e)")
    parser.add_argument("--monitor-interval", type=float, default=0.02, help="the monitor's pause between two samples of one instance (default 0.02)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one rollout may take until done (default 900)")
    parser.add_argument("--keep-going", action="store_true",
                        help="after a variant fails (not done in time, quorum violated, dependency order broken), still run the next")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.hosts < 3 or not 0 <= args.jitter < 1 or args.startup < 0 or args.rise < 1:
        parser.error("need --hosts >= 3, 0 <= --jitter < 1, --startup >= 0 and --rise >= 1")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    hosts = ["h%d" % i for i in range(1, args.hosts + 1)]
    delays = per_host_delays(hosts, args.startup, args.jitter, args.seed)
    started = time.monotonic()
    environment = PacedEnvironment(delays, args.health_interval, args.rise, args.startup_interval, prefix=PREFIX, subnet=SUBNET)
    fleet = SpeedFleet(environment)
    results, failed = [], False
    try:
        fleet.start()
        fleet.install_agents(timeout=300.0)
        print("fleet of %d hosts (%s-h1.. on %s.0/24) built and agents installed in %.0fs" % (args.hosts, PREFIX, SUBNET, time.monotonic() - started),
              flush=True)
        shown = " ".join("%s=%.2f" % item for item in delays.items())
        print("start-up delays (seed %d): %s (mean %.2fs)" % (args.seed, shown, statistics.mean(delays.values())), flush=True)
        for k in VARIANTS:
            try:
                result = run_variant(fleet, k, args)
            except AssertionError as exc:
                result = {"max_parallel": k, "hosts": args.hosts, "services": {}, "problems": [], "error": str(exc)}
                print("max_parallel %d FAILED: %s" % (k, exc), flush=True)
            results.append(result)
            bad = "makespan" not in result or result["quorum_verdict"] is not None or bool(result["dependency_order"])
            failed |= bad
            if bad and not args.keep_going:
                break
    finally:
        print("cleaning up: namespaces, bridge, ZooKeeper, every process of the fleet", flush=True)
        fleet.close()
    print_table(results)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"hosts": args.hosts, "startup": args.startup, "jitter": args.jitter, "seed": args.seed, "delays": delays,
                       "health_interval": args.health_interval, "startup_interval": args.startup_interval or args.health_interval,
                       "rise": args.rise, "monitor_interval": args.monitor_interval,
                       "targets": {"ratio": TARGET_RATIO, "handoff_p50": TARGET_P50, "handoff_p99": TARGET_P99}, "results": results},
                      out, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
