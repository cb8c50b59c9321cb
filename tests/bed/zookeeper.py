# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real Apache ZooKeeper for tests and demos: a single node or an N-member ensemble on loopback.

``ZooKeeper(size=1 | 3, tls=False)`` writes one ``zoo.cfg`` per member into a fresh directory,
starts ``QuorumPeerMain`` from the Debian ``zookeeper`` package on free 127.0.0.1 ports and
waits until every member serves. ``stop()`` kills the processes this object started (by PID,
nothing else) and removes the directory. Use it as a context manager, or stop it in a fixture
finalizer; an ``atexit`` hook stops whatever is still running when the interpreter exits, and
every JVM gets SIGKILL from the kernel if the thread that started it dies (``setpriv
--pdeathsig``), so not even a killed test run leaves a ZooKeeper behind.

Fault helpers, on a ``Member`` (one process) or on the bed:

- ``member.stop(sig)`` / ``member.start()``: crash (SIGKILL) or shut down (SIGTERM) one member and
  bring it back with its data and ports;
- ``member.freeze()`` / ``member.thaw()`` / ``with member.frozen():``: SIGSTOP/SIGCONT, a member that
  hangs with its sockets open (the nastiest failure: peers and clients see silence, not a refusal);
- ``bed.leader()``, ``bed.followers()``: who leads now, asked with the ``srvr`` four-letter word;
  ``bed.member_of_session(session_id)``: which member a client is connected to (``cons``);
- ``bed.heal()``: thaw and restart whatever a test froze or stopped, and wait until all serve;
- ``bed.expire_session(client)``: really expire a kazoo client's session on the server side;
  ``bed.close_session(session_id, password)`` does the same for a session held by another process.

Command line, for demo scripts::

    python -m tests.bed.zookeeper start [--size 3] [--tls] [--dir D]

prints the connection string on one line, serves until SIGTERM or Ctrl-C, then cleans up.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from kazoo.client import KazooClient, KazooState
from kazoo.retry import KazooRetry

from . import tls as tls_material

JAVA_DIR = "/usr/share/java"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
# zookeeper.jar's manifest Class-Path lists most dependencies but not these: without netty-codec
# the server starts and then drops every client connection. slf4j-simple gives a readable log.
CLASSPATH_JARS = (
    "zookeeper.jar",
    "netty-codec.jar",
    "netty-resolver.jar",
    "netty-transport-native-unix-common.jar",
    "servlet-api.jar",
    "slf4j-simple.jar",
)
# Small and quick to start: two cores are shared by every member, the tests and the agents. The
# heap (-Xmx, ``heap_mb``) is added per bed: 128 MiB for tests, more for the scale benchmark.
JVM_OPTIONS = (
    "-Xms16m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    # No /tmp/hsperfdata_<user>/<pid> file, which a killed JVM would leave behind.
    "-XX:-UsePerfData",
    "-Djava.net.preferIPv4Stack=true",
    "-Dorg.slf4j.simpleLogger.logFile=System.out",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
)
LOOPBACK = "127.0.0.1"
TICK_MS = 200
# Sessions from 2 ticks (0.4 s) up to 30 s are accepted, so tests can ask for 2-4 s sessions.
MIN_SESSION_MS = 2 * TICK_MS
MAX_SESSION_MS = 30000
CLIENT_AUTH_MODES = ("none", "want", "need")
SERVING_MODES = ("standalone", "leader", "follower")
# syncLimit ticks: how long a thawed member may still report a mode it has lost.
SETTLE_AFTER_THAW = 5 * TICK_MS / 1000.0

_live_beds = set()


class BedError(RuntimeError):
    """The test bed could not do what was asked; the message says what and shows the server log."""


def _check_installation():
    java = shutil.which("java")
    if java is None:
        raise BedError("no 'java' on PATH; install a JRE (Debian: default-jre-headless)")
    missing = [jar for jar in CLASSPATH_JARS if not os.path.exists(os.path.join(JAVA_DIR, jar))]
    if missing:
        raise BedError("missing %s in %s; install the Debian packages zookeeper and libslf4j-java"
                       % (", ".join(missing), JAVA_DIR))
    return java


def _ephemeral_port_floor():
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    return 32768


