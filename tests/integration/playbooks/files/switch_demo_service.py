#!/usr/bin/env python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Switch this host's demo service to another version: the work of a controller-driven upgrade.

Run on a test host (by ``ansible.builtin.script`` over SSH, or by the test harness inside the
host's namespace for the first start)::

    switch_demo_service.py --install-dir D --port P --bind ADDR --version V --url URL --sha256 HEX
                           [--work SECONDS] [--fail]

1. download the artifact, verify its sha256 and unpack it into ``D/versions/V`` (once);
2. if ``D/VERSION`` names V and the instance answers healthy, stop here (a re-run changes nothing);
3. stop the running instance: SIGTERM to the pid in ``D/service.pid``, SIGKILL after 5 s;
4. sleep ``--work`` seconds while the instance is down (the per-host work of an upgrade:
   migrations, cache warm-up), so every host's downtime is known;
5. with ``--fail``, exit 1 now and leave the instance down: a failed upgrade;
6. write ``D/VERSION`` (read by the zkrollout agent's ``external`` driver), start V detached in a
   session of its own (output to ``D/service.log``) and record its pid;
7. wait until ``/health`` answers 200 (at most 30 s), else exit 1.

The last line printed is ``changed`` or ``unchanged``. Standard library only.
"""

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

STOP_TIMEOUT = 5.0
HEALTH_TIMEOUT = 30.0
# Artifact server and health endpoint are on the test network: never through a proxy.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def step(message):
    print(message, flush=True)


def unpack(install_dir, version, url, sha256):
    """``D/versions/V``, downloaded, verified and unpacked unless it is there already."""
    target = os.path.join(install_dir, "versions", version)
    if os.path.isdir(target):
        return target
    with DIRECT.open(url, timeout=30) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise SystemExit("artifact %s has sha256 %s, expected %s: refusing to install it" % (url, digest, sha256))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(target))
    archive = os.path.join(staging, "artifact.tar.gz")
    with open(archive, "wb") as handle:
        handle.write(payload)
    unpacked = os.path.join(staging, "tree")
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in member.name.split("/"):
                raise SystemExit("artifact %s: refusing member %r (only plain files inside the archive)" % (url, member.name))
        tar.extractall(unpacked)
    os.rename(unpacked, target)
    shutil.rmtree(staging)
    step("unpacked %s into %s" % (url, target))
    return target


def healthy(bind, port):
    try:
        with DIRECT.open("http://%s:%d/health" % (bind, port), timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def read_file(path):
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return None


def write_atomically(path, text):
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def running_pid(install_dir):
    """The pid in ``service.pid`` if that process is alive and is this install's demo service."""
    pid = read_file(os.path.join(install_dir, "service.pid"))
    if not pid or not pid.isdigit():
        return None
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as handle:
            command = handle.read()
        with open("/proc/%s/stat" % pid) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None
    except (OSError, IndexError):
        return None
    return int(pid) if install_dir.encode() in command and b"service.py" in command else None


def stop(install_dir):
    pid = running_pid(install_dir)
    if pid is None:
        step("no instance running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running_pid(install_dir) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    step("stopped pid %d" % pid)


def start(install_dir, version_dir, port, bind):
    with open(os.path.join(install_dir, "service.log"), "ab") as log:
        process = subprocess.Popen(["/usr/bin/python3", os.path.join(version_dir, "service.py"), "--port", str(port), "--bind", bind],
                                   cwd=version_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    write_atomically(os.path.join(install_dir, "service.pid"), "%d\n" % process.pid)
    step("started pid %d" % process.pid)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--install-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--sha256", required=True)
    parser.add_argument("--work", type=float, default=0.0, help="seconds of work while the instance is down")
    parser.add_argument("--fail", action="store_true", help="fail after stopping, leaving the instance down")
    args = parser.parse_args(argv)
    install_dir = os.path.abspath(args.install_dir)
    os.makedirs(install_dir, exist_ok=True)
    version_dir = unpack(install_dir, args.version, args.url, args.sha256)
    version_file = os.path.join(install_dir, "VERSION")
    if read_file(version_file) == args.version and running_pid(install_dir) and healthy(args.bind, args.port):
        step("already running %s" % args.version)
        step("unchanged")
        return 0
    stop(install_dir)
    time.sleep(args.work)
    if args.fail:
        step("failing on purpose after %.2fs of work; the instance stays down" % args.work)
        return 1
    write_atomically(version_file, args.version + "\n")
    start(install_dir, version_dir, args.port, args.bind)
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while not healthy(args.bind, args.port):
        if time.monotonic() > deadline:
            step("%s did not answer healthy within %.0fs; see %s" % (args.version, HEALTH_TIMEOUT, os.path.join(install_dir, "service.log")))
            return 1
        time.sleep(0.05)
    step("%s healthy after %.2fs of work" % (args.version, args.work))
    step("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
