#!/usr/bin/env python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A tiny HTTP service to roll out in demos and tests: one script for every version.

Standalone on purpose (standard library only, Python 3.8+, no project imports):
``tests/bed/artifacts.py`` copies this file into every artifact tarball as ``service.py``, next
to a ``service.json`` that says what this copy is::

    {"service": "A", "version": "2.0.0", "startup_delay": 0.3, "broken": false}

Run it as ``python3 service.py --port P [--bind 127.0.0.1] [--name A] [--config FILE]``;
``--config`` defaults to the ``service.json`` beside the script, ``--name`` overrides its
``service``.

- ``GET /health``: 503 for ``startup_delay`` seconds after the port opens (so a health check
  needs its "rise" logic), then 200 with ``{"service", "version", "pid", "status"}``; always
  500 if ``broken``; 503 again as soon as a shutdown begins.
- ``GET /version``: the version as plain text (also while starting or broken).
- SIGTERM or SIGINT: exit with status 0 within milliseconds.

Connections are kept alive (HTTP/1.1), so a monitor polling every few milliseconds reuses one
connection instead of leaving thousands of sockets in TIME_WAIT. The listening socket has
SO_REUSEADDR, so a restart on the same port works at once. Nothing is logged per request.
"""

import argparse
import json
import os
import re
import signal
import socketserver
import sys
import time
from http import HTTPStatus
from http.server import ThreadingHTTPServer

# The agent validates versions with the same pattern before it switches anything.
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
CONFIG_NAME = "service.json"
# An idle kept-alive connection is closed after this long, so forgotten clients hold no thread.
IDLE_CONNECTION_SECONDS = 30
# The longest request line or header line read, and the most header lines, before a request is refused.
_LINE_LIMIT = 8192
_HEADER_LIMIT = 100


class ConfigError(Exception):
    """service.json (or the command line) does not describe a service this script can run."""


class QuietHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP server that restarts on a busy port at once and stays quiet.

    Also used by ``tests/bed/artifacts.py`` for the artifact server.
    """

    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self):
        # HTTPServer.server_bind resolves the bind address with getfqdn(), which in a network
        # namespace without DNS can stall start-up for seconds; nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # Clients that hang up mid-reply (a monitor timing out, a killed health checker) are
        # routine in a rollout, not errors worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Instance:
    """What this process is (service, version, knobs) and where it is in its life."""

    def __init__(self, service, version, startup_delay=0.0, broken=False):
        self.service = service
        self.version = version
        self.startup_delay = startup_delay
        self.broken = broken
        self.healthy_from = None
        self.stopping = False

    def listening(self):
        """Start the start-up delay clock: the port is open from now on."""
        self.healthy_from = time.monotonic() + self.startup_delay

    def health(self):
        """The HTTP status and JSON document that ``GET /health`` answers right now."""
        if self.broken:
            status, state = 500, "broken"
        elif self.stopping:
            status, state = 503, "stopping"
        elif self.healthy_from is None or time.monotonic() < self.healthy_from:
            status, state = 503, "starting"
        else:
            status, state = 200, "ok"
        document = {"service": self.service, "version": self.version, "pid": os.getpid(), "status": state}
        return status, document


