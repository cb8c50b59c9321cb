# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A short, fixed set of the fault soak's schedules (``tests/soak/schedules.py``) in every test run.

The full soak is one command: ``python -m tests.soak.run --seeds 1-100`` (docs/safety.md).
"""

from __future__ import annotations

import pytest

from ansible_collections.zkrollout.dc.tests.integration.agent_rollouts import ArtifactStore
from ansible_collections.zkrollout.dc.tests.soak.schedules import describe, run_schedule

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]

# Fixed seeds whose schedules between them freeze a slot holder and an agent past their
# sessions, kill an agent, the leader and an instance, freeze a follower, pause, and inject a
# malformed node (tests/soak/schedules.describe says which).
CI_SEEDS = (26, 27)


@pytest.fixture(scope="module")
def store():
    """Every demo-service version of A and B, built once and served on 127.0.0.1."""
    with ArtifactStore(services=("A", "B")) as artifacts:
        yield artifacts


@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", CI_SEEDS)
def test_a_seeded_fault_schedule_keeps_every_quorum_and_converges(seed, store, zk_ensemble, zk_connect, request):
    print(describe(seed))
    outcome = run_schedule(seed, store, zk_ensemble, zk_connect(zk_ensemble.hosts), "/soak-ci-%d" % seed)
    request.node.user_properties += [("min_healthy", outcome.min_healthy), ("seconds", round(outcome.seconds, 1))]
    print("seed %d: %s; min healthy %s; %.1fs" % (seed, "; ".join(outcome.schedule), outcome.min_healthy, outcome.seconds))
    assert outcome.passed, "\n".join(["%s (re-run alone: python -m tests.soak.run --seeds %d)" % (describe(seed), seed)] + outcome.problems)
