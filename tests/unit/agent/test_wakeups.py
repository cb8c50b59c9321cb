# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who watches what: one host's upgrade can wake only the agents whose decision it can change."""

from __future__ import annotations

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.wakeups import CHILDREN, EXISTS, base_watches, plan, service_watches
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout
from ansible_collections.zkrollout.dc.plugins.module_utils.store.views import GLOBAL

from .test_decide import service, tree

LAYOUT = Layout()
SLOTS = (CHILDREN, "/dc/staging/app/upgrading")
CURRENT = (CHILDREN, "/dc/current/app")
HUNDRED = " ".join("h%02d=1.0" % i for i in range(1, 101))
HUNDRED_READY = " ".join("h%02d" % i for i in range(1, 101))


def ready_member(host, position):
    return (EXISTS, "/dc/staging/app/ready/%s-%010d" % (host, position))


def watchers_of(watch, snapshot, hosts):
    """The hosts whose plan for app contains ``watch``."""
    return [host for host in hosts if watch in service_watches(LAYOUT, host, snapshot, "app")]


def test_every_agent_keeps_the_rollout_the_deploy_queue_and_its_own_release_and_failures():
    watches = base_watches(LAYOUT, ["app", "db"], ["auth"])
    assert watches == {
        (EXISTS, "/dc/rollout"): {GLOBAL},
        (CHILDREN, "/dc/deploy"): {GLOBAL},
        (EXISTS, "/dc/staging/app"): {"app"},
        (CHILDREN, "/dc/staging/app/failed"): {"app"},
        (EXISTS, "/dc/staging/db"): {"db"},
        (CHILDREN, "/dc/staging/db/failed"): {"db"},
        (EXISTS, "/dc/staging/auth"): {"auth"},
    }


def test_only_the_first_max_parallel_hosts_of_the_ready_queue_watch_slots_and_registrations():
    # Quorum 100 of 100: no turn is open, so the candidates wait for a change there.
    snapshot = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=100, max_parallel=2))
    hosts = ["h%02d" % i for i in range(1, 101)]
    assert watchers_of(SLOTS, snapshot, hosts) == ["h01", "h02"]
    assert watchers_of(CURRENT, snapshot, hosts) == ["h01", "h02"]


def test_a_candidate_whose_turn_is_open_watches_nothing_the_others_do():
    # Budget 2: h01 and h02 take their turns in this iteration; a refused take re-reads the view.
    snapshot = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=50, max_parallel=2))
    hosts = ["h%02d" % i for i in range(1, 101)]
    assert watchers_of(SLOTS, snapshot, hosts) == []
    assert watchers_of(CURRENT, snapshot, hosts) == []
    assert service_watches(LAYOUT, "h01", snapshot, "app") == set()
    assert service_watches(LAYOUT, "h03", snapshot, "app") == {ready_member("h01", 1), ready_member("h02", 2)}
    # Budget 1 (quorum 99): h01's turn is open, h02 waits for a change of the slots or the registrations.
    one_open = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=99, max_parallel=2))
    assert watchers_of(SLOTS, one_open, hosts) == ["h02"]
    # Paused: no turn is open; the candidates watch as before (the resume comes with the rollout node's watch).
    paused = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=50, max_parallel=2), state="paused")
    assert watchers_of(SLOTS, paused, hosts) == ["h01", "h02"]


def test_a_host_further_back_watches_only_the_max_parallel_members_just_ahead_of_it():
    snapshot = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=50, max_parallel=2))
    assert service_watches(LAYOUT, "h10", snapshot, "app") == {ready_member("h08", 8), ready_member("h09", 9)}
    one_at_a_time = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=50, max_parallel=1))
    assert service_watches(LAYOUT, "h10", one_at_a_time, "app") == {ready_member("h09", 9)}


def test_one_host_leaving_the_ready_queue_wakes_at_most_max_parallel_successors():
    snapshot = tree(service(current=HUNDRED, ready=HUNDRED_READY, quorum=50, max_parallel=2))
    hosts = ["h%02d" % i for i in range(1, 101)]
    assert watchers_of(ready_member("h05", 5), snapshot, hosts) == ["h06", "h07"]


