# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The znode tree of a rollout: the one place that builds a ZooKeeper path.

Every path lives under a configurable root (default ``/dc``). A chroot, if any, is part of the
connection (``zk_hosts``), so the root is relative to it. Service names and host ids are checked
here, because they become path segments: a name that could escape its parent (``..``, ``/``)
is refused before any path is built.

Tree (see docs/architecture.md)::

    <root>/roster/<svc>/<host>                  roster member: the host runs the service (persistent)
    <root>/current/<svc>/<host>@<version>       healthy instance and its version (ephemeral)
    <root>/staging/<svc>                        release entry (persistent)
    <root>/staging/<svc>/ready/<host>-<seq>     ready queue member (ephemeral sequential)
    <root>/staging/<svc>/upgrading/<host>       upgrade slot (persistent)
    <root>/staging/<svc>/failed/<host>          failure record (persistent)
    <root>/deploy/<svc>-<seq>                   deploy queue entry (persistent sequential)
    <root>/rollout                              rollout state (persistent)
    <root>/locks/<svc>                          lock serialising slot decisions
    <root>/agents/<host>                        the host's agent is connected (ephemeral)
    <root>/hosts/<host>                         under an ACL profile, the host's own parent: only its agent adds or removes children
    <root>/hosts/<host>/<svc>@<version>         under an ACL profile, the host's copy of its registration (ephemeral)
    <root>/hosts/<host>/slot:<svc>              under an ACL profile, the copy of the host's upgrade slot (persistent)
    <root>/hosts/<host>/failed:<svc>            under an ACL profile, the copy of the host's failure record (persistent)
    <root>/sessions/<session>                   a controller's session is alive (ephemeral)
"""

from __future__ import annotations

import re

DEFAULT_ROOT = "/dc"

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
VERSION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}"
_NAME_RE = re.compile(r"\A" + NAME_PATTERN + r"\Z")
_SEQUENCE_RE = re.compile(r"\A(?P<name>" + NAME_PATTERN + r")-(?P<seq>[0-9]{10})\Z")
# The version is part of a registration's name, so one child listing tells every instance's
# version: counting healthy instances, completion and "most popular" need no read per host.
# '@' appears in neither names nor versions.
REGISTRATION_SEPARATOR = "@"
_REGISTRATION_RE = re.compile(r"\A(?P<host>" + NAME_PATTERN + r")@(?P<version>" + VERSION_PATTERN + r")\Z")
# The copies of a host's slot and failure record in its own parent: ``slot:<svc>``, ``failed:<svc>``.
# ':' appears in no name, so they never read as registrations.
_HOST_MARK_RE = re.compile(r"\A(?P<mark>slot|failed):(?P<service>" + NAME_PATTERN + r")\Z")


class LayoutError(ValueError):
    """A root, service name or host id that cannot be part of a znode path."""


# The kinds of node in the tree (``Layout.kind``): what core/acl.py grants rights by.
ROOT_ANCESTOR = "root ancestor"
ROOT = "root"
ROSTER = "roster"
CURRENT = "current"
STAGING = "staging"
DEPLOY = "deploy"
LOCKS = "locks"
AGENTS = "agents"
SESSIONS = "sessions"
SERVICE_ROSTER = "service roster"
ROSTER_MEMBER = "roster member"
CURRENT_SERVICE = "service instances"
REGISTRATION = "registration"
RELEASE = "release entry"
READY_QUEUE = "ready queue"
SLOTS = "slots"
FAILURES = "failures"
READY_MEMBER = "ready member"
SLOT = "slot"
FAILURE = "failure record"
DEPLOY_ENTRY = "deploy entry"
ROLLOUT = "rollout"
SERVICE_LOCK = "service lock"
LOCK_CONTENDER = "lock contender"
PRESENCE = "agent presence"
SESSION = "controller session"
HOSTS = "hosts"
HOST = "host parent"
HOST_REGISTRATION = "host registration"
HOST_SLOT = "host slot"
HOST_FAILURE = "host failure record"

NODE_KINDS = (ROOT_ANCESTOR, ROOT, ROSTER, CURRENT, STAGING, DEPLOY, LOCKS, AGENTS, SESSIONS, SERVICE_ROSTER, ROSTER_MEMBER,
              CURRENT_SERVICE, REGISTRATION, RELEASE, READY_QUEUE, SLOTS, FAILURES, READY_MEMBER, SLOT, FAILURE, DEPLOY_ENTRY,
              ROLLOUT, SERVICE_LOCK, LOCK_CONTENDER, PRESENCE, SESSION, HOSTS, HOST, HOST_REGISTRATION, HOST_SLOT, HOST_FAILURE)

_TOP_KINDS = {"roster": ROSTER, "current": CURRENT, "staging": STAGING, "deploy": DEPLOY, "locks": LOCKS, "agents": AGENTS,
              "sessions": SESSIONS, "rollout": ROLLOUT, "hosts": HOSTS}
# The kind of a child of each kind of parent; a name that is not valid there makes the path a stranger.
_CHILD_KINDS = {ROSTER: SERVICE_ROSTER, SERVICE_ROSTER: ROSTER_MEMBER, CURRENT: CURRENT_SERVICE, CURRENT_SERVICE: REGISTRATION,
                STAGING: RELEASE, READY_QUEUE: READY_MEMBER, SLOTS: SLOT, FAILURES: FAILURE, DEPLOY: DEPLOY_ENTRY,
                LOCKS: SERVICE_LOCK, SERVICE_LOCK: LOCK_CONTENDER, AGENTS: PRESENCE, SESSIONS: SESSION, HOSTS: HOST}
_RELEASE_SUBTREES = {"ready": READY_QUEUE, "upgrading": SLOTS, "failed": FAILURES}


def check_name(kind, name):
    """Return ``name`` if it is a valid service name or host id, else raise LayoutError.

    ``kind`` ("service", "host") only shapes the message.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise LayoutError(
            "invalid %s name %r: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit" % (kind, name)
        )
    return name


