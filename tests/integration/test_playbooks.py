# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/rollout.yml, status.yml and control.yml run by a real ``ansible-playbook`` the way
an operator or an AWX job template runs them: extra vars only (connection included), no stdin,
the outcome in the return code, the play recap and the ``set_stats`` custom stats."""

from __future__ import annotations

import json
import time

import ansible_runner
import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot

from . import tree
from .tree import FakeFleet, dump_tree, release, service

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(180)]


@pytest.fixture
def fleet(zk, layout):
    """h1..h3 run A and B at 1.0.0; h4 is in A's roster but offline."""
    with FakeFleet(zk.hosts, layout) as fake:
        for host in ("h1", "h2", "h3"):
            fake.join(host, {"A": "1.0.0", "B": "1.0.0"})
        fake.join("h4", {"A": None})
        yield fake


@pytest.fixture
def playbook(zk, zk_root, tmp_path):
    """``playbook("rollout.yml", "key=value"..., release=dict, options=[...], **typed_vars)``.

    Runs it against this test's root: the connection as ``key=value`` extra vars, the release as
    ``-e @release.json``, ``typed_vars`` as one JSON ``-e`` (as AWX passes survey answers).
    """

    def run(name, *extra_vars, release=None, options=(), **typed_vars):
        return tree.run_playbook(name, _arguments(zk, zk_root, tmp_path, extra_vars, release, typed_vars), options)

    return run


@pytest.fixture
def streamed_playbook(zk, zk_root, tmp_path):
    """``with streamed_playbook("rollout.yml", ...) as stream:`` as ``playbook``, but its output is read line by line as it runs."""

    def start(name, *extra_vars, release=None, options=(), **typed_vars):
        return tree.streamed_playbook(name, _arguments(zk, zk_root, tmp_path, extra_vars, release, typed_vars), options)

    return start


def _arguments(zk, zk_root, tmp_path, extra_vars, release, typed_vars):
    arguments = ["zkrollout_zk_hosts=%s" % zk.hosts, "zkrollout_zk_root=%s" % zk_root] + list(extra_vars)
    if release is not None:
        path = tmp_path / "release.json"
        path.write_text(json.dumps({"zkrollout_release": release}))
        arguments.append("@%s" % path)
    if typed_vars:
        arguments.append(json.dumps(typed_vars))
    return arguments


def _release():
    return release(service("A", quorum=2), service("B", quorum="50%", depends_on=["A"]), id="2026-11-22.1")


def _assert_ok(run):
    assert run.returncode == 0, run.output


def _assert_failed(run):
    assert run.returncode != 0, run.output
    assert "Traceback" not in run.output, run.output


# rollout.yml
def test_rollout_playbook_seeds_the_release_and_publishes_it_for_awx(playbook, fleet, client, layout):
    run = playbook("rollout.yml", release=_release(), tower_job_id=4711)

    _assert_ok(run)
    assert run.recap()["changed"] == 1 and run.recap()["failed"] == 0
    assert run.custom_stats == {"zkrollout_rollout_id": "2026-11-22.1", "zkrollout_deploy_order": ["A", "B"]}
    snapshot = read_snapshot(client, layout)
    assert (snapshot.rollout.id, snapshot.rollout.state, snapshot.rollout.by) == ("2026-11-22.1", "running", "awx job 4711")
    assert snapshot.queued_services == ["A", "B"]
    before = dump_tree(client, layout.root)

    again = playbook("rollout.yml", release=_release())

    _assert_ok(again)
    assert again.recap()["changed"] == 0, again.output
    assert dump_tree(client, layout.root) == before


