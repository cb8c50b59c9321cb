# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``zkrollout.dc.rollout`` lookup, used by a real ``ansible-playbook`` against a real ZooKeeper
whose tree a test builds with ``tree.FakeFleet`` and ``tree.seed``.

The fleet: h1, h2 and h3 run A and B, released at 2.0.0 (B depends on A, quorum 1 each). h1
runs A 2.0.0 already, h2 holds an upgrade slot of A, h3 runs A 1.0.0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from . import tree
from .tree import PlaybookRun

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(120)]


@pytest.fixture
def rolling(rolling_a):
    """The fleet described above, in the middle of rolling A (tests/integration/conftest.py)."""
    return rolling_a


@pytest.fixture
def play(tmp_path, inventory, zk, zk_root):
    """``play(tasks, play_vars=None, env=None)``: run one play on localhost with these tasks; returns a PlaybookRun.

    The connection comes from the environment (ZKROLLOUT_ZK_HOSTS, ZKROLLOUT_ZK_ROOT), as an AWX
    credential would set it, unless ``env`` replaces it.
    """

    def run(tasks, play_vars=None, env=None):
        path = tmp_path / "play.yml"
        path.write_text(yaml.safe_dump([{"name": "Lookup", "hosts": "localhost", "gather_facts": False, "vars": play_vars or {}, "tasks": tasks}]))
        environment = tree.playbook_environment()
        environment.update(ZKROLLOUT_ZK_HOSTS=zk.hosts, ZKROLLOUT_ZK_ROOT=zk_root, ZKROLLOUT_ZK_TIMEOUT="5")
        for name, value in (env or {}).items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        command = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(path)]
        completed = subprocess.run(command, env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90, check=False)
        return PlaybookRun(completed.returncode, completed.stdout, completed.stderr)

    return run


def _show(name, expression):
    return {"name": name, "ansible.builtin.debug": {"msg": "{{ %s }}" % expression}}


def _value(run, task):
    assert run.returncode == 0, run.output
    return run.task_result(task)["msg"]


def test_without_terms_the_lookup_returns_the_rollout_summary(rolling, play):
    run = play([_show("summary", "lookup('zkrollout.dc.rollout')")])

    summary = _value(run, "summary")
    assert summary["id"] == "r1"
    assert summary["state"] == "running"
    assert summary["deploy_queue"] == ["A", "B"]
    assert summary["services_in_order"] == ["A", "B"]
    assert summary["services"]["A"] == {"state": "rolling", "reason": "1 of 1 slots held (h2)", "target": "2.0.0", "complete": False}
    assert summary["services"]["B"]["state"] == "waiting"
    assert summary["services"]["B"]["reason"] == "behind A in the deploy queue"
    assert summary["progress"]["instances_on_target"] == 1
    assert summary["problems"] == []


def test_a_service_term_returns_its_state_target_health_quorum_versions_slots_and_failures(rolling, play):
    rolling.record_failure("B", "h3", "2.0.0", "health check timed out")

    run = play([_show("A", "lookup('zkrollout.dc.rollout', 'A')"), _show("B", "lookup('zkrollout.dc.rollout', 'B')")])

    state = _value(run, "A")
    assert (state["service"], state["state"], state["target"], state["complete"]) == ("A", "rolling", "2.0.0", False)
    assert (state["healthy"], state["quorum"], state["max_parallel"], state["budget"]) == (2, 1, 1, 0)
    assert state["versions"] == {"h1": "2.0.0", "h2": None, "h3": "1.0.0"}
    assert list(state["slots"]) == ["h2"] and state["slots"]["h2"]["to"] == "2.0.0" and state["slots"]["h2"]["from"] == "1.0.0"
    assert state["failures"] == {}
    failures = _value(run, "B")["failures"]
    assert list(failures) == ["h3"] and failures["h3"]["reason"] == "health check timed out"
    assert _value(run, "B")["state"] == "halted"


def test_query_with_several_terms_returns_one_state_per_service_in_order(rolling, play):
    run = play([_show("both", "query('zkrollout.dc.rollout', 'B', 'A') | map(attribute='service')")])

    assert _value(run, "both") == ["B", "A"]


def test_the_lookup_follows_the_tree_as_it_changes_during_a_play(rolling, play, client, layout):
    rolling.release_slot("A", "h2")
    rolling.register("A", "h2", "2.0.0")
    rolling.upgrade("A", "h3", "2.0.0")

    run = play([_show("summary", "lookup('zkrollout.dc.rollout')")])

    summary = _value(run, "summary")
    assert summary["deploy_queue"] == ["B"]
    assert summary["services"]["A"]["state"] == "done" and summary["services"]["A"]["complete"] is True


def test_the_playbooks_connection_variables_set_the_connection_and_may_be_templates(rolling, play, zk, zk_root):
    run = play([_show("summary", "lookup('zkrollout.dc.rollout').id")],
               play_vars={"zk_address": zk.hosts, "zkrollout_zk_hosts": "{{ zk_address }}", "zkrollout_zk_root": zk_root},
               env={"ZKROLLOUT_ZK_HOSTS": "127.0.0.1:1", "ZKROLLOUT_ZK_ROOT": None})

    assert _value(run, "summary") == "r1"


