# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The least-privilege ACL profile: which identity may do what, per kind of node of the tree.

An ``AclProfile`` names three groups of ZooKeeper identities: the ``deployer`` (the modules,
playbooks and the strategy), the ``agents`` (one identity per host) and the ``readers``
(status, monitoring). ``RULES`` is the one table that gives each kind of node
(``layout.NODE_KINDS``) its permissions for each group and for the node's creator; the store
applies it to every node it creates (store/client.py). ZooKeeper checks create and delete on the
parent, write and read on the node itself and admin to change an ACL, so a group's right to add
or remove a node sits in the row of the node's parent.

The creator is ZooKeeper's ``auth`` scheme: the authenticated identities of the session that
creates the node. That is what makes a node an agent writes its own: no other agent may rewrite
its data or its ACL. So every identity that creates nodes of those kinds (the agents, and the
deployer for its own slots and lock contenders) must be authenticated: digest or x509.

Pure: no kazoo. The store turns ``acl()`` into kazoo's ACL objects.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from . import layout as kinds

ALL = "cdrwa"
READ = "r"
PERMISSIONS = "rwcda"
GROUPS = ("deployer", "agents", "readers")
CREATOR_SCHEME, CREATOR_ID = "auth", ""
# ``digest-hash:user:<hash>`` names a digest identity by its hash alone, so a config that must
# name others (every agent's names the deployer and the other agents) never holds their passwords.
SCHEMES = ("digest", "digest-hash", "x509", "ip", "world", "sasl")
# Agents own what they create through the ``auth`` scheme, which only authenticated identities have.
AUTHENTICATED_SCHEMES = ("digest", "x509", "sasl")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = re.compile(r"\A" + kinds.NAME_PATTERN + r"\Z")


class AclError(ValueError):
    """An ACL profile that cannot be used; the message names the entry and what to write instead."""


@dataclass(frozen=True)
class Rule(object):
    """The permissions of each group and of the node's creator on one kind of node, and why.

    ``owner`` adds permissions for the one agent identity named after the host in the node's
    path (``names_host``): a host's own parent is the deployer's node where only that host adds
    and removes children.
    """

    deployer: str
    agents: str
    readers: str
    creator: str
    reason: str
    owner: str = ""


def _deployers(agents, reason):
    return Rule(deployer=ALL, agents=agents, readers=READ, creator="", reason=reason)


def _agents_own(reason):
    return Rule(deployer=ALL, agents=READ, readers=READ, creator=ALL, reason=reason)


