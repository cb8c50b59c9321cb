# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's local configuration: host id, ZooKeeper connection, state dir and services.

Commands to start, stop and health-check a service come only from this file (written by the
role on the host). Commands are argv lists, never shell strings; the placeholders
``{service}``, ``{version}``, ``{version_dir}`` and ``{install_dir}`` are substituted with
values that the core has validated (a version matches ``[A-Za-z0-9][A-Za-z0-9._+-]*``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace

from ..core.layout import LayoutError, check_name
from ..core.model import Artifact, PayloadError, validate_version
from ..core.signing import SigningError, TrustedKeys
from ..store.client import ConnectionOptions, ZkConnectionError
from .artifacts import ArtifactError, check_url, normalize_prefix

# exec: the agent runs the process; systemd: one unit per version; external: something else (a
# controller play, an operator) upgrades the service and the agent only reports its health and version.
DRIVERS = ("exec", "systemd", "external")
PLACEHOLDERS = ("service", "version", "version_dir", "install_dir")


class ConfigError(ValueError):
    """The agent configuration is unusable; the message names the file and the key."""


@dataclass(frozen=True)
class HealthCheck(object):
    """How to tell that an instance is healthy: an HTTP URL or a command, with rise/fall counts.

    ``interval`` paces the probes of a running instance; ``startup_interval`` those of an
    instance the agent has just started (its ``rise`` checks during a switch or a rollback), so
    a switch can see its new instance healthy quickly without probing every instance that often.
    """

    http: str = None
    command: tuple = ()
    interval: float = 1.0
    startup_interval: float = None
    timeout: float = 2.0
    rise: int = 2
    fall: int = 2
    deadline: float = 60.0


@dataclass(frozen=True)
class FetchPolicy(object):
    """Where artifacts may come from and how much of them the agent fetches (see artifacts.py).

    ``allowed_url_prefixes`` is required unless ``allow_any_url`` (labs only) is set.
    ``download_timeout`` bounds a whole download, ``download_read_timeout`` each socket read;
    ``max_download_bytes`` the artifact; ``max_unpacked_bytes`` and ``max_members`` the archive.
    """

    allowed_url_prefixes: tuple = ()
    allow_any_url: bool = False
    download_timeout: float = 60.0
    download_read_timeout: float = 30.0
    max_download_bytes: int = 1 << 30
    max_unpacked_bytes: int = 4 << 30
    max_members: int = 100000


DEFAULT_FETCH = FetchPolicy()


@dataclass(frozen=True)
class ServiceConfig(object):
    """One service this host runs."""

    name: str
    install_dir: str
    driver: str = "exec"
    command: tuple = ()
    unit: str = None
    version_file: str = None
    health: HealthCheck = field(default_factory=HealthCheck)
    stop_timeout: float = 10.0
    initial_version: str = None
    initial_artifact: object = None
    env: dict = field(default_factory=dict)
    # The agent's, copied into every service it prepares artifacts for.
    fetch: FetchPolicy = DEFAULT_FETCH

    def version_dir(self, version):
        """Where ``version`` is unpacked."""
        return os.path.join(self.install_dir, "versions", validate_version(version))

    def render(self, template, version):
        """Substitute the placeholders of one argv element or unit name for ``version``."""
        return template.format(service=self.name, version=validate_version(version),
                               version_dir=self.version_dir(version), install_dir=self.install_dir)


@dataclass(frozen=True)
class AgentConfig(object):
    """The whole agent configuration."""

    host: str
    state_dir: str
    zookeeper: ConnectionOptions
    services: dict
    loop_wait: float = 1.0
    safety_tick: float = 60.0
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = None
    # None: signatures are not checked (allow_unsigned_releases, labs only).
    trusted_keys: object = None
    fetch: FetchPolicy = DEFAULT_FETCH
    path: str = ""

    @property
    def service_names(self):
        """Configured services, sorted."""
        return sorted(self.services)

    @property
    def allowed_url_prefixes(self):
        """The URL prefixes artifacts may come from."""
        return self.fetch.allowed_url_prefixes

    @property
    def download_timeout(self):
        """Seconds a whole artifact download may take."""
        return self.fetch.download_timeout

    @property
    def warnings(self):
        """Sentences about settings that weaken the agent's defences: logged at start, shown by check and status."""
        if self.fetch.allow_any_url:
            return ("allow_any_url is true in %s: this host downloads artifacts from any URL a release in ZooKeeper names; "
                    "list the artifact servers in allowed_url_prefixes (zkrollout_agent_allowed_url_prefixes) instead" % self.path,)
        return ()


def _require(raw, key, where, kind):
    if key not in raw:
        raise ConfigError("%s: '%s' is missing" % (where, key))
    if not isinstance(raw[key], kind):
        raise ConfigError("%s: '%s' must be a %s, got %r" % (where, key, getattr(kind, "__name__", kind), raw[key]))
    return raw[key]


def _number(raw, key, default, where, minimum=0.0):
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= minimum:
        raise ConfigError("%s: '%s' must be a number > %s, got %r" % (where, key, minimum, value))
    return value


def _count(raw, key, default, where):
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("%s: '%s' must be an integer >= 1, got %r" % (where, key, value))
    return value


def _argv(value, where, key):
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ConfigError("%s: '%s' must be a non-empty list of strings (argv, no shell)" % (where, key))
    for item in value:
        try:
            item.format(**{name: "x" for name in PLACEHOLDERS})
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError("%s: '%s' uses an unknown placeholder in %r (%s); allowed: %s"
                              % (where, key, item, exc, ", ".join("{%s}" % p for p in PLACEHOLDERS))) from exc
    return tuple(value)


def _health(raw, where):
    if not isinstance(raw, dict) or ("http" in raw) == ("command" in raw):
        raise ConfigError("%s: 'health' needs exactly one of 'http' (a URL) or 'command' (argv)" % where)
    http = raw.get("http")
    if http is not None and not (isinstance(http, str) and http.startswith(("http://", "https://"))):
        raise ConfigError("%s: health.http must be an http(s) URL, got %r" % (where, http))
    where = "%s: health" % where
    return HealthCheck(
        http=http,
        command=_argv(raw["command"], where, "command") if "command" in raw else (),
        interval=_number(raw, "interval", 1.0, where),
        startup_interval=_number(raw, "startup_interval", _number(raw, "interval", 1.0, where), where),
        timeout=_number(raw, "timeout", 2.0, where),
        rise=_count(raw, "rise", 2, where),
        fall=_count(raw, "fall", 2, where),
        deadline=_number(raw, "deadline", 60.0, where),
    )


def _service(name, raw, where):
    where = "%s: service %s" % (where, name)
    try:
        check_name("service", name)
    except LayoutError as exc:
        raise ConfigError("%s: %s" % (where, exc)) from exc
    if not isinstance(raw, dict):
        raise ConfigError("%s: expected a mapping" % where)
    driver = raw.get("driver", "exec")
    if driver not in DRIVERS:
        raise ConfigError("%s: driver must be one of %s, got %r" % (where, ", ".join(DRIVERS), driver))
    install_dir = _require(raw, "install_dir", where, str)
    if not os.path.isabs(install_dir):
        raise ConfigError("%s: install_dir must be an absolute path, got %r" % (where, install_dir))
    command = _argv(raw.get("command"), where, "command") if driver == "exec" else ()
    unit = _require(raw, "unit", where, str) if driver == "systemd" else None
    version_file = _require(raw, "version_file", where, str) if driver == "external" else None
    if version_file is not None and not os.path.isabs(version_file):
        raise ConfigError("%s: version_file must be an absolute path, got %r" % (where, version_file))
    # A fresh host gets its first version like any other: downloaded and verified by the agent.
    initial = raw.get("initial")
    initial_version = initial_artifact = None
    if initial is not None:
        if not isinstance(initial, dict):
            raise ConfigError("%s: 'initial' must be a mapping with version, url and sha256" % where)
        initial_version = validate_version(initial.get("version"), (where, ""), "initial.version")
        initial_artifact = Artifact.from_dict({"url": initial.get("url"), "sha256": initial.get("sha256")}, where, "initial.")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError("%s: env must map names to strings" % where)
    service = ServiceConfig(name=name, install_dir=install_dir, driver=driver, command=command, unit=unit, version_file=version_file,
                            health=_health(raw.get("health"), where), stop_timeout=_number(raw, "stop_timeout", 10.0, where),
                            initial_version=initial_version, initial_artifact=initial_artifact, env=dict(env))
    marker = re.compile(re.escape(service.version_dir("0.0.0")) + r"(?=/|\Z)")
    if driver == "exec" and not any(marker.search(service.render(item, "0.0.0")) for item in command):
        # The exec driver tells its instance among the host's processes by that path in its command
        # line: without it, an agent restarted while its instance runs would start a second one.
        raise ConfigError("%s: command %s never names the version's directory: put {version_dir} in it (for example "
                          "[\"{version_dir}/bin/server\", \"--port\", \"8080\"]), the way the agent recognises its running instance"
                          % (where, json.dumps(list(command))))
    return service


def _fetch_policy(raw, path, services):
    """The FetchPolicy of the config; every service's initial URL must pass it."""
    prefixes = raw.get("allowed_url_prefixes", [])
    if not isinstance(prefixes, list) or not all(isinstance(prefix, str) for prefix in prefixes):
        raise ConfigError("%s: allowed_url_prefixes must be a list of URL prefixes" % path)
    allow_any = raw.get("allow_any_url", False)
    if not isinstance(allow_any, bool):
        raise ConfigError("%s: allow_any_url must be true or false, got %r" % (path, allow_any))
    if allow_any and prefixes:
        raise ConfigError("%s: allowed_url_prefixes and allow_any_url: true contradict each other; "
                          "drop allow_any_url to confine downloads to the prefixes" % path)
    if not prefixes and not allow_any:
        raise ConfigError("%s: allowed_url_prefixes is empty: list the URL prefixes artifacts may come from "
                          "(zkrollout_agent_allowed_url_prefixes), for example [\"https://artifacts.example/releases/\"], "
                          "or set allow_any_url: true in a lab that accepts that anyone who can write the ZooKeeper tree "
                          "chooses where this host downloads from" % path)
    for prefix in prefixes:
        try:
            normalize_prefix(prefix)
        except ArtifactError as exc:
            raise ConfigError("%s: allowed_url_prefixes: %s" % (path, exc.reason)) from exc
    policy = FetchPolicy(
        allowed_url_prefixes=tuple(prefixes),
        allow_any_url=allow_any,
        download_timeout=_number(raw, "download_timeout", DEFAULT_FETCH.download_timeout, path),
        download_read_timeout=_number(raw, "download_read_timeout", DEFAULT_FETCH.download_read_timeout, path),
        max_download_bytes=_count(raw, "max_download_bytes", DEFAULT_FETCH.max_download_bytes, path),
        max_unpacked_bytes=_count(raw, "max_unpacked_bytes", DEFAULT_FETCH.max_unpacked_bytes, path),
        max_members=_count(raw, "max_members", DEFAULT_FETCH.max_members, path),
    )
    for service in services.values():
        if service.initial_artifact is not None:
            try:
                check_url(service.initial_artifact.url, policy.allowed_url_prefixes, policy.allow_any_url)
            except ArtifactError as exc:
                raise ConfigError("%s: service %s: initial.url: %s" % (path, service.name, exc.reason)) from exc
    return policy


def parse_config(raw, path="agent config"):
    """Validate a decoded configuration; raise ConfigError naming the file and key."""
    if not isinstance(raw, dict):
        raise ConfigError("%s: expected a JSON object" % path)
    host = _require(raw, "host", path, str)
    try:
        check_name("host", host)
    except LayoutError as exc:
        raise ConfigError("%s: %s" % (path, exc)) from exc
    zk_raw = dict(_require(raw, "zookeeper", path, dict))
    loop_wait = _number(raw, "loop_wait", 1.0, path)
    # Patroni's rule: a loop plus two retried requests must fit in a session, or the session
    # expires while the loop still believes it owns its ephemeral nodes.
    session_timeout = zk_raw.get("session_timeout", 10.0)
    if isinstance(session_timeout, (int, float)) and "retry_deadline" not in zk_raw:
        zk_raw["retry_deadline"] = max(0.5, (session_timeout - loop_wait) / 2.0)
    try:
        # The agent reconnects forever: a host must survive any ZooKeeper outage on its own.
        zookeeper = ConnectionOptions.from_mapping(dict(zk_raw, connection_retries=-1), prefix="")
    except (ZkConnectionError, TypeError) as exc:
        raise ConfigError("%s: zookeeper: %s" % (path, exc)) from exc
    if loop_wait + 2 * zookeeper.retry_deadline > zookeeper.session_timeout:
        raise ConfigError("%s: loop_wait (%s) + 2 * zookeeper.retry_deadline (%s) must not exceed zookeeper.session_timeout (%s)"
                          % (path, loop_wait, zookeeper.retry_deadline, zookeeper.session_timeout))
    services_raw = _require(raw, "services", path, dict)
    if not services_raw:
        raise ConfigError("%s: 'services' is empty; list the services this host runs" % path)
    try:
        services = {name: _service(name, value, path) for name, value in services_raw.items()}
    except PayloadError as exc:
        raise ConfigError(str(exc)) from exc
    metrics = raw.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ConfigError("%s: metrics must be a mapping with 'port' and optionally 'bind', got %r" % (path, metrics))
    port = metrics.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536):
        raise ConfigError("%s: metrics.port must be a port number (0-65535), got %r" % (path, port))
    fetch = _fetch_policy(raw, path, services)
    services = {name: replace(service, fetch=fetch) for name, service in services.items()}
    return AgentConfig(
        host=host,
        state_dir=_require(raw, "state_dir", path, str),
        zookeeper=zookeeper,
        services=services,
        loop_wait=loop_wait,
        safety_tick=_number(raw, "safety_tick", 60.0, path),
        metrics_bind=metrics.get("bind", "127.0.0.1"),
        metrics_port=metrics.get("port"),
        trusted_keys=_trusted_keys(raw, path),
        fetch=fetch,
        path=path,
    )


