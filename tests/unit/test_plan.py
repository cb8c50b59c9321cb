# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan: deploy order, quorum arithmetic, the upgrade budget and the slot verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import PayloadError, ReleaseSpec
from ansible_collections.zkrollout.dc.plugins.module_utils.core.plan import (
    Plan,
    PlanError,
    ServicePlan,
    check_service,
    dependency_cycle,
    deploy_order,
    plan_release,
    resolve_quorum,
    slot_verdict,
    upgrade_budget,
)

ARTIFACT = {"url": "https://artifacts.example/app.tar.gz", "sha256": "ab" * 32}


def release(*services, **top):
    """A ReleaseSpec from ``(name, depends_on, quorum, max_parallel)`` tuples."""
    return ReleaseSpec.from_dict(
        dict(
            top,
            services=[
                {"name": name, "version": "2.0.0", "artifact": ARTIFACT, "quorum": quorum, "max_parallel": max_parallel, "depends_on": list(depends_on)}
                for name, depends_on, quorum, max_parallel in services
            ],
        )
    )


# Deploy order.
def test_a_chain_declared_in_reverse_rolls_dependencies_first():
    assert deploy_order({"C": ["B"], "B": ["A"], "A": []}) == ["A", "B", "C"]


def test_a_diamond_rolls_the_base_first_and_the_top_last_keeping_declared_order_between():
    dependencies = {"D": ["B", "C"], "C": ["A"], "B": ["A"], "A": []}
    assert deploy_order(dependencies) == ["A", "C", "B", "D"]


def test_independent_services_keep_their_declared_order():
    assert deploy_order({"web": [], "db": [], "cache": []}) == ["web", "db", "cache"]


def test_a_dependency_pulls_its_dependant_behind_it_but_no_further():
    assert deploy_order({"web": ["db"], "cache": [], "db": []}) == ["cache", "db", "web"]


def test_an_empty_release_has_an_empty_order():
    assert deploy_order({}) == []


