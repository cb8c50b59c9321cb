# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side writes: seed, cancel, stage, order and steer a rollout.

Each operation is planned as a pure function of a ``Snapshot`` and returns a ``Change``: the
list of transaction operations plus ``before``/``after`` views for diff output. Planning
validates everything first, so bad input raises before anything is written. ``apply()``
commits a change as ONE ZooKeeper transaction with version checks: a rollout is written whole
or not at all, even if the controller dies, and a concurrent writer makes it fail cleanly.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace

from ..core.model import (
    DEFAULT_JUTE_MAXBUFFER,
    DeployEntry,
    ReleaseEntry,
    ReleaseSpec,
    RolloutState,
    ServiceSpec,
    canonical_json,
    check_payload_bytes,
    validate_name,
    validate_names,
    validate_optional,
)
from ..core.plan import PlanError, check_service, deploy_order, plan_release
from ..core.rules import slot_owner_alive
from ..store.commits import commit, create_parents, missing_containers, missing_host_parents, set_acls, stale_acls, transaction_bytes
from ..store.reads import read_snapshot
from .report import overall_state, rollout_report

CONTROL_ACTIONS = ("pause", "resume", "abort", "retry", "release_slot", "leave_roster", "prepare")


class WriteRefused(Exception):
    """A write that would be unsafe or make no sense now; the message says what to do instead."""


@dataclass(frozen=True)
class Op(object):
    """One operation of a ZooKeeper transaction."""

    kind: str  # create | delete | set | check
    path: str
    data: bytes = b""
    version: int = -1
    sequence: bool = False


@dataclass(frozen=True)
class Change(object):
    """A planned write: its operations and what the tree looks like before and after."""

    ops: tuple = ()
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    message: str = ""
    warnings: tuple = ()
    result: dict = field(default_factory=dict)
    parents: tuple = ()
    acls: tuple = ()

    @property
    def changed(self):
        """True when committing would change the tree."""
        return bool(self.ops or self.parents or self.acls)

    @property
    def diff(self):
        """Ansible's ``diff`` value, without what differs on every write (see ``diff_view``)."""
        return {"before": diff_view(self.before), "after": diff_view(self.after)}


# Rewritten on every write whatever changed, so they would only hide the change in a diff.
VOLATILE_ROLLOUT_FIELDS = ("created", "updated")


def diff_view(view):
    """A before/after view as ``--diff`` shows it: the rollout's timestamps left out, a signature shown by its key id only.

    A different key still shows; the signature bytes, which change with every byte of the entry, do not.
    """
    shown = dict(view)
    if isinstance(shown.get("rollout"), dict):
        shown["rollout"] = {name: value for name, value in shown["rollout"].items() if name not in VOLATILE_ROLLOUT_FIELDS}
    if isinstance(shown.get("staging"), dict):
        shown["staging"] = {name: _without_signature_bytes(entry) for name, entry in shown["staging"].items()}
    return shown


def _without_signature_bytes(entry):
    if not isinstance(entry, dict) or not isinstance(entry.get("signature"), dict):
        return entry
    return dict(entry, signature={"key": entry["signature"].get("key")})


def apply(client, change, acl=None):
    """Commit ``change`` as one transaction; raise WriteRefused naming the node that changed."""
    if not change.ops:
        return
    failed = commit(client, change.ops, acl)
    if failed is not None:
        op, outcome = failed
        raise WriteRefused(
            "nothing was written: %s %s failed with %s (another writer or an agent changed the tree "
            "meanwhile); run the task again" % (op.kind, op.path, outcome.__class__.__name__)
        )


def _payload_class(layout, path):
    """The payload class that readers parse a node written by a controller with."""
    if path == layout.rollout:
        return RolloutState
    parent = path.rpartition("/")[0]
    if parent == layout.staging:
        return ReleaseEntry
    if parent == layout.deploy:
        return DeployEntry
    raise ValueError("a controller writes no payload at %s" % path)