def check_root(root):
    """Return the normalised root path, or raise LayoutError naming what is wrong."""
    if not isinstance(root, str) or not root.startswith("/"):
        raise LayoutError("invalid zk_root %r: it must be an absolute path such as /dc" % (root,))
    stripped = root.rstrip("/")
    if not stripped:
        raise LayoutError("invalid zk_root %r: the ZooKeeper root itself cannot hold a rollout; use a path such as /dc" % (root,))
    for segment in stripped.split("/")[1:]:
        if not segment or segment in (".", "..") or segment == "zookeeper":
            raise LayoutError("invalid zk_root %r: segment %r is not allowed" % (root, segment))
        check_name("zk_root segment", segment)
    return stripped


def split_registration(node_name):
    """Split a registration's name ``<host>@<version>`` into ``(host, version)``; None for a stray node."""
    match = _REGISTRATION_RE.match(node_name)
    if not match:
        return None
    return match.group("host"), match.group("version")


def host_mark(mark, service):
    """The name of the copy of a slot (``mark`` ``"slot"``) or failure record (``"failed"``) of ``service`` in a host's own parent."""
    if mark not in ("slot", "failed"):
        raise LayoutError("invalid mark %r: expected slot or failed" % (mark,))
    return "%s:%s" % (mark, check_name("service", service))


def host_copy_name(service, version):
    """The name of the copy of a registration of ``version`` of ``service`` in a host's own parent: ``<svc>@<version>``."""
    return check_name("service", service) + REGISTRATION_SEPARATOR + str(version)


def split_host_mark(node_name):
    """``("slot" | "failed", service)`` for the copy of a slot or failure record in a host's own parent; None otherwise."""
    match = _HOST_MARK_RE.match(node_name)
    if not match:
        return None
    return match.group("mark"), match.group("service")


def split_sequential(node_name):
    """Split a sequential child name ``<name>-0000000042`` into ``(name, 42)``.

    Returns None for a name that is not of that form (a stray node), so callers can ignore it.
    """
    match = _SEQUENCE_RE.match(node_name)
    if not match:
        return None
    return match.group("name"), int(match.group("seq"))