def free_ports(count):
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now.

    They are picked below the kernel's ephemeral range, so a client's outgoing connection
    cannot take the port of a member that is stopped for a moment. Another process may still
    grab one before ZooKeeper binds it; ``ZooKeeper.start`` retries with new ports then.
    """
    floor = max(_ephemeral_port_floor(), 12000)
    chosen = []
    for _attempt in range(50 * count):
        if len(chosen) == count:
            break
        port = random.randrange(10000, floor)
        if port in chosen:
            continue
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        chosen.append(port)
    if len(chosen) < count:
        raise BedError("found only %d free loopback ports of the %d needed" % (len(chosen), count))
    return chosen


def four_letter(port, word, timeout=2.0, address=LOOPBACK):
    """Send a four-letter word (``srvr``, ``mntr``, ``ruok``...) to ``address``:``port``; return the reply.

    Raises OSError when nothing answers within ``timeout`` (a stopped or frozen member).
    """
    reply = []
    deadline = time.monotonic() + timeout
    with socket.create_connection((address, port), timeout=timeout) as conn:
        conn.sendall(word.encode("ascii"))
        while time.monotonic() < deadline:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply.append(chunk)
    return b"".join(reply).decode("utf-8", "replace")


def _tail(path, lines):
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(no log: %s)" % exc
    return "\n".join(text.splitlines()[-lines:])


class Member(object):
    """One ZooKeeper server process: its id, ports, directory, config and log."""

    def __init__(self, bed, myid, directory, ports):
        self.bed = bed
        self.myid = myid
        self.directory = directory
        self.client_port, self.quorum_port, self.election_port, self.secure_client_port = ports
        self.config_path = os.path.join(directory, "zoo.cfg")
        self.data_dir = os.path.join(directory, "data")
        self.log_path = os.path.join(directory, "server.log")
        self.process = None
        self.stopped_on_purpose = False
        self._log = None

    def __repr__(self):
        return "<ZooKeeper member %d on %s, pid %s>" % (self.myid, self.hosts, self.pid)

    @property
    def hosts(self):
        """``<client address>:<client port>`` of this member alone."""
        return "%s:%d" % (self.bed.client_address, self.client_port)

    @property
    def secure_hosts(self):
        """``<client address>:<secure client port>``, or None without TLS."""
        return "%s:%d" % (self.bed.client_address, self.secure_client_port) if self.secure_client_port else None

    @property
    def pid(self):
        """The JVM's PID while it runs (also while frozen), else None."""
        return self.process.pid if self.running else None

    @property
    def running(self):
        """True while the process exists, frozen or not."""
        return self.process is not None and self.process.poll() is None

    @property
    def process_state(self):
        """The kernel's state letter from /proc (``S`` sleeping, ``R`` running, ``T`` stopped), or None."""
        if not self.running:
            return None
        try:
            with open("/proc/%d/stat" % self.process.pid) as handle:
                # The command name in parentheses may contain spaces; the state follows it.
                return handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    @property
    def is_frozen(self):
        """True while the process is stopped by SIGSTOP."""
        return self.process_state in ("T", "t")

    def write_config(self, peers):
        """Write zoo.cfg and myid for this member; ``peers`` are all members of the ensemble."""
        os.makedirs(self.data_dir, exist_ok=True)
        settings = [
            ("tickTime", TICK_MS),
            # Followers must connect and sync within 2 s, and a silent one is dropped after 1 s.
            ("initLimit", 10),
            ("syncLimit", int(SETTLE_AFTER_THAW * 1000 / TICK_MS)),
            ("dataDir", self.data_dir),
            ("clientPort", self.client_port),
            ("clientPortAddress", self.bed.client_address),
            ("minSessionTimeout", MIN_SESSION_MS),
            ("maxSessionTimeout", MAX_SESSION_MS),
            ("maxClientCnxns", 0),
            ("admin.enableServer", "false"),
            ("4lw.commands.whitelist", "*"),
            # Keys ZooKeeper does not know become zookeeper.* system properties: no fsync and
            # small log files (test data is disposable), and a 1 s election connect timeout so a
            # frozen peer does not hold up a leader election for the default 5 s.
            ("forceSync", "no"),
            ("preAllocSize", 1024),
            ("cnxTimeout", 1000),
        ]
        if self.secure_client_port:
            files = self.bed.tls
            settings += [
                ("serverCnxnFactory", "org.apache.zookeeper.server.NettyServerCnxnFactory"),
                ("secureClientPort", self.secure_client_port),
                ("secureClientPortAddress", self.bed.client_address),
                ("ssl.keyStore.location", files.server_keystore),
                ("ssl.keyStore.type", "PEM"),
                ("ssl.trustStore.location", files.ca_cert),
                ("ssl.trustStore.type", "PEM"),
                ("ssl.clientAuth", self.bed.client_auth),
                # Clients connect with a certificate naming a host or a person, not an address.
                ("ssl.clientHostnameVerification", "false"),
            ]
        if len(peers) > 1:
            settings += [("server.%d" % peer.myid, "%s:%d:%d" % (LOOPBACK, peer.quorum_port, peer.election_port))
                         for peer in peers]
        with open(self.config_path, "w") as handle:
            handle.writelines("%s=%s\n" % item for item in settings)
        with open(os.path.join(self.data_dir, "myid"), "w") as handle:
            handle.write("%d\n" % self.myid)

    def launch(self):
        """Start the JVM without waiting; ``start()`` is what tests call."""
        java = _check_installation()
        classpath = ":".join(os.path.join(JAVA_DIR, jar) for jar in CLASSPATH_JARS)
        # The kernel kills the JVM if the thread that started it dies, even by SIGKILL, so an
        # interrupted run cannot leave a server behind. setpriv execs java: the PID stays the JVM's.
        guard = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        self._log = open(self.log_path, "ab")
        self.stopped_on_purpose = False
        self.process = subprocess.Popen(
            guard + [java] + list(JVM_OPTIONS) + ["-Xmx%dm" % self.bed.heap_mb, "-cp", classpath, MAIN_CLASS, self.config_path],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            # Its own session: a Ctrl-C in the demo's terminal reaches Python, which cleans up.
            start_new_session=True,
        )

    def start(self, wait=True, timeout=30.0):
        """Start this member again (same id, ports and data) and, with ``wait``, until it serves."""
        if not self.running:
            self.launch()
        if wait:
            self.wait_serving(timeout)
        return self

    def stop(self, sig=signal.SIGKILL, timeout=10.0):
        """Stop this member: SIGKILL (a crash, the default) or SIGTERM (a clean shutdown).

        Waits until the process is gone (bounded; escalates to SIGKILL). Its data stays, so
        ``start()`` brings the same member back. A no-op if it is not running.
        """
        if self.running:
            self.stopped_on_purpose = True
            self.process.send_signal(sig)
            if sig != signal.SIGKILL:
                # A frozen JVM acts on SIGTERM only once it runs again.
                self.process.send_signal(signal.SIGCONT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def freeze(self, timeout=5.0):
        """SIGSTOP the member: it keeps its sockets open but answers nobody until ``thaw()``."""
        self._signal_until(signal.SIGSTOP, lambda: self.is_frozen, "frozen", timeout)

    def thaw(self, wait=True, timeout=30.0):
        """SIGCONT a frozen member and, with ``wait``, wait until it serves steadily again.

        A member frozen for longer than ``syncLimit`` was dropped by the leader (or, if it led,
        replaced), but for a moment after SIGCONT it still reports its old mode; only then does
        it notice, rejoin and sync. So ``wait`` asks for an unbroken ``SETTLE_AFTER_THAW``
        seconds of serving, not a single answer.
        """
        self._signal_until(signal.SIGCONT, lambda: not self.is_frozen, "running again", 5.0)
        if wait:
            self.wait_serving(timeout, settle=SETTLE_AFTER_THAW)

    @contextlib.contextmanager
    def frozen(self):
        """``with member.frozen():`` freeze on entry; thaw and wait until it serves on exit.

        If the block fails, the member is thawed without waiting, so the block's error is the one
        reported (the fixtures' ``heal()`` waits for it afterwards).
        """
        self.freeze()
        try:
            yield self
        except BaseException:
            self.thaw(wait=False)
            raise
        self.thaw()

    def _signal_until(self, sig, done, wanted, timeout):
        if not self.running:
            raise BedError("member %d is not running, so it cannot be %s" % (self.myid, wanted))
        self.process.send_signal(sig)
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise BedError("member %d (pid %d) is not %s %.0fs after %s; its state is %r"
                               % (self.myid, self.process.pid, wanted, timeout, sig.name, self.process_state))
            time.sleep(0.01)

    def mode(self, timeout=1.0):
        """``standalone``, ``leader`` or ``follower`` if the member serves clients now, else None."""
        if not self.running:
            return None
        try:
            reply = four_letter(self.client_port, "srvr", timeout, self.bed.client_address)
        except OSError:
            return None
        for line in reply.splitlines():
            if line.startswith("Mode: "):
                mode = line[len("Mode: "):].strip()
                return mode if mode in SERVING_MODES else None
        return None

    def wait_serving(self, timeout=30.0, settle=0.0):
        """Wait until the member serves clients, without a break for ``settle`` seconds.

        Bounded by ``timeout``; BedError with the log tail if it does not.
        """
        deadline = time.monotonic() + timeout
        serving_since = None
        while True:
            now = time.monotonic()
            if self.mode() is None:
                serving_since = None
            else:
                serving_since = serving_since or now
                if now - serving_since >= settle:
                    return
            if not self.running:
                raise BedError("ZooKeeper member %d exited with code %s before serving; log %s:\n%s"
                               % (self.myid, self.process.returncode, self.log_path, self.log_tail()))
            if time.monotonic() > deadline:
                raise BedError("ZooKeeper member %d (pid %d, %s) does not serve within %.0fs; log %s:\n%s"
                               % (self.myid, self.process.pid, self.hosts, timeout, self.log_path, self.log_tail()))
            time.sleep(0.1)

    def log_tail(self, lines=40):
        """The last ``lines`` lines of this member's server log, for error messages."""
        return _tail(self.log_path, lines)


class ZooKeeper(object):
    """A single node (``size=1``) or an ensemble of ``size`` members on 127.0.0.1.

    ``tls=True`` adds a secure client port (Netty, PEM certificates from tests/bed/tls.py, kept
    in ``self.tls``) next to the plain one, with ``client_auth`` ``none``, ``want`` or ``need``.
    ``directory`` is owned by the bed: created if missing (it must be empty), removed by stop().
    ``client_address`` is where clients connect (default 127.0.0.1; a test fleet's bridge address).
    """

    def __init__(self, size=1, tls=False, client_auth="none", directory=None, client_address=LOOPBACK, heap_mb=128):
        if size < 1:
            raise BedError("an ensemble needs at least one member, not %d" % size)
        if client_auth not in CLIENT_AUTH_MODES:
            raise BedError("client_auth must be one of %s, not %r" % (", ".join(CLIENT_AUTH_MODES), client_auth))
        self.size = size
        self.heap_mb = heap_mb
        # Test hosts in network namespaces reach the server on their bridge's address.
        self.client_address = client_address
        self.use_tls = tls
        self.client_auth = client_auth
        self.requested_directory = directory
        self.directory = None
        self.tls = None
        self.members = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        return "<ZooKeeper %s, %d member(s), %s>" % (self.hosts or "not started", self.size, self.directory)

    @property
    def hosts(self):
        """The plain connection string of all members: ``127.0.0.1:p1,127.0.0.1:p2,...``."""
        return ",".join(member.hosts for member in self.members)

    @property
    def secure_hosts(self):
        """The TLS connection string of all members, or None without TLS."""
        if not self.use_tls:
            return None
        return ",".join(member.secure_hosts for member in self.members)

    def member(self, myid):
        """The member whose ZooKeeper ``myid`` is ``myid`` (1..size)."""
        for member in self.members:
            if member.myid == myid:
                return member
        raise BedError("no member with myid %r; this bed has myids 1..%d" % (myid, self.size))

    def _make_directory(self):
        if self.requested_directory is None:
            return tempfile.mkdtemp(prefix="zkrollout-zk-")
        os.makedirs(self.requested_directory, mode=0o700, exist_ok=True)
        if os.listdir(self.requested_directory):
            raise BedError("directory %s is not empty; the bed needs an empty or new directory, which it "
                           "removes when it stops" % self.requested_directory)
        return self.requested_directory

    def start(self, timeout=30.0, attempts=3):
        """Start every member and wait (bounded by ``timeout``) until all serve; returns self.

        If another process took one of the chosen ports first, starts again on new ports, up to
        ``attempts`` times. On failure everything started is stopped and removed, then BedError
        carries the server log.
        """
        if self.directory is not None:
            raise BedError("this bed is already started at %s" % self.directory)
        _check_installation()
        self.directory = self._make_directory()
        _live_beds.add(self)
        try:
            if self.use_tls:
                self.tls = tls_material.generate(os.path.join(self.directory, "tls"))
            for attempt in range(1, attempts + 1):
                try:
                    self._launch_members()
                    self.wait_serving(timeout)
                    return self
                except BedError:
                    if attempt == attempts or not self._lost_a_port_race():
                        raise
                    self._discard_members()
        except BaseException:
            self.stop()
            raise

    def _launch_members(self):
        ports_per_member = 4 if self.use_tls else 3
        ports = free_ports(ports_per_member * self.size)
        self.members = []
        for index in range(self.size):
            client, quorum, election = ports[index * ports_per_member:index * ports_per_member + 3]
            secure = ports[index * ports_per_member + 3] if self.use_tls else None
            directory = os.path.join(self.directory, "member-%d" % (index + 1))
            os.makedirs(directory)
            self.members.append(Member(self, index + 1, directory, (client, quorum, election, secure)))
        for member in self.members:
            member.write_config(self.members)
        for member in self.members:
            member.launch()

    def _lost_a_port_race(self):
        return any("Address already in use" in _tail(member.log_path, 200) for member in self.members)

    def _discard_members(self):
        for member in self.members:
            member.stop()
            shutil.rmtree(member.directory, ignore_errors=True)
        self.members = []

    def stop(self):
        """Kill every member this bed started (by PID) and remove the bed's directory. Idempotent."""
        for member in self.members:
            member.stop()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        self.members = []
        _live_beds.discard(self)

    def wait_serving(self, timeout=30.0):
        """Wait until every running, unfrozen member serves and, in an ensemble, a leader leads.

        Bounded by ``timeout``; BedError names the members that do not serve, with their logs.
        """
        deadline = time.monotonic() + timeout
        while True:
            expected = [m for m in self.members if m.running and not m.is_frozen]
            modes = {member.myid: member.mode() for member in expected}
            exited = [m for m in self.members if m.process is not None and not m.running and not m.stopped_on_purpose]
            serving = bool(modes) and all(modes.values()) and (self.size == 1 or "leader" in modes.values())
            if serving and not exited:
                return
            if exited or time.monotonic() > deadline:
                if exited:
                    verdict = "member(s) %s exited with code(s) %s" % (
                        ", ".join(str(m.myid) for m in exited), ", ".join(str(m.process.returncode) for m in exited))
                else:
                    verdict = "not serving within %.0fs (modes by myid: %s)" % (timeout, modes)
                problems = [m for m in self.members if m in exited or not modes.get(m.myid)]
                raise BedError("ZooKeeper at %s: %s\n%s" % (self.hosts, verdict, "\n".join(
                    "--- member %d, log %s:\n%s" % (m.myid, m.log_path, m.log_tail()) for m in problems)))
            time.sleep(0.1)

    def leader(self, timeout=10.0):
        """The member that leads now (the only member of a single node); waits, bounded, for an election."""
        deadline = time.monotonic() + timeout
        while True:
            for member in self.members:
                if member.running and not member.is_frozen and member.mode() in ("leader", "standalone"):
                    return member
            if time.monotonic() > deadline:
                raise BedError("no member of %s leads %.0fs after asking" % (self.hosts, timeout))
            time.sleep(0.1)

    def followers(self):
        """The members that follow the leader now."""
        return [m for m in self.members if m.running and not m.is_frozen and m.mode() == "follower"]

    def member_of_session(self, session_id):
        """The member that session ``session_id`` is connected to now (asks ``cons``), or None.

        Lets a fault test stop exactly the member a client (or an agent) talks to.
        """
        needle = "sid=0x%x," % session_id
        for member in self.members:
            if not member.running or member.is_frozen:
                continue
            try:
                if needle in four_letter(member.client_port, "cons", 1.0, self.client_address):
                    return member
            except OSError:
                continue
        return None

    def heal(self, timeout=30.0):
        """Thaw frozen members, start stopped ones, and wait until all serve: undo a fault test."""
        thawed = [member for member in self.members if member.is_frozen]
        # Thaw all before waiting for any: one thawed member alone may lack a quorum.
        for member in thawed:
            member.thaw(wait=False)
        for member in self.members:
            if not member.running:
                member.launch()
        for member in thawed:
            member.wait_serving(timeout, settle=SETTLE_AFTER_THAW)
        self.wait_serving(timeout)

    def close_session(self, session_id, password, timeout=10.0):
        """Close the session ``(session_id, password)`` on the server side, as an expiry would.

        A second client resumes the session with the same id and password and closes it; the
        owner's next (re)connection is told the session expired. Repeats until resuming the id
        yields a new session, which proves the old one is gone (bounded: 5 tries, ``timeout``).
        """
        deadline = time.monotonic() + timeout
        hosts = ",".join(m.hosts for m in self.members if m.running and not m.is_frozen)
        for _attempt in range(5):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            impostor = KazooClient(hosts=hosts, client_id=(session_id, password),
                                   connection_retry=KazooRetry(max_tries=3, delay=0.1))
            try:
                impostor.start(timeout=remaining)
                resumed = impostor.client_id is not None and impostor.client_id[0] == session_id
            except Exception as exc:
                raise BedError("cannot reach %s to close session 0x%x: %r" % (hosts, session_id, exc)) from exc
            finally:
                impostor.stop()
                impostor.close()
            if not resumed:
                return
        raise BedError("session 0x%x is still alive on %s after %.0fs of closing it" % (session_id, hosts, timeout))

    def expire_session(self, client, timeout=10.0):
        """Expire a started kazoo ``client``'s session on the server; return once it saw LOST.

        The client then (kazoo's default) connects again with a new session. BedError if it
        does not see LOST within ``timeout``.
        """
        if client.client_id is None:
            raise BedError("the client has no session to expire; start it first")
        lost = threading.Event()

        def on_state(state):
            # Callbacks only signal: kazoo calls them on its own thread.
            if state == KazooState.LOST:
                lost.set()
                return True
            return False

        client.add_listener(on_state)
        try:
            session_id, password = client.client_id
            self.close_session(session_id, password, timeout)
            if not lost.wait(timeout):
                raise BedError("session 0x%x was closed on the server but its client did not see LOST within %.0fs"
                               % (session_id, timeout))
        finally:
            client.remove_listener(on_state)


@atexit.register
def _stop_all_beds():
    for bed in list(_live_beds):
        bed.stop()


def _serve(args):
    bed = ZooKeeper(size=args.size, tls=args.tls, client_auth=args.client_auth, directory=args.dir)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with bed:
        print(bed.secure_hosts if args.tls else bed.hosts, flush=True)
        if args.tls:
            print("TLS files in %s (ca.pem, client.pem, client-key.pem)" % bed.tls.directory, file=sys.stderr)
        while not stopping.wait(1.0):
            dead = [m for m in bed.members if not m.running]
            if dead:
                print("ZooKeeper member(s) %s exited; stopping. Last log lines:\n%s"
                      % (", ".join(str(m.myid) for m in dead), dead[0].log_tail()), file=sys.stderr)
                return 1
    return 0


def main(argv=None):
    """Command line: ``start`` a bed, print its connection string, serve until SIGTERM/Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tests.bed.zookeeper", description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start ZooKeeper, print the hosts string, serve until SIGTERM")
    start.add_argument("--size", type=int, default=1, help="members: 1 (single node) or 3, 5... (default 1)")
    start.add_argument("--tls", action="store_true", help="print the TLS connection string; certificates in DIR/tls")
    start.add_argument("--client-auth", choices=CLIENT_AUTH_MODES, default="none",
                       help="with --tls: whether clients must show a certificate (default none)")
    start.add_argument("--dir", help="directory for config, data, logs (new or empty; removed on exit)")
    args = parser.parse_args(argv)
    try:
        return _serve(args)
    except BedError as exc:
        print("zookeeper bed: %s" % exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
