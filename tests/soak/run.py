# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The full fault soak: ``python -m tests.soak.run --seeds 1-100 [--json out.json]`` (after ``source scripts/env.sh``).

Starts its own 3-member ZooKeeper ensemble on loopback and the artifact server, runs every
schedule of ``tests/soak/schedules.py`` one after another (each on a fresh bed of real agents
under its own root), prints one line per seed as it finishes and a summary table at the end.
A failing seed is printed with what it found and can be re-run alone (``--seeds 17``).
Exit status 1 if any schedule failed. Needs no root: everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import ZooKeeper
from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import ArtifactStore
from ansible_collections.zkrollout.dc.tests.soak.schedules import FAULTS, describe, draw, run_schedule


def seeds_from(text):
    """``"1-100"``, ``"17"`` or ``"3,8,11"`` as a list of ints."""
    seeds = []
    for part in text.split(","):
        low, _dash, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", default="1-100", help="seeds to run: 1-100, 17 or 3,8,11 (default 1-100)")
    parser.add_argument("--json", help="write every outcome to this file")
    args = parser.parse_args(argv)
    seeds = seeds_from(args.seeds)
    outcomes = []
    began = time.monotonic()
    with ZooKeeper(size=3) as ensemble, ArtifactStore(services=("A", "B")) as store:
        client = zkclient.connect(zkclient.ConnectionOptions(hosts=ensemble.hosts, timeout=10.0, session_timeout=10.0))
        try:
            for seed in seeds:
                outcome = run_schedule(seed, store, ensemble, client, "/soak-%d" % seed)
                outcomes.append(outcome)
                print("%s -> %s in %.0fs; min healthy %s%s" % (
                    describe(seed), "ok" if outcome.passed else "FAILED", outcome.seconds, outcome.min_healthy,
                    "".join("\n    " + line for line in outcome.problems)), flush=True)
        finally:
            zkclient.disconnect(client)
    failed = [outcome for outcome in outcomes if not outcome.passed]
    uses = collections.Counter(name for seed in seeds for _at, name in draw(seed)[1])
    print()
    print("| schedules | distinct | quorum violations | dependency-order breaks | converged | leftovers | hours |")
    print("|---|---|---|---|---|---|---|")
    print("| %d | %d | %d | %d | %d / %d | %d | %.2f |" % (
        len(outcomes), len({tuple(draw(seed)[1]) for seed in seeds}),
        sum(any(p.startswith("quorum") for p in o.problems) for o in outcomes),
        sum(any(p.startswith("dependency order") for p in o.problems) for o in outcomes),
        sum(not any(p.startswith("no convergence") for p in o.problems) for o in outcomes), len(outcomes),
        sum(any(p.startswith(("leftover", "agents not")) for p in o.problems) for o in outcomes), (time.monotonic() - began) / 3600.0))
    print("faults drawn: %s" % ", ".join("%s %d" % (name, uses[name]) for name in sorted(FAULTS)))
    if failed:
        print("FAILED seeds: %s (re-run one alone: python -m tests.soak.run --seeds %d)" % (
            ",".join(str(o.seed) for o in failed), failed[0].seed))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([o.__dict__ for o in outcomes], out, indent=1, default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