class Layout(object):
    """Builds every path of the tree under one root."""

    def __init__(self, root=DEFAULT_ROOT):
        self.root = check_root(root)

    def __repr__(self):
        return "Layout(%r)" % self.root

    def _join(self, *segments):
        return "/".join((self.root,) + segments)

    def kind(self, path):
        """The kind of node ``path`` is in this tree (one of NODE_KINDS), or LayoutError for a path outside it.

        A sequential node is recognised by the prefix it is created with (``ready/<host>-``,
        ``deploy/<svc>-``, ``<uuid>__lock__``) as by its final name, since that is the path a
        create names.
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise LayoutError("%r is not an absolute znode path" % (path,))
        if self.root.startswith(path.rstrip("/") + "/") or path == "/":
            return ROOT_ANCESTOR
        if path == self.root:
            return ROOT
        if not path.startswith(self.root + "/"):
            raise LayoutError("znode %s is outside the rollout tree under %s" % (path, self.root))
        segments = path[len(self.root) + 1:].split("/")
        kind = _TOP_KINDS.get(segments[0])
        for depth, segment in enumerate(segments[1:], 1):
            if kind == RELEASE and depth == 2:
                kind = _RELEASE_SUBTREES.get(segment)
            elif kind == CURRENT_SERVICE:
                kind = REGISTRATION if split_registration(segment) else None
            elif kind == HOST:
                mark = split_host_mark(segment)
                kind = HOST_REGISTRATION if split_registration(segment) else {"slot": HOST_SLOT, "failed": HOST_FAILURE}.get(mark and mark[0])
            else:
                kind = _CHILD_KINDS.get(kind) if _NAME_RE.match(segment) else None
            if kind is None:
                break
        if kind is None:
            raise LayoutError("znode %s is not a node of the rollout tree under %s (see docs/architecture.md, \"The znode tree\")"
                              % (path, self.root))
        return kind

    # Top-level containers.
    @property
    def roster(self):
        """Parent of the per-service rosters."""
        return self._join("roster")

    @property
    def current(self):
        """Parent of the per-service sets of healthy instances."""
        return self._join("current")

    @property
    def staging(self):
        """Parent of the release entries."""
        return self._join("staging")

    @property
    def deploy(self):
        """The deploy queue."""
        return self._join("deploy")

    @property
    def rollout(self):
        """The rollout state node."""
        return self._join("rollout")

    @property
    def locks(self):
        """Parent of the per-service locks."""
        return self._join("locks")

    @property
    def agents(self):
        """Parent of the agents' presence nodes."""
        return self._join("agents")

    def agent(self, host):
        """Ephemeral presence of ``host``'s agent: its session is alive and has registered every healthy instance.

        Its data version goes up with every registration the agent makes (see docs/architecture.md).
        """
        return self._join("agents", check_name("host", host))

    @property
    def hosts(self):
        """Parent of the per-host parents."""
        return self._join("hosts")

    def host(self, host):
        """The host's own parent: its ACL lets only that host's agent (and the deployer) add or remove children.

        With an ACL profile, what a decision that stops an instance counts is confirmed here
        (``store.reads.confirm_own_records``): the service-wide listings, which every agent may
        add to and remove from, are only an index (docs/security.md).
        """
        return self._join("hosts", check_name("host", host))

    def host_registration(self, host, service, version):
        """The host's copy of its registration of ``version`` of ``service`` (ephemeral, written with the index's)."""
        node = host_copy_name(service, version)
        if not isinstance(version, str) or split_registration(node) is None:
            raise LayoutError("invalid version %r for a registration of %s on %s" % (version, service, host))
        return self._join("hosts", check_name("host", host), node)

    def host_slot(self, host, service):
        """The copy of ``host``'s upgrade slot of ``service`` in its own parent: created and deleted with the slot under an ACL profile."""
        return self._join("hosts", check_name("host", host), host_mark("slot", service))

    def host_failure(self, host, service):
        """The copy of ``host``'s failure record of ``service`` in its own parent: created and deleted with the record under an ACL profile."""
        return self._join("hosts", check_name("host", host), host_mark("failed", service))

    def registration_nodes(self, service, host, version):
        """Both nodes of one registration, created and deleted together under an ACL profile: the index's and the host's copy."""
        return [self.registration(service, host, version), self.host_registration(host, service, version)]

    @property
    def sessions(self):
        """Parent of the controllers' session nodes."""
        return self._join("sessions")

    def session(self, session):
        """Ephemeral node of a controller's ZooKeeper session (hex id): the session that took its slots lives."""
        return self._join("sessions", check_name("session", session))

    def containers(self):
        """Every persistent parent that must exist before agents and modules use the tree, top-down.

        They include the ancestors of a nested root (``/team/dc`` needs ``/team``).
        """
        segments = self.root.split("/")[1:]
        ancestors = ["/" + "/".join(segments[:depth]) for depth in range(1, len(segments))]
        return ancestors + [self.root, self.roster, self.current, self.staging, self.deploy, self.locks, self.agents, self.sessions,
                            self.hosts]

    # Roster and registrations.
    def service_roster(self, service):
        """Parent of the roster members of one service: its children are the hosts that run it."""
        return self._join("roster", check_name("service", service))

    def roster_member(self, service, host):
        """Roster member: ``host`` runs ``service``."""
        return self._join("roster", check_name("service", service), check_name("host", host))

    def current_service(self, service):
        """Parent of the healthy instances of one service."""
        return self._join("current", check_name("service", service))

    def registration(self, service, host, version):
        """Ephemeral registration of one healthy instance running ``version``."""
        node = check_name("host", host) + REGISTRATION_SEPARATOR + str(version)
        if not isinstance(version, str) or split_registration(node) is None:
            raise LayoutError("invalid version %r for a registration of %s on %s" % (version, service, host))
        return self._join("current", check_name("service", service), node)

    # Staging: the release entry and its three sub-trees.
    def release(self, service):
        """Release entry of one service (its staging node)."""
        return self._join("staging", check_name("service", service))

    def ready_queue(self, service):
        """Parent of the ready queue of one service."""
        return self._join("staging", check_name("service", service), "ready")

    def ready_prefix(self, service, host):
        """Path prefix for a sequential ready-queue member of one host."""
        return self._join("staging", check_name("service", service), "ready", check_name("host", host) + "-")

    def slots(self, service):
        """Parent of the upgrade slots of one service."""
        return self._join("staging", check_name("service", service), "upgrading")

    def slot(self, service, host):
        """Upgrade slot held by one host."""
        return self._join("staging", check_name("service", service), "upgrading", check_name("host", host))

    def failures(self, service):
        """Parent of the failure records of one service."""
        return self._join("staging", check_name("service", service), "failed")

    def failure(self, service, host):
        """Failure record of one host for one service."""
        return self._join("staging", check_name("service", service), "failed", check_name("host", host))

    def release_children(self, service):
        """The sub-trees created together with a release entry."""
        return [self.ready_queue(service), self.slots(service), self.failures(service)]

    # Deploy queue and locks.
    def deploy_prefix(self, service):
        """Path prefix for a sequential deploy-queue entry of one service."""
        return self._join("deploy", check_name("service", service) + "-")

    def deploy_entry(self, node_name):
        """Full path of an existing deploy-queue child."""
        if split_sequential(node_name) is None:
            raise LayoutError("invalid deploy queue entry %r: expected <service>-<10 digits>" % (node_name,))
        return self._join("deploy", node_name)

    def ready_member(self, service, node_name):
        """Full path of an existing ready-queue child."""
        if split_sequential(node_name) is None:
            raise LayoutError("invalid ready queue entry %r: expected <host>-<10 digits>" % (node_name,))
        return self._join("staging", check_name("service", service), "ready", node_name)

    def lock(self, service):
        """Lock that serialises slot decisions for one service."""
        return self._join("locks", check_name("service", service))
