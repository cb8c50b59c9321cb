# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything a rollout over SSH needs, in one object: the environment of molecule, e2e tests and the demo.

``FleetEnvironment(hosts=6, services=...)`` builds a NetnsFleet (test hosts in network
namespaces, each with sshd), a ZooKeeper (single node or ensemble) listening on the fleet's
bridge address, demo-service artifacts (1.0.0, 2.0.0 and a broken 3.0.0 per service) served
by an artifact server on the bridge, a kazoo wheel directory for the hosts (which have no
route to a package index), and an inventory whose variables are the agent role's. Each host
runs every service on the same port in its own namespace, so the independent monitor samples
``http://<host address>:<port>/health``.

``secure=True`` is the recommended set-up of docs/security.md: the hosts and the controller reach
ZooKeeper only over mutual TLS, each with a client certificate of its own (``CN=<host>`` for an
agent, ``CN=deployer`` for the playbooks), and every node is created with the least-privilege
ACL profile naming those x509 identities (``world:anyone`` reads). The plain client port stays
open on the bridge for the tests' own read-only sessions.

Command line, for molecule's create/destroy (the environment outlives one ansible-playbook)::

    python -m tests.bed.environment serve --dir D [--hosts 3] [--ensemble]

writes ``D/inventory.ini`` and ``D/environment.json``, then serves until SIGTERM and cleans up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading

from . import signing as release_signing
from . import tls as tls_material
from .artifacts import ArtifactServer, build_artifacts
from .fleet import NetnsFleet
from .zookeeper import ZooKeeper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEEL_DIR = os.path.join(REPO, "build", "wheels")
HOST_PYTHON = "/usr/bin/python3"
# Service -> port; every host runs every service on that port in its own namespace.
DEFAULT_SERVICES = {"A": 8081, "B": 8082, "C": 8083}
VERSIONS = {"1.0.0": {}, "2.0.0": {}, "3.0.0": {"broken": True}}


def ensure_wheels():
    """The directory with the kazoo, cryptography and prometheus_client wheels the hosts install from (they cannot reach a package index)."""
    names = os.listdir(WHEEL_DIR) if os.path.isdir(WHEEL_DIR) else []
    for package in ("kazoo-", "cryptography-", "prometheus_client-"):
        if not any(name.startswith(package) for name in names):
            raise RuntimeError("no %s wheel in %s for the test hosts; run make setup" % (package.rstrip("-"), WHEEL_DIR))
    return WHEEL_DIR