RULES = {
    kinds.ROOT_ANCESTOR: _deployers(READ, "created only for a nested root; only the deployer adds or removes what lies beside the tree"),
    kinds.ROOT: _deployers(READ, "the top containers are created by the deployer (any module run) and removed by nobody else"),
    kinds.ROSTER: _deployers("rc", "the first agent of a service creates its roster/<svc>; agents never remove one"),
    kinds.CURRENT: _deployers("rc", "the first agent of a service creates its current/<svc>; agents never remove one"),
    kinds.LOCKS: _deployers("rc", "the first contender of a service creates its locks/<svc>; agents never remove one"),
    kinds.STAGING: _deployers(READ, "only the deployer adds or removes a release entry: no agent may stage or unstage a service"),
    kinds.DEPLOY: _deployers(READ, "only the deployer adds or removes deploy entries: no agent may reorder or skip the queue"),
    kinds.AGENTS: _deployers("rcd", "agents create their presence node and delete one left by an older session of theirs"),
    kinds.SESSIONS: _deployers(READ, "controller sessions are the deployer's; agents read them to tell a live controller's slot"),
    kinds.SERVICE_ROSTER: _deployers("rc", "agents add their own roster membership; only the deployer removes one, so no agent can "
                                           "shrink a roster and with it a service's quorum"),
    kinds.CURRENT_SERVICE: _deployers("rcd", "agents add and remove their registrations"),
    kinds.SERVICE_LOCK: _deployers("rcd", "agents add and remove their contender nodes"),
    kinds.RELEASE: _deployers(READ, "the release is signed and written by the deployer only; its sub-trees come with it"),
    kinds.READY_QUEUE: _deployers("rcd", "agents join and leave the ready queue"),
    kinds.SLOTS: _deployers("rcd", "agents take and free their upgrade slots"),
    kinds.FAILURES: _deployers("rcd", "agents record and clear their failures"),
    kinds.DEPLOY_ENTRY: _deployers(READ, "the deploy order is the deployer's; completion is derived from the tree"),
    kinds.ROLLOUT: _deployers(READ, "the rollout state is the deployer's; agents only read it"),
    kinds.SESSION: _deployers(READ, "a controller's session node; only the deployer writes it"),
    kinds.ROSTER_MEMBER: _agents_own("written by its host's agent; no other agent may change it or its ACL"),
    kinds.REGISTRATION: _agents_own("written by its host's agent; no other agent may change it or its ACL"),
    kinds.READY_MEMBER: _agents_own("written by its host's agent; no other agent may change it or its ACL"),
    kinds.SLOT: _agents_own("its data (target version, owner, lease) is its taker's: no other agent may rewrite it"),
    kinds.FAILURE: _agents_own("its data (version, stage, reason) is its host's: no other agent may rewrite it"),
    kinds.LOCK_CONTENDER: _agents_own("the contender's own node; no other agent may change it or its ACL"),
    kinds.PRESENCE: _agents_own("its data version counts its host's registrations: no other agent may bump it"),
    kinds.HOSTS: _deployers(READ, "the deployer creates each agent identity's own parent, so no agent can take another host's"),
    kinds.HOST: Rule(deployer=ALL, agents=READ, readers=READ, creator="", owner="rcd",
                     reason="the host's own parent: only its agent and the deployer add or remove what a decision counts"),
    kinds.HOST_REGISTRATION: _agents_own("the host's copy of its registration, the one a decision that stops an instance counts"),
    kinds.HOST_SLOT: _agents_own("the host's copy of its slot, the one a decision counts against max_parallel"),
    kinds.HOST_FAILURE: _agents_own("the host's copy of its failure record, the one that halts the service for a decision"),
}


def host_name(scheme, ident):
    """The host an agent identity is named after: its digest user, its certificate subject's CN, its sasl principal's first part; else None.

    That is how the profile ties an agent identity to the one host it may speak for (``layout.host``).
    """
    if scheme == "digest":
        return ident.split(":", 1)[0]
    if scheme == "x509":
        names = [part.strip()[3:] for part in ident.split(",") if part.strip()[:3].upper() == "CN="]
        return names[0] if len(names) == 1 else None
    if scheme == "sasl":
        return re.split(r"[/@]", ident, maxsplit=1)[0]
    return None


def names_host(scheme, ident, host):
    """Whether the identity ``scheme:ident`` is named after ``host`` (``host_name``)."""
    return host_name(scheme, ident) == host


def digest_id(user, password):
    """The id ZooKeeper's DigestAuthenticationProvider gives ``user:password``: ``user:base64(sha1(user:password))``."""
    hashed = base64.b64encode(hashlib.sha1(("%s:%s" % (user, password)).encode("utf-8")).digest()).decode("ascii")
    return "%s:%s" % (user, hashed)


def masked(entry):
    """An identity fit for a message: a digest password is never shown."""
    if isinstance(entry, str) and entry.startswith("digest:"):
        return "digest:%s:***" % entry.split(":")[1] if entry.count(":") >= 2 else "digest:***"
    return entry


