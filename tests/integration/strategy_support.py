# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Set-up of the strategy tests and benchmark: plays that upgrade a test fleet from the controller.

``StrategyFleet`` is an ``EndToEndFleet`` (network-namespace hosts with sshd, ZooKeeper on the
fleet's bridge, the artifact server, the agent installed by the role over SSH, the independent
``QuorumMonitor``) whose hosts run one service, A, that the agent does **not** manage: its
config uses the ``external`` driver, so the agent only health-checks the instance and registers
it in ``/dc/current/A/<host>`` with the version read from ``<host dir>/A/VERSION``. The upgrade is
the play's job: ``playbooks/strategy_quorum.yml`` (strategy ``zkrollout.dc.quorum``) or
``playbooks/strategy_serial.yml`` (``serial: k``), both running ``files/switch_demo_service.py``
on each host over SSH (stop, ``upgrade_work[host]`` seconds of work while down, write VERSION,
start detached, wait healthy).

Plays run in the background (``start_upgrade``, one process group each, so a test can SIGKILL a
controller with everything it spawned) or to the end (``run_upgrade``). ``SlotSampler`` reads the
slot set of A from ZooKeeper every few milliseconds, for the budget two controllers share.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import tree  # first: it makes the collection's plugins loadable in this process

# isort: split
from kazoo.exceptions import NoNodeError

from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import PayloadError, Slot
from ansible_collections.zkrollout.dc.tests.bed.environment import HOST_PYTHON, FleetEnvironment
from ansible_collections.zkrollout.dc.tests.integration.e2e_support import ROOT, V1, V2, EndToEndFleet

SERVICE = "A"
PORT = 8081
PLAYBOOKS = Path(__file__).resolve().parent / "playbooks"
QUORUM_PLAYBOOK = PLAYBOOKS / "strategy_quorum.yml"
SERIAL_PLAYBOOK = PLAYBOOKS / "strategy_serial.yml"
SWITCH_SCRIPT = PLAYBOOKS / "files" / "switch_demo_service.py"
# The fleets of these tests and of the benchmark: their own names and /24s, beside other runs.
TEST_PREFIX, TEST_SUBNET = "zks", "10.231.80"
BENCHMARK_PREFIX, BENCHMARK_SUBNET = "zkb", "10.231.81"


def other_version(version):
    """The good demo version that ``version`` is not: each scenario rolls the fleet to it."""
    return V2 if version == V1 else V1


