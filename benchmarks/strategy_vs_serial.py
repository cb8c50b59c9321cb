#!/usr/bin/env python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Makespan of one upgrade play under ``serial: k`` and under the ``zkrollout.dc.quorum`` strategy.

Builds its own test fleet (network namespaces ``zkb-*`` on 10.231.81.0/24, sshd per host, ZooKeeper,
the agents with the ``external`` driver; see tests/integration/strategy_support.py), then runs the
same upgrade of service A twice over SSH, with the same per-host work (random, seeded):

- ``serial: k`` with the linear strategy (tests/integration/playbooks/strategy_serial.yml);
- the strategy with ``max_parallel: k`` and quorum ``N - k``, so both may stop k instances at once
  (tests/integration/playbooks/strategy_quorum.yml).

For each it reports the makespan as the independent monitor saw it (first instance down -> last
instance healthy on the new version) and the wall time of ``ansible-playbook``, each against the
lower bound ``ceil(N/k) * T`` (T the mean per-host work), and the lowest number of healthy
instances. Run as root, after ``make setup``::

    source scripts/env.sh && python benchmarks/strategy_vs_serial.py [--hosts 8] [--parallel 2] [--work 8] [--jitter 0.8]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time

from ansible_collections.zkrollout.dc.tests.integration.strategy_support import (
    BENCHMARK_PREFIX,
    BENCHMARK_SUBNET,
    QUORUM_PLAYBOOK,
    SERIAL_PLAYBOOK,
    SERVICE,
    StrategyFleet,
    other_version,
)

PLAY_TIMEOUT = 1800


def per_host_work(hosts, mean, jitter, seed):
    """``{host: seconds}``, uniform in ``mean * (1 -+ jitter)``, the same for the same seed."""
    draw = random.Random(seed)
    return {host: round(draw.uniform(mean * (1 - jitter), mean * (1 + jitter)), 2) for host in hosts}


def measure(fleet, name, playbook, work, **variables):
    """Run one variant to the next version; its makespan (monitor), wall time and lowest healthy count."""
    target = other_version(fleet.current_version())
    fleet.start_monitor()
    run = fleet.run_upgrade(playbook, target, work, timeout=PLAY_TIMEOUT, **variables)
    if run.returncode != 0:
        raise SystemExit("%s: ansible-playbook failed:\n%s" % (name, run.output))
    fleet.wait_settled(target, timeout=60)
    fleet.stop_monitor()
    down = fleet.history.switch_started(SERVICE, target)
    up = fleet.history.reached(SERVICE, target)
    return {
        "variant": name,
        "makespan": max(up.values()) - min(down.values()),
        "wall": run.elapsed,
        "min_healthy": fleet.monitor.min_healthy[SERVICE],
        "per_host_down": statistics.mean(up[url] - down[url] for url in up),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, default=8, help="fleet size N (default 8)")
    parser.add_argument("--parallel", type=int, default=2, help="k: serial batch size and max_parallel (default 2)")
    parser.add_argument("--work", type=float, default=8.0, help="mean seconds of per-host work while the instance is down (default 8)")
    parser.add_argument("--jitter", type=float, default=0.8, help="work is uniform in work * (1 -+ jitter) (default 0.8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-host work (default 1)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    if not 1 <= args.parallel < args.hosts or not 0 <= args.jitter < 1:
        parser.error("need 1 <= --parallel < --hosts and 0 <= --jitter < 1")
    quorum = args.hosts - args.parallel

    started = time.monotonic()
    fleet = StrategyFleet(hosts=args.hosts, prefix=BENCHMARK_PREFIX, subnet=BENCHMARK_SUBNET).start()
    try:
        print("fleet of %d hosts built and agents installed in %.0fs" % (args.hosts, time.monotonic() - started), flush=True)
        work = per_host_work(fleet.hosts, args.work, args.jitter, args.seed)
        results = [
            measure(fleet, "serial: %d" % args.parallel, SERIAL_PLAYBOOK, work, upgrade_batch=args.parallel),
            measure(fleet, "zkrollout.dc.quorum", QUORUM_PLAYBOOK, work, zkrollout_quorum=quorum, zkrollout_max_parallel=args.parallel,
                    zkrollout_controller_id="benchmark"),
        ]
    finally:
        fleet.close()

    mean = statistics.mean(work.values())
    waves = math.ceil(args.hosts / args.parallel)
    bound = waves * mean
    print("N=%d hosts, k=%d, quorum %d; per-host work %s (mean T=%.2fs, seed %d)"
          % (args.hosts, args.parallel, quorum, " ".join("%s=%.2f" % item for item in sorted(work.items())), mean, args.seed))
    print("lower bound ceil(N/k) * T = %d * %.2f = %.2fs" % (waves, mean, bound))
    print("%-22s %10s %8s %10s %8s %12s %14s" % ("variant", "makespan", "/bound", "wall", "/bound", "min healthy", "down per host"))
    for result in results:
        result.update(makespan_ratio=result["makespan"] / bound, wall_ratio=result["wall"] / bound)
        print("%-22s %9.2fs %8.2f %9.2fs %8.2f %12d %13.2fs" % (
            result["variant"], result["makespan"], result["makespan_ratio"], result["wall"], result["wall_ratio"], result["min_healthy"],
            result["per_host_down"]))
    serial, strategy = results
    print("strategy / serial: makespan %.2f, wall %.2f" % (strategy["makespan"] / serial["makespan"], strategy["wall"] / serial["wall"]))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"hosts": args.hosts, "parallel": args.parallel, "quorum": quorum, "work": work, "mean_work": mean,
                       "lower_bound": bound, "results": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