def test_rollout_playbook_in_check_mode_shows_the_diff_and_writes_nothing(playbook, fleet, tree_view):
    before = tree_view()

    run = playbook("rollout.yml", release=_release(), options=["--check", "--diff"])

    _assert_ok(run)
    assert tree_view() == before, tree.describe_difference(before, tree_view())
    assert "+++ after" in run.stdout, run.output
    assert '"deploy": [' in run.stdout and '"https://artifacts.example/B-2.0.0.tar.gz"' in run.stdout, run.output
    # The diff shows the release, not the times and signature bytes that differ on every run.
    assert '"created"' not in run.stdout and '"updated"' not in run.stdout, run.output
    assert '"signature": {' in run.stdout and '"value"' not in run.stdout, run.output
    # Nothing was written, so nothing is published as if it had been.
    assert run.custom_stats == {}, run.output


def test_rollout_playbook_in_check_mode_with_wait_neither_waits_nor_publishes(playbook, fleet, tree_view):
    before = tree_view()

    run = playbook("rollout.yml", "zkrollout_wait=true", "zkrollout_wait_timeout=60", release=_release(), options=["--check"])

    _assert_ok(run)
    assert tree_view() == before
    assert run.recap()["skipped"] >= 2, run.output
    assert run.custom_stats == {}, run.output


def test_rollout_playbook_without_a_release_fails_saying_how_to_pass_one(playbook, tree_view):
    before = tree_view()

    run = playbook("rollout.yml")

    _assert_failed(run)
    assert "zkrollout_release is missing or not a mapping: pass the release with -e @release.yml" in run.output
    assert tree_view() == before


def test_rollout_playbook_refuses_a_release_with_a_cycle_and_writes_nothing(playbook, fleet, tree_view):
    before = tree_view()
    cyclic = release(service("A", depends_on=["B"]), service("B", depends_on=["A"]))

    run = playbook("rollout.yml", release=cyclic)

    _assert_failed(run)
    assert "dependency cycle A -> B -> A" in run.output
    assert run.recap()["failed"] == 1
    assert tree_view() == before, tree.describe_difference(before, tree_view())


def test_rollout_playbook_refuses_a_second_release_while_one_runs_naming_it(playbook, fleet, client, layout, tree_view):
    tree.seed(client, layout, _release())
    before = tree_view()

    run = playbook("rollout.yml", release=release(service("A", version="3.0.0", quorum=2), id="2026-11-23.1"))

    _assert_failed(run)
    assert "rollout 2026-11-22.1 is running (running: 0 of 2 services complete" in run.output
    assert tree_view() == before


def test_rollout_playbook_waits_until_the_fleet_finishes_when_asked(playbook, fleet, zk, layout):
    with tree.in_background(lambda: tree.wait_for_watch(zk, layout.rollout), lambda: fleet.roll_out(pause=0.05)):
        run = playbook("rollout.yml", "zkrollout_wait=true", "zkrollout_wait_timeout=60", release=_release())

    _assert_ok(run)
    assert run.custom_stats["zkrollout_state"] == "done"
    assert run.custom_stats["zkrollout_progress"]["instances_on_target"] == 6
    progress = run.task_result("Show the progress seen while waiting")["msg"]
    assert progress[-1] == "rollout done", progress
    assert any(" B on h3: " in line and "2.0.0" in line for line in progress), progress


def test_rollout_playbook_wait_fails_naming_the_failed_host_and_reason(playbook, fleet, zk, layout):
    def fail_on_h3():
        fleet.fail_upgrade("A", "h3", "2.0.0", "health check failed: connection refused")

    with tree.in_background(lambda: tree.wait_for_watch(zk, layout.rollout), fail_on_h3):
        run = playbook("rollout.yml", "zkrollout_wait=true", "zkrollout_wait_timeout=60", release=_release())

    _assert_failed(run)
    assert "rollout failed: A on h3: health check failed: connection refused (health)" in run.output
    assert run.task_result("Show the progress seen while waiting")["msg"][-1] == "rollout failed: A on h3: health check failed: connection refused (health)"
    assert run.custom_stats["zkrollout_state"] == "failed"