def test_the_order_is_the_same_on_every_run_whatever_the_hash_seed():
    dependencies = {"w%d" % i: ["w%d" % (i // 2)] if i else [] for i in range(30)}
    dependencies.update({"x%d" % i: [] for i in range(10)})
    script = (
        "import json, sys\n"
        "from ansible_collections.zkrollout.dc.plugins.module_utils.core.plan import deploy_order\n"
        "print(json.dumps(deploy_order(json.loads(sys.argv[1]))))\n"
    )
    orders = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script, json.dumps(dependencies)], env=env, check=True, capture_output=True, text=True).stdout
        orders.add(tuple(json.loads(out)))
    orders.add(tuple(deploy_order(dependencies)))
    assert len(orders) == 1
    order = list(orders.pop())
    for name, deps in dependencies.items():
        assert all(order.index(dep) < order.index(name) for dep in deps)


def test_a_cycle_is_refused_naming_every_service_on_it_in_order():
    with pytest.raises(PlanError) as caught:
        deploy_order({"A": ["B"], "B": ["C"], "C": ["A"], "D": []})
    message = str(caught.value)
    assert "A -> B -> C -> A" in message
    assert "D" not in message.split("cycle", 1)[1].split(":")[0]
    assert "remove one of these depends_on entries" in message


def test_a_cycle_reached_through_a_service_outside_it_names_only_the_cycle():
    assert dependency_cycle({"web": ["api"], "api": ["db"], "db": ["api"]}) == ["api", "db", "api"]


def test_a_self_dependency_is_a_cycle_of_one():
    assert dependency_cycle({"A": ["A"]}) == ["A", "A"]
    with pytest.raises(PlanError, match="dependency cycle A -> A"):
        deploy_order({"A": ["A"]})


def test_an_acyclic_graph_has_no_cycle():
    assert dependency_cycle({"D": ["B", "C"], "C": ["A"], "B": ["A"], "A": []}) is None


def test_the_reported_cycle_is_deterministic():
    graph = {"A": ["B"], "B": ["A"], "C": ["D"], "D": ["C"]}
    assert {tuple(dependency_cycle(graph)) for _unused in range(5)} == {("A", "B", "A")}


def test_an_unknown_dependency_is_refused_naming_both_services():
    with pytest.raises(PlanError) as caught:
        deploy_order({"web": ["db"], "cache": []})
    message = str(caught.value)
    assert "service web depends on unknown service db" in message
    assert "add db to the release or remove it from web.depends_on" in message


def test_a_release_spec_depending_on_itself_is_refused_before_planning():
    with pytest.raises(PayloadError, match="service A cannot depend on itself"):
        plan_release(release(("A", ["A"], 1, 1)), {"A": 3})


def test_plan_release_refuses_a_cycle_across_services():
    spec = release(("A", ["C"], 1, 1), ("B", ["A"], 1, 1), ("C", ["B"], 1, 1))
    with pytest.raises(PlanError, match="A -> C -> B -> A"):
        plan_release(spec, {"A": 3, "B": 3, "C": 3})


def test_plan_release_needs_a_release_spec():
    with pytest.raises(TypeError):
        plan_release({"services": []}, {})


# Quorum arithmetic.
@pytest.mark.parametrize(
    "quorum, roster, resolved",
    [
        (2, 5, 2),
        ("50%", 5, 3),
        ("50%", 4, 2),
        ("66%", 3, 2),
        ("67%", 3, 3),
        ("1%", 1000, 10),
        ("1%", 1001, 11),
        ("100%", 7, 7),
        ("0%", 7, 0),
        (0, 7, 0),
        ("50%", 0, 0),
        (9, 3, 9),
    ],
)
def test_a_quorum_resolves_against_the_roster_rounding_percentages_up(quorum, roster, resolved):
    assert resolve_quorum(quorum, roster) == resolved


def test_a_service_with_a_feasible_quorum_passes_without_warnings():
    assert check_service("web", "50%", 5, 1) == (3, [])
    assert check_service("web", 4, 5, 2) == (4, [])


@pytest.mark.parametrize("quorum", [0, "0%"])
def test_a_quorum_of_zero_is_refused_because_every_instance_could_stop(quorum):
    with pytest.raises(PlanError) as caught:
        check_service("web", quorum, 5, 1)
    message = str(caught.value)
    assert message.startswith("service web: quorum %s resolves to 0 of 5 hosts" % quorum)
    assert "at least 1" in message


@pytest.mark.parametrize("quorum, resolved", [(5, 5), (6, 6), ("100%", 5), ("81%", 5)])
def test_a_quorum_that_lets_no_host_stop_is_refused_saying_what_to_do(quorum, resolved):
    with pytest.raises(PlanError) as caught:
        check_service("web", quorum, 5, 1)
    message = str(caught.value)
    assert message.startswith("service web: quorum %s" % quorum)
    assert "needs %d healthy of 5 hosts" % resolved in message
    assert "lower the quorum below 5 or add hosts" in message


def test_stopping_the_last_instance_above_quorum_is_refused():
    with pytest.raises(PlanError, match="needs 4 healthy of 4 hosts"):
        check_service("web", 4, 4, 1)
    assert check_service("web", 3, 4, 1) == (3, [])


def test_a_single_host_service_is_not_told_to_lower_its_quorum_below_one():
    with pytest.raises(PlanError) as caught:
        check_service("web", 1, 1, 1)
    assert "below 1" not in str(caught.value)


def test_an_empty_roster_is_a_warning_not_an_error():
    quorum, warnings = check_service("web", "50%", 0, 1)
    assert quorum == 1
    assert len(warnings) == 1
    assert "service web" in warnings[0]
    assert "no host in the roster" in warnings[0]
    assert "install the agent" in warnings[0]


@pytest.mark.parametrize("max_parallel", [0, -1])
def test_a_max_parallel_below_one_is_refused(max_parallel):
    with pytest.raises(PlanError) as caught:
        check_service("web", 1, 5, max_parallel)
    assert str(caught.value) == "service web: max_parallel %d must be at least 1" % max_parallel


def test_a_negative_quorum_cannot_reach_the_plan():
    with pytest.raises(ValueError, match="'quorum' has -1"):
        release(("web", [], -1, 1))


# Budget and slot verdict.
@pytest.mark.parametrize(
    "healthy, held, quorum, max_parallel, budget",
    [
        (5, 0, 3, 1, 1),
        (5, 0, 3, 5, 2),
        (5, 0, 3, 2, 2),
        (5, 1, 3, 2, 1),
        (5, 2, 3, 2, 0),
        (4, 1, 3, 3, 1),
        (3, 0, 3, 1, 0),
        (2, 0, 3, 1, 0),
        (0, 0, 3, 4, 0),
        (4, 3, 1, 2, 0),
        (10, 0, 1, 100, 9),
        (10, 5, 1, 6, 1),
    ],
)
def test_the_budget_is_healthy_above_quorum_capped_by_free_slots_and_never_negative(healthy, held, quorum, max_parallel, budget):
    assert upgrade_budget(healthy, held, quorum, max_parallel) == budget


HOSTS = ["a", "b", "c", "d", "e"]


def test_a_healthy_candidate_above_quorum_may_take_a_slot():
    allowed, reason = slot_verdict("web", "a", HOSTS, [], 3, 1)
    assert allowed is True
    assert "slot allowed" in reason
    assert "web keeps 4 healthy >= quorum 3 after a stops" in reason


def test_stopping_a_candidate_that_would_break_the_quorum_waits():
    allowed, reason = slot_verdict("A", "a", ["a", "b", "c"], [], 3, 5)
    assert allowed is False
    assert reason == "waiting: A has 3 healthy, quorum 3"


def test_a_slot_holder_no_longer_counts_as_healthy():
    allowed, reason = slot_verdict("web", "c", ["a", "b", "c", "d"], ["a"], 2, 5)
    assert allowed is True
    assert "keeps 2 healthy" in reason
    allowed, reason = slot_verdict("web", "c", ["a", "b", "c", "d"], ["a", "b"], 2, 5)
    assert allowed is False
    assert reason == "waiting: web has 2 healthy, quorum 2"


def test_a_candidate_waits_while_max_parallel_slots_are_held():
    allowed, reason = slot_verdict("web", "c", HOSTS, ["a", "b"], 1, 2)
    assert allowed is False
    assert reason == "waiting: web has 2 of 2 slots held (max_parallel 2)"


def test_a_candidate_that_is_already_down_costs_no_quorum():
    healthy = ["a", "b", "c"]
    assert slot_verdict("web", "d", healthy, [], 3, 1)[0] is True
    assert slot_verdict("web", "a", healthy, [], 3, 1)[0] is False


def test_a_down_candidate_of_a_degraded_service_is_limited_only_by_max_parallel():
    allowed, reason = slot_verdict("web", "e", ["a", "b"], [], 3, 1, confirmed_down=True)
    assert allowed is True, reason
    assert "its agent is connected" in reason


def test_an_unknown_candidate_stops_only_while_the_registered_hosts_alone_meet_the_quorum():
    # A wave of expired sessions: most hosts unregistered, their instances quite possibly serving.
    allowed, reason = slot_verdict("web", "e", ["a", "b"], [], 3, 2)
    assert allowed is False
    assert "e is not registered and its agent is not connected" in reason and "2 registered healthy, quorum 3" in reason
    allowed, reason = slot_verdict("web", "e", ["a", "b", "c"], [], 3, 2)
    assert allowed is True and "unknown" in reason


def test_a_candidate_already_holding_a_slot_keeps_it_whatever_the_counts():
    allowed, reason = slot_verdict("web", "a", ["b"], ["a", "c"], 3, 1)
    assert allowed is True
    assert reason == "a already holds a slot of web"


def test_the_slot_verdict_agrees_with_the_budget():
    for healthy_count in range(0, 6):
        for held in range(0, 3):
            healthy = ["h%d" % i for i in range(healthy_count)]
            holders = ["s%d" % i for i in range(held)]
            for quorum in range(1, 5):
                budget = upgrade_budget(healthy_count, held, quorum, 2)
                for candidate in healthy:
                    assert slot_verdict("web", candidate, healthy + holders, holders, quorum, 2)[0] == (budget > 0)


# Plan numbers.
@pytest.mark.parametrize(
    "roster, quorum, max_parallel, width, waves",
    [
        (5, 3, 1, 1, 5),
        (5, 3, 5, 2, 3),
        (10, 5, 3, 3, 4),
        (10, 1, 100, 9, 2),
        (3, 1, 1, 1, 3),
        (4, 4, 2, 1, 4),
        (0, 1, 1, 1, 0),
    ],
)
def test_a_service_rolls_in_waves_of_its_parallel_width(roster, quorum, max_parallel, width, waves):
    service = ServicePlan(name="web", roster_size=roster, quorum=quorum, max_parallel=max_parallel, depends_on=())
    assert service.parallel_width == width
    assert service.waves == waves


def test_plan_release_builds_each_service_plan_in_deploy_order():
    spec = release(("web", ["db"], "50%", 2), ("db", [], 2, 1), ("cache", [], 1, 3))
    plan = plan_release(spec, {"web": 5, "db": 3, "cache": 0, "stranger": 9})
    assert plan.order == ("db", "web", "cache")
    assert plan.services["web"] == ServicePlan("web", 5, 3, 2, ("db",))
    assert plan.services["db"] == ServicePlan("db", 3, 2, 1, ())
    assert plan.services["cache"] == ServicePlan("cache", 0, 1, 3, ())
    assert plan.parallel is False
    assert len(plan.warnings) == 1
    assert "service cache" in plan.warnings[0]


def test_plan_release_refuses_an_impossible_quorum_naming_the_service():
    with pytest.raises(PlanError, match="service db: quorum 3 needs 3 healthy of 3 hosts"):
        plan_release(release(("web", [], 1, 1), ("db", [], 3, 1)), {"web": 3, "db": 3})


# A: 4 hosts, quorum 2, max_parallel 2 -> width 2, 2 waves
# B: 3 hosts, quorum 1, max_parallel 1 -> width 1, 3 waves, depends on A
# C: 10 hosts, quorum 50% = 5, max_parallel 3 -> width 3, 4 waves, independent
CHAIN_AND_LONER = (("A", [], 2, 2), ("B", ["A"], 1, 1), ("C", [], "50%", 3))
CHAIN_AND_LONER_ROSTER = {"A": 4, "B": 3, "C": 10}

# A: 4 hosts, quorum 2, max_parallel 2 -> width 2, 2 waves
# B (on A): 6 hosts, quorum 4, max_parallel 2 -> width 2, 3 waves
# C (on A): 4 hosts, quorum 2, max_parallel 2 -> width 2, 2 waves
# D (on B and C): 3 hosts, quorum 1, max_parallel 5 -> width 2, 2 waves
DIAMOND = (("A", [], 2, 2), ("B", ["A"], 4, 2), ("C", ["A"], 2, 2), ("D", ["B", "C"], 1, 5))
DIAMOND_ROSTER = {"A": 4, "B": 6, "C": 4, "D": 3}


@pytest.mark.parametrize(
    "services, roster, parallel, switch_seconds, expected",
    [
        (CHAIN_AND_LONER, CHAIN_AND_LONER_ROSTER, False, 30, (2 + 3 + 4) * 30.0),
        (CHAIN_AND_LONER, CHAIN_AND_LONER_ROSTER, True, 30, (2 + 3) * 30.0),
        (DIAMOND, DIAMOND_ROSTER, False, 10, (2 + 3 + 2 + 2) * 10.0),
        (DIAMOND, DIAMOND_ROSTER, True, 10, (2 + 3 + 2) * 10.0),
        ((("A", [], 1, 1),), {"A": 0}, True, 10, 0.0),
    ],
    ids=["sequential-chain", "parallel-chain", "sequential-diamond", "parallel-diamond", "empty-roster"],
)
def test_the_makespan_lower_bound_sums_waves_or_follows_the_heaviest_path(services, roster, parallel, switch_seconds, expected):
    plan = plan_release(release(*services, parallel=parallel), roster)
    assert plan.makespan_lower_bound(switch_seconds) == expected


def test_a_parallel_loner_heavier_than_the_chain_sets_the_makespan():
    plan = plan_release(release(*CHAIN_AND_LONER, parallel=True), dict(CHAIN_AND_LONER_ROSTER, C=40))
    assert plan.services["C"].waves == 14
    assert plan.makespan_lower_bound(30) == 14 * 30.0


def test_an_empty_plan_has_no_makespan():
    assert Plan(order=(), services={}, parallel=True, warnings=()).makespan_lower_bound(10) == 0.0
    assert Plan(order=(), services={}, parallel=False, warnings=()).makespan_lower_bound(10) == 0.0