def check_writes(client, layout, ops, acl=None, max_request_bytes=DEFAULT_JUTE_MAXBUFFER):
    """Refuse ``ops`` that a reader or ZooKeeper would refuse, before anything is sent.

    Every payload goes through the parser its readers use (``model.check_payload_bytes``), so a
    value that agents would refuse is never written, whichever planner built it. The whole
    transaction is one ZooKeeper request and must fit ``max_request_bytes`` (the servers'
    jute.maxbuffer); a larger one is refused naming its size, the limit and its largest node.
    """
    for op in ops:
        if op.data:
            check_payload_bytes(_payload_class(layout, op.path), op.data, op.path)
    size = transaction_bytes(client, ops, acl) if ops else 0
    if size > max_request_bytes:
        largest = max(ops, key=lambda op: len(op.data))
        raise WriteRefused(
            "nothing was written: the transaction is %d bytes (%d operations), more than the %d bytes ZooKeeper takes in one "
            "request (the servers' jute.maxbuffer, zk_jute_maxbuffer here); its largest node is %s with %d bytes. Release fewer "
            "services at once (stage them one by one with zkrollout.dc.staging, then start them with zkrollout.dc.deploy_queue), "
            "shorten their values, or raise jute.maxbuffer on every ZooKeeper server and set zk_jute_maxbuffer to match"
            % (size, len(ops), max_request_bytes, largest.path, len(largest.data))
        )


def read_plan_apply(client, layout, planner, check_mode=False, acl=None, attempts=3, max_request_bytes=DEFAULT_JUTE_MAXBUFFER):
    """Read a fresh snapshot, plan with ``planner(snapshot, missing)``, check and commit.

    Every plan is checked by ``check_writes`` first, in check mode too, so what would be refused
    fails the same way whether or not it is sent. A transaction that loses a race (an agent
    joined a ready queue meanwhile) is planned again on a new snapshot, at most ``attempts``
    times. Returns the Change that was (or would be) applied.
    """
    for attempt in range(attempts):
        snapshot = read_snapshot(client, layout)
        change = planner(snapshot, missing_containers(client, layout))
        # Under an ACL profile: the own parents of hosts new to it, and the profile's ACL on the
        # shared parents again, so that those hosts can write there too (outside the transaction).
        parents, acls = missing_host_parents(client, layout), stale_acls(client, layout, sorted(snapshot.services))
        if parents or acls:
            notes = (["the own parents of %s" % ", ".join(path.rsplit("/", 1)[1] for path in parents)] if parents else []) + (
                ["the profile's ACL on %s" % ", ".join(path for path, _acl in acls)] if acls else [])
            change = replace(change, parents=tuple(parents), acls=tuple(acls), message="%s; %s %s" % (
                change.message, "would give" if check_mode else "gave", " and ".join(notes)))
        check_writes(client, layout, change.ops, acl, max_request_bytes)
        if check_mode or not change.changed:
            return change
        try:
            apply(client, change, acl)
            create_parents(client, change.parents)
            set_acls(client, change.acls)
            return change
        except WriteRefused:
            if attempt == attempts - 1:
                raise
    return change


def _ensure_containers(missing):
    return [Op("create", path) for path in missing]


def _delete_release_ops(snapshot, layout, name):
    """Delete a staged service with its ready queue and failure records; refuse while a slot is held."""
    state = snapshot.service(name)
    if state.slots:
        raise WriteRefused(
            "service %s: %s hold%s an upgrade slot; abort the rollout with rollout_control and wait for "
            "in-flight upgrades to finish, or release stale slots with action=release_slot"
            % (name, ", ".join(sorted(state.slots)), "s" if len(state.slots) == 1 else "")
        )
    ops = [Op("delete", layout.ready_member(name, m.node)) for m in state.ready_queue + state.forged_ready]
    # The failure records, and slots another host forged in the index (no decision counted them).
    ops += _held_deletes(state, layout, "failed") + _held_deletes(state, layout, "slot")
    ops += [Op("delete", path) for path in reversed(layout.release_children(name)) if path not in state.missing_subtrees]
    ops.append(Op("delete", layout.release(name), version=state.release_version))
    return ops


