# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ZooKeeper client factory shared by modules, controller plugins and the agent.

``ConnectionOptions`` is the one description of a connection (hosts, chroot, timeouts, bounded
retries, TLS, digest/SASL auth, default ACLs or the least-privilege ACL profile); ``connect()``
turns it into a started kazoo client or raises ZkConnectionError with one sentence naming the
hosts and the cause. With an ACL profile, ``apply_acl_profile`` gives every node the client
creates the ACL that core/acl.py defines for its kind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import threading
import weakref
from dataclasses import dataclass, field

from ..core.acl import PERMISSIONS, AclError, AclProfile
from ..core.layout import DEFAULT_ROOT, HOST, Layout, LayoutError, check_root
from ..core.model import DEFAULT_JUTE_MAXBUFFER

# The exception classes are re-exported: the rest of the collection catches them from here.
try:
    from kazoo.client import KazooClient
    from kazoo.exceptions import EXCEPTIONS as _KAZOO_ERRORS
    from kazoo.exceptions import (  # pylint: disable=unused-import
        BadVersionError,
        InvalidACLError,
        KazooException,
        LockTimeout,
        NoAuthError,
        NodeExistsError,
        NoNodeError,
        RolledBackError,
        UnimplementedError,
    )
    from kazoo.handlers.threading import KazooTimeoutError
    from kazoo.protocol.paths import _prefix_root
    from kazoo.protocol.serialization import (
        Create,
        Create2,
        GetChildren,
        GetData,
        MultiHeader,
        Transaction,
        int_struct,
        multiheader_struct,
        read_buffer,
        read_string,
        stat_struct,
    )
    from kazoo.protocol.states import ZnodeStat
    from kazoo.retry import KazooRetry
    from kazoo.security import ACL, Id, Permissions, make_acl, make_digest_acl

    KAZOO_IMPORT_ERROR = None
