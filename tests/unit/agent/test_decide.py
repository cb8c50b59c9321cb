# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's decision function over snapshot tables: every rule, and every reason to wait.

``decide`` is pure, so each case is a small tree built from the real payload classes: hosts
are written ``h1=1.0`` (registered in ``current`` with version 1.0), a slot ``h3`` or
``h3=controller:ctl1`` (held, by the agent or by a controller), a failure ``h3`` or
``h3=verify`` (failed at that stage). Each test asserts the action and the facts its reason
sentence must tell a person reading the log.
"""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.decide import (
    DEREGISTER,
    JOIN_READY,
    LEAVE_READY,
    PREPARE,
    REGISTER,
    RELEASE_SLOT,
    RESUME,
    ROLLBACK,
    START,
    TAKE_SLOT,
    WAIT,
    LocalView,
    decide,
    rollout_stage,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.localstate import ServiceProgress
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import (
    Artifact,
    DeployEntry,
    Failure,
    ReleaseEntry,
    RolloutState,
    Slot,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.core.rules import strictest_limits
from ansible_collections.zkrollout.dc.plugins.module_utils.core.snapshot import QueueMember, ServiceState, Snapshot, confirmed

ROLLOUT = "r1"
NOW = 1700000000.0
FIVE = "h1=1.0 h2=1.0 h3=1.0 h4=1.0 h5=1.0"
FIVE_READY = "h1 h2 h3 h4 h5"


# Builders: one line of a table becomes a Snapshot made of the real dataclasses.
def _pairs(text, default=None):
    """``"h1=1.0 h2"`` -> ``{"h1": "1.0", "h2": default}``."""
    pairs = {}
    for word in text.split():
        host, _unused, value = word.partition("=")
        pairs[host] = value or default
    return pairs


def service(name="app", current="", ready="", slots="", failed="", offline="", target="2.0", quorum=1, max_parallel=1,
            on_failure="halt", depends_on=(), rollout=ROLLOUT, staged=True):
    """``(ServiceState, roster hosts)`` of one service, from the compact table notation."""
    release = None
    if staged:
        release = ReleaseEntry(rollout=rollout, service=name, version=target,
                               artifact=Artifact(url="https://artifacts.example/%s-%s.tar.gz" % (name, target), sha256="ab" * 32),
                               quorum=quorum, max_parallel=max_parallel, on_failure=on_failure, depends_on=list(depends_on))
    registrations = _pairs(current)
    held = {host: Slot(to_version=target, from_version="1.0", since=NOW, owner=owner or "agent:" + host) for host, owner in _pairs(slots).items()}
    failures = {host: Failure(version=target, stage=stage, reason="it broke", at=NOW, rolled_back_to="1.0")
                for host, stage in _pairs(failed, "health").items()}
    ready_queue = tuple(QueueMember(node="%s-%010d" % (host, seq), name=host, sequence=seq) for seq, host in enumerate(ready.split(), 1))
    hosts = set(registrations) | set(held) | set(failures) | set(ready.split()) | set(offline.split())
    state = ServiceState(name=name, release=release, release_version=0 if staged else -1, roster=tuple(sorted(hosts)),
                         registrations=registrations, ready_queue=ready_queue, slots=held, failures=failures)
    return state, hosts


def tree(*services, queue=None, state="running", parallel=False):
    """A Snapshot of ``services`` (from ``service()``); the deploy queue defaults to every staged one, in order."""
    states = {svc.name: svc for svc, _unused in services}
    staged = [svc.name for svc, _unused in services if svc.release is not None]
    queue = staged if queue is None else queue
    deploy_queue = tuple(QueueMember(node="%s-%010d" % (name, seq), name=name, sequence=seq) for seq, name in enumerate(queue, 1))
    entries = {m.node: DeployEntry(service=m.name, depends_on=list(states[m.name].release.depends_on)) for m in deploy_queue}
    rollout = None
    if state is not None:
        rollout = RolloutState(id=ROLLOUT, state=state, spec_hash="cd" * 32, services=staged, parallel=parallel)
    return Snapshot(rollout=rollout, rollout_version=0, deploy_queue=deploy_queue, deploy_entries=entries, services=states)


def local(running="1.0", healthy=True, prepared="1.0 2.0", name="app", **progress):
    """The LocalView of one service; ``progress`` fields default to an idle record of ``running``."""
    progress.setdefault("version", running)
    return LocalView(service=name, progress=ServiceProgress(**progress), running=running, healthy=healthy, prepared=frozenset(prepared.split()))


def decided(snapshot, view=None, host="h1", connected=True):
    """decide() with the defaults of these tables: host h1, a healthy 1.0 instance, CONNECTED."""
    return decide(host, snapshot, view or local(), connected)


def assert_decision(decision, action, *facts, version=None):
    assert decision.action == action, decision
    for fact in facts:
        assert fact in decision.reason, "%r lacks %r" % (decision.reason, fact)
    if version is not None:
        assert decision.version == version, decision


# The reasons to wait that the issue names, each beside the case where the same host would act.
WAIT_CASES = [
    pytest.param(tree(service(current=FIVE, ready=FIVE_READY, quorum=3)), local(), False,
                 ["not connected", "stopping nothing"], id="a_suspended_or_lost_session_stops_nothing"),
    pytest.param(tree(service(current=FIVE, ready=FIVE_READY, quorum=3), state="paused"), local(), True,
                 ["rollout r1 is paused"], id="a_paused_rollout_takes_no_new_slot"),
    pytest.param(tree(service(current=FIVE, ready=FIVE_READY, quorum=3), state="aborted"), local(), True,
                 ["rollout r1 is aborted"], id="an_aborted_rollout_takes_no_new_slot"),
    pytest.param(tree(service(current="h1=1.0 h2=1.0", offline="h3", ready="h1 h2", quorum=2)), local(), True,
                 ["budget 0", "2 healthy, quorum 2"], id="quorum_forbids_the_stop"),
    pytest.param(tree(service("db", current="h1=1.0 h2=1.0 h3=1.0", ready="h1"),
                      service(current=FIVE, ready=FIVE_READY, quorum=1, depends_on=["db"]), queue=["db", "app"]),
                 local(), True, ["app is not at the head of the deploy queue", "behind db"], id="not_the_head_of_the_deploy_queue"),
    pytest.param(tree(service("db", current="h1=1.0 h2=1.0 h3=1.0", ready="h2"),
                      service(current=FIVE, ready=FIVE_READY, quorum=1, depends_on=["db"]), queue=["db", "app"], parallel=True),
                 local(), True, ["app depends on db", "not complete"], id="a_dependency_is_incomplete_in_a_parallel_rollout"),
    pytest.param(tree(service(current=FIVE, ready="h2 h3 h1 h4 h5", quorum=3, max_parallel=5)), local(), True,
                 ["h1 is number 3 in line", "budget 2", "5 healthy", "quorum 3"], id="not_among_the_first_k_of_the_ready_queue"),
    pytest.param(tree(service(current=FIVE, ready=FIVE_READY, quorum=1, failed="h4")), local(), True,
                 ["halted by the failure on h4"], id="a_failure_elsewhere_halts_the_service"),
]


@pytest.mark.parametrize("snapshot, view, connected, facts", WAIT_CASES)
def test_each_reason_to_wait_is_said(snapshot, view, connected, facts):
    assert_decision(decided(snapshot, view, connected=connected), WAIT, *facts)


# Turn taking: head of the queue, first k of the ready queue, healthy - held - 1 >= quorum, max_parallel.
TURN_CASES = [
    pytest.param(dict(current=FIVE, ready=FIVE_READY, quorum=3), "h1", TAKE_SLOT, ["slot allowed", "keeps 4 healthy >= quorum 3"],
                 id="the_first_in_line_takes_a_slot_when_the_quorum_allows"),
    pytest.param(dict(current=FIVE, ready=FIVE_READY, quorum=1), "h2", WAIT, ["h2 is number 2 in line", "budget 1"],
                 id="max_parallel_1_lets_only_the_first_go"),
    pytest.param(dict(current=FIVE, ready=FIVE_READY, quorum=3, max_parallel=5), "h2", TAKE_SLOT, ["slot allowed"],
                 id="the_second_goes_too_when_the_budget_is_2"),
    pytest.param(dict(current=FIVE, ready=FIVE_READY, quorum=3, max_parallel=5), "h3", WAIT, ["number 3 in line", "budget 2"],
                 id="the_third_waits_when_the_budget_is_2"),
    pytest.param(dict(current="h1=1.0 h2=1.0 h3=1.0 h4=1.0", slots="h5", ready=FIVE_READY, quorum=1), "h1", WAIT,
                 ["budget 0", "1 slots held"], id="max_parallel_reached"),
    pytest.param(dict(current="h1=1.0 h2=1.0 h3=1.0 h4=1.0", slots="h5", ready=FIVE_READY, quorum=1, max_parallel=2), "h1", TAKE_SLOT,
                 ["slot allowed", "keeps 3 healthy"], id="a_slot_holder_is_skipped_in_the_line"),
    pytest.param(dict(current=FIVE, slots="h5", ready=FIVE_READY, quorum=4, max_parallel=3), "h1", WAIT,
                 ["4 healthy, quorum 4", "1 slots held"], id="a_slot_holder_still_registered_counts_as_down"),
    pytest.param(dict(current=FIVE, ready=FIVE_READY, quorum="50%", max_parallel=5), "h3", WAIT, ["quorum 3", "budget 2"],
                 id="a_percentage_quorum_rounds_up"),
    pytest.param(dict(current="h1=1.0 h2=1.0 h3=1.0 h4=1.0", ready="h1 h2 h3 h4", quorum="50%", max_parallel=5), "h2", TAKE_SLOT,
                 ["keeps 3 healthy >= quorum 2"], id="a_percentage_quorum_follows_the_roster_size"),
    pytest.param(dict(current="h1=1.0 h2=1.0 h3=1.0 h4=1.0", offline="h5", ready="h1 h2 h3 h4", quorum="60%", max_parallel=5), "h2",
                 WAIT, ["number 2 in line", "budget 1", "4 healthy, quorum 3"], id="an_offline_roster_host_counts_as_down"),
]


@pytest.mark.parametrize("release, host, action, facts", TURN_CASES)
def test_turn_taking(release, host, action, facts):
    assert_decision(decided(tree(service(**release)), host=host), action, *facts, version="2.0" if action == TAKE_SLOT else None)


def test_stopping_the_last_instance_above_quorum_is_refused():
    snapshot = tree(service(current="h1=1.0 h2=1.0", slots="h3", ready="h1 h2", quorum=2, max_parallel=3))
    assert_decision(decided(snapshot), WAIT, "budget 0", "2 healthy, quorum 2", "1 slots held")


def test_a_lost_session_never_takes_a_slot_even_with_a_stale_snapshot_that_allows_it():
    snapshot = tree(service(current=FIVE, ready=FIVE_READY, quorum=1))
    assert decided(snapshot).action == TAKE_SLOT
    assert_decision(decided(snapshot, connected=False), WAIT, "not connected")
    assert_decision(decided(None, connected=False), WAIT, "not connected")


def test_an_independent_service_rolls_beside_the_head_in_a_parallel_rollout():
    snapshot = tree(service("db", current="h2=1.0 h3=1.0", ready="h2"), service(current=FIVE, ready=FIVE_READY, quorum=1),
                    parallel=True)
    assert rollout_stage(snapshot, "app") == "rolling"
    assert_decision(decided(snapshot), TAKE_SLOT, "slot allowed", version="2.0")


def test_a_complete_dependency_still_in_the_queue_lets_its_dependant_roll_in_parallel():
    snapshot = tree(service("db", current="h2=2.0 h3=2.0"), service(current=FIVE, ready=FIVE_READY, quorum=1, depends_on=["db"]),
                    queue=["db", "app"], parallel=True)
    assert rollout_stage(snapshot, "app") == "rolling"
    assert decided(snapshot).action == TAKE_SLOT


def test_the_same_tree_without_parallel_lets_the_dependant_roll_too_since_completion_is_derived():
    snapshot = tree(service("db", current="h2=2.0 h3=2.0"), service(current=FIVE, ready=FIVE_READY, quorum=1, depends_on=["db"]),
                    queue=["db", "app"])
    assert rollout_stage(snapshot, "db") == "finished"
    assert rollout_stage(snapshot, "app") == "rolling"
    assert decided(snapshot).action == TAKE_SLOT


def test_a_straggler_of_a_finished_service_takes_a_quorum_checked_turn():
    # app finished while h1 was away with its old instance still running; db is the head now.
    for queue in (["db"], []):
        snapshot = tree(service(current="h1=1.0 h2=2.0 h3=2.0", ready="h1", quorum=1), service("db", current="h4=1.0"), queue=queue)
        assert rollout_stage(snapshot, "app") == "finished"
        assert_decision(decided(snapshot), TAKE_SLOT, "slot allowed", version="2.0")
    snapshot = tree(service(current="h1=1.0 h2=2.0 h3=2.0", ready="h1", quorum=3), service("db", current="h4=1.0"), queue=["db"])
    assert_decision(decided(snapshot), WAIT, "budget 0")


# Registration follows the local health verdict (rise/fall is HealthTracker's).
REGISTRATION_CASES = [
    pytest.param("", local(healthy=True), REGISTER, ["register app 1.0 as healthy"], id="a_healthy_instance_registers"),
    pytest.param("h1=0.9", local(healthy=True), REGISTER, ["register app 1.0"], id="a_registration_with_another_version_is_rewritten"),
    pytest.param("h1=1.0", local(healthy=False), DEREGISTER, ["health check of app 1.0 failing", "deregister"],
                 id="an_instance_that_fell_deregisters"),
    pytest.param("", local(healthy=False), WAIT, ["app 1.0 is not healthy yet"], id="an_instance_not_yet_risen_waits"),
    pytest.param("h1=1.0", local(running=None, healthy=False, version="1.0"), DEREGISTER, ["not running", "deregister"],
                 id="an_instance_that_died_deregisters_before_anything_else"),
]


@pytest.mark.parametrize("current, view, action, facts", REGISTRATION_CASES)
def test_registration_follows_health(current, view, action, facts):
    snapshot = tree(service(current=current + " h2=1.0 h3=1.0", quorum=1))
    assert_decision(decided(snapshot, view), action, *facts)


def test_a_healthy_instance_registers_even_without_a_rollout():
    snapshot = tree(service(current="h2=1.0", staged=False), state=None)
    assert_decision(decided(snapshot), REGISTER, "register app 1.0", version="1.0")
    assert_decision(decided(tree(service(current="h1=1.0 h2=1.0", staged=False), state=None)), WAIT, "idle: no rollout of app")


# Preparing a release: download + verify + unpack, then the ready queue.
def test_a_new_staging_entry_is_downloaded_first():
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", quorum=1))
    assert_decision(decided(snapshot, local(prepared="1.0")), PREPARE, "download and verify app 2.0", version="2.0")


def test_a_verified_release_joins_the_ready_queue():
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", quorum=1))
    assert_decision(decided(snapshot), JOIN_READY, "verified and unpacked", "join the ready queue", version="2.0")


@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_release_is_prepared_and_queued_while_paused_too_since_that_takes_no_slot(state):
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", quorum=1), state=state)
    assert decided(snapshot, local(prepared="1.0")).action == PREPARE
    assert decided(snapshot).action == JOIN_READY


def test_a_host_whose_release_is_not_verified_never_takes_a_slot_even_at_the_head_of_the_line():
    snapshot = tree(service(current=FIVE, ready=FIVE_READY, quorum=1))
    assert decided(snapshot).action == TAKE_SLOT
    assert decided(snapshot, local(prepared="1.0")).action == PREPARE


def test_a_wrong_checksum_halts_the_service_and_switches_nothing():
    snapshot = tree(service(current=FIVE, ready="h2 h3 h4 h5", quorum=1, failed="h1=verify"))
    assert_decision(decided(snapshot, local(prepared="1.0")), WAIT, "halted here", "failed at verify", "waiting for a retry")
    for host in ("h2", "h3"):
        assert_decision(decided(snapshot, host=host), WAIT, "halted by the failure on h1")


# A switch in progress resumes from its persisted step, whatever the tree says.
@pytest.mark.parametrize("phase, step", [("switching", "slot_taken"), ("switching", "started"), ("rolling_back", "failed")])
@pytest.mark.parametrize("connected", [True, False])
def test_an_unfinished_switch_is_resumed(phase, step, connected):
    view = local(running=None, healthy=False, phase=phase, step=step, previous="1.0", target="2.0")
    assert_decision(decided(tree(service(current="h2=1.0", quorum=1), state="aborted"), view, connected=connected),
                    RESUME, "resume the unfinished %s (step %s) towards 2.0" % (phase, step), version="2.0")


# Completion is derived from the tree, never written: the next service rolls once the one ahead is complete.
def test_a_host_on_the_target_of_a_complete_service_only_waits():
    snapshot = tree(service(current="h1=2.0 h2=2.0", offline="h3", quorum=1))
    assert_decision(decided(snapshot, local(running="2.0")), WAIT, "on target app 2.0")


@pytest.mark.parametrize("db, action, facts", [
    pytest.param("h4=2.0 h5=2.0", TAKE_SLOT, ["slot allowed"], id="once_every_online_instance_ahead_runs_its_target"),
    pytest.param("h4=2.0 h5=1.0", WAIT, ["not at the head of the deploy queue", "behind db"], id="not_while_one_ahead_still_runs_the_old_version"),
    pytest.param("h4=2.0", WAIT, ["behind db"], id="not_while_a_slot_ahead_is_held"),
])
def test_the_next_service_rolls_when_the_one_ahead_is_complete(db, action, facts):
    ahead = service("db", current=db, slots="h5" if db == "h4=2.0" else "")
    snapshot = tree(ahead, service(current=FIVE, ready=FIVE_READY, quorum=3), queue=["db", "app"])
    assert_decision(decided(snapshot), action, *facts)


def test_a_straggler_back_on_the_old_version_holds_the_next_service_back_until_it_caught_up():
    snapshot = tree(service("db", current="h4=2.0 h5=2.0 h6=1.0"), service(current=FIVE, ready=FIVE_READY, quorum=3), queue=["db", "app"])
    assert_decision(decided(snapshot), WAIT, "behind db")
    assert rollout_stage(snapshot, "db") == "rolling"


def test_a_host_on_target_leaves_the_ready_queue():
    snapshot = tree(service(current="h1=2.0 h2=1.0", ready="h1 h2", quorum=1))
    assert_decision(decided(snapshot, local(running="2.0")), LEAVE_READY, "runs the target 2.0", "leave the ready queue")


# Leftover slots.
def test_a_slot_whose_owner_is_back_and_idle_is_released():
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", slots="h1", ready="h1", quorum=1))
    assert_decision(decided(snapshot), RELEASE_SLOT, "left from an interrupted run", "release it")


def test_a_leftover_slot_is_released_only_after_re_registering():
    snapshot = tree(service(current="h2=1.0 h3=1.0", slots="h1", quorum=1))
    assert decided(snapshot).action == REGISTER


def test_a_slot_a_controller_holds_for_this_host_is_not_released_by_the_agent():
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", slots="h1=controller:ctl1", ready="h1", quorum=1))
    assert_decision(decided(snapshot), WAIT, "controller:ctl1")


# Starting an instance that is down: target if rolling or finished, else most popular, else last.
START_CASES = [
    pytest.param(tree(service(current="h2=1.0 h3=1.0", offline="h1", quorum=1)), "1.0 2.0", START,
                 ["start 2.0", "the target of rollout r1 (rolling)"], "2.0", id="the_target_while_its_service_rolls"),
    pytest.param(tree(service(current="h2=1.0 h3=1.0", offline="h1", quorum=1), state="paused"), "1.0 2.0", START,
                 ["start 2.0"], "2.0", id="the_target_while_paused_since_a_down_host_costs_no_quorum"),
    pytest.param(tree(service(current="h2=1.0 h3=1.0", offline="h1", quorum=1)), "1.0", PREPARE,
                 ["download 2.0", "to start it"], "2.0", id="the_target_is_downloaded_first"),
    pytest.param(tree(service(current="h2=2.0 h3=2.0", offline="h1", quorum=1), queue=[], state="done"), "1.0 2.0", START,
                 ["start 2.0", "(finished)"], "2.0", id="the_target_once_its_service_finished"),
    pytest.param(tree(service("db", current="h4=1.0"), service(current="h2=1.0 h3=1.0 h4=1.5", offline="h1", quorum=1),
                      queue=["db", "app"]), "1.0 1.5 2.0", START, ["start 1.0", "most popular version of app"], "1.0",
                 id="the_most_popular_version_while_its_service_waits_behind_another"),
    pytest.param(tree(service(current="h2=1.0 h3=1.0", offline="h1", quorum=1), state="aborted"), "1.0 2.0", START,
                 ["start 1.0", "most popular"], "1.0", id="the_most_popular_version_once_the_rollout_is_aborted"),
    pytest.param(tree(service(current="h2=1.0 h3=1.0", offline="h1", failed="h4", quorum=1)), "1.0 2.0", START,
                 ["start 1.0", "most popular"], "1.0", id="the_most_popular_version_while_a_failure_halts_the_service"),
    pytest.param(tree(service(current="h2=1.0 h3=1.0", failed="h1", quorum=1)), "1.0 2.0", START,
                 ["start 1.0", "most popular"], "1.0", id="the_most_popular_version_on_a_host_whose_upgrade_failed"),
    pytest.param(tree(service(current="h2=1.0 h3=1.0 h4=1.5", offline="h1", staged=False), state=None), "1.0 1.5", START,
                 ["start 1.0", "most popular"], "1.0", id="the_most_popular_version_without_a_rollout"),
    pytest.param(tree(service(current="h2=1.0 h3=1.5 h4=1.5", offline="h1", staged=False), state=None), "1.0 0.9", START,
                 ["start 1.0", "most popular"], "1.0", id="the_most_popular_version_among_those_on_disk"),
    pytest.param(tree(service(offline="h1 h2", staged=False), state=None), "0.9 1.0", START,
                 ["start 1.0", "the last version this host ran"], "1.0", id="the_last_version_when_none_is_registered"),
    pytest.param(tree(service(offline="h1 h2", staged=False), state=None), "0.9", WAIT,
                 ["instance down", "no usable version of app on disk"], None, id="nothing_usable_on_disk"),
]


@pytest.mark.parametrize("snapshot, prepared, action, facts, version", START_CASES)
def test_a_host_whose_instance_is_down_starts(snapshot, prepared, action, facts, version):
    assert_decision(decided(snapshot, local(running=None, healthy=False, version="1.0", prepared=prepared)), action, *facts, version=version)


def test_a_popularity_tie_goes_to_the_lower_version():
    snapshot = tree(service(current="h2=1.0 h3=1.1", offline="h1", staged=False), state=None)
    assert decided(snapshot, local(running=None, version="0.1", prepared="1.0 1.1")).version == "1.0"


@pytest.mark.parametrize("state", ["running", "paused"])
def test_a_lost_session_still_starts_the_last_version(state):
    snapshot = tree(service(current="h2=2.0 h3=2.0", offline="h1", quorum=1), state=state)
    view = local(running=None, healthy=False, version="1.0", prepared="1.0 2.0")
    assert_decision(decided(snapshot, view, connected=False), START, "the last version this host ran", version="1.0")


def test_a_straggler_of_a_done_rollout_converges_without_a_second_seeding():
    # The rollout is done while h1 kept its healthy 1.0 instance (partitioned): it follows the
    # ordinary upgrade path (ready queue, slot under quorum), not the start rule.
    snapshot = tree(service(current="h1=1.0 h2=2.0 h3=2.0", quorum=1), queue=[], state="done")
    assert_decision(decided(snapshot), JOIN_READY, "join the ready queue")
    snapshot = tree(service(current="h1=1.0 h2=2.0 h3=2.0", ready="h1", quorum=1), queue=[], state="done")
    assert_decision(decided(snapshot), TAKE_SLOT, "slot allowed")
    snapshot = tree(service(current="h1=1.0 h2=2.0 h3=2.0", ready="h1", quorum=3), queue=[], state="done")
    assert_decision(decided(snapshot), WAIT, "budget 0")


@pytest.mark.parametrize("state", ["aborted", "failed"])
def test_a_straggler_of_an_aborted_or_failed_rollout_stays_where_it_is(state):
    snapshot = tree(service(current="h1=1.0 h2=2.0 h3=2.0", ready="h1", quorum=1), queue=[], state=state)
    assert_decision(decided(snapshot), WAIT, "rollout r1 is %s" % state)


# on_failure: rollback: hosts already on the target take turns to go back, quorum-respecting.
ROLLBACK_CASES = [
    pytest.param("h1", dict(), ROLLBACK, ["slot allowed", "keeps 3 healthy"], id="the_first_upgraded_host_goes_back"),
    pytest.param("h2", dict(), WAIT, ["h2 is number 2 in line", "budget 1"], id="the_others_wait_their_turn"),
    pytest.param("h1", dict(quorum=4), WAIT, ["budget 0", "4 healthy, quorum 4"], id="the_quorum_still_holds"),
    pytest.param("h1", dict(on_failure="halt"), WAIT, ["on target app 2.0"], id="halt_leaves_upgraded_hosts_alone"),
]


@pytest.mark.parametrize("host, release, action, facts", ROLLBACK_CASES)
def test_rollback_after_a_failure(host, release, action, facts):
    settings = dict(current="h1=2.0 h2=2.0 h3=1.0 h4=1.0", failed="h3", quorum=1, on_failure="rollback")
    settings.update(release)
    view = local(running="2.0", previous="1.0", prepared="1.0 2.0")
    assert_decision(decided(tree(service(**settings)), view, host=host), action, *facts, version="1.0" if action == ROLLBACK else None)


@pytest.mark.parametrize("state", ["paused", "aborted"])
def test_a_paused_or_aborted_rollout_takes_no_rollback_slot_either(state):
    snapshot = tree(service(current="h1=2.0 h2=2.0 h3=1.0 h4=1.0", failed="h3", quorum=1, on_failure="rollback"), state=state)
    assert decided(snapshot, local(running="2.0", previous="1.0")).action == WAIT


def test_a_release_of_another_rollout_is_not_acted_upon():
    snapshot = tree(service(current=FIVE, ready=FIVE_READY, quorum=1, rollout="r0"))
    assert_decision(decided(snapshot), WAIT, "idle: no rollout of app")


# The external driver: the agent reports on a service that something else upgrades.
def external(running="2.0", healthy=True):
    return LocalView(service="app", progress=ServiceProgress(version=None), running=running, healthy=healthy,
                     prepared=frozenset(), managed=False)


@pytest.mark.parametrize("view, current, action, fact", [
    pytest.param(external(), "h2=1.0", REGISTER, "register the externally managed app 2.0", id="healthy_and_unregistered"),
    pytest.param(external(), "h1=1.0 h2=1.0", REGISTER, "app 2.0", id="registered_with_an_old_version"),
    pytest.param(external(healthy=False), "h1=2.0", DEREGISTER, "unhealthy", id="unhealthy_and_registered"),
    pytest.param(external(running=None), "h1=2.0", DEREGISTER, "not running", id="stopped_and_registered"),
    pytest.param(external(running=None), "h2=1.0", WAIT, "not running", id="stopped_and_unregistered"),
    pytest.param(external(), "h1=2.0", WAIT, "monitoring", id="healthy_and_registered"),
])
def test_an_externally_managed_service_is_only_reported_never_started_stopped_or_upgraded(view, current, action, fact):
    # The release would make a managed host download, queue and take a slot: an external one must not.
    snapshot = tree(service(current=current, ready="h2", quorum=1, target="3.0"))
    assert_decision(decided(snapshot, view), action, fact)


def test_an_externally_managed_service_does_nothing_while_disconnected():
    assert_decision(decided(tree(service(current="h1=1.0")), external(), connected=False), WAIT, "not connected")


def test_a_dependant_waits_while_a_dependency_instance_that_came_back_is_still_old():
    # db finished, but h4 returned from a partition with db 1.0; app must not switch anywhere yet.
    db = service("db", current="h1=2.0 h2=2.0 h3=2.0 h4=1.0", target="2.0")
    app = service("app", current="h1=1.0 h2=1.0 h3=1.0 h4=1.0", ready="h1 h2", quorum=1, depends_on=["db"])
    snapshot = tree(db, app, queue=["app"])
    assert_decision(decided(snapshot, local(name="app")), WAIT, "app depends on db", "not on its target")
    caught_up = tree(service("db", current="h1=2.0 h2=2.0 h3=2.0 h4=2.0", target="2.0"), app, queue=["app"])
    assert_decision(decided(caught_up, local(name="app")), TAKE_SLOT, "slot allowed")


# A caller with limits of its own (a play under the strategy) never loosens the staged release.
@pytest.mark.parametrize("play_quorum, play_parallel, expected", [
    (None, None, (3, 2)),
    (1, None, (3, 2)),
    (4, None, (4, 2)),
    ("100%", 5, (5, 2)),
    (None, 1, (3, 1)),
])
def test_the_stricter_of_the_play_and_the_release_limits_applies(play_quorum, play_parallel, expected):
    snapshot = tree(service(current=FIVE, quorum=3, max_parallel=2))
    assert strictest_limits(snapshot, "app", play_quorum, play_parallel) == expected


def test_limits_for_a_service_without_a_release_come_from_the_caller_alone():
    snapshot = tree(service(current=FIVE, staged=False), state=None)
    assert strictest_limits(snapshot, "app", "40%", None) == (2, 1)
    with pytest.raises(ValueError):
        strictest_limits(snapshot, "app")


# Safety-relevant nodes whose payload does not parse are read conservatively.
def _with(snapshot, **fields):
    state = dataclasses.replace(snapshot.service("app"), **fields)
    return dataclasses.replace(snapshot, services=dict(snapshot.services, app=state))


def test_a_malformed_failure_record_of_another_host_halts_the_service():
    snapshot = _with(tree(service(current=FIVE, ready=FIVE_READY, quorum=1)), failures={"h3": None})
    assert_decision(decided(snapshot), WAIT, "halted by the failure on h3")


def test_a_malformed_failure_record_of_this_host_halts_it_and_says_the_record_is_malformed():
    snapshot = _with(tree(service(current=FIVE, ready=FIVE_READY, quorum=1)), failures={"h1": None})
    assert_decision(decided(snapshot), WAIT, "halted here", "failure record is malformed")


def test_a_malformed_slot_counts_as_held_and_is_not_released_by_the_agent():
    snapshot = _with(tree(service(current=FIVE, ready=FIVE_READY, quorum=1)), slots={"h1": None})
    assert_decision(decided(snapshot), WAIT, "malformed slot")
    other = _with(tree(service(current=FIVE, ready="h2 h1", quorum=1)), slots={"h3": None})
    assert_decision(decided(other, host="h2"), WAIT, "budget 0", "1 slots held")


def test_a_release_without_its_sub_trees_waits_and_names_them():
    snapshot = _with(tree(service(current=FIVE, quorum=1)), missing_subtrees=("/dc/staging/app/ready",))
    assert_decision(decided(snapshot), WAIT, "lacks /dc/staging/app/ready", "re-stage app")


def test_a_registration_left_by_an_older_session_of_ours_is_made_again_not_trusted():
    # A restarted agent finds h1@1.0 in the tree, from its previous process: that node goes
    # when the old session expires, and nothing would wake this idle host to notice.
    snapshot = tree(service(current=FIVE, quorum=1))
    view = dataclasses.replace(local(), own_registration=False)
    assert_decision(decided(snapshot, view), REGISTER, "left by an older session of ours")
    assert decided(snapshot, local()).action != REGISTER


# Under the ACL profile the decision counts what each host's own parent says (core.snapshot.confirmed).
def _records(text, name="app"):
    """``"h1=1.0 h2=1.0"`` -> the children of those hosts' own parents (``{host: ["app@1.0"]}``)."""
    return {host: ["%s@%s" % (name, version)] for host, version in _pairs(text).items()}


