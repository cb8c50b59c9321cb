# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Service drivers: start, stop and find the running instance of one service.

``exec`` supervises the process itself (hosts without systemd, such as test hosts): the
process runs in its own session, so it survives an agent restart and is adopted again
through the pid in the local state. ``systemd`` runs one unit per version, named by the
``unit`` template of the local config (for example ``app@{version}.service``).
Every argv comes from the local config; only validated versions are substituted into it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

from ..core.model import validate_version


class DriverError(Exception):
    """An instance could not be started or stopped; the message names the service and command."""


def _process_alive(pid, marker, starting=False):
    """True if ``pid`` runs (not a zombie) and its command line contains the path ``marker``.

    The path must end there or continue with ``/``: versions/2.0.0 is not versions/2.0.0-rc1.
    With ``starting`` (a pid we recorded ourselves), an empty command line counts as ours.
    """
    try:
        with open("/proc/%d/stat" % pid) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            cmdline = handle.read()
        # Empty while the process is still exec'ing (right after a start): it runs, its command
        # line is just not there yet. Judging it gone would roll back a healthy upgrade.
        return (starting and not cmdline) or re.search(re.escape(marker.encode()) + b"(?=/|\\x00|$)", cmdline) is not None
    except (OSError, IndexError):
        return False


def _running_instance(marker):
    """The pid of a live session leader whose command line contains ``marker``, or None.

    Every instance the exec driver starts leads its own session, so this finds one started by
    an agent that died before it could record the pid.
    """
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            try:
                leader = os.getsid(pid) == pid
            except OSError:
                continue
            if leader and _process_alive(pid, marker):
                return pid
    return None


class ExecDriver(object):
    """Runs the configured command as a child process in its own session."""

    def __init__(self, config, log_dir):
        self.config = config
        self.log_dir = log_dir
        self._children = {}

    def running_version(self, progress):
        """The version whose process is alive, per the pid recorded in ``progress``; else None."""
        if not progress.pid or not progress.version:
            return None
        child = self._children.get(progress.pid)
        if child is not None:
            # Our own child: its Popen handle is the truth, whatever /proc shows this instant.
            if child.poll() is None:
                return progress.version
            del self._children[progress.pid]
            return None
        return progress.version if _process_alive(progress.pid, self.config.version_dir(progress.version), starting=True) else None

    def start(self, version):
        """Start ``version``, or adopt the instance of it that already runs; return its pid."""
        running = _running_instance(self.config.version_dir(version))
        if running is not None:
            return running
        argv = [self.config.render(item, version) for item in self.config.command]
        os.makedirs(self.log_dir, exist_ok=True)
        log_path = os.path.join(self.log_dir, "%s.log" % self.config.name)
        env = dict(os.environ, **self.config.env)
        try:
            with open(log_path, "ab") as log:
                child = subprocess.Popen(argv, cwd=self.config.version_dir(version), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            raise DriverError("service %s: cannot start %s with %s: %s" % (self.config.name, version, argv, exc)) from exc
        self._children[child.pid] = child
        return child.pid

    def stop(self, progress):
        """Stop the instance recorded in ``progress``: SIGTERM, then SIGKILL after ``stop_timeout``."""
        pid = progress.pid
        if not pid or self.running_version(progress) is None:
            return
        for sig, grace in ((signal.SIGTERM, self.config.stop_timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if self.running_version(progress) is None:
                    self._children.pop(pid, None)
                    return
                time.sleep(0.02)
        raise DriverError("service %s: process %d survived SIGKILL" % (self.config.name, pid))


class SystemdDriver(object):
    """One systemd unit per version, rendered from the ``unit`` template."""

    def __init__(self, config, log_dir=None, systemctl="systemctl"):
        self.config = config
        self.systemctl = systemctl

    def _unit(self, version):
        return self.config.render(self.config.unit, version)

    def _run(self, *args):
        try:
            return subprocess.run([self.systemctl] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=self.config.stop_timeout + 30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DriverError("service %s: systemctl %s failed: %s" % (self.config.name, " ".join(args), exc)) from exc

    def running_version(self, progress):
        """The recorded version if its unit is active, else None."""
        if not progress.version:
            return None
        return progress.version if self._run("is-active", "--quiet", self._unit(progress.version)).returncode == 0 else None

    def _unit_command(self, verb, version):
        result = self._run(verb, self._unit(version))
        if result.returncode != 0:
            raise DriverError("service %s: systemctl %s %s failed: %s"
                              % (self.config.name, verb, self._unit(version), result.stdout.decode(errors="replace").strip()))

    def start(self, version):
        """Start the unit of ``version``; systemd tracks the process, so no pid is returned."""
        self._unit_command("start", version)
        return None

    def stop(self, progress):
        """Stop the unit of the recorded version."""
        if progress.version:
            self._unit_command("stop", progress.version)


class ExternalDriver(object):
    """A service something else starts, stops and upgrades; the agent only reads its version.

    The running version is the content of ``version_file`` (validated like any version); the
    health check decides whether it counts as healthy.
    """

    def __init__(self, config, log_dir=None):
        self.config = config
        self._read = (None, None)

    def running_version(self, progress):
        """The version in ``version_file``, or None when it is missing or not a valid version.

        The file is read again only when its inode, size or modification time changed (the
        health worker asks every interval), and always while it is less than a second old, so
        two writes within one timestamp tick are never mistaken for one.
        """
        try:
            stat = os.stat(self.config.version_file)
            key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if key == self._read[0]:
                return self._read[1]
            with open(self.config.version_file) as handle:
                version = validate_version(handle.read().strip())
        except (OSError, ValueError):
            return None
        self._read = (key, version) if time.time() - stat.st_mtime > 1.0 else (None, None)
        return version

    def start(self, version):
        """Refused: the agent never starts an externally managed service."""
        raise DriverError("service %s is managed externally; the agent does not start it" % self.config.name)

    def stop(self, progress):
        """Refused: the agent never stops an externally managed service."""
        raise DriverError("service %s is managed externally; the agent does not stop it" % self.config.name)


def make_driver(config, log_dir):
    """The driver named by the service's config."""
    return {"exec": ExecDriver, "systemd": SystemdDriver, "external": ExternalDriver}[config.driver](config, log_dir)
