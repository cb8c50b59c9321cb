# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``zkrollout.dc.zookeeper`` inventory plugin, run by the real ``ansible-inventory`` and ``ansible``
against a real ZooKeeper whose tree a test builds with ``tree.FakeFleet`` and ``tree.seed``.

The fleet of every test: h1, h2 and h3 run A and B, released at 2.0.0 (B depends on A). h1 runs
A 2.0.0 already, h2 holds an upgrade slot of A (deregistered from A, still on B 1.0.0), and h3
is down: its agent is gone, and with it every registration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kazoo.security import make_digest_acl

from . import tree

pytestmark = [pytest.mark.zookeeper, pytest.mark.timeout(120)]


@pytest.fixture
def rolling(rolling_a):
    """The fleet described above, in the middle of rolling A (tests/integration/conftest.py), with h3 offline."""
    rolling_a.go_offline("h3")
    return rolling_a


@pytest.fixture
def source(tmp_path, zk, zk_root):
    """``source(name="fleet.zookeeper.yml", **settings)``: an inventory file for this test's tree; returns its path."""

    def write(name="fleet.zookeeper.yml", **settings):
        path = tmp_path / name
        config = {"plugin": "zkrollout.dc.zookeeper", "zk_hosts": zk.hosts, "zk_root": zk_root, "zk_timeout": 5}
        config.update(settings)
        path.write_text(yaml.safe_dump({key: value for key, value in config.items() if value is not None}))
        return path

    return write