class ExternalServiceEnvironment(FleetEnvironment):
    """A FleetEnvironment whose hosts run only service A, with the agent's ``external`` driver.

    Nothing starts the instances but ``start_instance`` (the first start, inside the host's
    namespace) and the upgrade plays (over SSH). The inventory gives the plays ``demo_install_dir``
    and ``demo_port``.
    """

    def __init__(self, hosts=5, prefix=TEST_PREFIX, subnet=TEST_SUBNET, **settings):
        super().__init__(hosts=hosts, services={SERVICE: PORT}, prefix=prefix, subnet=subnet, **settings)

    @staticmethod
    def install_dir(host):
        """Where ``host`` keeps A: ``versions/<v>/``, ``VERSION``, ``service.pid``, ``service.log``."""
        return os.path.join(host.directory, SERVICE)

    def agent_services(self, host):
        """A under the external driver: the agent health-checks it and reads VERSION, nothing else."""
        return {SERVICE: {
            "driver": "external",
            "install_dir": self.install_dir(host),
            "version_file": os.path.join(self.install_dir(host), "VERSION"),
            "health": {"http": "http://%s:%d/health" % (host.address, PORT), "interval": 0.2, "timeout": 1, "rise": 2, "fall": 2, "deadline": 10},
        }}

    def host_vars(self, host):
        variables = super().host_vars(host)
        variables.update(demo_install_dir=self.install_dir(host), demo_port=PORT)
        return variables

    def start_instance(self, name, version):
        """Install and start A ``version`` on host ``name`` the way the play would, inside its namespace."""
        host = self.fleet.host(name)
        artifact = self.artifact(SERVICE, version)
        result = self.fleet.run(name, [HOST_PYTHON, str(SWITCH_SCRIPT), "--install-dir", self.install_dir(host), "--port", str(PORT),
                                       "--bind", host.address, "--version", version, "--url", artifact["url"], "--sha256", artifact["sha256"]],
                                capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError("could not start %s %s on %s: %s%s" % (SERVICE, version, name, result.stdout, result.stderr))


@dataclass(frozen=True)
class TimedRun(tree.PlaybookRun):
    """A PlaybookRun and how long it took (seconds)."""

    elapsed: float = 0.0


class BackgroundPlaybook(object):
    """One ``ansible-playbook`` in a process group of its own; output goes to a file."""

    def __init__(self, command, env, output_path):
        self.output_path = output_path
        self._output = open(output_path, "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT,
                                        cwd=str(tree.COLLECTION_ROOT), start_new_session=True)

    @property
    def output(self):
        """Everything the run printed so far."""
        with open(self.output_path, errors="replace") as handle:
            return handle.read()

    def wait(self, timeout):
        """Wait for the end (kill the group after ``timeout`` s); a TimedRun (its stdout holds stdout and stderr)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("ansible-playbook did not finish within %.0fs; output:\n%s" % (timeout, self.output)) from None
        finally:
            self._output.close()
        return TimedRun(self.process.returncode, self.output, "", time.monotonic() - self.started)

    def kill(self):
        """SIGKILL the controller and everything it spawned (its workers, its ssh clients)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._output.close()


class SlotSampler(object):
    """Reads the slot set of A every ``interval`` s on its own session; the budget as ZooKeeper saw it.

    ``max_held``: most slots held at once; ``owners_together``: the sets of owners seen holding
    slots at the same time; ``renewed``: hosts whose slot was rewritten (its lease renewed) while
    held by the same owner; ``samples``.
    """

    def __init__(self, client, layout, interval=0.02):
        self.client = client
        self.path = layout.slots(SERVICE)
        self.layout = layout
        self.interval = interval
        self.max_held = 0
        self.owners_together = set()
        self.renewed = set()
        self._deadlines = {}
        self.samples = 0
        self.failure = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slot sampler", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(10)

    def slots(self):
        """``{host: Slot}`` held now."""
        try:
            hosts = self.client.get_children(self.path)
        except NoNodeError:
            return {}
        pending = [(host, self.client.get_async(self.layout.slot(SERVICE, host))) for host in hosts]
        held = {}
        for host, result in pending:
            try:
                held[host] = Slot.from_bytes(result.get()[0])
            except NoNodeError:
                continue
            except PayloadError:
                held[host] = None
        return held

    def _run(self):
        try:
            while not self._stop.is_set():
                held = self.slots()
                self.samples += 1
                self.max_held = max(self.max_held, len(held))
                if held:
                    self.owners_together.add(frozenset(slot.owner if slot else "malformed" for slot in held.values()))
                for host, slot in held.items():
                    seen = self._deadlines.get(host)
                    if slot is not None and seen is not None and seen[0] == slot.owner and seen[1] != slot.deadline:
                        self.renewed.add(host)
                self._deadlines = {host: (slot.owner, slot.deadline) for host, slot in held.items() if slot is not None}
                self._stop.wait(self.interval)
        except Exception as exc:  # surfaced by the test through ``failure``
            self.failure = repr(exc)


class StrategyFleet(EndToEndFleet):
    """An EndToEndFleet on ExternalServiceEnvironment, with A at 1.0.0 everywhere and the agents installed."""

    def __init__(self, hosts=5, prefix=TEST_PREFIX, subnet=TEST_SUBNET):
        super().__init__(hosts=hosts)
        self.environment = ExternalServiceEnvironment(hosts=hosts, prefix=prefix, subnet=subnet)
        self._runs = 0

    def start(self):
        """Build the environment, start A 1.0.0 on every host, install the agents (they register A)."""
        super().start()
        try:
            for host in self.hosts:
                self.environment.start_instance(host, V1)
            self.install_agents()
        except BaseException:
            self.close()
            raise
        return self

    # Plays.
    def upgrade_vars(self, version, work, **variables):
        """The extra vars of an upgrade play to ``version``; ``work`` = {host: seconds}."""
        values = {
            "zkrollout_zk_hosts": self.environment.zk_hosts,
            "zkrollout_zk_root": ROOT,
            "zkrollout_version": version,
            "upgrade_artifact": self.environment.artifact(SERVICE, version),
            "upgrade_work": work,
        }
        values.update(variables)
        return values

    def start_playbook(self, playbook, extra_vars=(), options=()):
        """Start ``ansible-playbook`` (a playbook of the collection, or a path) in the background; a BackgroundPlaybook."""
        self._runs += 1
        env = tree.playbook_environment()
        # The role packs the agent code into $TMPDIR; other fleets' runs must not share that file.
        tmpdir = os.path.join(self.environment.fleet.workdir, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        env.update(TMPDIR=tmpdir, ANSIBLE_SSH_CONTROL_PATH_DIR=self._control_dir)
        return BackgroundPlaybook(tree.playbook_command(str(playbook), extra_vars, options), env,
                                  os.path.join(self.environment.fleet.workdir, "playbook-%d.log" % self._runs))

    def playbook(self, playbook, extra_vars=(), options=(), timeout=300):
        """Run ``ansible-playbook`` to its end, as an operator would; a TimedRun."""
        return self.start_playbook(playbook, extra_vars, options).wait(timeout)

    def start_upgrade(self, playbook, version, work, **variables):
        """Start an upgrade play to ``version`` on the fleet in the background; a BackgroundPlaybook."""
        vars_path = os.path.join(self.environment.fleet.workdir, "upgrade-%d.json" % (self._runs + 1))
        with open(vars_path, "w") as out:
            json.dump(self.upgrade_vars(version, work, **variables), out, indent=1)
        return self.start_playbook(playbook, ["@%s" % vars_path], ["-i", self.environment.inventory_path, "--forks", str(len(self.hosts))])

    def run_upgrade(self, playbook, version, work, timeout=300, **variables):
        """Run an upgrade play to its end; a TimedRun."""
        return self.start_upgrade(playbook, version, work, **variables).wait(timeout)

    # The fleet's state.
    def current_version(self):
        """The one version every host registers for A (AssertionError if the fleet is not settled)."""
        return self.settled_versions()[SERVICE]

    def settled_version(self):
        """The one version of A that every host registers, with no slot held; None if the fleet is not settled."""
        view = self.snapshot().service(SERVICE)
        versions = set(view.registrations.values())
        return versions.pop() if sorted(view.registrations) == self.hosts and len(versions) == 1 and not view.slots else None

    def settled_on(self, version, answering=False):
        """True when every host registers ``version`` for A and no slot is held; with ``answering``, the instances say so too."""
        view = self.snapshot().service(SERVICE)
        registered = dict(view.registrations)
        if registered != dict.fromkeys(self.hosts, version) or view.slots:
            return False
        return not answering or self.versions_seen_now(SERVICE) == registered

    def wait_settled(self, version, answering=True, timeout=30):
        """Wait until every host registers ``version`` and no slot is held; with ``answering`` (monitor running), each instance says so too."""
        self.wait_for(lambda: self.settled_on(version, answering), timeout,
                      "every host on %s %s, registered%s, no slot held" % (SERVICE, version, " and answering" if answering else ""))

    def repair(self):
        """Bring the fleet back to one version of A everywhere and no slot (after a test that failed midway)."""
        for host in self.slots():
            with contextlib.suppress(NoNodeError):
                self.client.delete(self.layout.slot(SERVICE, host))
        versions = list(self.registrations(SERVICE).values())
        version = max(sorted(set(versions)), key=versions.count) if versions else V1
        for host in self.hosts:
            self.environment.start_instance(host, version)
        self.wait_settled(version, answering=False, timeout=60)

    def slots(self):
        """``{host: Slot}`` of A now."""
        return dict(self.snapshot().service(SERVICE).slots)

    def kill_instance(self, host, timeout=20):
        """SIGKILL A on ``host`` (its host stays up) and wait until its agent has deregistered it."""
        killed = self.environment.fleet.signal_processes(host, signal.SIGKILL, "service.py")
        assert killed, "no A process to kill on %s" % host
        self.wait_for(lambda: host not in self.registrations(SERVICE), timeout, "the agent of %s to deregister its dead A" % host)

    def wait_switches_ended(self, timeout=60):
        """Wait until no switch script runs on any host: those of a killed controller finish on their own."""
        def running():
            return [host for host in self.hosts if self.environment.fleet.signal_processes(host, 0, SWITCH_SCRIPT.name)]

        self.wait_for(lambda: not running(), timeout, "the switch scripts of the killed controller to end")

    def slot_sampler(self):
        """A SlotSampler on the test's session (``with fleet.slot_sampler() as sampler:``)."""
        return SlotSampler(self.client, self.layout)