def _create_release_ops(layout, entry):
    return [Op("create", layout.release(entry.service), entry.to_bytes())] + [
        Op("create", path) for path in layout.release_children(entry.service)
    ]


def _staged(snapshot):
    return sorted(name for name, state in snapshot.services.items() if state.release_version >= 0)


def _tree_view(snapshot):
    """The part of the tree a controller writes, for diff output."""
    return {
        "rollout": snapshot.rollout.to_dict() if snapshot.rollout else None,
        "staging": {name: snapshot.service(name).release.to_dict() for name in _staged(snapshot) if snapshot.service(name).release},
        "deploy": snapshot.queued_services,
    }


def _describe_progress(snapshot):
    report = rollout_report(snapshot)
    progress = report["progress"]
    return "%s: %d of %d services complete, %d of %d instances on target, deploy queue %s" % (
        report["state"], progress["services_complete"], progress["services_total"],
        progress["instances_on_target"], progress["instances_total"], report["deploy_queue"] or "empty",
    )


def new_rollout_id(spec_hash, now):
    """A readable, unique-enough id for a release given without one."""
    return "%s-%s" % (time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)), spec_hash[:8])


def _unsigned(entry):
    return entry if entry is None else replace(entry, signature=None)


def _resign_ops(snapshot, layout, entry):
    """Replace a staged entry that differs from ``entry`` only by its signature, and drop the refusals it caused.

    The ready queue and other failures stay: the release itself is unchanged.
    """
    state = snapshot.service(entry.service)
    ops = [Op("set", layout.release(entry.service), entry.to_bytes(), version=state.release_version)]
    ops += _held_deletes(state, layout, "failed", [host for host, failure in sorted(state.failures.items())
                                                   if failure is not None and failure.stage == "signature" and failure.version == entry.version])
    return ops


def _held_deletes(state, layout, kind, hosts=None):
    """Deletes of the ``kind`` nodes (slots or failure records) of ``hosts``, each checked against the version read."""
    return [Op("delete", path, version=version) for path, version in state.deletes_of(layout, kind, hosts)]


def plan_seed(snapshot, layout, spec, missing, force=False, by="", now=None, sign=None):
    """Plan the seeding of ``spec`` (a ReleaseSpec); see the module ``rollout`` for the rules.

    ``sign`` (entry -> signed entry) signs every release entry; a rollout already seeded with
    this release whose entries carry other signatures (none, or an old key's) is re-signed in place.
    """
    now = time.time() if now is None else now
    plan = plan_release(spec, snapshot.roster_sizes())
    current = snapshot.rollout
    before = _tree_view(snapshot)
    sign = sign or (lambda entry: entry)
    if current is not None and current.spec_hash == spec.spec_hash and spec.id in (None, current.id) and current.state != "aborted":
        repairs = [path for name in _staged(snapshot) for path in snapshot.service(name).missing_subtrees]
        wanted = [sign(service.release_entry(current.id)) for service in spec.services]
        staged = {entry.service: snapshot.service(entry.service).release for entry in wanted}
        resigned = [entry for entry in wanted if entry.signature is not None and staged[entry.service] not in (None, entry)
                    and _unsigned(staged[entry.service]) == _unsigned(entry)]
        ops = [op for entry in resigned for op in _resign_ops(snapshot, layout, entry)] + [Op("create", path) for path in repairs]
        notes = (["repaired the missing sub-trees %s" % ", ".join(repairs)] if repairs else []) + (
            ["signed %s with key %s" % (", ".join(entry.service for entry in resigned), resigned[0].signature.key)] if resigned else [])
        after = dict(before, staging=dict(before.get("staging", {}), **{entry.service: entry.to_dict() for entry in resigned})) if resigned else before
        return Change(ops=tuple(_ensure_containers(missing) + ops) if ops else (),
                      before=before, after=after, message="rollout %s already seeded with this release%s" % (
                          current.id, "".join("; " + note for note in notes)),
                      warnings=plan.warnings, result={"rollout_id": current.id, "deploy_order": list(plan.order)})
    if current is None and snapshot.rollout_version >= 0 and not force:
        raise WriteRefused("%s holds malformed data; inspect it with rollout_info, then re-run with force: true to replace it" % layout.rollout)
    if current is not None and current.active and overall_state(snapshot)[0] != "done" and not force:
        raise WriteRefused(
            "rollout %s is %s (%s); wait for it, cancel it with state: absent, or pass force: true to replace it"
            % (current.id, current.state, _describe_progress(snapshot))
        )
    rollout_id = spec.id or new_rollout_id(spec.spec_hash, now)
    ops = _ensure_containers(missing)
    for name in _staged(snapshot):
        ops += _delete_release_ops(snapshot, layout, name)
    ops += [Op("delete", layout.deploy_entry(member.node)) for member in snapshot.deploy_queue]
    entries = {service.name: sign(service.release_entry(rollout_id)) for service in spec.services}
    for name in plan.order:
        ops += _create_release_ops(layout, entries[name])
    for name in plan.order:
        entry = DeployEntry(service=name, depends_on=list(entries[name].depends_on))
        ops.append(Op("create", layout.deploy_prefix(name), entry.to_bytes(), sequence=True))
    state = RolloutState(
        id=rollout_id, state="running", spec_hash=spec.spec_hash, services=list(plan.order),
        parallel=spec.parallel, created=now, updated=now, by=by,
    )
    ops.append(_put_rollout(snapshot, layout, state))
    after = {"rollout": state.to_dict(), "staging": {n: entries[n].to_dict() for n in sorted(entries)}, "deploy": list(plan.order)}
    return Change(ops=tuple(ops), before=before, after=after, message="seeded rollout %s: %s" % (rollout_id, " -> ".join(plan.order)),
                  warnings=plan.warnings, result={"rollout_id": rollout_id, "deploy_order": list(plan.order)})


