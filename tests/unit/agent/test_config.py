# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's local configuration: the only source of commands, validated key by key."""

from __future__ import annotations

import copy
import json
import time

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent import cli
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import ConfigError, FetchPolicy, load_config, parse_config
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import PayloadError

SHA = "ab" * 32
DELETE = object()

GOOD = {
    "host": "web-01",
    "state_dir": "/var/lib/zkrollout",
    "loop_wait": 1,
    "zookeeper": {"hosts": "10.0.0.1:2181,10.0.0.2:2181", "root": "/dc", "session_timeout": 10,
                  "acl_profile": {"deployer": ["digest-hash:deployer:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ="], "agents": ["x509:CN=web-01,O=example"]}},
    "allowed_url_prefixes": ["https://artifacts.example/"],
    "trusted_keys": ["Yaq2+MD3N5BSLPrEwnHVT4mfaGDqmT7cddWrqoLAR+M="],
    "metrics": {"port": 9464},
    "services": {
        "app": {
            "install_dir": "/opt/app",
            "command": ["{version_dir}/bin/app", "--name", "{service}", "--data", "{install_dir}/data"],
            "health": {"http": "http://127.0.0.1:8080/health", "rise": 3, "fall": 2, "interval": 0.5},
            "initial": {"version": "1.0.0", "url": "https://artifacts.example/app-1.0.0.tar.gz", "sha256": SHA.upper()},
            "env": {"APP_MODE": "production"},
        },
        "db": {"install_dir": "/opt/db", "driver": "systemd", "unit": "db@{version}.service", "health": {"command": ["/usr/bin/db-ping"]}},
    },
}


def changed(path, value):
    """A copy of GOOD with one key (a dotted path) set to ``value``, or removed with DELETE."""
    config = copy.deepcopy(GOOD)
    *parents, key = path.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return config


def write(tmp_path, config):
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_a_good_config_is_parsed_with_its_defaults(tmp_path):
    path = write(tmp_path, GOOD)
    config = load_config(path)
    assert (config.host, config.state_dir, config.loop_wait, config.path) == ("web-01", "/var/lib/zkrollout", 1, path)
    assert config.zookeeper.hosts == "10.0.0.1:2181,10.0.0.2:2181"
    assert config.zookeeper.session_timeout == 10
    # Derived so that a loop and two retried requests fit in a session; the agent reconnects forever.
    assert config.zookeeper.retry_deadline == 4.5
    assert config.zookeeper.connection_retries == -1
    assert config.service_names == ["app", "db"]
    assert config.allowed_url_prefixes == ("https://artifacts.example/",)
    # Downloads and archives are bounded by default; every service fetches under the agent's policy.
    assert config.fetch == FetchPolicy(allowed_url_prefixes=("https://artifacts.example/",), allow_any_url=False, download_timeout=60.0,
                                       download_read_timeout=30.0, max_download_bytes=1 << 30, max_unpacked_bytes=4 << 30, max_members=100000)
    assert config.download_timeout == 60.0 and config.warnings == ()
    assert {name: service.fetch for name, service in config.services.items()} == {"app": config.fetch, "db": config.fetch}
    assert (config.metrics_bind, config.metrics_port) == ("127.0.0.1", 9464)
    app = config.services["app"]
    assert app.driver == "exec" and app.unit is None
    assert app.command == ("{version_dir}/bin/app", "--name", "{service}", "--data", "{install_dir}/data")
    assert (app.health.http, app.health.command, app.health.rise, app.health.fall, app.health.interval) == (
        "http://127.0.0.1:8080/health", (), 3, 2, 0.5)
    # The rise checks of a just-started instance go at the steady pace unless told otherwise.
    assert app.health.startup_interval == 0.5
    assert app.initial_version == "1.0.0" and app.initial_artifact.sha256 == SHA
    assert app.env == {"APP_MODE": "production"}
    db = config.services["db"]
    assert (db.driver, db.unit, db.command, db.health.command, db.health.http) == ("systemd", "db@{version}.service", (), ("/usr/bin/db-ping",), None)
    assert db.initial_version is None and db.health.rise == 2 and db.stop_timeout == 10.0