def test_a_connection_variable_that_is_not_a_clear_boolean_fails_the_task_naming_it(rolling, play):
    output = _failure(play([_show("bad", "lookup('zkrollout.dc.rollout')")], play_vars={"zkrollout_zk_tls": "ture"}))

    assert "zkrollout_zk_tls must be true or false, got 'ture'" in output, output


def test_lookup_options_override_the_environment(rolling, play, zk, zk_root):
    run = play([_show("summary", "lookup('zkrollout.dc.rollout', zk_hosts=zk_address, zk_root=%r).id" % zk_root)],
               play_vars={"zk_address": zk.hosts}, env={"ZKROLLOUT_ZK_HOSTS": "127.0.0.1:1", "ZKROLLOUT_ZK_ROOT": "/elsewhere"})

    assert _value(run, "summary") == "r1"


def test_a_root_without_a_tree_gives_the_summary_state_none(play):
    run = play([_show("summary", "lookup('zkrollout.dc.rollout')")])

    summary = _value(run, "summary")
    assert (summary["id"], summary["state"], summary["deploy_queue"]) == (None, "none", [])


def _failure(run):
    assert run.returncode != 0, run.output
    output = " ".join(run.output.split())
    assert "Traceback" not in output
    return output


def test_an_unknown_service_fails_the_task_naming_it_and_the_services_the_tree_knows(rolling, play):
    output = _failure(play([_show("missing", "lookup('zkrollout.dc.rollout', 'C')")]))

    assert "no service C in the rollout tree" in output and "it knows A, B" in output, output


@pytest.mark.parametrize(
    "arguments, message",
    [
        ("zk_timeout=-1", "zk_timeout must be a positive number of seconds, got -1"),
        ("zk_host='zk9:2181'", "unknown option zk_host"),
        ("zk_tls='ture'", "zk_tls must be true or false, got 'ture'"),
        ("zk_hosts='zk1:two'", "invalid ZooKeeper address 'zk1:two' in zk_hosts"),
    ],
    ids=["negative-timeout", "unknown-option", "unclear-boolean", "bad-address"],
)
def test_a_bad_option_fails_the_task_naming_the_option_and_value(rolling, play, arguments, message):
    output = _failure(play([_show("bad", "lookup('zkrollout.dc.rollout', %s)" % arguments)]))

    assert message in output, output


def test_an_unreachable_zookeeper_fails_the_task_naming_zk_hosts(play):
    output = _failure(play([_show("unreachable", "lookup('zkrollout.dc.rollout')")], env={"ZKROLLOUT_ZK_HOSTS": "127.0.0.1:1", "ZKROLLOUT_ZK_TIMEOUT": "1"}))

    assert "cannot connect to ZooKeeper at 127.0.0.1:1" in output and "check zk_hosts" in output, output


def test_malformed_znodes_are_warnings_and_problems_and_the_rest_is_returned(rolling, play, client, layout):
    client.create(layout.current_service("B") + "/not-a-registration", b"")

    run = play([_show("summary", "lookup('zkrollout.dc.rollout')")])

    summary = _value(run, "summary")
    path = layout.current_service("B") + "/not-a-registration"
    assert any(path in problem for problem in summary["problems"]), summary["problems"]
    assert path in " ".join(run.output.split())
    assert summary["services"]["A"]["state"] == "rolling"


def test_with_the_acl_profile_the_lookup_reports_what_the_hosts_own_parents_confirm(play, zk, zk_root, zk_connect, layout):
    profile = {"deployer": ["digest:deployer:d"], "agents": ["digest:h1:p1", "digest:h2:p2"], "readers": ["world:anyone"]}
    deployer = zk_connect(zk.hosts, root=zk_root, digest="deployer:d", acl_profile=profile)
    tree.seed(deployer, layout, tree.release(tree.service("A", version="2.0.0", quorum=1)))
    h1 = zk_connect(zk.hosts, root=zk_root, digest="h1:p1", acl_profile=profile)
    h1.create(layout.roster_member("A", "h1"), b"", makepath=True)
    h1.ensure_path(layout.current_service("A"))
    transaction = h1.transaction()
    for path in layout.registration_nodes("A", "h1", "1.0.0"):
        transaction.create(path, b"", ephemeral=True)
    assert not any(isinstance(result, Exception) for result in transaction.commit())
    # h1's identity, without the collection's client, claims that h2 runs 2.0.0.
    zk_connect(zk.hosts, root=zk_root, digest="h1:p1").create(layout.registration("A", "h2", "2.0.0"), b"", ephemeral=True)
    task = [_show("A", "lookup('zkrollout.dc.rollout', 'A')")]

    listed = _value(play(task), "A")
    confirmed = _value(play(task, play_vars={"zkrollout_zk_acl_profile": profile}), "A")

    assert listed["versions"] == {"h1": "1.0.0", "h2": "2.0.0"}
    assert confirmed["versions"] == {"h1": "1.0.0"}, confirmed
