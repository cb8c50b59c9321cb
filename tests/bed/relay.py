# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A TCP relay on loopback between one client and a ZooKeeper member, to break that client's connection at will.

``Relay(target_host, target_port)`` listens on a free 127.0.0.1 port (``relay.hosts`` is the
connection string to give the client) and pumps bytes both ways. Faults, for one client only,
with the server and every other session untouched:

- ``hold()``: requests from the client stay in the relay (the server never sees them), answers
  still flow; the client's requests are then *in flight* with no answer;
- ``cut()``: close every relayed connection and refuse new ones (held requests are dropped), so
  the client is disconnected (SUSPENDED) and cannot reconnect; its session lives on the server
  until the session timeout;
- ``restore()``: accept and relay again.

``close()`` ends the relay's threads and sockets. Everything runs in this process, on loopback.
"""

from __future__ import annotations

import socket
import threading


class Relay(object):
    """Relay 127.0.0.1:<port> to ``target``; see the module docstring for the faults."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, int(target_port))
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs = []
        self._holding = threading.Event()
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._acceptor.start()

    @property
    def hosts(self):
        """The connection string a client uses to go through the relay."""
        return "127.0.0.1:%d" % self.port

    def hold(self):
        """Keep the client's requests in the relay from now on (answers still reach it)."""
        self._holding.set()

    def cut(self):
        """Close every relayed connection and refuse new ones; held requests are dropped."""
        self._refusing.set()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _close(sock)
        self._holding.clear()

    def restore(self):
        """Relay again: new connections are accepted."""
        self._holding.clear()
        self._refusing.clear()

    def close(self):
        """Stop relaying and release every socket."""
        self._closed.set()
        self.cut()
        _close(self._listener)
        self._acceptor.join(timeout=2.0)

    def _accept(self):
        while not self._closed.is_set():
            try:
                client, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing.is_set():
                _close(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), name="relay-up", daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), name="relay-down", daemon=True).start()

    def _pump(self, source, sink, upstream):
        held = []
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upstream and self._holding.is_set():
                    held.append(data)
                    continue
                for chunk in held + [data]:
                    sink.sendall(chunk)
                held = []
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