def _put_rollout(snapshot, layout, state):
    if snapshot.rollout_version >= 0:
        return Op("set", layout.rollout, state.to_bytes(), version=snapshot.rollout_version)
    return Op("create", layout.rollout, state.to_bytes())


def _refuse_if_slots(snapshot, what):
    held = snapshot.slots_held
    if held:
        raise WriteRefused(
            "cannot %s while hosts hold upgrade slots (%s); abort the rollout with rollout_control, wait "
            "for in-flight upgrades to finish, or release stale slots with action=release_slot"
            % (what, ", ".join("%s on %s" % (service, host) for service, host, _slot in held))
        )


def plan_cancel(snapshot, layout, missing=None):
    """Plan removing the whole rollout: staging entries, deploy queue and rollout node."""
    before = _tree_view(snapshot)
    staged = _staged(snapshot)
    if not staged and not snapshot.deploy_queue and snapshot.rollout_version < 0:
        return Change(before=before, after=before, message="no rollout to cancel")
    _refuse_if_slots(snapshot, "cancel the rollout")
    ops = []
    for name in staged:
        ops += _delete_release_ops(snapshot, layout, name)
    ops += [Op("delete", layout.deploy_entry(member.node)) for member in snapshot.deploy_queue]
    if snapshot.rollout_version >= 0:
        ops.append(Op("delete", layout.rollout, version=snapshot.rollout_version))
    rollout_id = snapshot.rollout.id if snapshot.rollout else None
    return Change(ops=tuple(ops), before=before, after={"rollout": None, "staging": {}, "deploy": []},
                  message="cancelled rollout %s" % rollout_id, result={"rollout_id": rollout_id})