def test_rollout_playbook_prints_each_change_while_it_waits(streamed_playbook, fleet):
    with streamed_playbook("rollout.yml", "zkrollout_wait=true", "zkrollout_wait_timeout=60", release=_release()) as stream:
        stream.wait_for_line(lambda line: line.startswith("rollout_wait [localhost] ") and " rollout running: " in line)
        fleet.upgrade("A", "h1", "2.0.0")
        switched_at = time.monotonic()
        shown_at, shown = stream.wait_for_line(lambda line: line.startswith("rollout_wait [localhost] ") and "A on h1: " in line
                                               and line.endswith("online 2.0.0"))
        assert stream.ended_at is None, "the line came only with the end of the playbook"
        fleet.roll_out(pause=0.05)
        run = stream.finish()

    _assert_ok(run)
    assert shown_at - switched_at < 10.0, "h1's switch was shown %.1fs after it happened: %s" % (shown_at - switched_at, shown)
    assert shown_at < stream.ended_at
    assert stream.wait_for_line(lambda line: "rollout_wait [localhost] " in line and "B: done (all 3 online hosts run 2.0.0)" in line)
    assert run.custom_stats["zkrollout_state"] == "done"


def test_rollout_playbook_run_as_awx_runs_it_emits_each_change_as_a_job_event_while_it_waits(zk, zk_root, fleet, tmp_path):
    # ansible-runner is what AWX, Tower and ansible-navigator run playbooks with: a job's output
    # is its stream of events, and each change must be one while the playbook still runs.
    events = tree.RunnerEvents()
    extravars = {"zkrollout_zk_hosts": zk.hosts, "zkrollout_zk_root": zk_root, "zkrollout_release": _release(),
                 "zkrollout_wait": True, "zkrollout_wait_timeout": 60}
    (tmp_path / "runner").mkdir()
    thread, runner = ansible_runner.run_async(private_data_dir=str(tmp_path / "runner"), playbook=str(tree.PLAYBOOKS / "rollout.yml"),
                                              extravars=extravars, envvars=tree.playbook_environment(), event_handler=events.add,
                                              quiet=True)
    try:
        events.wait_for(lambda event: event["event"] == "verbose" and "rollout_wait [localhost] " in event["stdout"]
                        and " rollout running: " in event["stdout"])
        fleet.upgrade("A", "h1", "2.0.0")
        shown = events.wait_for(lambda event: "rollout_wait [localhost] " in event.get("stdout", "") and "A on h1: " in event["stdout"]
                                and event["stdout"].endswith("online 2.0.0"))
        assert not events.seen("playbook_on_stats"), "the change was an event only after the playbook ended"
        fleet.roll_out(pause=0.05)
    finally:
        thread.join(120)

    assert runner.status == "successful", events.stdout()
    assert shown["event"] == "verbose", shown
    assert events.seen("playbook_on_stats")


def test_rollout_playbook_fails_a_stalled_rollout_at_the_progress_deadline_naming_what_waits(playbook, fleet):
    run = playbook("rollout.yml", "zkrollout_wait=true", "zkrollout_wait_timeout=60", "zkrollout_progress_deadline=3", release=_release())

    _assert_failed(run)
    assert "rollout stalled: no host switched for 3s (progress_deadline 3s) with the rollout running; " in run.output, run.output
    assert "B waiting: behind A in the deploy queue" in run.output, run.output
    assert run.custom_stats["zkrollout_state"] == "running"


# status.yml
def test_status_playbook_shows_hosts_by_services_and_why_a_service_is_blocked(playbook, fleet, client, layout):
    tree.seed(client, layout, release(service("A", quorum=3), service("B", depends_on=["A"]), id="r1"))

    run = playbook("status.yml")

    _assert_ok(run)
    lines = run.task_result("Show hosts x services and the deploy state")["msg"]
    # One line of the table per line of output, with the default callback and result format.
    assert '        "deploy queue: A -> B",' in run.stdout.splitlines(), run.stdout
    assert lines[:2] == ["rollout r1: running (0 of 2 services complete)", "deploy queue: A -> B"], run.stdout
    assert any(line.split() == ["HOST", "A", "B"] for line in lines), run.stdout
    assert any(line.split() == ["h1", "1.0.0*", "1.0.0*"] for line in lines), run.stdout
    assert any(line.split() == ["h4", "offline"] for line in lines), run.stdout
    assert any(line.startswith("A ") and line.endswith("blocked: quorum 3 needs 4 healthy, 3 online; host h4 offline") for line in lines), run.stdout
    assert any(line.startswith("B ") and line.endswith("waiting: behind A in the deploy queue") for line in lines), run.stdout
    assert run.custom_stats["zkrollout_state"] == "running"
    assert run.custom_stats["zkrollout_progress"]["services_total"] == 2