BAD = [
    pytest.param("services.app.driver", "docker", ["service app", "driver must be one of exec, systemd", "'docker'"], id="unknown_driver"),
    pytest.param("services.app.install_dir", "opt/app", ["service app", "install_dir must be an absolute path", "'opt/app'"],
                 id="relative_install_dir"),
    pytest.param("services.app.install_dir", DELETE, ["service app", "'install_dir' is missing"], id="missing_install_dir"),
    pytest.param("services.app.command", "{version_dir}/bin/app --name app", ["service app", "'command' must be a non-empty list", "no shell"],
                 id="shell_string_command"),
    pytest.param("services.app.command", [], ["service app", "'command' must be a non-empty list"], id="empty_command"),
    pytest.param("services.app.command", ["{version_dir}/bin/app", "--port", "{port}"], ["service app", "'command'", "unknown placeholder", "'{port}'"],
                 id="unknown_placeholder"),
    pytest.param("services.app.command", ["{0}"], ["'command'", "unknown placeholder"], id="positional_placeholder"),
    pytest.param("services.app.command", ["/usr/bin/app", "--port", "8080"], ["service app", "never names the version's directory",
                 "put {version_dir} in it"], id="command_without_the_version_directory"),
    pytest.param("services.app.command", ["{install_dir}/versions/{version}-x/bin/app"], ["never names the version's directory"],
                 id="command_with_another_directory"),
    pytest.param("services.app.command", ["echo {"], ["'command'", "unknown placeholder"], id="broken_placeholder"),
    pytest.param("services.db.unit", DELETE, ["service db", "'unit' is missing"], id="systemd_without_unit"),
    pytest.param("services.app.health", {"http": "http://127.0.0.1:8080/", "command": ["true"]}, ["service app", "exactly one of 'http'"],
                 id="both_http_and_command_health"),
    pytest.param("services.app.health", {"rise": 2}, ["service app", "exactly one of 'http'"], id="neither_http_nor_command_health"),
    pytest.param("services.app.health", DELETE, ["service app", "exactly one of 'http'"], id="no_health_check"),
    pytest.param("services.app.health.http", "ftp://127.0.0.1/health", ["service app", "health.http must be an http(s) URL"], id="non_http_health_url"),
    pytest.param("services.db.health.command", "db-ping --fast", ["service db: health", "'command' must be a non-empty list"],
                 id="shell_string_health_command"),
    pytest.param("services.app.health.rise", 0, ["service app: health", "'rise' must be an integer >= 1"], id="zero_rise"),
    pytest.param("services.app.health.fall", 1.5, ["service app: health", "'fall' must be an integer >= 1"], id="fractional_fall"),
    pytest.param("services.app.health.interval", -1, ["service app: health", "'interval' must be a number"], id="negative_interval"),
    pytest.param("services.app.health.startup_interval", "fast", ["service app: health", "'startup_interval' must be a number"],
                 id="text_startup_interval"),
    pytest.param("services.app.initial.sha256", "abc123", ["service app", "initial.sha256", "64 hexadecimal digits"], id="bad_initial_sha256"),
    pytest.param("services.app.initial.sha256", DELETE, ["service app", "initial.sha256"], id="missing_initial_sha256"),
    pytest.param("services.app.initial.version", "1.0;rm -rf /", ["service app", "initial.version"], id="bad_initial_version"),
    pytest.param("services.app.initial.url", "ftp://artifacts.example/app.tgz", ["service app", "initial.url", "scheme"], id="bad_initial_url"),
    pytest.param("services.app.env", {"A": 1}, ["service app", "env must map names to strings"], id="non_string_env"),
    pytest.param("services.app.stop_timeout", 0, ["service app", "'stop_timeout' must be a number > 0"], id="zero_stop_timeout"),
    pytest.param("services", {}, ["'services' is empty"], id="no_services"),
    pytest.param("services", {"bad/name": GOOD["services"]["db"]}, ["invalid service name"], id="service_name_with_a_slash"),
    pytest.param("host", "web 01", ["invalid host name"], id="host_with_a_space"),
    pytest.param("host", DELETE, ["'host' is missing"], id="missing_host"),
    pytest.param("state_dir", DELETE, ["'state_dir' is missing"], id="missing_state_dir"),
    pytest.param("zookeeper.hosts", "zk one", ["zookeeper:", "invalid ZooKeeper address"], id="bad_zookeeper_hosts"),
    pytest.param("zookeeper.session_timeout", "ten", ["zookeeper:", "session_timeout"], id="non_numeric_session_timeout"),
    pytest.param("zookeeper.acl_profile", {"deployer": ["digest-hash:deployer:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ="], "agents": ["ip:10.0.0.1"]},
                 ["zookeeper:", "zookeeper.acl_profile.agents[0] ip:10.0.0.1 cannot own nodes"], id="agent_identity_that_cannot_own_nodes"),
    pytest.param("zookeeper.acl_profile", {"deployer": ["digest-hash:deployer:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ="], "agents": ["x509:O=example"]},
                 ["zookeeper.acl_profile.agents[0] x509:O=example does not name a host"], id="agent_identity_named_after_no_host"),
    pytest.param("zookeeper.acl", ["world:anyone:r"], ["zookeeper:", "zk_acl and zk_acl_profile exclude each other"], id="acl_and_acl_profile"),
    pytest.param("loop_wait", 9.5, ["loop_wait (9.5) + 2 * zookeeper.retry_deadline (0.5)", "zookeeper.session_timeout (10)"],
                 id="loop_wait_longer_than_a_session"),
    pytest.param("zookeeper.retry_deadline", 5, ["loop_wait (1) + 2 * zookeeper.retry_deadline (5)", "must not exceed zookeeper.session_timeout (10)"],
                 id="retries_longer_than_a_session"),
    pytest.param("allowed_url_prefixes", "https://artifacts.example/", ["allowed_url_prefixes must be a list"], id="prefixes_as_a_string"),
    pytest.param("allowed_url_prefixes", [], ["allowed_url_prefixes is empty", "zkrollout_agent_allowed_url_prefixes", "allow_any_url: true"],
                 id="no_allowed_prefix"),
    pytest.param("allowed_url_prefixes", DELETE, ["allowed_url_prefixes is empty"], id="missing_allowed_prefixes"),
    pytest.param("allowed_url_prefixes", ["https://artifacts.example/releases/../"], ["allowed_url_prefixes:", "'..' path segment"],
                 id="prefix_with_dot_dot"),
    pytest.param("allowed_url_prefixes", ["artifacts.example/"], ["allowed_url_prefixes:", "the scheme must be one of"], id="prefix_without_scheme"),
    pytest.param("allowed_url_prefixes", ["https://deploy:secret@artifacts.example/"], ["allowed_url_prefixes:", "user name or password"],
                 id="prefix_with_credentials"),
    pytest.param("allowed_url_prefixes", ["https://artifacts.example/?v=1"], ["allowed_url_prefixes:", "a prefix has no query"], id="prefix_with_a_query"),
    pytest.param("allow_any_url", True, ["allowed_url_prefixes and allow_any_url: true contradict each other"], id="prefixes_and_any_url"),
    pytest.param("allow_any_url", "yes", ["allow_any_url must be true or false"], id="any_url_as_a_string"),
    pytest.param("services.app.initial.url", "https://elsewhere.example/app-1.0.0.tar.gz",
                 ["service app: initial.url", "outside the allowed prefixes https://artifacts.example/"], id="initial_url_outside_the_prefixes"),
    pytest.param("download_timeout", 0, ["'download_timeout' must be a number > 0"], id="zero_download_timeout"),
    pytest.param("download_read_timeout", "30s", ["'download_read_timeout' must be a number > 0"], id="text_read_timeout"),
    pytest.param("max_download_bytes", 0, ["'max_download_bytes' must be an integer >= 1"], id="zero_max_download_bytes"),
    pytest.param("max_unpacked_bytes", "4G", ["'max_unpacked_bytes' must be an integer >= 1"], id="text_max_unpacked_bytes"),
    pytest.param("max_members", 1.5, ["'max_members' must be an integer >= 1"], id="fractional_max_members"),
    pytest.param("metrics", 9464, ["metrics must be a mapping"], id="metrics_as_a_number"),
    pytest.param("metrics.port", "9464", ["metrics.port must be a port number"], id="metrics_port_as_a_string"),
]