class HealthHandler(socketserver.StreamRequestHandler):
    """Serves ``GET /health`` and ``GET /version`` of the server's ``instance``, HTTP/1.1 with keep-alive.

    Only the request line and the ``Connection`` and ``Content-Length`` headers are read:
    ``BaseHTTPRequestHandler`` parses every request's headers with the email package and formats
    a date for every answer, which made the demo services the busiest processes of a benchmark
    fleet (a monitor samples each instance every ~20 ms).
    """

    timeout = IDLE_CONNECTION_SECONDS
    # Each answer is one write, sent without Nagle's wait: otherwise each answer on a kept-alive
    # connection waits ~40 ms for the client's delayed ACK, and a monitor would sample 20 times a
    # second instead of 200.
    disable_nagle_algorithm = True

    def handle(self):
        while True:
            try:
                request = self._read_request()
            except (OSError, ValueError):
                return
            if request is None:
                return
            method, path, close = request
            self.wfile.write(self._answer(method, path, close))
            if close:
                return

    def _read_request(self):
        """``(method, path, close)`` of the next request, None when the client hung up; ValueError if it is not HTTP."""
        line = self.rfile.readline(_LINE_LIMIT)
        if not line:
            return None
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise ValueError("not an HTTP/1.x request line: %r" % line[:80])
        close, length = parts[2] == b"HTTP/1.0", 0
        for _count in range(_HEADER_LIMIT):
            header = self.rfile.readline(_LINE_LIMIT)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _colon, value = header.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"connection":
                close = value == b"close" or (close and value != b"keep-alive")
            elif name == b"content-length":
                length = int(value)
        else:
            raise ValueError("more than %d header lines" % _HEADER_LIMIT)
        if length:
            self.rfile.read(length)
        return parts[0].decode("latin-1"), parts[1].decode("latin-1").split("?", 1)[0], close

    def _answer(self, method, path, close):
        instance = self.server.instance
        if method != "GET":
            status, text, content_type = 405, "only GET is served\n", "text/plain; charset=utf-8"
        elif path == "/health":
            status, document = instance.health()
            text, content_type = json.dumps(document, sort_keys=True), "application/json"
        elif path == "/version":
            status, text, content_type = 200, instance.version, "text/plain; charset=utf-8"
        else:
            status, text, content_type = 404, "no such endpoint %s; try /health or /version\n" % path, "text/plain; charset=utf-8"
        body = text.encode("utf-8")
        # HTTP/1.1 keep-alive needs the length of every body.
        head = "HTTP/1.1 %d %s\r\nServer: zkrollout-demo-service\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            status, HTTPStatus(status).phrase, content_type, len(body), "Connection: close\r\n" if close else "")
        return head.encode("latin-1") + body


def load_instance(config_path, name=None):
    """Read ``service.json`` at ``config_path`` into an ``Instance``; ``name`` overrides its service.

    Raises ConfigError with a sentence saying what is wrong and where.
    """
    try:
        with open(config_path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot read %s: %s" % (config_path, exc)) from exc
    if not isinstance(config, dict):
        raise ConfigError("%s must hold a JSON object, not %s" % (config_path, type(config).__name__))
    service = name or config.get("service")
    version = config.get("version")
    startup_delay = config.get("startup_delay", 0.0)
    broken = config.get("broken", False)
    if not isinstance(service, str) or not VERSION_PATTERN.match(service):
        raise ConfigError("%s: 'service' must be a name like 'A' or 'web-1' (or pass --name), got %r"
                          % (config_path, service))
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise ConfigError("%s: 'version' must be a string like '2.0.0', got %r" % (config_path, version))
    if isinstance(startup_delay, bool) or not isinstance(startup_delay, (int, float)) or startup_delay < 0:
        raise ConfigError("%s: 'startup_delay' must be a number of seconds >= 0, got %r" % (config_path, startup_delay))
    if not isinstance(broken, bool):
        raise ConfigError("%s: 'broken' must be true or false, got %r" % (config_path, broken))
    return Instance(service, version, float(startup_delay), broken)


def _parse_args(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--name", help="service name, overriding the one in the config")
    parser.add_argument("--config", default=os.path.join(here, CONFIG_NAME),
                        help="JSON file with service, version, startup_delay, broken (default: %s beside this script)"
                        % CONFIG_NAME)
    return parser.parse_args(argv)


def main(argv=None):
    """Serve until SIGTERM or SIGINT; return the exit status (2: bad config, 1: cannot listen)."""
    args = _parse_args(argv)
    instance = None

    def on_stop_signal(signum, frame):
        if instance is not None:
            instance.stopping = True
        # At once, without the interpreter's own shutdown: that takes 15-40 ms, during which a
        # request on a kept-alive connection hangs instead of failing, so a monitor would see the
        # instance go down that much later than it did. Nothing is left to flush (prints flush).
        os._exit(0)

    # Installed before anything else, so a SIGTERM during start-up also exits with status 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_stop_signal)
    try:
        instance = load_instance(args.config, args.name)
    except ConfigError as exc:
        print("demo service: %s" % exc, file=sys.stderr)
        return 2
    try:
        server = QuietHTTPServer((args.bind, args.port), HealthHandler)
    except OSError as exc:
        print("demo service %s %s: cannot listen on %s:%d: %s"
              % (instance.service, instance.version, args.bind, args.port, exc), file=sys.stderr)
        return 1
    server.instance = instance
    instance.listening()
    print("demo service %s %s listening on %s:%d (pid %d), healthy after %.1fs%s"
          % (instance.service, instance.version, args.bind, args.port, os.getpid(), instance.startup_delay,
             ", never: broken" if instance.broken else ""), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