def test_a_forged_registration_is_not_counted_once_confirmed():
    # h3 is down, but another agent created current/app/h3@1.0: the index says 3 healthy.
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", ready="h1 h2 h3", quorum=2))
    assert_decision(decided(snapshot), TAKE_SLOT, "keeps 2 healthy >= quorum 2")
    checked = confirmed(snapshot, ["app"], _records("h1=1.0 h2=1.0") | {"h3": []})
    assert_decision(decided(checked), WAIT, "budget 0", "2 healthy, quorum 2")
    assert any("app 1.0 on h3 is not in that host's own parent: not counted" in problem for problem in checked.service("app").problems)


def test_a_registration_deleted_from_the_index_still_counts_once_confirmed():
    # The index lost h3@1.0 (another agent deleted it): h3 looks offline, the quorum of 3 forbids the stop.
    snapshot = tree(service(current="h1=1.0 h2=1.0", offline="h3", ready="h1 h2", quorum=2))
    assert_decision(decided(snapshot), WAIT, "budget 0")
    checked = confirmed(snapshot, ["app"], _records("h1=1.0 h2=1.0 h3=1.0"))
    assert_decision(decided(checked), TAKE_SLOT, "keeps 2 healthy >= quorum 2")
    assert any("missing from the service's listing" in problem for problem in checked.service("app").problems)