class FleetEnvironment(object):
    """Fleet + ZooKeeper + artifacts + inventory; ``start()``/``stop()`` or a context manager."""

    def __init__(self, hosts=6, services=None, ensemble=False, workdir=None, loop_wait=0.5, session_timeout=4.0,
                 prefix="zkr", subnet="10.231.77", secure=False):
        self.size = hosts
        self.secure = secure
        self.certificates = {}
        self.prefix = prefix
        self.subnet = subnet
        self.services = dict(services or DEFAULT_SERVICES)
        self.ensemble = ensemble
        self.requested_workdir = workdir
        self.loop_wait = loop_wait
        self.session_timeout = session_timeout
        self.fleet = None
        self.zookeeper = None
        self.server = None
        self.artifacts = {}
        self.inventory_path = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def zk_hosts(self):
        """The ZooKeeper connection string, as the hosts and the controller use it (the TLS port when secure)."""
        return self.zookeeper.secure_hosts if self.secure else self.zookeeper.hosts

    @property
    def plain_zk_hosts(self):
        """The plain client port: for the tests' own sessions, which only read (as ``world:anyone`` when secure)."""
        return self.zookeeper.hosts

    @property
    def acl_profile(self):
        """The least-privilege profile of a secure environment (x509 identities), else None."""
        if not self.secure:
            return None
        return {"deployer": [self.x509_identity("deployer")], "agents": [self.x509_identity(host) for host in self.hosts],
                "readers": ["world:anyone"]}

    @staticmethod
    def x509_identity(name):
        """The profile entry of the certificate ``CN=<name>,O=example``."""
        return "x509:CN=%s,O=example" % name

    def tls_settings(self, name):
        """``{tls, ca, certfile, keyfile}`` of identity ``name`` (a host, or ``deployer``) in a secure environment."""
        certfile, keyfile = self.certificates[name]
        return {"tls": True, "ca": self.zookeeper.tls.ca_cert, "certfile": certfile, "keyfile": keyfile}

    def controller_vars(self):
        """The playbooks' ``zkrollout_zk_*`` variables: the connection and, when secure, the deployer's identity and the profile."""
        variables = {"zkrollout_zk_hosts": self.zk_hosts}
        if self.secure:
            variables.update({"zkrollout_zk_" + key: value for key, value in self.tls_settings("deployer").items()})
            variables["zkrollout_zk_acl_profile"] = self.acl_profile
        return variables

    @property
    def hosts(self):
        """Host names."""
        return [host.name for host in self.fleet.hosts]

    def start(self):
        """Build everything; on any failure, tear down what was built."""
        try:
            self.fleet = NetnsFleet(self.size, workdir=self.requested_workdir, subnet=self.subnet, prefix=self.prefix).start()
            self.zookeeper = ZooKeeper(size=3 if self.ensemble else 1, client_address=self.fleet.gateway, tls=self.secure,
                                       client_auth="need" if self.secure else "none").start()
            if self.secure:
                self.certificates = {name: tls_material.client_certificate(self.zookeeper.tls, name) for name in ["deployer"] + self.hosts}
            artifact_dir = os.path.join(self.fleet.workdir, "artifacts")
            self.artifacts = {name: build_artifacts(artifact_dir, name, VERSIONS) for name in self.services}
            self.server = ArtifactServer(artifact_dir, bind=self.fleet.gateway).start()
            ensure_wheels()
            self.inventory_path = self.write_inventory()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop the artifact server, ZooKeeper and the fleet (every process in it)."""
        for part, method in ((self.server, "stop"), (self.zookeeper, "stop"), (self.fleet, "stop")):
            if part is not None:
                getattr(part, method)()
        self.server = self.zookeeper = self.fleet = None

    def artifact(self, service, version):
        """``{"url", "sha256"}`` of a demo-service version."""
        built = self.artifacts[service][version]
        return {"url": self.server.url(built.filename), "sha256": built.sha256}

    def health_url(self, host, service):
        """A host's instance of ``service``, as the independent monitor samples it."""
        return "http://%s:%d/health" % (self.fleet.host(host).address, self.services[service])

    def health_targets(self):
        """``{service: [health urls]}`` for QuorumMonitor."""
        return {service: [self.health_url(host, service) for host in self.hosts] for service in self.services}

    def agent_services(self, host):
        """The role's ``zkrollout_agent_services`` for ``host``: every service at 1.0.0."""
        address = host.address
        return {
            name: {
                "install_dir": os.path.join(host.directory, "opt", name),
                "driver": "exec",
                "command": [HOST_PYTHON, "{version_dir}/service.py", "--port", str(port), "--bind", address],
                "health": {"http": "http://%s:%d/health" % (address, port), "interval": 0.2, "timeout": 1, "rise": 2, "fall": 2, "deadline": 10},
                "stop_timeout": 5,
                "initial": dict(self.artifact(name, "1.0.0"), version="1.0.0"),
            }
            for name, port in self.services.items()
        }

    def host_vars(self, host):
        """The agent role's variables for ``host`` (paths inside the host's own directory)."""
        variables = {
            "zkrollout_agent_prefix": os.path.join(host.directory, "prefix"),
            "zkrollout_agent_config_dir": os.path.join(host.directory, "etc"),
            "zkrollout_agent_state_dir": os.path.join(host.directory, "state"),
            "zkrollout_agent_install_packages": "false",
            "zkrollout_agent_service_manager": "supervised",
            "zkrollout_agent_wheel_dir": WHEEL_DIR,
            "zkrollout_agent_zk_hosts": self.zk_hosts,
            "zkrollout_agent_loop_wait": self.loop_wait,
            "zkrollout_agent_zk_session_timeout": self.session_timeout,
            "zkrollout_agent_allowed_url_prefixes": "'%s'" % json.dumps([self.server.url("")]),
            "zkrollout_agent_services": "'%s'" % json.dumps(self.agent_services(host)),
            "zkrollout_agent_trusted_keys": "'%s'" % json.dumps([release_signing.public_line()]),
        }
        if self.secure:
            variables.update({"zkrollout_agent_zk_" + key: value for key, value in self.tls_settings(host.name).items()})
            variables["zkrollout_agent_zk_tls"] = "true"
            variables["zkrollout_agent_zk_acl_profile"] = "'%s'" % json.dumps(self.acl_profile)
        return variables

    def write_inventory(self):
        """Write the inventory (group ``fleet``) and return its path."""
        return self.fleet.inventory(os.path.join(self.fleet.workdir, "inventory.ini"), host_vars=self.host_vars, python=HOST_PYTHON)

    def describe(self):
        """What molecule, tests and the demo need to find the environment."""
        return {
            "inventory": self.inventory_path,
            "zk_hosts": self.zk_hosts,
            "hosts": self.hosts,
            "services": self.services,
            "health_targets": self.health_targets(),
            "artifacts": {name: {version: self.artifact(name, version) for version in VERSIONS} for name in self.services},
            "workdir": self.fleet.workdir,
        }


def _serve(args):
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.dir:
        shutil.rmtree(args.dir, ignore_errors=True)
    with FleetEnvironment(hosts=args.hosts, ensemble=args.ensemble, workdir=args.dir, prefix=args.prefix, subnet=args.subnet) as environment:
        description = environment.describe()
        # Written whole, then renamed: molecule's create waits for this file and must never read half of it.
        path = os.path.join(environment.fleet.workdir, "environment.json")
        with open(path + ".tmp", "w") as out:
            json.dump(description, out, indent=1)
        os.replace(path + ".tmp", path)
        print(json.dumps(description), flush=True)
        stop.wait()
    if args.dir:
        shutil.rmtree(args.dir, ignore_errors=True)
    return 0


def main(argv=None):
    """``serve`` an environment until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m tests.bed.environment", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="build the environment, write DIR/environment.json, serve until SIGTERM")
    serve.add_argument("--dir", required=True, help="work directory (replaced; removed on exit)")
    serve.add_argument("--hosts", type=int, default=3)
    serve.add_argument("--ensemble", action="store_true", help="a 3-member ZooKeeper ensemble instead of one node")
    serve.add_argument("--prefix", default="zkr", help="name prefix of namespaces and links (default zkr)")
    serve.add_argument("--subnet", default="10.231.77", help="first three octets of the fleet's /24 (default 10.231.77)")
    return _serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
