# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several real agent processes on this machine, each playing one host.

Every "host" has its own host id, state directory, install directories and loopback ports
for its demo services, and runs the real agent (``python -m ...agent``) as a child process.
The fleet builds the agents' JSON configs the way the role does, starts and kills agents by
pid, and always stops every agent and every demo-service process it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.localstate import LocalState

from . import signing as release_signing

AGENT_MODULE = "ansible_collections.zkrollout.dc.plugins.module_utils.agent"


class AgentFleet(object):
    """``hosts`` agents for ``services`` = {name: {"port": base_port, "initial": Artifact-like, "version": "1.0.0"}}.

    Host number i serves service s on ``port + i``. ``zk_hosts``/``zk_root`` is the connection;
    ``zookeeper(host)``, if given, returns more options of that host's ``zookeeper`` config
    (its credentials, TLS files, ACL profile).
    """

    def __init__(self, workdir, zk_hosts, zk_root, hosts, services, loop_wait=0.5, session_timeout=4.0, health=None, bind="127.0.0.1",
                 zookeeper=None):
        self.workdir = workdir
        self.zk_hosts = zk_hosts
        self.zk_root = zk_root
        self.hosts = list(hosts)
        self.services = services
        self.loop_wait = loop_wait
        self.session_timeout = session_timeout
        self.health = dict(dict(interval=0.1, timeout=0.5, rise=2, fall=2, deadline=8.0), **(health or {}))
        self.bind = bind
        self.zookeeper = zookeeper
        self.processes = {}

    def port(self, host, service):
        """The port of ``service`` on ``host``."""
        return self.services[service]["port"] + self.hosts.index(host)

    def health_url(self, host, service):
        """The demo service's own health endpoint, which the independent monitor samples."""
        return "http://%s:%d/health" % (self.bind, self.port(host, service))

    def health_targets(self):
        """``{service: [health urls]}`` for QuorumMonitor."""
        return {service: [self.health_url(host, service) for host in self.hosts] for service in self.services}

    def state_dir(self, host):
        """The agent's state directory."""
        return os.path.join(self.workdir, host, "state")

    def config(self, host):
        """The agent config of ``host``, as the role would template it."""
        services = {}
        for name, spec in self.services.items():
            initial = spec["initial"]
            services[name] = {
                "install_dir": os.path.join(self.workdir, host, "opt", name),
                "driver": "exec",
                "command": [sys.executable, "{version_dir}/service.py", "--port", str(self.port(host, name)), "--bind", self.bind],
                "health": dict(self.health, http=self.health_url(host, name)),
                "stop_timeout": 5,
                "initial": {"version": spec["version"], "url": initial["url"], "sha256": initial["sha256"]},
            }
        return {
            "host": host,
            "state_dir": self.state_dir(host),
            "loop_wait": self.loop_wait,
            "allowed_url_prefixes": sorted({spec["initial"]["url"].rsplit("/", 1)[0] + "/" for spec in self.services.values()}),
            "zookeeper": dict({"hosts": self.zk_hosts, "root": self.zk_root, "session_timeout": self.session_timeout, "timeout": 5.0},
                              **(self.zookeeper(host) if self.zookeeper else {})),
            "services": services,
            "trusted_keys": [release_signing.public_pem()],
        }

    def write_config(self, host):
        """Write ``host``'s config file and return its path."""
        path = os.path.join(self.workdir, host, "agent.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as out:
            json.dump(self.config(host), out, indent=1)
        return path

    def start(self, host):
        """Start (or restart) the agent of ``host``."""
        config = self.write_config(host)
        log = open(os.path.join(self.workdir, host, "agent.log"), "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.processes[host] = subprocess.Popen([sys.executable, "-m", AGENT_MODULE, "--config", config, "run"],
                                                stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        return self.processes[host]

    def start_all(self):
        """Start every agent."""
        for host in self.hosts:
            self.start(host)
        return self

    def signal(self, host, sig):
        """Send ``sig`` to the agent of ``host`` (SIGKILL, SIGSTOP, SIGCONT...)."""
        process = self.processes.get(host)
        if process is not None and process.poll() is None:
            os.kill(process.pid, sig)

    def kill(self, host):
        """SIGKILL the agent of ``host`` (its demo services keep running, as on a real host)."""
        self.signal(host, signal.SIGKILL)
        self.processes[host].wait(10)

    def local_state(self, host):
        """The agent's persisted state, read from disk."""
        return LocalState(os.path.join(self.state_dir(host), "state.json"))

    def service_pids(self, host):
        """Pids of the demo services the agent of ``host`` started (from its persisted state)."""
        state = self.local_state(host)
        return [state.get(name).pid for name in self.services if state.get(name).pid]

    def processes_running_from(self, host):
        """Pids of processes whose command line names ``host``'s install directories.

        Finds a demo service started by an agent that was killed before it recorded the pid.
        """
        marker = os.path.join(self.workdir, host, "opt").encode() + b"/"
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/cmdline" % entry, "rb") as handle:
                        if marker in handle.read():
                            found.append(int(entry))
                except OSError:
                    continue
        return found

    def kill_service(self, host, service):
        """SIGKILL the demo service ``service`` of ``host`` (a crash of that instance only)."""
        pid = self.local_state(host).get(service).pid
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_services(self, host):
        """SIGKILL the demo services of ``host`` (a machine going down with its processes)."""
        for pid in set(self.service_pids(host)) | set(self.processes_running_from(host)):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log(self, host):
        """The agent log of ``host``."""
        with open(os.path.join(self.workdir, host, "agent.log"), errors="replace") as handle:
            return handle.read()

    def stop(self):
        """Stop every agent (SIGCONT first, in case one is frozen) and every demo service."""
        for process in self.processes.values():
            if process.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGTERM):
                    os.kill(process.pid, sig)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        for host in self.hosts:
            self.kill_services(host)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
