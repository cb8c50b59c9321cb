# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one Prometheus HTTP endpoint of the collection, on ``prometheus_client``.

Both the host agent (``agent.metrics``) and the fleet exporter (``controller.exporter``) serve
a private ``CollectorRegistry`` through ``MetricsServer``: ``/metrics`` only, in the text format
or in OpenMetrics when the scraper asks for it. Their collectors build every family when
scraped, from the state they are handed, so nothing lives in ``prometheus_client``'s global
registry. Importing this module without ``prometheus_client`` works; ``MetricsServer`` and
``render`` then raise MetricsUnavailable saying what to install.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Collector is re-exported: the collectors subclass it from here, with or without the library.
try:
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder, generate_latest
    from prometheus_client.registry import Collector  # pylint: disable=unused-import

    PROMETHEUS_IMPORT_ERROR = None
except ImportError as exc:  # reported by require_prometheus_client() where an endpoint is actually needed
    PROMETHEUS_IMPORT_ERROR = exc

    class Collector(object):
        """Stands in for prometheus_client's base class so collectors import without the library."""


class MetricsUnavailable(Exception):
    """prometheus_client is not installed where an endpoint was asked for; the message says what to install."""


def require_prometheus_client(what):
    """Raise MetricsUnavailable naming ``what`` (the setting that asked for metrics) if the library is missing."""
    if PROMETHEUS_IMPORT_ERROR is not None:
        raise MetricsUnavailable("%s needs the prometheus_client Python library, which this interpreter cannot import (%s); "
                                 "install it (pip install prometheus_client; the zkrollout.dc.agent role installs it into the "
                                 "agent's venv)" % (what, PROMETHEUS_IMPORT_ERROR))


def registry_of(collector, what="a metrics endpoint"):
    """A private registry holding only ``collector`` (never scraped at registration)."""
    require_prometheus_client(what)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry):
    """The Prometheus text exposition of ``registry``, as ``str``."""
    require_prometheus_client("rendering metrics")
    return generate_latest(registry).decode("utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer(object):
    """Serves ``registry`` on ``http://<bind>:<port>/metrics`` from a daemon thread; ``start()``/``stop()``."""

    def __init__(self, registry, bind="127.0.0.1", port=0, name="zkrollout-metrics"):
        def handler_factory(*args):
            return _Handler(registry, *args)

        self.server = (_Server6 if ":" in bind else _Server)((bind, port), handler_factory)
        self.thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)

    @property
    def port(self):
        """The port actually bound (useful with port 0)."""
        return self.server.server_address[1]

    @property
    def url(self):
        """The metrics URL, as a scraper would use it."""
        host = self.server.server_address[0]
        return "http://%s:%d/metrics" % ("[%s]" % host if ":" in host else host, self.port)

    def start(self):
        """Start serving; returns self."""
        self.thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, registry, *args):
        self.registry = registry
        super().__init__(*args)

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics is served")
            return
        encoder, content_type = choose_encoder(self.headers.get("Accept"))
        body = encoder(self.registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        """Scrapes are not worth a log line each."""