@pytest.mark.parametrize("key, value, facts", BAD)
def test_a_bad_key_is_refused_naming_the_file_and_the_key(tmp_path, key, value, facts):
    path = write(tmp_path, changed(key, value))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(path + ": "), message
    for fact in facts:
        assert fact in message, "%r lacks %r" % (message, fact)


def test_the_fetch_bounds_are_read_from_the_config():
    raw = dict(copy.deepcopy(GOOD), download_timeout=600, download_read_timeout=5, max_download_bytes=10 << 30, max_unpacked_bytes=20 << 30,
               max_members=5)
    fetch = parse_config(raw).services["app"].fetch
    assert (fetch.download_timeout, fetch.download_read_timeout, fetch.max_download_bytes, fetch.max_unpacked_bytes, fetch.max_members) == (
        600, 5, 10 << 30, 20 << 30, 5)


def test_allow_any_url_is_accepted_only_explicitly_and_reported_by_check_and_status(tmp_path, capsys):
    raw = changed("allowed_url_prefixes", [])
    raw.update(allow_any_url=True, state_dir=str(tmp_path))
    path = write(tmp_path, raw)
    config = load_config(path)
    assert config.fetch.allow_any_url and config.allowed_url_prefixes == ()
    assert len(config.warnings) == 1 and "allow_any_url is true in %s" % path in config.warnings[0]
    assert cli.main(["--config", path, "check"]) == 0
    assert "WARNING: allow_any_url is true" in capsys.readouterr().out
    (tmp_path / "status.json").write_text(json.dumps({"host": "web-01", "connection": "CONNECTED", "updated": time.time(), "services": {}}))
    assert cli.main(["--config", path, "status"]) == 0
    assert "  WARNING: allow_any_url is true" in capsys.readouterr().out
    assert cli.main(["--config", path, "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == list(config.warnings)


def test_a_loop_that_fits_in_a_session_exactly_is_accepted():
    assert parse_config(changed("loop_wait", 9)).zookeeper.retry_deadline == 0.5


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_an_unreadable_file_names_itself(tmp_path, content):
    path = tmp_path / "agent.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=str(path)):
        load_config(str(path))


def test_a_missing_file_names_itself(tmp_path):
    with pytest.raises(ConfigError, match="cannot read agent config .*nowhere.json"):
        load_config(str(tmp_path / "nowhere.json"))


# Znode data never reaches a command unvalidated: only a version string is substituted, and it is checked.
def test_placeholders_render_into_separate_argv_elements():
    app = parse_config(GOOD).services["app"]
    assert [app.render(item, "2.0.0+build.7") for item in app.command] == [
        "/opt/app/versions/2.0.0+build.7/bin/app", "--name", "app", "--data", "/opt/app/data"]
    assert parse_config(GOOD).services["db"].render("db@{version}.service", "2.0.0") == "db@2.0.0.service"


@pytest.mark.parametrize("version", ["1.0;rm -rf /", "../../etc", "1.0 --evil", "-rf", "$(reboot)", "", "1.0\n", None])
def test_a_version_that_could_escape_its_argument_is_never_rendered(version):
    app = parse_config(GOOD).services["app"]
    with pytest.raises(PayloadError):
        app.render("{version_dir}/bin/app", version)
    with pytest.raises(PayloadError):
        app.version_dir(version)


def test_the_external_driver_needs_an_absolute_version_file():
    config = copy.deepcopy(GOOD)
    config["services"]["app"] = {"install_dir": "/opt/app", "driver": "external", "version_file": "/opt/app/VERSION",
                                 "health": {"http": "http://127.0.0.1:8080/health"}}
    assert parse_config(config).services["app"].version_file == "/opt/app/VERSION"
    config["services"]["app"]["version_file"] = "VERSION"
    with pytest.raises(ConfigError, match="version_file must be an absolute path"):
        parse_config(config)
    del config["services"]["app"]["version_file"]
    with pytest.raises(ConfigError, match="version_file"):
        parse_config(config)
