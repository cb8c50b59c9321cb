# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The waiter's pure parts: what counts as a host switching, what a cursor keeps, the stall sentence."""

from __future__ import annotations

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.waiter import (
    WaitCursor,
    WaitError,
    host_switched,
    progress_events,
    seen_state,
    stall_reason,
)


def _report(hosts, state="running", services=None):
    services = services or {"A": {"verdict": "rolling", "reason": "1 of 1 slots held (h1)", "complete": False}}
    return {"state": state, "reason": "0 of 1 services complete", "deploy_queue": ["A"], "hosts": hosts, "services": services}


def _cell(state, version):
    return {"state": state, "version": version}


def test_taking_a_slot_and_coming_back_on_another_version_are_switches():
    before = seen_state(_report({"h1": {"A": _cell("online", "1.0.0")}}))

    assert host_switched(before, _report({"h1": {"A": _cell("upgrading", None)}}))
    assert host_switched(before, _report({"h1": {"A": _cell("online", "2.0.0")}}))


def test_going_offline_and_coming_back_on_the_same_version_is_no_switch():
    online = seen_state(_report({"h1": {"A": _cell("online", "1.0.0")}}))
    offline = _report({"h1": {"A": _cell("offline", None)}})

    assert not host_switched(online, offline)
    assert not host_switched(seen_state(offline), _report({"h1": {"A": _cell("online", "1.0.0")}}))
    assert not host_switched(None, offline)


def test_coming_back_from_offline_on_another_version_is_a_switch():
    online = seen_state(_report({"h1": {"A": _cell("online", "1.0.0")}}))
    offline = seen_state(_report({"h1": {"A": _cell("offline", None)}}), online)

    assert offline["hosts"]["h1"]["A"]["ran"] == "1.0.0"
    assert host_switched(offline, _report({"h1": {"A": _cell("online", "2.0.0")}}))


def test_events_against_a_cursor_name_only_what_changed_after_it():
    before = seen_state(_report({"h1": {"A": _cell("online", "1.0.0")}, "h2": {"A": _cell("online", "1.0.0")}}))
    after = _report({"h1": {"A": _cell("online", "2.0.0")}, "h2": {"A": _cell("online", "1.0.0")}})

    assert progress_events(before, after, 12.34) == ["   12.3s A on h1: online 1.0.0 -> online 2.0.0"]


def test_an_instance_without_a_version_is_shown_by_its_state_alone():
    before = seen_state(_report({"h1": {"A": _cell("online", "1.0.0")}}))

    assert progress_events(before, _report({"h1": {"A": _cell("upgrading", None)}}), 1.0) == ["    1.0s A on h1: online 1.0.0 -> upgrading"]


def test_a_cursor_survives_its_round_trip_through_a_task_result():
    cursor = WaitCursor(rollout="r1", started=100.0, switched=130.5, seen=seen_state(_report({"h1": {"A": _cell("online", "1.0.0")}})))

    assert WaitCursor.from_dict(cursor.to_dict()) == cursor


@pytest.mark.parametrize("raw, words", [
    ("r1", "since must be the 'cursor' a previous round of rollout_wait returned"),
    ({"rollout": "r1"}, "got ['rollout']"),
    ({"rollout": "r1", "started": "yesterday", "switched": 1.0, "seen": {}}, "since.started must be a time in seconds, got 'yesterday'"),
    ({"rollout": "r1", "started": 1.0, "switched": 1.0, "seen": {"state": "running"}}, "since.seen is not what a round of rollout_wait returns"),
])
def test_a_cursor_the_waiter_did_not_make_is_refused_naming_the_field(raw, words):
    with pytest.raises(WaitError) as raised:
        WaitCursor.from_dict(raw)

    assert words in str(raised.value)


def test_the_stall_sentence_says_how_long_and_what_each_unfinished_service_waits_on():
    services = {
        "A": {"verdict": "blocked", "reason": "quorum 3 needs 4 healthy, 3 online; host h4 offline", "complete": False},
        "B": {"verdict": "waiting", "reason": "behind A in the deploy queue", "complete": False},
        "C": {"verdict": "done", "reason": "all 3 online hosts run 2.0.0", "complete": True},
    }

    assert stall_reason(_report({}, services=services), 61.2, 60) == (
        "no host switched for 61s (progress_deadline 60s) with the rollout running; A blocked: quorum 3 needs 4 healthy, 3 online; "
        "host h4 offline; B waiting: behind A in the deploy queue")