def plan_stage(snapshot, layout, missing, service_spec, rollout_id=None, now=None, sign=None):
    """Plan adding or updating one staged service (the seed's first manual step).

    The quorum is checked against the roster as seeding checks it: one that could never be met
    raises PlanError before anything is written. ``sign`` signs the entry (see ``plan_seed``).
    """
    if not isinstance(service_spec, ServiceSpec):
        raise TypeError("plan_stage expects a ServiceSpec")
    roster_size = snapshot.roster_sizes().get(service_spec.name, 0)
    _resolved_quorum, warnings = check_service(service_spec.name, service_spec.quorum, roster_size, service_spec.max_parallel)
    state = snapshot.service(service_spec.name)
    rollout_id = rollout_id or (state.release.rollout if state.release else None) or (snapshot.rollout.id if snapshot.rollout else None)
    rollout_id = rollout_id or new_rollout_id(hashlib.sha256(canonical_json(service_spec.to_dict())).hexdigest(), time.time() if now is None else now)
    entry = service_spec.release_entry(rollout_id)
    entry = sign(entry) if sign is not None else entry
    before = {"staging": {service_spec.name: state.release.to_dict() if state.release else None}}
    after = {"staging": {service_spec.name: entry.to_dict()}}
    if state.release == entry and state.missing_subtrees:
        return Change(ops=tuple(_ensure_containers(missing) + [Op("create", path) for path in state.missing_subtrees]), before=before,
                      after=before, message="service %s already staged; repaired its missing sub-trees %s" % (
                          entry.service, ", ".join(state.missing_subtrees)), warnings=tuple(warnings), result={"entry": entry.to_dict()})
    if state.release == entry:
        return Change(before=before, after=before, message="service %s already staged" % entry.service, warnings=tuple(warnings),
                      result={"entry": entry.to_dict()})
    if sign is not None and state.release is not None and _unsigned(state.release) == _unsigned(entry):
        return Change(ops=tuple(_resign_ops(snapshot, layout, entry)), before=before, after=after,
                      message="service %s already staged; signed it with key %s" % (entry.service, entry.signature.key),
                      warnings=tuple(warnings), result={"entry": entry.to_dict()})
    if state.slots:
        raise WriteRefused("service %s: cannot change its release while %s hold upgrade slots; pause the rollout and wait"
                           % (entry.service, ", ".join(sorted(state.slots))))
    ops = _ensure_containers(missing)
    if state.release_version >= 0:
        ops.append(Op("set", layout.release(entry.service), entry.to_bytes(), version=state.release_version))
        ops += [Op("delete", layout.ready_member(entry.service, m.node)) for m in state.ready_queue + state.forged_ready]
        ops += _held_deletes(state, layout, "failed")
    else:
        # Copies of failure records whose release was removed by hand would halt the new one.
        ops += _create_release_ops(layout, entry) + _held_deletes(state, layout, "failed")
    return Change(ops=tuple(ops), before=before, after=after, message="staged %s %s" % (entry.service, entry.version),
                  warnings=tuple(warnings), result={"entry": entry.to_dict()})


def plan_unstage(snapshot, layout, service):
    """Plan removing one staged service and its deploy queue entries."""
    validate_name("service")(service, (None, ""), "name")
    state = snapshot.service(service)
    before = {"staging": {service: state.release.to_dict() if state.release else None}}
    if state.release_version < 0:
        return Change(before=before, after=before, message="service %s is not staged" % service)
    ops = _delete_release_ops(snapshot, layout, service)
    ops += [Op("delete", layout.deploy_entry(m.node)) for m in snapshot.deploy_queue if m.name == service]
    return Change(ops=tuple(ops), before=before, after={"staging": {service: None}}, message="unstaged %s" % service)