def test_a_dependency_whose_old_instance_was_deleted_from_the_index_is_still_incomplete():
    # db's h3 still runs 1.0; another agent deleted current/db/h3@1.0 so that db looks complete.
    snapshot = tree(service("db", current="h1=2.0 h2=2.0", offline="h3", ready=""),
                    service(current=FIVE, ready=FIVE_READY, quorum=1, depends_on=["db"]), queue=["db", "app"])
    assert_decision(decided(snapshot), TAKE_SLOT)
    db_versions = {"h1": ["db@2.0"], "h2": ["db@2.0"], "h3": ["db@1.0"]}
    checked = confirmed(snapshot, ["app", "db"], {host: ["app@1.0"] + db_versions.get(host, []) for host in ("h1", "h2", "h3", "h4", "h5")})
    assert_decision(decided(checked), WAIT, "behind db")


def test_a_host_whose_parent_is_not_its_own_counts_as_not_registered():
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", ready="h1 h2 h3", quorum=2))
    checked = confirmed(snapshot, ["app"], _records("h1=1.0 h2=1.0"), problems=[("h3", "hosts/h3 is not that host's own")])
    assert_decision(decided(checked), WAIT, "budget 0")
    assert "hosts/h3 is not that host's own" in checked.service("app").problems


def test_a_slot_deleted_from_the_index_still_counts_against_max_parallel_once_confirmed():
    # h2 is switching; another agent deleted staging/app/upgrading/h2 (and h2's place in line) so that one more host may start.
    snapshot = tree(service(current="h1=1.0 h3=1.0 h4=1.0", offline="h2", ready="h1", quorum=1, max_parallel=1))
    assert_decision(decided(snapshot), TAKE_SLOT)
    records = _records("h1=1.0 h3=1.0 h4=1.0") | {"h2": ["slot:app"]}
    checked = confirmed(snapshot, ["app"], records)
    assert checked.service("app").slots == {"h2": None}
    assert_decision(decided(checked), WAIT, "budget 0", "1 slots held")
    assert any("slot of app on h2 is missing from the service's listing" in problem for problem in checked.service("app").problems)