def _run(tool, *args, env=None):
    environment = tree.playbook_environment()
    # A source that fails must fail the command, not leave an empty inventory behind a warning.
    environment["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "true"
    environment.update(env or {})
    return subprocess.run([str(Path(sys.executable).with_name(tool))] + [str(arg) for arg in args], env=environment,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)


def _plain(mapping):
    # ansible-inventory marks strings from an inventory source as data never to be templated: {"__ansible_unsafe": "2.0.0"}.
    return mapping["__ansible_unsafe"] if set(mapping) == {"__ansible_unsafe"} else mapping


def inventory_list(path, *options, env=None):
    """``ansible-inventory -i path --list`` as data: ``{"hosts": {host: vars}, "groups": {group: sorted hosts}}``; asserts success."""
    completed = _run("ansible-inventory", "-i", path, "--list", "--export", *options, env=env)
    assert completed.returncode == 0, completed.stderr
    listing = json.loads(completed.stdout, object_hook=_plain)
    groups = {name: sorted(entry.get("hosts", [])) for name, entry in listing.items() if name != "_meta"}
    return {"hosts": listing["_meta"]["hostvars"], "groups": groups, "stderr": completed.stderr}


def test_every_roster_host_is_listed_with_its_groups_per_service_version_and_agent_presence(rolling, source):
    listing = inventory_list(source())

    groups = listing["groups"]
    assert sorted(listing["hosts"]) == ["h1", "h2", "h3"]
    assert groups["zkrollout_service_A"] == ["h1", "h2", "h3"]
    assert groups["zkrollout_service_B"] == ["h1", "h2", "h3"]
    assert groups["zkrollout_A_2_0_0"] == ["h1"]
    assert groups["zkrollout_B_1_0_0"] == ["h1", "h2"]
    assert "zkrollout_A_1_0_0" not in groups, "no host is registered at A 1.0.0 any more"
    assert groups["zkrollout_online"] == ["h1", "h2"]
    assert groups["zkrollout_offline"] == ["h3"]
    assert "[WARNING]" not in listing["stderr"], listing["stderr"]


def test_each_host_carries_its_services_versions_states_and_health_and_whether_its_agent_is_online(rolling, source):
    hosts = inventory_list(source())["hosts"]

    assert hosts["h1"] == {
        "zkrollout_online": True,
        "zkrollout_services": {
            "A": {"version": "2.0.0", "target": "2.0.0", "state": "online", "healthy": True},
            "B": {"version": "1.0.0", "target": "2.0.0", "state": "online", "healthy": True},
        },
    }
    assert hosts["h2"]["zkrollout_services"]["A"] == {"version": None, "target": "2.0.0", "state": "upgrading", "healthy": False}
    assert hosts["h3"]["zkrollout_online"] is False
    assert hosts["h3"]["zkrollout_services"]["B"] == {"version": None, "target": "2.0.0", "state": "offline", "healthy": False}


def test_the_graph_shows_the_same_groups(rolling, source):
    completed = _run("ansible-inventory", "-i", source(), "--graph", "zkrollout_offline")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["@zkrollout_offline:", "|--h3"], completed.stdout


def test_the_groups_target_ad_hoc_commands_by_service_version_and_presence(rolling, source):
    completed = _run("ansible", "-i", source(), "zkrollout_service_B:&zkrollout_online:!zkrollout_A_2_0_0", "--list-hosts")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["hosts", "(1):", "h2"], completed.stdout


def test_compose_groups_and_keyed_groups_work_on_the_host_variables(rolling, source):
    path = source(
        compose={"a_version": "zkrollout_services.A.version", "ansible_host": "inventory_hostname ~ '.dc1.example'"},
        groups={"degraded": "zkrollout_services.values() | rejectattr('healthy') | list | length > 0"},
        keyed_groups=[{"key": "zkrollout_services.A.state", "prefix": "a"}],
    )

    listing = inventory_list(path)

    assert listing["hosts"]["h1"]["a_version"] == "2.0.0"
    assert listing["hosts"]["h2"]["ansible_host"] == "h2.dc1.example"
    assert listing["groups"]["degraded"] == ["h2", "h3"]
    assert listing["groups"]["a_online"] == ["h1"]
    assert listing["groups"]["a_upgrading"] == ["h2"]
    assert listing["groups"]["a_offline"] == ["h3"]


def test_strict_makes_a_compose_expression_that_fails_on_a_host_an_error_instead_of_a_skipped_variable(rolling, source):
    settings = {"compose": {"nope_version": "zkrollout_services.nope.version"}}

    lenient = inventory_list(source(**settings))
    strict = _run("ansible-inventory", "-i", source(strict=True, **settings), "--list")

    assert all("nope_version" not in variables for variables in lenient["hosts"].values())
    assert strict.returncode != 0 and "Could not set nope_version" in " ".join(strict.stderr.split()), strict.stderr


def test_a_version_with_characters_invalid_in_group_names_gets_a_valid_group_name(fleet, source):
    fleet.join("h1", {"web": "1.2.3+build-7"})

    groups = inventory_list(source())["groups"]

    assert groups["zkrollout_web_1_2_3_build_7"] == ["h1"]


def test_without_cache_every_run_reads_the_live_tree(rolling, source):
    path = source()
    assert sorted(inventory_list(path)["hosts"]) == ["h1", "h2", "h3"]

    rolling.join("h4", {"A": "2.0.0"})

    assert inventory_list(path)["groups"]["zkrollout_A_2_0_0"] == ["h1", "h4"]


def test_with_a_cache_runs_read_the_cache_until_it_is_flushed(rolling, source, tmp_path):
    path = source(cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(tmp_path / "cache"), cache_timeout=600)
    first = inventory_list(path)
    assert sorted(first["hosts"]) == ["h1", "h2", "h3"]
    assert list((tmp_path / "cache").iterdir()), "the first run wrote nothing into the cache"

    rolling.join("h4", {"A": "2.0.0"})

    cached = inventory_list(path)
    assert cached["hosts"] == first["hosts"] and cached["groups"] == first["groups"], "the second run did not come from the cache"
    flushed = inventory_list(path, "--flush-cache")
    assert flushed["groups"]["zkrollout_A_2_0_0"] == ["h1", "h4"]
    assert inventory_list(path)["groups"]["zkrollout_A_2_0_0"] == ["h1", "h4"], "the flushed run did not refresh the cache"


def test_malformed_znodes_are_warnings_naming_their_path_and_the_rest_is_listed(rolling, source, client, layout):
    client.create(layout.current_service("A") + "/not-a-registration", b"")
    client.set(layout.slot("A", "h2"), b"{not json")

    listing = inventory_list(source())

    assert sorted(listing["hosts"]) == ["h1", "h2", "h3"]
    assert listing["hosts"]["h2"]["zkrollout_services"]["A"]["state"] == "upgrading", "a malformed slot is still a held slot"
    stderr = " ".join(listing["stderr"].split())
    assert layout.current_service("A") + "/not-a-registration" in stderr, stderr
    assert layout.slot("A", "h2") in stderr, stderr
    assert "Traceback" not in stderr


def test_a_root_without_a_tree_gives_an_empty_inventory_and_says_so(source, zk_root):
    listing = inventory_list(source())

    assert listing["hosts"] == {}
    assert "there is no rollout tree at %s" % zk_root in " ".join(listing["stderr"].split())


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"zk_timeout": -1}, "zk_timeout must be a positive number of seconds, got -1"),
        ({"zk_host": "zk9:2181"}, "unknown option zk_host"),
        ({"zk_tls": "ture"}, "zk_tls must be true or false, got 'ture'"),
        ({"zk_root": "no-slash"}, "no-slash"),
        ({"zk_hosts": "zk1:two"}, "invalid ZooKeeper address 'zk1:two' in zk_hosts"),
    ],
    ids=["negative-timeout", "unknown-option", "unclear-boolean", "relative-root", "bad-address"],
)
def test_a_bad_option_fails_the_source_naming_the_option_and_value(rolling, source, settings, message):
    completed = _run("ansible-inventory", "-i", source(**settings), "--list")

    assert completed.returncode != 0, completed.stdout
    stderr = " ".join(completed.stderr.split())
    assert message in stderr, stderr
    assert "zkrollout.dc.zookeeper" in stderr
    assert "Traceback" not in stderr