def _trusted_keys(raw, path):
    """The keys release signatures must verify with; None only with the explicit opt-out."""
    keys = raw.get("trusted_keys", [])
    allow_unsigned = raw.get("allow_unsigned_releases", False)
    if not isinstance(allow_unsigned, bool):
        raise ConfigError("%s: allow_unsigned_releases must be true or false, got %r" % (path, allow_unsigned))
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise ConfigError("%s: trusted_keys must be a list of PEM public keys, got %r" % (path, keys))
    if allow_unsigned:
        if keys:
            raise ConfigError("%s: trusted_keys and allow_unsigned_releases: true contradict each other; "
                              "drop the opt-out to check signatures" % path)
        return None
    if not keys:
        raise ConfigError("%s: trusted_keys is empty: list the public key(s) the deployer signs releases with "
                          "(zkrollout_agent_trusted_keys), or set allow_unsigned_releases: true in a lab that accepts "
                          "that anyone who can write the ZooKeeper tree chooses what this host runs" % path)
    try:
        return TrustedKeys.from_texts(keys, "%s: trusted_keys" % path)
    except SigningError as exc:
        raise ConfigError(str(exc)) from exc


def load_config(path):
    """Read and validate the JSON configuration file at ``path``."""
    try:
        with open(path) as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot read agent config %s: %s" % (path, exc)) from exc
    return parse_config(raw, path)
