# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The independent monitor's verdict from outages: an instance counts as down only where a sample saw it down."""

from __future__ import annotations

from ansible_collections.zkrollout.dc.tests.bed.monitor import Change, certain_counts

A1, A2, A3 = "http://a1/health", "http://a2/health", "http://a3/health"


def test_a_hand_off_within_one_sample_period_is_not_two_instances_down_at_once():
    # a1 was last seen down at 1.00 and first seen up at 1.02; a2 went down at 1.01 (first seen down then).
    timeline, lowest = certain_counts({"A": 3}, [("A", A1, 0.0, 1.00), ("A", A2, 1.01, 2.0)], start=0.0)
    assert lowest == {"A": (2, 0.0, [A1])}
    assert timeline == [Change(0.0, "A", 2), Change(1.00, "A", 3), Change(1.01, "A", 2), Change(2.0, "A", 3)]


def test_outages_seen_overlapping_count_together():
    _timeline, lowest = certain_counts({"A": 3}, [("A", A1, 0.5, 1.00), ("A", A2, 1.00, 2.0), ("A", A3, 1.5, 1.6)], start=0.0)
    # At 1.00 both a1 and a2 were seen down (the ends are included); at 1.5 a2 and a3.
    assert lowest == {"A": (1, 1.00, [A1, A2])}


def test_a_single_failing_sample_counts_at_its_instant():
    timeline, lowest = certain_counts({"A": 2}, [("A", A1, 1.0, 1.0)], start=0.0)
    assert lowest["A"][:2] == (1, 1.0)
    assert timeline == [Change(0.0, "A", 2), Change(1.0, "A", 1), Change(1.0, "A", 2)]


def test_outages_before_the_start_are_cut_there_and_services_are_apart():
    timeline, lowest = certain_counts({"A": 2, "B": 1}, [("A", A1, -1.0, 0.5), ("A", A2, -2.0, -1.5), ("B", "http://b1/health", 0.2, 0.3)],
                                      start=0.0)
    assert lowest == {"A": (1, 0.0, [A1]), "B": (0, 0.2, ["http://b1/health"])}
    assert [change for change in timeline if change.service == "A"] == [Change(0.0, "A", 1), Change(0.5, "A", 2)]


def test_without_outages_every_instance_counts():
    assert certain_counts({"A": 3}, [], start=0.25) == ([Change(0.25, "A", 3)], {"A": (3, 0.25, [])})