def test_an_unreachable_zookeeper_fails_the_source_naming_zk_hosts(source):
    completed = _run("ansible-inventory", "-i", source(zk_hosts="127.0.0.1:1", zk_timeout=1), "--list")

    assert completed.returncode != 0, completed.stdout
    stderr = " ".join(completed.stderr.split())
    assert "cannot connect to ZooKeeper at 127.0.0.1:1" in stderr and "check zk_hosts" in stderr, stderr
    assert "Traceback" not in stderr


def test_a_tree_the_session_may_not_read_fails_the_source_naming_the_tree_and_what_to_check(source, client, layout):
    client.create(layout.root, b"")
    client.create(layout.roster, b"", acl=[make_digest_acl("deployer", "secret", all=True)])

    completed = _run("ansible-inventory", "-i", source(), "--list")

    assert completed.returncode != 0, completed.stdout
    stderr = " ".join(completed.stderr.split())
    assert "reading the rollout tree %s" % layout.root in stderr and "NoAuthError" in stderr and "zk_digest" in stderr, stderr
    assert "Traceback" not in stderr


def test_the_connection_comes_from_the_environment_when_the_file_does_not_name_it(rolling, source, zk, zk_root):
    path = source(zk_hosts=None, zk_root=None)

    listing = inventory_list(path, env={"ZKROLLOUT_ZK_HOSTS": zk.hosts, "ZKROLLOUT_ZK_ROOT": zk_root})

    assert sorted(listing["hosts"]) == ["h1", "h2", "h3"]


def test_a_file_whose_name_does_not_end_with_zookeeper_yml_is_not_taken(rolling, source):
    completed = _run("ansible-inventory", "-i", source(name="fleet.yml"), "--list")

    assert completed.returncode != 0
    assert "could not be verified by inventory plugin 'zkrollout.dc.zookeeper'" in " ".join(completed.stderr.split()), completed.stderr