except ImportError as exc:  # reported by require_kazoo() where a client is actually needed
    KAZOO_IMPORT_ERROR = exc

    # Stand-ins, so the store and the agent import (and ``except`` clauses work) without kazoo.
    class KazooException(Exception):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class BadVersionError(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class LockTimeout(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class NodeExistsError(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class NoAuthError(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class NoNodeError(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class RolledBackError(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class KazooTimeoutError(Exception):
        """Stands in for kazoo's class so this module imports without kazoo."""

    class UnimplementedError(KazooException):
        """Stands in for kazoo's class so this module imports without kazoo."""

# What callers outside the store catch; the store is the only code that imports kazoo.
ZK_ERRORS = (KazooException, KazooTimeoutError)

DEFAULT_HOSTS = "127.0.0.1:2181"
ACL_PERMISSIONS = {"r": "read", "w": "write", "c": "create", "d": "delete", "a": "admin"}
_HOST_RE = re.compile(r"\A(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+)):(?P<port>[0-9]{1,5})\Z")


class ZkConnectionError(Exception):
    """ZooKeeper could not be reached or the options are unusable; the message says what to do."""


def require_kazoo():
    """Raise ZkConnectionError if the kazoo library is missing."""
    if KAZOO_IMPORT_ERROR is not None:
        raise ZkConnectionError(
            "the kazoo Python library is required on this host (%s); install it with "
            "'pip install kazoo'" % KAZOO_IMPORT_ERROR
        )


def parse_hosts(hosts):
    """Split a connection string into ``([(host, port), ...], chroot)``.

    Accepts ``h1:2181,h2:2181/chroot`` or a list of ``host:port`` strings; IPv6 in brackets.
    """
    if isinstance(hosts, (list, tuple)):
        hosts = ",".join(str(h).strip() for h in hosts)
    if not isinstance(hosts, str) or not hosts.strip():
        raise ZkConnectionError("zk_hosts is empty; give a comma-separated host:port list such as 127.0.0.1:2181")
    servers, chroot = hosts.strip(), None
    slash = servers.find("/")
    if slash >= 0:
        servers, chroot = servers[:slash], servers[slash:]
        try:
            chroot = check_root(chroot)
        except ValueError as exc:
            raise ZkConnectionError("invalid chroot in zk_hosts %r: %s" % (hosts, exc)) from exc
    parsed = []
    for item in servers.split(","):
        match = _HOST_RE.match(item.strip())
        if not match or not 0 < int(match.group("port")) < 65536:
            raise ZkConnectionError(
                "invalid ZooKeeper address %r in zk_hosts %r; expected host:port, for example "
                "127.0.0.1:2181 or [::1]:2181" % (item.strip(), hosts)
            )
        parsed.append((match.group("v6") or match.group("name"), int(match.group("port"))))
    return parsed, chroot


def _masked(entry):
    """An ACL entry fit for a message: a digest password is never shown."""
    if isinstance(entry, str) and entry.startswith("digest:"):
        parts = entry.split(":")
        return ":".join(parts[:2] + ["***"] + parts[-1:]) if len(parts) > 3 else "digest:***"
    return entry


def parse_acl(entry):
    """Parse ``scheme:id:perms`` (``world:anyone:r``, ``digest:user:password:cdrwa``, ``ip:10.0.0.1:r``).

    For ``digest`` the id is ``user:password`` and is hashed here, so no cleartext reaches the
    server. Returns a kazoo ACL.
    """
    require_kazoo()
    parts = entry.split(":") if isinstance(entry, str) else []
    if len(parts) < 3 or not parts[-1] or any(p not in ACL_PERMISSIONS for p in parts[-1]):
        raise ZkConnectionError(
            "invalid ACL %r; expected scheme:id:perms with perms from 'rwcda', for example "
            "world:anyone:r or digest:deployer:secret:cdrwa" % (_masked(entry),)
        )
    scheme, ident, perms = parts[0], ":".join(parts[1:-1]), parts[-1]
    flags = {ACL_PERMISSIONS[p]: True for p in perms}
    if scheme == "digest":
        if ident.count(":") != 1:
            raise ZkConnectionError("invalid digest ACL %r; expected digest:user:password:perms" % (_masked(entry),))
        user, password = ident.split(":")
        return make_digest_acl(user, password, **flags)
    return make_acl(scheme, ident, **flags)


@dataclass(frozen=True)
class ConnectionOptions(object):
    """Everything needed to open a ZooKeeper session.

    ``timeout`` bounds connecting; ``session_timeout`` is negotiated with the server;
    ``retries``/``retry_deadline`` bound every retried command; ``connection_retries`` of -1
    reconnects forever (the agent), a positive number gives up (modules). ``acl_profile`` (a
    mapping of the lists ``deployer``, ``agents``, ``readers``; kept as a core.acl.AclProfile)
    replaces the one ``acl`` of every created node by one per node kind. ``jute_maxbuffer`` is
    the servers' request size limit (see model.DEFAULT_JUTE_MAXBUFFER): writers refuse a larger
    transaction before sending it.
    """

    hosts: str = DEFAULT_HOSTS
    root: str = DEFAULT_ROOT
    timeout: float = 10.0
    session_timeout: float = 10.0
    retries: int = 3
    retry_deadline: float = 10.0
    connection_retries: int = 3
    tls: bool = False
    ca: str = None
    certfile: str = None
    keyfile: str = None
    keyfile_password: str = None
    verify_certs: bool = True
    check_hostname: bool = False
    digest: str = None
    sasl: dict = None
    acl: tuple = field(default_factory=tuple)
    acl_profile: AclProfile = None
    read_only: bool = False
    jute_maxbuffer: int = DEFAULT_JUTE_MAXBUFFER

    def __post_init__(self):
        parse_hosts(self.hosts)
        try:
            object.__setattr__(self, "root", check_root(self.root))
        except ValueError as exc:
            raise ZkConnectionError(str(exc)) from exc
        for name in ("timeout", "session_timeout", "retry_deadline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ZkConnectionError("zk_%s must be a positive number of seconds, got %r" % (name, value))
        if isinstance(self.jute_maxbuffer, bool) or not isinstance(self.jute_maxbuffer, int) or self.jute_maxbuffer < 1024:
            raise ZkConnectionError("zk_jute_maxbuffer must be the servers' jute.maxbuffer in bytes (default %d), got %r"
                                    % (DEFAULT_JUTE_MAXBUFFER, self.jute_maxbuffer))
        if self.digest is not None and (not isinstance(self.digest, str) or ":" not in self.digest):
            raise ZkConnectionError("zk_digest must be 'user:password'")
        if self.check_hostname and not self.verify_certs:
            raise ZkConnectionError("zk_check_hostname needs zk_verify_certs: a host name cannot be checked on an unverified certificate")
        if (self.certfile is None) != (self.keyfile is None):
            raise ZkConnectionError("zk_certfile and zk_keyfile go together: give both for a client certificate, or neither")
        if self.sasl is not None and not (isinstance(self.sasl, dict) and self.sasl.get("mechanism")):
            raise ZkConnectionError("zk_sasl must be a mapping with at least 'mechanism' (and 'username', 'password')")
        object.__setattr__(self, "acl", tuple(self.acl or ()))
        if self.acl_profile is not None:
            if self.acl:
                raise ZkConnectionError("zk_acl and zk_acl_profile exclude each other: the profile gives every node its ACL; "
                                        "drop zk_acl (or zkrollout_zk_acl / zookeeper.acl)")
            try:
                object.__setattr__(self, "acl_profile", AclProfile.from_mapping(self.acl_profile))
            except AclError as exc:
                raise ZkConnectionError(str(exc)) from exc

    @classmethod
    def from_mapping(cls, values, prefix="zk_"):
        """Build options from ``{prefix + name: value}`` (module params, play vars, agent config).

        Missing or None values keep their defaults; unknown keys are ignored.
        """
        kwargs = {}
        for name in cls.__dataclass_fields__:
            value = values.get(prefix + name)
            if value is not None:
                if name == "acl":
                    value = (value,) if isinstance(value, str) else tuple(value)
                if name == "acl_profile" and prefix != "zk_":
                    # Named as the caller's config spells it (the agent's ``acl_profile`` under ``zookeeper``).
                    try:
                        value = AclProfile.from_mapping(value, where=(prefix or "zookeeper.") + name)
                    except AclError as exc:
                        raise ZkConnectionError(str(exc)) from exc
                kwargs[name] = value
        return cls(**kwargs)

    @property
    def servers(self):
        """The ``(host, port)`` pairs to connect to."""
        return parse_hosts(self.hosts)[0]

    @property
    def chroot(self):
        """The chroot in the hosts string, or None."""
        return parse_hosts(self.hosts)[1]

    def describe(self):
        """Hosts string for messages (no credentials)."""
        return self.hosts + (" (TLS)" if self.tls else "")


def _retry(tries, deadline):
    return KazooRetry(max_tries=tries, delay=0.1, backoff=2, max_delay=2.0, deadline=deadline, ignore_expire=False)


def build_client(options, logger=None):
    """A configured, not yet started kazoo client for ``options``."""
    require_kazoo()
    auth_data = []
    if options.digest:
        auth_data.append(("digest", options.digest))
    kwargs = dict(
        hosts=options.hosts,
        timeout=options.session_timeout,
        # Reconnection is bounded by time, not tries: a leader election takes longer than a few
        # quick retries, and giving up during one would lose a session that is still valid.
        connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=2.0, ignore_expire=False,
                                    deadline=None if options.connection_retries < 0 else options.session_timeout),
        command_retry=_retry(options.retries, options.retry_deadline),
        auth_data=auth_data or None,
        default_acl=[parse_acl(entry) for entry in options.acl] or None,
        read_only=options.read_only or None,
        logger=logger,
    )
    if options.sasl:
        kwargs["sasl_options"] = dict(options.sasl)
    if options.tls:
        kwargs.update(
            use_ssl=True,
            ca=options.ca,
            certfile=options.certfile,
            keyfile=options.keyfile,
            keyfile_password=options.keyfile_password,
            verify_certs=options.verify_certs,
            check_hostname=options.check_hostname,
        )
    client = KazooClient(**kwargs)
    if options.acl_profile is not None:
        apply_acl_profile(client, options.acl_profile, options.root)
    return client


_PERMISSION_BITS = {"r": "READ", "w": "WRITE", "c": "CREATE", "d": "DELETE", "a": "ADMIN"}
# Per client with a profile: the function that gives a request the profile's ACLs (see apply_acl_profile).
_PROFILE_REQUESTS = weakref.WeakKeyDictionary()
_PROFILES = weakref.WeakKeyDictionary()


def profile_acl(profile, kind, host=None):
    """The kazoo ACL that ``profile`` gives a node of ``kind`` (layout.NODE_KINDS); ``host`` for a host's own parent."""
    return [ACL(sum(getattr(Permissions, _PERMISSION_BITS[p]) for p in perms), Id(scheme, ident))
            for perms, scheme, ident in profile.acl(kind, host)]


def apply_acl_profile(client, profile, root):
    """Give every node ``client`` creates from now on the ACL ``profile`` defines for its kind; returns ``client``.

    It wraps the client's single request path, as RequestCounter does, so plain creates,
    ``ensure_path``/``makepath`` parents, transaction creates and the lock's contender nodes
    all get it without any call site knowing. A create outside the tree under ``root`` fails
    with InvalidACLError naming the path, and is never sent.
    """
    layout, chroot, send = Layout(root), client.chroot or "", client._call
    by_kind = {}

    def with_profile_acl(op):
        path = op.path[len(chroot):] or "/"
        kind = layout.kind(path)
        # A host's own parent gives its host's identity more than the others: its ACL depends on the path.
        key = (kind, path.rsplit("/", 1)[1] if kind == HOST else None)
        if key not in by_kind:
            by_kind[key] = profile_acl(profile, *key)
        return op._replace(acl=by_kind[key])

    def with_profile(request):
        if isinstance(request, (Create, Create2)):
            return with_profile_acl(request)
        if isinstance(request, Transaction):
            return Transaction([with_profile_acl(op) if isinstance(op, (Create, Create2)) else op for op in request.operations])
        return request

    def call(request, async_object):
        try:
            request = with_profile(request)
        except LayoutError as exc:
            async_object.set_exception(InvalidACLError("the ACL profile has no rule for this node: %s" % exc))
            return False
        return send(request, async_object)

    client._call = call
    _PROFILE_REQUESTS[client] = with_profile
    _PROFILES[client] = profile
    return client


def profile_of(client):
    """The AclProfile ``client`` creates nodes with (``apply_acl_profile``), or None."""
    return _PROFILES.get(client)


def acl_entries(acls):
    """kazoo ACLs as ``[(perms, scheme, id)]``, perms from 'rwcda' (what core/acl.py reasons about)."""
    return [("".join(p for p in PERMISSIONS if acl.perms & getattr(Permissions, _PERMISSION_BITS[p])), acl.id.scheme, acl.id.id)
            for acl in acls]


def request_bytes(transaction):
    """The size ZooKeeper gives a kazoo transaction, not yet committed, to compare with jute.maxbuffer.

    That is everything after the request's length prefix: its header (xid and type) and the
    serialised operations, with the chroot in their paths and their ACLs (the ACL profile's,
    when the client has one).
    """
    request = Transaction(transaction.operations)
    with_profile = _PROFILE_REQUESTS.get(transaction.client)
    return 8 + len((with_profile(request) if with_profile else request).serialize())


def probe_servers(servers, timeout):
    """``[(host, port, cause)]`` of a plain TCP connect to each server; cause is None where one succeeds.

    A cause is a phrase such as ``refused the connection``, for messages.
    """
    outcomes = []
    for host, port in servers:
        try:
            with contextlib.closing(socket.create_connection((host, port), timeout=timeout)):
                outcomes.append((host, port, None))
        except socket.timeout:
            outcomes.append((host, port, "did not accept a TCP connection within %.1fs" % timeout))
        except socket.gaierror as exc:
            outcomes.append((host, port, "does not resolve (%s)" % exc.strerror))
        except OSError as exc:
            reason = "refused the connection" if exc.errno == errno.ECONNREFUSED else (exc.strerror or str(exc))
            outcomes.append((host, port, reason))
    return outcomes


_CONNECTING_RE = re.compile(r"Connecting to (?P<host>.+?)\(.*\):(?P<port>[0-9]+)")


class _ConnectLog(logging.LoggerAdapter):
    """kazoo's logger while a session is being established, remembering why each attempt ended.

    kazoo retries a failing server until the timeout and says why only in its log ("Connection
    dropped: ...", "Connection time-out: ..."), so the cause is taken from there. Every record
    still goes to the real logger.
    """

    def __init__(self, logger):
        super().__init__(logger, {})
        self.recording = True
        self.server = None
        self.drops = {}

    def log(self, level, msg, *args, **kwargs):
        if self.recording and isinstance(msg, str):
            text = msg % args if args else msg
            connecting = _CONNECTING_RE.match(text)
            if connecting:
                self.server = "%s:%s" % (connecting.group("host"), connecting.group("port"))
            elif text.startswith(("Connection dropped: ", "Connection time-out: ")) and self.server:
                self.drops[self.server] = text
        super().log(level, msg, *args, **kwargs)


def _handshake_cause(drop, options):
    """What a kazoo log line about a failed attempt means, as a phrase for the message."""
    if "SSL" in drop or "TLS" in drop:
        return ("accepts TCP connections but the TLS handshake failed (%s): is it a plaintext port? zk_tls is on, so give the "
                "servers' secureClientPort, or turn zk_tls off" % drop.split(": ", 1)[-1])
    if "time-out" in drop or drop.endswith("error: None"):
        return ("accepts TCP connections but never answered the %s within the timeout: not a ZooKeeper port, or a server "
                "that hangs" % ("TLS handshake" if options.tls else "ZooKeeper handshake"))
    if "connection broken" in drop and not options.tls:
        return ("accepts TCP connections but closed each one at the ZooKeeper handshake: is it a TLS port (secureClientPort)? "
                "then set zk_tls and zk_ca")
    if "refused" in drop:
        return "refused the connection"
    return "accepts TCP connections but no session was established (%s)" % drop


def connect(options, logger=None):
    """Start a kazoo client for ``options`` within ``options.timeout`` seconds.

    Returns the started client. On failure the client is stopped and ZkConnectionError names
    the hosts and, per server, the cause: a refused connection, a failed TLS handshake, a port
    that closes the ZooKeeper handshake, or one that never answers. When every server refuses
    TCP connections (or does not resolve) it fails at once instead of retrying until the timeout,
    unless ``options.connection_retries`` is negative (reconnect forever).
    """
    require_kazoo()
    if options.connection_retries >= 0:
        unreachable = []
        for server in options.servers:
            # One server that accepts is enough for kazoo to try; the rest need not be waited on.
            outcome = probe_servers([server], min(options.timeout, 2.0))[0]
            if outcome[2] is None:
                break
            unreachable.append(outcome)
        if len(unreachable) == len(options.servers):
            raise ZkConnectionError(
                "cannot connect to ZooKeeper at %s: no server accepts TCP connections (%s); check zk_hosts and that ZooKeeper "
                "is running and listening there" % (options.describe(), "; ".join("%s:%d %s" % outcome for outcome in unreachable)))
    connect_log = _ConnectLog(logger or logging.getLogger("kazoo.client"))
    client = build_client(options, connect_log)
    try:
        client.start(timeout=options.timeout)
    except (KazooTimeoutError, KazooException, OSError) as exc:
        connect_log.recording = False
        with contextlib.suppress(Exception):
            client.stop()
            client.close()
        # kazoo's log says why each server it tried failed; a server it never got to is probed.
        causes = []
        for host, port in options.servers:
            drop = connect_log.drops.get("%s:%d" % (host, port))
            if drop is None:
                cause = probe_servers([(host, port)], min(options.timeout, 2.0))[0][2]
                drop_cause = cause or "accepts TCP connections but gave no session (wrong TLS or SASL settings?)"
            else:
                drop_cause = _handshake_cause(drop, options)
            causes.append("%s:%d %s" % (host, port, drop_cause))
        raise ZkConnectionError(
            "cannot connect to ZooKeeper at %s within %.1fs: no session was established: %s; check zk_hosts and the zk_tls "
            "settings (%s)" % (options.describe(), options.timeout, "; ".join(causes), exc.__class__.__name__)
        ) from exc
    connect_log.recording = False
    return client


def disconnect(client):
    """Stop and close a client; safe to call on a client that already lost its connection."""
    with contextlib.suppress(Exception):
        client.stop()
    with contextlib.suppress(Exception):
        client.close()


@contextlib.contextmanager
def session(options, logger=None):
    """``with session(options) as client:`` connect, yield, always disconnect."""
    client = connect(options, logger)
    try:
        yield client
    finally:
        disconnect(client)


class RequestCounter(object):
    """Counts the requests one kazoo client sends (a transaction is one request).

    ``attach(client)`` wraps the client's single request path; the agent exports the count as a
    metric and the scale benchmark adds it up over a fleet.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = 0
        self.by_type = {}

    def attach(self, client):
        """Count every request ``client`` sends from now on; returns ``client``."""
        send = client._call

        def counted(request, async_object):
            with self._lock:
                self.requests += 1
                kind = type(request).__name__
                self.by_type[kind] = self.by_type.get(kind, 0) + 1
            return send(request, async_object)

        client._call = counted
        return client


# Multi-reads: many reads in one request (ZooKeeper 3.6 and later).
class MultiRead(tuple):
    """ZooKeeper's ``multiRead`` request (opcode 22): child listings and data reads answered in one reply, without watches.

    kazoo has no call for it; its connection sends any request object that knows its ``type``,
    ``serialize()`` and ``deserialize()``, as it does ``Transaction``. Each operation is answered
    on its own (a missing node is a ``NoNodeError`` in its place); unlike a transaction, the
    reads are not one atomic view, just as pipelined reads are not.
    """

    type = 22

    def serialize(self):
        """The operations as ZooKeeper's MultiOperationRecord: a header before each, a closing one."""
        body = bytearray()
        for operation in self:
            body.extend(MultiHeader(operation.type, False, -1).serialize() + operation.serialize())
        return body + multiheader_struct.pack(-1, True, -1)

    @classmethod
    def deserialize(cls, data, offset):
        """The answers in request order: a list of children, ``(data, ZnodeStat)``, or a kazoo exception."""
        answers = []
        header, offset = MultiHeader.deserialize(data, offset)
        while not header.done:
            if header.type == GetChildren.type:
                count = int_struct.unpack_from(data, offset)[0]
                offset += int_struct.size
                children = []
                for _index in range(max(count, 0)):
                    child, offset = read_string(data, offset)
                    children.append(child)
                answers.append(children)
            elif header.type == GetData.type:
                value, offset = read_buffer(data, offset)
                answers.append((value, ZnodeStat._make(stat_struct.unpack_from(data, offset))))
                offset += stat_struct.size
            elif header.type == -1:
                answers.append(_KAZOO_ERRORS[int_struct.unpack_from(data, offset)[0]]())
                offset += int_struct.size
            else:
                raise ValueError("unexpected answer of type %r in a multiRead reply" % header.type)
            header, offset = MultiHeader.deserialize(data, offset)
        return answers


# Clients whose server answered a multiRead with UNIMPLEMENTED (before 3.6): they read one request per node.
_NO_MULTI_READ = weakref.WeakKeyDictionary()


def multi_read_supported(client):
    """False once ``client``'s server refused a multiRead (ZooKeeper before 3.6)."""
    return client not in _NO_MULTI_READ


class ReadBatch(object):
    """Reads collected into one multiRead, sent when the first answer is asked for.

    ``get_children(path)`` and ``get(path)`` return answers whose ``get()`` acts like kazoo's
    async results (the value, or the operation's exception raised). A server before 3.6 answers
    the first multiRead with UNIMPLEMENTED (and closes the connection): the client is then
    remembered, and this batch and every later one are sent as one request per read.
    """

    def __init__(self, client):
        self.client = client
        self._operations = []
        self._answers = None
        self._one_by_one = False

    @property
    def sent(self):
        """True once the batch went out: later reads need a new batch."""
        return self._answers is not None

    def get_children(self, path):
        """The child listing of ``path``, in this batch."""
        return self._add(GetChildren(_prefix_root(self.client.chroot, path), None))

    def get(self, path):
        """``(data, ZnodeStat)`` of ``path``, in this batch."""
        return self._add(GetData(_prefix_root(self.client.chroot, path), None))

    def _add(self, operation):
        if self.sent:
            raise RuntimeError("this read batch was sent already")
        self._operations.append(operation)
        return _BatchAnswer(self, len(self._operations) - 1)

    def answer(self, index):
        """The answer to operation ``index`` (the batch is sent first if it was not)."""
        if self._answers is None:
            self._answers = self._send()
        answer = self._answers[index]
        if self._one_by_one:
            return answer.get()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _send(self):
        if multi_read_supported(self.client):
            result = self.client.handler.async_result()
            self.client._call(MultiRead(self._operations), result)
            try:
                return result.get()
            except UnimplementedError:
                _NO_MULTI_READ[self.client] = True
        self._one_by_one = True
        calls = {GetChildren.type: self.client.get_children_async, GetData.type: self.client.get_async}
        chroot = len(self.client.chroot or "")
        return [calls[operation.type](operation.path[chroot:] or "/") for operation in self._operations]


class _BatchAnswer(object):
    """One read of a ``ReadBatch``; ``get()`` as kazoo's async results have it."""

    def __init__(self, batch, index):
        self._batch = batch
        self._index = index

    def get(self):
        """The value, or the read's kazoo exception raised."""
        return self._batch.answer(self._index)