def test_a_slot_holder_still_in_the_queue_keeps_its_place_in_the_line():
    snapshot = tree(service(current=HUNDRED, ready=HUNDRED_READY, slots="h01", quorum=50, max_parallel=1))
    assert service_watches(LAYOUT, "h02", snapshot, "app") == {ready_member("h01", 1)}


def test_a_host_in_its_own_turn_is_woken_by_nothing_the_others_do():
    # Quorum 99: h01's turn leaves no budget, so h02 waits for it.
    snapshot = tree(service(current=HUNDRED, ready=HUNDRED_READY, slots="h01", quorum=99, max_parallel=2))
    assert service_watches(LAYOUT, "h01", snapshot, "app") == set()
    hosts = ["h%02d" % i for i in range(1, 101)]
    assert watchers_of(SLOTS, snapshot, hosts) == ["h02"]


def test_a_host_outside_the_queue_and_behind_the_target_watches_nothing_more():
    snapshot = tree(service(current=HUNDRED, ready="h01 h02", quorum=50))
    assert service_watches(LAYOUT, "h50", snapshot, "app") == set()


def test_hosts_on_the_target_watch_nothing_for_completion_since_nobody_writes_it():
    snapshot = tree(service(current="h1=2.0 h2=2.0 h3=2.0 h4=1.0", ready="h4", quorum=2))
    for host in ("h1", "h2", "h3"):
        assert service_watches(LAYOUT, host, snapshot, "app") == set()


def test_only_the_candidates_behind_an_incomplete_service_watch_its_slots_and_registrations():
    snapshot = tree(service("db", current="h7=2.0 h8=1.0", target="2.0"),
                    service(current="h1=1.0 h2=1.0 h3=1.0", ready="h1 h2", quorum=1), queue=["db", "app"])
    ahead = {(CHILDREN, "/dc/current/db"), (CHILDREN, "/dc/staging/db/upgrading")}
    assert ahead <= service_watches(LAYOUT, "h1", snapshot, "app")
    assert not ahead & service_watches(LAYOUT, "h2", snapshot, "app")
    assert not ahead & service_watches(LAYOUT, "h3", snapshot, "app")


def test_in_a_rollback_hosts_on_the_target_line_up_by_name():
    snapshot = tree(service(current="h1=2.0 h2=2.0 h3=2.0 h4=1.0", failed="h4", quorum=1, on_failure="rollback"))
    assert {SLOTS, CURRENT} <= service_watches(LAYOUT, "h1", snapshot, "app")
    assert service_watches(LAYOUT, "h3", snapshot, "app") == {(EXISTS, "/dc/current/app/h2@2.0")}


def test_a_candidate_watches_the_registrations_of_a_lagging_dependency():
    snapshot = tree(service("db", current="h5=1.0 h6=2.0", target="2.0"),
                    service(current="h1=1.0 h2=1.0 h3=1.0", ready="h1 h2", quorum=1, depends_on=["db"]), queue=["app"])
    assert (CHILDREN, "/dc/current/db") in service_watches(LAYOUT, "h1", snapshot, "app")
    watches = plan(LAYOUT, "h1", snapshot, ["app"], ["db"])
    assert watches[(CHILDREN, "/dc/current/db")] == {"app", "db"}


def test_a_candidate_that_also_runs_the_service_ahead_re_reads_that_service_when_it_changes():
    # h1 runs db too: db is one of its own services, not a dependency, and must still be re-read.
    snapshot = tree(service("db", current="h1=2.0 h7=1.0", target="2.0"),
                    service(current="h1=1.0 h2=1.0 h3=1.0", ready="h1 h2", quorum=1), queue=["db", "app"])
    watches = plan(LAYOUT, "h1", snapshot, ["app", "db"], [])
    assert watches[(CHILDREN, "/dc/current/db")] >= {"app", "db"}
    assert watches[(CHILDREN, "/dc/staging/db/upgrading")] >= {"app", "db"}


def test_a_host_whose_slot_a_controller_holds_watches_the_slot_set():
    snapshot = tree(service(current="h2=1.0 h3=1.0", slots="h1=controller:play", quorum=1))
    assert SLOTS in service_watches(LAYOUT, "h1", snapshot, "app")


def test_nothing_is_watched_for_a_service_without_a_release():
    snapshot = tree(service(current="h1=1.0", staged=False), state=None)
    assert service_watches(LAYOUT, "h1", snapshot, "app") == set()
