# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fleet of test hosts: Linux network namespaces on a bridge, each with its own sshd.

``NetnsFleet(size)`` creates, in one private /24 that it owns (default 10.231.77.0/24), with
names starting with its prefix (default ``zkr``, so fleets with other prefixes and subnets can
coexist):

- a bridge ``zkr-br`` holding ``.1``, the address where the controller side serves the hosts
  (ZooKeeper, the artifact server);
- per host ``hN``: a namespace ``zkr-hN`` with loopback and ``eth0`` = ``.(10+N)`` on a veth
  pair whose host end ``zkr-vN`` is a bridge port, an ``sshd`` listening on that address
  (generated host and client keys, root login by key only), and a directory of its own under
  the fleet's work directory for the agent's install, config and state;
- an inventory for Ansible (``inventory()``).

A partition is real: ``partition(host)`` sets the host's bridge port down (its ZooKeeper session
expires, Ansible sees UNREACHABLE); ``heal(host)`` sets it up again. ``stop()`` kills every
process inside the namespaces (``ip netns pids``) and the sshds, deletes namespaces, veths and
the bridge, and removes the work directory; it also runs at interpreter exit. ``start()``
refuses to run when the /24 is in use by anything it did not create, and removes leftovers of
an earlier fleet (recognised by the ``zkr-`` names) first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DEFAULT_PREFIX = "zkr"
DEFAULT_SUBNET = "10.231.77"
SSHD = "/usr/sbin/sshd"

_live_fleets = []


class FleetError(RuntimeError):
    """The fleet cannot be built here; the message says what is missing or in the way."""


def _ip(*args, check=True):
    result = subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise FleetError("ip %s failed: %s" % (" ".join(args), result.stderr.strip()))
    return result.stdout