def test_a_slot_forged_for_a_host_with_its_own_parent_is_not_counted_and_one_without_counts():
    snapshot = tree(service(current="h1=1.0 h3=1.0 h4=1.0", slots="h2 h5", ready="h1", quorum=1, max_parallel=2))
    checked = confirmed(snapshot, ["app"], _records("h1=1.0 h3=1.0 h4=1.0") | {"h2": []})
    # h2's own parent has no copy: forged, not counted; h5 has no own parent to ask: counted (stricter).
    assert sorted(checked.service("app").slots) == ["h5"]
    assert checked.service("app").listed_slots == {"h2", "h5"}
    assert any("slot of app on h2 is not in that host's own parent" in problem for problem in checked.service("app").problems)


def test_a_failure_record_deleted_from_the_index_still_halts_once_confirmed():
    snapshot = tree(service(current="h1=1.0 h3=1.0 h4=1.0", offline="h2", ready="h1", quorum=1))
    assert_decision(decided(snapshot), TAKE_SLOT)
    checked = confirmed(snapshot, ["app"], _records("h1=1.0 h3=1.0 h4=1.0") | {"h2": ["failed:app"]})
    assert_decision(decided(checked), WAIT, "halted by the failure on h2")


def test_a_failure_record_forged_in_the_index_halts_nothing_once_confirmed():
    snapshot = tree(service(current="h1=1.0 h2=1.0 h3=1.0", failed="h3", ready="h1", quorum=1))
    assert_decision(decided(snapshot), WAIT, "halted by the failure on h3")
    checked = confirmed(snapshot, ["app"], _records("h1=1.0 h2=1.0 h3=1.0"))
    assert_decision(decided(checked), TAKE_SLOT)


def test_what_a_writer_deletes_to_clear_failures_is_each_index_node_and_each_copy_there_is():
    from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout

    layout = Layout("/dc")
    snapshot = tree(service(current="h1=1.0", failed="h2 h3", quorum=1))
    checked = confirmed(snapshot, ["app"], {"h1": ["app@1.0", "failed:app"], "h2": ["failed:app"], "h3": []})
    assert sorted(checked.service("app").held_nodes(layout, "failed")) == sorted([
        "/dc/staging/app/failed/h2", "/dc/staging/app/failed/h3", "/dc/hosts/h1/failed:app", "/dc/hosts/h2/failed:app"])
    assert snapshot.service("app").held_nodes(layout, "failed") == ["/dc/staging/app/failed/h2", "/dc/staging/app/failed/h3"]