def plan_deploy_queue(snapshot, layout, missing, services, by="", now=None):
    """Plan setting the deploy order explicitly (the seed's second manual step) and starting the rollout.

    Every service must be staged, with one rollout id, and listed after its dependencies.
    """
    now = time.time() if now is None else now
    if not services or len(set(services)) != len(services):
        raise WriteRefused("services must list each staged service once, in deploy order; got %s" % (services,))
    validate_names("service")(services, (None, ""), "services")
    entries = {}
    for name in services:
        entry = snapshot.service(name).release
        if entry is None:
            raise WriteRefused("service %s is not staged: stage it with zkrollout.dc.staging first" % name)
        entries[name] = entry
    for position, name in enumerate(services):
        for dep in entries[name].depends_on:
            if dep not in services:
                raise PlanError("service %s depends on %s, which is not in the deploy queue; add it before %s" % (name, dep, name))
            if services.index(dep) > position:
                raise PlanError("service %s depends on %s, so %s must come before %s in the deploy queue" % (name, dep, dep, name))
    deploy_order({name: list(entries[name].depends_on) for name in services})
    ids = sorted(set(entry.rollout for entry in entries.values()))
    if len(ids) > 1:
        raise WriteRefused("the staged services belong to different rollouts (%s); stage them again with one rollout_id" % ", ".join(ids))
    spec = ReleaseSpec(services=tuple(_service_spec(entries[name]) for name in services), id=ids[0])
    before = {"deploy": snapshot.queued_services, "rollout": snapshot.rollout.to_dict() if snapshot.rollout else None}
    current = snapshot.rollout
    if snapshot.queued_services == list(services) and current is not None and current.id == ids[0] and current.services == list(services):
        return Change(before=before, after=before, message="deploy queue already set", result={"rollout_id": ids[0]})
    _refuse_if_slots(snapshot, "reorder the deploy queue")
    ops = _ensure_containers(missing)
    ops += [Op("delete", layout.deploy_entry(m.node)) for m in snapshot.deploy_queue]
    for name in services:
        ops.append(Op("create", layout.deploy_prefix(name), DeployEntry(service=name, depends_on=list(entries[name].depends_on)).to_bytes(), sequence=True))
    state = RolloutState(id=ids[0], state="running", spec_hash=spec.spec_hash, services=list(services), created=now, updated=now, by=by)
    ops.append(_put_rollout(snapshot, layout, state))
    return Change(ops=tuple(ops), before=before, after={"deploy": list(services), "rollout": state.to_dict()},
                  message="deploy queue set: %s" % " -> ".join(services), result={"rollout_id": ids[0]})


def _service_spec(entry):
    return ServiceSpec(name=entry.service, version=entry.version, artifact=entry.artifact, quorum=entry.quorum,
                       max_parallel=entry.max_parallel, on_failure=entry.on_failure, depends_on=list(entry.depends_on))


_TRANSITIONS = {
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "abort": (("running", "paused", "failed"), "aborted"),
}


def plan_control(snapshot, layout, action, service=None, host=None, force=False, reason="", now=None, missing=None):
    """Plan pause, resume, abort, retry (a failed service), release_slot (a stale slot), leave_roster or prepare (``missing``: the containers to create)."""
    now = time.time() if now is None else now
    rollout = snapshot.rollout
    validate_optional(validate_name("service"))(service, (None, ""), "service")
    validate_optional(validate_name("host"))(host, (None, ""), "host")
    if action not in CONTROL_ACTIONS:
        raise WriteRefused("unknown action %r; expected one of %s" % (action, ", ".join(CONTROL_ACTIONS)))
    if action == "release_slot":
        return _plan_release_slot(snapshot, layout, service, host, force, now)
    if action == "leave_roster":
        return _plan_leave_roster(snapshot, layout, service, host, force)
    if action == "prepare":
        return _plan_prepare(layout, missing)
    if rollout is None:
        raise WriteRefused("there is no rollout at %s to %s; seed one with zkrollout.dc.rollout" % (layout.rollout, action))
    before = {"rollout": rollout.to_dict()}
    if action == "retry":
        return _plan_retry(snapshot, layout, service, rollout, before, now)
    allowed, target = _TRANSITIONS[action]
    if rollout.state == target:
        return Change(before=before, after=before, message="rollout %s is already %s" % (rollout.id, target))
    if rollout.state not in allowed:
        raise WriteRefused("cannot %s rollout %s: it is %s (%s is possible from %s)" % (action, rollout.id, rollout.state, action, ", ".join(allowed)))
    state = _with(rollout, state=target, updated=now, reason=reason or "%s by operator" % target)
    return Change(ops=(Op("set", layout.rollout, state.to_bytes(), version=snapshot.rollout_version),), before=before,
                  after={"rollout": state.to_dict()}, message="rollout %s %s" % (rollout.id, target))


def _with(rollout, **changes):
    values = rollout.to_dict()
    values.update(changes)
    return RolloutState.from_dict(values)