def our_namespaces(prefix=DEFAULT_PREFIX):
    """Namespaces named like a fleet's (``<prefix>-...``)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.startswith(prefix + "-")]


def clean_leftovers(prefix=DEFAULT_PREFIX):
    """Remove namespaces, veths and the bridge that an earlier fleet with ``prefix`` left (by their names)."""
    for namespace in our_namespaces(prefix):
        for pid in _ip("netns", "pids", namespace, check=False).split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        _ip("netns", "del", namespace, check=False)
    for line in _ip("-o", "link", "show").splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(prefix + "-"):
            _ip("link", "del", name, check=False)


class Host(object):
    """One test host: name, namespace, address and directory."""

    def __init__(self, fleet, number):
        self.name = "h%d" % number
        self.namespace = "%s-%s" % (fleet.prefix, self.name)
        self.veth = "%s-v%d" % (fleet.prefix, number)
        self.address = "%s.%d" % (fleet.subnet, 10 + number)
        self.directory = os.path.join(fleet.workdir, self.name)
        self.sshd = None

    def __repr__(self):
        return "<test host %s %s>" % (self.name, self.address)


class NetnsFleet(object):
    """``size`` hosts in network namespaces; see the module docstring."""

    def __init__(self, size, workdir=None, subnet=DEFAULT_SUBNET, prefix=DEFAULT_PREFIX):
        if not 1 <= size <= 200:
            raise FleetError("a fleet has 1 to 200 hosts, not %d" % size)
        if not prefix.isalnum() or len(prefix) > 6:
            raise FleetError("a fleet prefix is 1 to 6 letters or digits (interface names are short), not %r" % prefix)
        self.size = size
        self.subnet = subnet
        self.prefix = prefix
        self.bridge = prefix + "-br"
        self.gateway = "%s.1" % subnet
        self.requested_workdir = workdir
        self.workdir = None
        self.hosts = []
        self.client_key = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def host(self, name):
        """The Host called ``name``."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    # Building.
    def _check_prerequisites(self):
        if os.geteuid() != 0:
            raise FleetError("network namespaces need root; run the tests as root (make test does)")
        for tool in (SSHD, shutil.which("ip") or "ip", shutil.which("ssh-keygen") or "ssh-keygen"):
            if not os.path.exists(tool):
                raise FleetError("%s is missing: install openssh-server and iproute2 (make setup does)" % tool)

    def _check_subnet_free(self):
        for line in _ip("-o", "-4", "addr", "show").splitlines():
            fields = line.split()
            interface, address = fields[1], fields[3]
            if address.startswith(self.subnet + ".") and not interface.startswith(self.prefix + "-"):
                raise FleetError("the test fleet's subnet %s.0/24 is already used by %s (%s); free it or pass another subnet"
                                 % (self.subnet, interface, address))

    def start(self, timeout=30.0):
        """Build the fleet and wait until every sshd accepts connections."""
        self._check_prerequisites()
        self._check_subnet_free()
        clean_leftovers(self.prefix)
        self.workdir = self.requested_workdir or tempfile.mkdtemp(prefix="zkrollout-fleet-")
        os.makedirs(self.workdir, exist_ok=True)
        _live_fleets.append(self)
        try:
            self._keys()
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", "%s/24" % self.gateway, "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for number in range(1, self.size + 1):
                host = Host(self, number)
                self.hosts.append(host)
                self._add_host(host)
            deadline = time.monotonic() + timeout
            for host in self.hosts:
                self._wait_ssh(host, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _keys(self):
        keys = os.path.join(self.workdir, "ssh")
        os.makedirs(keys, mode=0o700, exist_ok=True)
        for name, kind in (("host_key", "ed25519"), ("client_key", "ed25519")):
            path = os.path.join(keys, name)
            if not os.path.exists(path):
                subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "zkrollout-fleet", "-f", path], check=True)
        shutil.copy(os.path.join(keys, "client_key.pub"), os.path.join(keys, "authorized_keys"))
        self.client_key = os.path.join(keys, "client_key")
        # sshd's privilege separation directory; Debian creates it only when the service starts.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

    def _add_host(self, host):
        os.makedirs(host.directory, exist_ok=True)
        _ip("netns", "add", host.namespace)
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        _ip("link", "set", host.veth, "master", self.bridge, "up")
        _ip("-n", host.namespace, "addr", "add", "%s/24" % host.address, "dev", "eth0")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        keys = os.path.join(self.workdir, "ssh")
        config = os.path.join(host.directory, "sshd_config")
        with open(config, "w") as out:
            out.write("\n".join([
                "ListenAddress %s" % host.address,
                "Port 22",
                "HostKey %s" % os.path.join(keys, "host_key"),
                "AuthorizedKeysFile %s" % os.path.join(keys, "authorized_keys"),
                "PidFile %s" % os.path.join(host.directory, "sshd.pid"),
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "MaxStartups 100",
                "MaxSessions 100",
                "Subsystem sftp internal-sftp",
            ]) + "\n")
        log = open(os.path.join(host.directory, "sshd.log"), "ab")
        host.sshd = subprocess.Popen(["ip", "netns", "exec", host.namespace, SSHD, "-D", "-e", "-f", config],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def _wait_ssh(self, host, deadline):
        while time.monotonic() < deadline:
            if host.sshd.poll() is not None:
                raise FleetError("sshd of %s exited: see %s" % (host.name, os.path.join(host.directory, "sshd.log")))
            try:
                with socket.create_connection((host.address, 22), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.1)
        raise FleetError("sshd of %s did not listen on %s:22 in time" % (host.name, host.address))

    # Using.
    def inventory(self, path, group="fleet", host_vars=None, python=None):
        """Write an INI inventory of the fleet to ``path`` and return the path.

        ``host_vars(host)`` may return extra variables per host; ``python`` is the interpreter
        the hosts use (the hosts share this machine's file system).
        """
        lines = ["[%s]" % group]
        for host in self.hosts:
            variables = {"ansible_host": host.address, "ansible_user": "root", "ansible_ssh_private_key_file": self.client_key,
                         "ansible_python_interpreter": python or "/usr/bin/python3", "zkrollout_test_dir": host.directory}
            variables.update(host_vars(host) if host_vars else {})
            lines.append(host.name + " " + " ".join("%s=%s" % item for item in sorted(variables.items())))
        with open(path, "w") as out:
            out.write("\n".join(lines) + "\n")
        return path

    def run(self, host, argv, **kwargs):
        """Run ``argv`` inside ``host``'s namespace (no SSH)."""
        return subprocess.run(["ip", "netns", "exec", self.host(host).namespace] + list(argv), check=kwargs.pop("check", False), **kwargs)

    def partition(self, host):
        """Cut ``host`` off: its bridge port goes down."""
        _ip("link", "set", self.host(host).veth, "down")

    def heal(self, host):
        """Reconnect ``host``."""
        _ip("link", "set", self.host(host).veth, "up")

    def pids(self, host):
        """Pids of every process inside the namespace of ``host`` (a name or a Host)."""
        namespace = host.namespace if isinstance(host, Host) else self.host(host).namespace
        return [int(pid) for pid in _ip("netns", "pids", namespace, check=False).split()]

    def signal_processes(self, host, sig, match):
        """Send ``sig`` to processes in ``host``'s namespace whose command line contains ``match``."""
        hit = []
        for pid in self.pids(host):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    if match.encode() in handle.read():
                        os.kill(pid, sig)
                        hit.append(pid)
            except OSError:
                pass
        return hit

    # Tearing down.
    def stop(self):
        """Kill everything in the namespaces, delete them and the bridge, remove the work directory."""
        for host in self.hosts:
            for pid in self.pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if host.sshd is not None:
                try:
                    host.sshd.wait(5)
                except subprocess.TimeoutExpired:
                    host.sshd.kill()
                    host.sshd.wait(5)
            _ip("netns", "del", host.namespace, check=False)
            _ip("link", "del", host.veth, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.hosts = []
        if self.workdir and not self.requested_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self in _live_fleets:
            _live_fleets.remove(self)


@atexit.register
def _stop_live_fleets():
    for fleet in list(_live_fleets):
        fleet.stop()