@dataclass(frozen=True)
class Identity(object):
    """A ZooKeeper identity as an ACL names it: ``scheme`` and ``id`` (a digest's id is already hashed)."""

    scheme: str
    id: str

    @classmethod
    def parse(cls, entry, where):
        """Parse ``scheme:id`` (``digest:user:password``, ``digest-hash:user:<base64 sha1>``, ``x509:CN=h1,O=example``,
        ``world:anyone``, ``ip:10.0.0.0/8``, ``sasl:principal``).

        ``where`` names the entry in the message of the AclError raised for anything else.
        """
        example = "digest:user:password, digest-hash:user:<hash>, x509:CN=host,O=example, ip:10.0.0.0/8, sasl:principal or world:anyone"
        if not isinstance(entry, str) or ":" not in entry:
            raise AclError("%s %r is not an identity: expected scheme:id, for example %s" % (where, masked(entry), example))
        scheme, ident = entry.split(":", 1)
        if scheme not in SCHEMES:
            raise AclError("%s %r has an unknown scheme %r: use one of %s" % (where, masked(entry), scheme, ", ".join(SCHEMES)))
        if not ident or _CONTROL.search(ident) or ident != ident.strip():
            raise AclError("%s %r has an empty id, surrounding spaces or control characters" % (where, masked(entry)))
        if scheme == "digest":
            user, password = ident.split(":", 1) if ":" in ident else (ident, "")
            if not user or not password:
                raise AclError("%s %r: a digest identity is digest:user:password (the password is hashed before it is sent)"
                               % (where, masked(entry)))
            return cls("digest", digest_id(user, password))
        if scheme == "digest-hash":
            user, hashed = ident.split(":", 1) if ":" in ident else (ident, "")
            try:
                valid = len(base64.b64decode(hashed, validate=True)) == hashlib.sha1().digest_size
            except ValueError:
                valid = False
            if not user or not valid:
                raise AclError("%s %r: expected digest-hash:user:<base64 of sha1(user:password)>, as "
                               "'printf %%s user:password | openssl dgst -binary -sha1 | openssl base64' prints it" % (where, entry))
            return cls("digest", ident)
        if scheme == "world" and ident != "anyone":
            raise AclError("%s %r: the only world identity is world:anyone" % (where, entry))
        if scheme == "ip":
            try:
                ipaddress.ip_network(ident, strict=False)
            except ValueError as exc:
                raise AclError("%s %r: %s; give an address or a network such as ip:10.0.0.0/8" % (where, entry, exc)) from exc
        return cls(scheme, ident)