def _plan_retry(snapshot, layout, service, rollout, before, now):
    if not service:
        raise WriteRefused("action retry needs the service whose failures to clear")
    state = snapshot.service(service)
    if state.release is None:
        raise WriteRefused("service %s is not staged in rollout %s" % (service, rollout.id))
    ops = _held_deletes(state, layout, "failed")
    after = dict(before)
    if rollout.state == "failed":
        resumed = _with(rollout, state="running", updated=now, reason="retry of %s" % service)
        ops.append(Op("set", layout.rollout, resumed.to_bytes(), version=snapshot.rollout_version))
        after = {"rollout": resumed.to_dict()}
    before = dict(before, failures={service: sorted(state.failures)})
    after = dict(after, failures={service: []})
    return Change(ops=tuple(ops), before=before, after=after if ops else before,
                  message="retrying %s: cleared failures on %s" % (service, ", ".join(sorted(state.failures)) or "no host"))


def _plan_leave_roster(snapshot, layout, service, host, force):
    """Remove ``host`` from the roster of ``service`` (the host no longer runs it): under the ACL profile only the deployer may."""
    state = _host_action_service(snapshot, "leave_roster", service, host)
    before = {"roster": {service: list(state.roster)}}
    if host not in state.roster:
        return Change(before=before, after=before, message="%s is not in the roster of %s" % (host, service))
    busy = [what for what, held in (("is registered as a healthy instance", host in state.registrations),
                                    ("holds an upgrade slot", host in state.slots)) if held]
    if busy and not force:
        raise WriteRefused("%s %s of %s: it still runs the service; stop it there first (remove the service from the agent's "
                           "config), or pass force: true" % (host, " and ".join(busy), service))
    after = {"roster": {service: [other for other in state.roster if other != host]}}
    return Change(ops=(Op("delete", layout.roster_member(service, host)),), before=before, after=after,
                  message="removed %s from the roster of %s" % (host, service))


def _plan_prepare(layout, missing):
    """Create the containers agents may not create under an ACL profile (``read_plan_apply`` adds the hosts' own parents)."""
    missing = list(missing or ())
    return Change(ops=tuple(_ensure_containers(missing)), before={"containers": [path for path in layout.containers() if path not in missing]},
                  after={"containers": list(layout.containers())},
                  message="created %s" % ", ".join(missing) if missing else "the containers under %s exist" % layout.root)


def _host_action_service(snapshot, action, service, host):
    """The ServiceState an action on one host of one service works on; refused without both names."""
    if not service or not host:
        raise WriteRefused("action %s needs service and host" % action)
    return snapshot.service(service)


def _plan_release_slot(snapshot, layout, service, host, force, now):
    state = _host_action_service(snapshot, "release_slot", service, host)
    before = {"slots": {service: sorted(state.slots)}}
    # A slot another host forged in the index counts for no decision, but it still keeps the host from taking one.
    if host not in state.slots and host not in (state.listed_slots or ()):
        return Change(before=before, after=before, message="%s holds no slot of %s" % (host, service))
    slot = state.slots.get(host)
    alive = slot_owner_alive(snapshot, host, slot)
    if not force and slot is None:
        raise WriteRefused("the slot of %s on %s is malformed, so its owner is unknown: inspect it with rollout_info and check the host, "
                           "then pass force: true" % (service, host))
    if not force and alive:
        raise WriteRefused(
            "the slot of %s on %s is held by %s, whose ZooKeeper session is alive: it is still upgrading %s, and releasing its slot "
            "could break the quorum. Wait for it, or check the host and pass force: true" % (service, host, slot.owner, host))
    registered = state.registrations.get(host)
    instance = ("%s is registered on %s" % (host, registered) if registered else
                "%s is not registered, so it counts as not healthy until its agent registers it" % host)
    return Change(ops=tuple(_held_deletes(state, layout, "slot", [host])), before=before,
                  after={"slots": {service: sorted(set(state.slots) - {host})}},
                  message="released the slot of %s on %s (%s); %s" % (
                      service, host, "forced" if force and alive is not False else "owner %s no longer connected" % slot.owner, instance))