def test_status_playbook_on_an_empty_tree_says_there_is_no_rollout(playbook):
    run = playbook("status.yml")

    _assert_ok(run)
    assert run.task_result("Show hosts x services and the deploy state")["msg"][0] == "rollout -: none (no rollout in the tree)"
    assert run.custom_stats["zkrollout_state"] == "none"


def test_status_playbook_passes_the_session_timeout_and_retries_to_the_modules(playbook):
    run = playbook("status.yml", "zkrollout_zk_session_timeout=6", "zkrollout_zk_retries=1")

    _assert_ok(run)
    assert run.custom_stats["zkrollout_state"] == "none"


def test_status_playbook_takes_the_connection_from_the_environment_as_an_awx_credential_injects_it(fleet, client, layout, zk, monkeypatch):
    tree.seed(client, layout, release(service("A", quorum=2), id="from-env"))
    monkeypatch.setenv("ZKROLLOUT_ZK_HOSTS", zk.hosts)
    monkeypatch.setenv("ZKROLLOUT_ZK_ROOT", layout.root)

    run = tree.run_playbook("status.yml")

    _assert_ok(run)
    assert run.task_result("Show hosts x services and the deploy state")["msg"][0].startswith("rollout from-env: running"), run.stdout


@pytest.mark.parametrize("variable, option", [("zkrollout_zk_session_timeout", "zk_session_timeout"), ("zkrollout_zk_retries", "zk_retries")])
def test_status_playbook_refuses_a_bad_session_timeout_or_retries_naming_the_option(playbook, variable, option):
    run = playbook("status.yml", "%s=soon" % variable)

    _assert_failed(run)
    assert option in run.output


# control.yml
def test_control_playbook_pauses_and_resumes_the_rollout(playbook, fleet, client, layout):
    tree.seed(client, layout, _release())

    paused = playbook("control.yml", "zkrollout_action=pause", zkrollout_reason="incident 4711")

    _assert_ok(paused)
    rollout = read_snapshot(client, layout).rollout
    assert (rollout.state, rollout.reason) == ("paused", "incident 4711")
    assert paused.custom_stats == {"zkrollout_action": "pause", "zkrollout_result": "rollout 2026-11-22.1 paused"}

    resumed = playbook("control.yml", "zkrollout_action=resume")

    _assert_ok(resumed)
    assert read_snapshot(client, layout).rollout.state == "running"


def test_control_playbook_retries_a_failed_service(playbook, fleet, client, layout):
    tree.seed(client, layout, _release())
    fleet.fail_upgrade("A", "h1", "2.0.0", "health check failed")

    run = playbook("control.yml", "zkrollout_action=retry", "zkrollout_service=A")

    _assert_ok(run)
    assert read_snapshot(client, layout).service("A").failures == {}
    assert run.custom_stats["zkrollout_result"] == "retrying A: cleared failures on h1"


@pytest.mark.parametrize("action", [None, "restart"], ids=["missing", "unknown"])
def test_control_playbook_rejects_a_missing_or_unknown_action_before_any_write(playbook, fleet, client, layout, action, tree_view):
    tree.seed(client, layout, _release())
    before = tree_view()

    run = playbook("control.yml", *(["zkrollout_action=%s" % action] if action else []))

    _assert_failed(run)
    assert "zkrollout_action must be one of pause, resume, abort, retry, release_slot, leave_roster, prepare (got %s)" % (action or "nothing") in run.output
    assert tree_view() == before