@dataclass(frozen=True)
class AclProfile(object):
    """The identities of the deployer, the agents and the readers (tuples of Identity)."""

    deployer: tuple
    agents: tuple = ()
    readers: tuple = ()

    @classmethod
    def from_mapping(cls, values, where="zk_acl_profile"):
        """Build a profile from ``{"deployer": [...], "agents": [...], "readers": [...]}``; AclError names a bad entry."""
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise AclError("%s must be a mapping with the lists deployer, agents and readers, got %r" % (where, type(values).__name__))
        unknown = sorted(set(values) - set(GROUPS))
        if unknown:
            raise AclError("%s has unknown keys %s: it takes deployer, agents and readers" % (where, ", ".join(map(str, unknown))))
        groups = {}
        for group in GROUPS:
            entries = values.get(group) or []
            if isinstance(entries, str) or not isinstance(entries, (list, tuple)):
                raise AclError("%s.%s must be a list of identities such as digest:user:password" % (where, group))
            groups[group] = tuple(Identity.parse(entry, "%s.%s[%d]" % (where, group, index)) for index, entry in enumerate(entries))
        if not groups["deployer"]:
            raise AclError("%s.deployer is empty: give the deployer's identity (for example digest:deployer:password), "
                           "or nobody could change the tree" % where)
        for index, identity in enumerate(groups["agents"]):
            if identity.scheme in AUTHENTICATED_SCHEMES and not _NAME.match(host_name(identity.scheme, identity.id) or ""):
                raise AclError("%s.agents[%d] %s:%s does not name a host: an agent's identity is named after its host (the digest user, the "
                               "certificate's one CN or the principal's first part), which is how the deployer gives each host its own "
                               "parent" % (where, index, identity.scheme, identity.id.split(":", 1)[0] if identity.scheme == "digest" else identity.id))
            if identity.scheme not in AUTHENTICATED_SCHEMES:
                raise AclError("%s.agents[%d] %s:%s cannot own nodes: agents need a digest or x509 identity, because the nodes "
                               "an agent creates belong to the identity it authenticated with" % (where, index, identity.scheme, identity.id))
        return cls(**groups)

    def host_names(self):
        """The hosts the agent identities are named after (``host_name``), sorted: each gets its own parent from the deployer."""
        return sorted({host_name(identity.scheme, identity.id) for identity in self.agents})

    def host_refusal(self, acl, host, own=False):
        """Why the ACL of ``hosts/<host>`` (``[(perms, scheme, id)]`` as ZooKeeper returns it) does not make it that host's, or None.

        Whoever may add or remove children there decides which registrations of the host a
        decision counts, so each of them must be the deployer or the identity named after
        ``host``. ZooKeeper shows a digest's hash only to an identity with the admin right, so a
        digest identity is recognised by its user name; the guarantee rests on the rule that
        only the deployer creates these parents (``RULES[HOSTS]``). A parent left from before
        the profile (open to anyone, say) is not the host's: what it holds is not counted.
        """
        def who(scheme, ident):
            return (scheme, ident.split(":", 1)[0] if scheme == "digest" else ident)

        deployer = {who(identity.scheme, identity.id) for identity in self.deployer}
        strangers = sorted("%s:%s" % who(scheme, ident) for perms, scheme, ident in acl
                           if set(perms) & set("cd") and who(scheme, ident) not in deployer and not names_host(scheme, ident, host))
        if strangers:
            return ("%s may add or remove its nodes, and is neither the deployer nor named after %s: the deployer deletes the node "
                    "and the next zkrollout.dc module that writes creates it again for %s's own identity" % (", ".join(strangers), host, host))
        if own and not any(set("cd") <= set(perms) and names_host(scheme, ident, host) for perms, scheme, ident in acl):
            # Made for an identity of the host that is no longer the profile's (a rotated password or certificate).
            return ("it does not let %s's identity add and remove children (it was made for an older identity of %s?): the deployer "
                    "deletes the node and the next zkrollout.dc module that writes creates it again" % (host, host))
        return None

    def creator_refusal(self, acl, host):
        """Why a node named after ``host`` in a shared listing (a ready-queue member) was not created by ``host``'s identity, or None.

        A node an agent creates carries its creator's identity with every right (``RULES``):
        one that names another host was forged by that host's agent. As in ``host_refusal``, a
        digest identity is recognised by its user name.
        """
        def who(scheme, ident):
            return (scheme, ident.split(":", 1)[0] if scheme == "digest" else ident)

        deployer = {who(identity.scheme, identity.id) for identity in self.deployer}
        owners = [(scheme, ident) for perms, scheme, ident in acl if "a" in perms and who(scheme, ident) not in deployer]
        if owners and all(names_host(scheme, ident, host) for scheme, ident in owners):
            return None
        return "created by %s, not by %s's identity" % (", ".join(sorted("%s:%s" % who(*owner) for owner in owners)) or "the deployer", host)

    def acl(self, kind, host=None):
        """The ACL of a node of ``kind``: ``[(perms, scheme, id), ...]``, one entry per identity, perms from 'rwcda'.

        ``host`` is the host a node of a kind with an ``owner`` column belongs to (``hosts/<host>``).
        """
        rule = RULES[kind]
        granted = {}
        for group in GROUPS:
            for identity in getattr(self, group):
                key = (identity.scheme, identity.id)
                granted[key] = granted.get(key, "") + getattr(rule, group)
                if group == "agents" and rule.owner and names_host(identity.scheme, identity.id, host):
                    granted[key] += rule.owner
        if rule.creator:
            granted[(CREATOR_SCHEME, CREATOR_ID)] = rule.creator
        if self.world_reads:
            # world:anyone reads already: an entry that adds nothing but read is left out, so an ACL
            # does not list every agent of the fleet (each create would carry N identities).
            granted = {key: perms for key, perms in granted.items() if set(perms) - set(READ) or key == ("world", "anyone")}
        return [("".join(p for p in PERMISSIONS if p in perms), scheme, ident) for (scheme, ident), perms in granted.items()]

    @property
    def world_reads(self):
        """True when ``world:anyone`` is among the readers: then nobody needs a read entry of their own."""
        return any((identity.scheme, identity.id) == ("world", "anyone") for identity in self.readers)
