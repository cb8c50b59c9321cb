# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Version-checked transactions of planned writes, and the watches controllers wait on.

A controller plans its writes as a list of operations (``controller.writes.Op``: ``kind``
create/delete/set/check, ``path``, ``data``, ``version``, ``sequence``) against the snapshot it
read; ``commit`` sends them as one ZooKeeper transaction, so a seeding is written whole or not at
all, and every delete and set is checked against the version that was read.
"""

from __future__ import annotations

from .client import NodeExistsError, NoNodeError, RolledBackError, acl_entries, profile_acl, profile_of, request_bytes


def missing_containers(client, layout):
    """Persistent parents of the tree that do not exist yet, top-down (one pipelined round trip)."""
    pending = [(path, client.exists_async(path)) for path in layout.containers()]
    return [path for path, result in pending if result.get() is None]


def missing_host_parents(client, layout):
    """Under an ACL profile, the own parents (``layout.host``) of the hosts its agent identities are named after that do not exist yet.

    Only the deployer creates them. They are not part of a planned transaction: a fleet's worth
    of them would not fit one request, and each is created once, whatever else a run writes.
    """
    profile = profile_of(client)
    if profile is None:
        return []
    pending = [(path, client.exists_async(path)) for path in (layout.host(host) for host in profile.host_names())]
    return [path for path, result in pending if result.get() is None]


def stale_acls(client, layout, services):
    """Under an ACL profile, ``[(path, ACL)]`` for the shared parents whose ACL is not the profile's (one pipelined round trip).

    They are the nodes agents add children to (the containers ``roster``, ``current``, ``locks``,
    ``agents`` and, per service of ``services``, its roster, instances, lock and the release's
    three sub-trees). Their ACL names every agent identity, so an identity added to the profile
    after they were created could not register, queue or take a slot until they get the
    profile's ACL again. Only the deployer, who has the admin right there, sees the digests to compare.
    """
    profile = profile_of(client)
    if profile is None:
        return []
    paths = [layout.roster, layout.current, layout.locks, layout.agents]
    for name in services:
        paths += [layout.service_roster(name), layout.current_service(name), layout.lock(name)] + layout.release_children(name)
    pending = [(path, client.get_acls_async(path)) for path in paths]
    stale = []
    for path, answer in pending:
        try:
            current = answer.get()[0]
        except NoNodeError:
            continue
        wanted = profile_acl(profile, layout.kind(path))
        if sorted(acl_entries(current)) != sorted(acl_entries(wanted)):
            stale.append((path, wanted))
    return stale


def set_acls(client, stale):
    """Give each node of ``stale`` (``stale_acls``) its ACL, pipelined; one deleted meanwhile is skipped."""
    for answer in [client.set_acls_async(path, acl) for path, acl in stale]:
        try:
            answer.get()
        except NoNodeError:
            pass


def create_parents(client, paths):
    """Create the persistent nodes ``paths`` (and what lies above them), pipelined; one already there is fine."""
    for answer in [client.create_async(path, b"", makepath=True) for path in paths]:
        try:
            answer.get()
        except NodeExistsError:
            pass


def _transaction(client, ops, acl):
    transaction = client.transaction()
    for op in ops:
        if op.kind == "create":
            transaction.create(op.path, op.data, acl=acl, sequence=op.sequence)
        elif op.kind == "delete":
            transaction.delete(op.path, version=op.version)
        elif op.kind == "set":
            transaction.set_data(op.path, op.data, version=op.version)
        else:
            transaction.check(op.path, op.version)
    return transaction


def transaction_bytes(client, ops, acl=None):
    """The size of the request that ``commit(client, ops, acl)`` would send, as ZooKeeper counts it; sends nothing."""
    return request_bytes(_transaction(client, ops, acl))


def commit(client, ops, acl=None):
    """Commit ``ops`` as one transaction; returns None, or ``(op, error)`` of the operation that failed."""
    for op, outcome in zip(ops, _transaction(client, ops, acl).commit()):
        if isinstance(outcome, Exception) and not isinstance(outcome, RolledBackError):
            return op, outcome
    return None


def watch_listings(client, paths, wake):
    """Arm one-shot watches on the child lists of ``paths`` (and on the creation of those missing)."""
    for path in paths:
        try:
            client.get_children(path, watch=wake)
        except NoNodeError:
            client.exists(path, watch=wake)


def watch_node(client, path, wake):
    """Arm a one-shot watch on ``path``'s data, or on its creation."""
    client.exists(path, watch=wake)
