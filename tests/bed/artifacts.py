# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release artifacts of the demo service, and a local HTTP server to download them from.

``build_artifacts(directory, "A", {"1.0.0": {}, "2.0.0": {}, "3.0.0": {"broken": True}})`` writes
``A-1.0.0.tar.gz``... Each tarball holds, at its root, ``service.py`` (a copy of
``tests/bed/demo_service.py``) and ``service.json`` (service, version, startup_delay, broken).
The bytes depend only on those inputs (fixed mtimes, owners and gzip header), so a rebuild has
the same sha256. ``wrong_sha256(artifact)`` gives a well-formed checksum that does not match,
for the tests of a tampered or mispublished release.

``ArtifactServer(directory, bind="127.0.0.1")`` serves the directory over HTTP::

    with ArtifactServer(directory) as server:
        url = server.url(artifacts["2.0.0"].filename)

For hosts in network namespaces, bind it to the bridge address; ``url()`` uses the bind
address, so bind to a concrete address, not 0.0.0.0.
"""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler

from .demo_service import VERSION_PATTERN, QuietHTTPServer

DEMO_SERVICE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_service.py")
# Any fixed time will do; 2000-01-01 rather than the epoch, which some tools treat as "unset".
ARCHIVE_MTIME = 946684800
# What a version may change about the demo service (see build_artifacts).
VERSION_KNOBS = ("broken", "startup_delay")

Artifact = collections.namedtuple("Artifact", "path sha256 filename version")
Artifact.__doc__ = "One built tarball: its absolute ``path``, hex ``sha256``, bare ``filename`` and ``version``."


def artifact_filename(service, version):
    """The tarball's file name: ``<service>-<version>.tar.gz``."""
    return "%s-%s.tar.gz" % (service, version)


def build_artifacts(directory, service, versions, startup_delay=0.3):
    """Write one demo-service tarball per version into ``directory``; return ``{version: Artifact}``.

    ``versions`` maps each version to its knobs, ``{}`` for the defaults: ``broken`` (True: the
    health check always fails) and ``startup_delay`` (seconds of 503 after start; default
    ``startup_delay``). Existing files of the same name are replaced.
    """
    if not VERSION_PATTERN.match(service):
        raise ValueError("service name %r is not usable in a file name; use letters, digits and ._+-" % (service,))
    if not versions:
        raise ValueError("no versions to build for service %s" % service)
    with open(DEMO_SERVICE_SOURCE, "rb") as handle:
        program = handle.read()
    os.makedirs(directory, exist_ok=True)
    built = {}
    for version, knobs in versions.items():
        config = _service_config(service, version, knobs, startup_delay)
        tarball = _deterministic_tarball([("service.py", 0o755, program), ("service.json", 0o644, config)])
        filename = artifact_filename(service, version)
        path = os.path.abspath(os.path.join(directory, filename))
        with open(path, "wb") as handle:
            handle.write(tarball)
        built[version] = Artifact(path, hashlib.sha256(tarball).hexdigest(), filename, version)
    return built


def wrong_sha256(artifact):
    """A well-formed sha256 (64 hex digits) that is certainly not ``artifact``'s."""
    return hashlib.sha256(b"not the artifact " + artifact.sha256.encode("ascii")).hexdigest()


def _service_config(service, version, knobs, startup_delay):
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise ValueError("version %r of service %s must look like '2.0.0' (letters, digits and ._+-)" % (version, service))
    unknown = sorted(set(knobs) - set(VERSION_KNOBS))
    if unknown:
        raise ValueError("unknown knob(s) %s for %s %s; known: %s"
                         % (", ".join(unknown), service, version, ", ".join(sorted(VERSION_KNOBS))))
    config = {"service": service, "version": version, "startup_delay": startup_delay, "broken": False}
    config.update(knobs)
    if not isinstance(config["broken"], bool):
        raise ValueError("%s %s: broken must be True or False, got %r" % (service, version, config["broken"]))
    delay = config["startup_delay"]
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise ValueError("%s %s: startup_delay must be a number of seconds >= 0, got %r" % (service, version, delay))
    return (json.dumps(config, sort_keys=True, indent=2) + "\n").encode("utf-8")


def _deterministic_tarball(members):
    """A .tar.gz of ``(name, mode, bytes)`` members at the archive root, identical for identical input."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, mode, content in members:
            entry = tarfile.TarInfo(name)
            entry.size = len(content)
            entry.mode = mode
            entry.mtime = ARCHIVE_MTIME
            entry.uid = entry.gid = 0
            entry.uname = entry.gname = "root"
            tar.addfile(entry, io.BytesIO(content))
    compressed = io.BytesIO()
    # tarfile's own "w:gz" stamps the current time and the file name into the gzip header.
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as stream:
        stream.write(archive.getvalue())
    return compressed.getvalue()


class _QuietFileHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        # Quiet: one line per download would clutter test output and demo terminals.
        pass


class ArtifactServer:
    """Serves the files of ``directory`` over HTTP from a background thread.

    ``port=0`` picks a free port at ``start()``; ``port`` then holds it, and a restart reuses it,
    so published URLs stay valid. A context manager: ``with ArtifactServer(d) as server:``.
    """

    def __init__(self, directory, bind="127.0.0.1", port=0):
        self.directory = os.path.abspath(directory)
        self.bind = bind
        self.port = port
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = "serving" if self.running else "stopped"
        return "<ArtifactServer %s on %s:%d, %s>" % (self.directory, self.bind, self.port, state)

    @property
    def running(self):
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    def start(self):
        """Listen and serve in a daemon thread; return self. Raises OSError if the port is taken."""
        if self.running:
            raise RuntimeError("%r is already running" % self)
        if not os.path.isdir(self.directory):
            raise FileNotFoundError("artifact directory %s does not exist; build the artifacts first" % self.directory)
        handler = functools.partial(_QuietFileHandler, directory=self.directory)
        self._server = QuietHTTPServer((self.bind, self.port), handler)
        self.port = self._server.server_address[1]
        # A short poll interval: stop() waits for serve_forever() to notice the shutdown request.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="artifact-server-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop serving and close the port (bounded by ``timeout``); a no-op when not running."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        thread.join(timeout)

    def url(self, filename):
        """The download URL of ``filename`` (a name in the served directory)."""
        if not self.running:
            raise RuntimeError("%r has no URLs; start() it first" % self)
        return "http://%s:%d/%s" % (self.bind, self.port, urllib.parse.quote(filename))
