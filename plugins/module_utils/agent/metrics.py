# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Prometheus text endpoint over the agent's status (loopback by default)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _label(value):
    """A label value escaped as the exposition format wants: backslash, double quote, line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(status):
    """Prometheus exposition text for one status dict (see Agent._write_status)."""
    host = _label(status.get("host", ""))
    lines = [
        "# HELP zkrollout_agent_connected 1 while the ZooKeeper session is CONNECTED.",
        "# TYPE zkrollout_agent_connected gauge",
        'zkrollout_agent_connected{host="%s"} %d' % (host, status.get("connection") == "CONNECTED"),
        "# HELP zkrollout_service_info Version the instance runs (1 per running version).",
        "# TYPE zkrollout_service_info gauge",
    ]
    services = status.get("services", {})
    for name, service in sorted(services.items()):
        if service["running"]:
            lines.append('zkrollout_service_info{host="%s",service="%s",version="%s"} 1' % (host, _label(name), _label(service["running"])))
    for metric, help_text, value in (
        ("zkrollout_service_healthy", "1 while the health check passes (after rise/fall).", lambda s: int(bool(s["healthy"]))),
        ("zkrollout_service_switching", "1 while a switch or rollback is unfinished.", lambda s: int(s["progress"].get("phase", "idle") != "idle")),
        ("zkrollout_last_decision_timestamp_seconds", "When the last decision was taken.", lambda s: (s["decision"] or {}).get("at", 0)),
    ):
        lines += ["# HELP %s %s" % (metric, help_text), "# TYPE %s gauge" % metric]
        lines += ['%s{host="%s",service="%s"} %s' % (metric, host, _label(name), value(service)) for name, service in sorted(services.items())]
    lines += ["# HELP zkrollout_decisions_total Decisions taken, by action.", "# TYPE zkrollout_decisions_total counter"]
    lines += ['zkrollout_decisions_total{host="%s",action="%s"} %d' % (host, _label(action), count)
              for action, count in sorted(status.get("decisions_total", {}).items())]
    return "\n".join(lines) + "\n"


class MetricsServer(object):
    """Serves ``render_metrics(get_status())`` on ``/metrics`` from a daemon thread."""

    def __init__(self, get_status, bind="127.0.0.1", port=0):
        def handler_factory(*args):
            return _Handler(get_status, *args)

        self.server = ThreadingHTTPServer((bind, port), handler_factory)
        self.thread = threading.Thread(target=self.server.serve_forever, name="zkrollout-metrics", daemon=True)

    @property
    def port(self):
        """The port actually bound (useful with port 0)."""
        return self.server.server_address[1]

    def start(self):
        """Start serving."""
        self.thread.start()
        return self

    def stop(self):
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, get_status, *args):
        self.get_status = get_status
        super().__init__(*args)

    def do_GET(self):  # noqa: N802 - the name http.server dispatches to
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics is served")
            return
        body = render_metrics(self.get_status()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        """Scrapes are not worth a log line each."""
