# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a rollout: deploy order, quorum arithmetic and the upgrade budget.

Pure functions, no I/O. The rules (docs/architecture.md, "Rules"):

- ``B depends_on A``: no B instance switches before every online A instance runs A's target,
  so the deploy queue is a topological order of the dependency graph. Ties are broken by the
  order in which the release declares its services, so the same release gives the same queue.
- Quorum ``Q``: an instance may stop only if at least ``Q`` healthy instances remain. Healthy
  means registered in ``current`` and not holding an upgrade slot (a slot holder counts as down
  from the moment it takes the slot). A quorum is at least 1: all instances of a service never
  stop together.
- Budget: ``k = min(max_parallel - held_slots, healthy - Q)``, never below 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .model import ReleaseSpec


class PlanError(ValueError):
    """A release that can never be rolled out as declared; the message says what to change."""


def dependency_cycle(dependencies):
    """Return one cycle of the graph as a list ``[A, B, C, A]``, or None if there is none.

    ``dependencies`` maps each service to the services it depends on. Services are visited in
    the mapping's order so the cycle reported is deterministic.
    """
    visiting, done = set(), set()
    stack = []

    def visit(name):
        visiting.add(name)
        stack.append(name)
        for dep in dependencies.get(name, ()):
            if dep in visiting:
                return stack[stack.index(dep):] + [dep]
            if dep not in done and dep in dependencies:
                found = visit(dep)
                if found:
                    return found
        visiting.discard(name)
        done.add(name)
        stack.pop()
        return None

    for name in dependencies:
        if name not in done:
            found = visit(name)
            if found:
                return found
    return None


def deploy_order(dependencies):
    """Topological order of ``dependencies`` (service -> services it depends on).

    Dependencies come before their dependants; among services that are ready together the one
    declared first comes first. Raises PlanError naming an unknown dependency or a cycle.
    """
    for name, deps in dependencies.items():
        for dep in deps:
            if dep not in dependencies:
                raise PlanError(
                    "service %s depends on unknown service %s: add %s to the release or remove it "
                    "from %s.depends_on" % (name, dep, dep, name)
                )
    cycle = dependency_cycle(dependencies)
    if cycle:
        raise PlanError(
            "dependency cycle %s: a service cannot wait for itself; remove one of these "
            "depends_on entries" % " -> ".join(cycle)
        )
    rank = {name: index for index, name in enumerate(dependencies)}
    remaining = {name: set(deps) for name, deps in dependencies.items()}
    order = []
    while remaining:
        ready = sorted((name for name, deps in remaining.items() if not deps), key=rank.get)
        head = ready[0]
        order.append(head)
        del remaining[head]
        for deps in remaining.values():
            deps.discard(head)
    return order


def resolve_quorum(quorum, roster_size):
    """The number of instances that must stay healthy, for a service with ``roster_size`` hosts.

    ``quorum`` is an integer or a percentage string; a percentage rounds up (``"50%"`` of 5 is
    3), never down, because rounding down would let one instance too many stop.
    """
    if isinstance(quorum, str) and quorum.endswith("%"):
        return int(math.ceil(int(quorum[:-1]) * roster_size / 100.0))
    return int(quorum)


def upgrade_budget(healthy, held_slots, quorum, max_parallel):
    """How many more slots may be taken now.

    ``healthy`` counts healthy instances whose host holds no slot, ``held_slots`` the slots held,
    ``quorum`` the resolved quorum. Never negative.
    """
    return max(0, min(max_parallel - held_slots, healthy - quorum))


def slot_verdict(service, candidate, healthy_hosts, slot_holders, quorum, max_parallel, confirmed_down=False):
    """Whether ``candidate`` may take an upgrade slot of ``service`` now, and why.

    ``healthy_hosts`` are the hosts registered in ``current/<service>``, ``slot_holders`` the
    hosts holding a slot. A candidate that is not registered is *down* when its agent is
    connected (``confirmed_down``: the agent registers every healthy instance), and stopping it
    costs no quorum; otherwise its state is *unknown* (its agent's session expired, or it has no
    agent): its instance may well be serving, so it may stop only while the registered healthy
    hosts alone meet the quorum. Returns ``(allowed, reason)``.
    """
    healthy = set(healthy_hosts) - set(slot_holders)
    held = len(set(slot_holders))
    if candidate in slot_holders:
        return True, "%s already holds a slot of %s" % (candidate, service)
    if held >= max_parallel:
        return False, "waiting: %s has %d of %d slots held (max_parallel %d)" % (service, held, max_parallel, max_parallel)
    if candidate not in healthy and confirmed_down:
        return True, "slot allowed: %s is down (its agent is connected and has not registered it), so stopping it costs %s no quorum" % (
            candidate, service)
    if candidate not in healthy:
        if len(healthy) < quorum:
            return False, ("waiting: %s is not registered and its agent is not connected, so its instance may be serving; %s has %d "
                           "registered healthy, quorum %d" % (candidate, service, len(healthy), quorum))
        return True, "slot allowed: %s's state is unknown (no registration, no agent), and %s keeps %d registered healthy >= quorum %d" % (
            candidate, service, len(healthy), quorum)
    remaining = len(healthy - {candidate})
    if remaining < quorum:
        return False, "waiting: %s has %d healthy, quorum %d" % (service, len(healthy), quorum)
    return True, "slot allowed: %s keeps %d healthy >= quorum %d after %s stops" % (service, remaining, quorum, candidate)


@dataclass(frozen=True)
class ServicePlan(object):
    """One service of a checked plan."""

    name: str
    roster_size: int
    quorum: int
    max_parallel: int
    depends_on: tuple

    @property
    def parallel_width(self):
        """Instances that can be upgraded at once when every instance is healthy."""
        return max(1, min(self.max_parallel, self.roster_size - self.quorum))

    @property
    def waves(self):
        """Rounds of upgrades needed when every instance is healthy: ``ceil(N / k)``."""
        return int(math.ceil(self.roster_size / float(self.parallel_width))) if self.roster_size else 0


@dataclass(frozen=True)
class Plan(object):
    """A release checked against a roster: the deploy order and each service's numbers."""

    order: tuple
    services: dict
    parallel: bool
    warnings: tuple

    def makespan_lower_bound(self, switch_seconds):
        """The shortest possible rollout time if each switch takes ``switch_seconds``.

        Sequential releases sum ``ceil(N/k) * T`` over the deploy queue; parallel releases take
        the heaviest dependency path instead.
        """
        cost = {name: self.services[name].waves * switch_seconds for name in self.order}
        if not self.parallel:
            return float(sum(cost.values()))
        finish = {}
        for name in self.order:
            deps = self.services[name].depends_on
            finish[name] = cost[name] + max([finish[dep] for dep in deps] or [0.0])
        return float(max(finish.values() or [0.0]))


def check_service(service, quorum, roster_size, max_parallel):
    """Resolve and check one service's quorum against its roster; return (quorum, warnings).

    Raises PlanError when the service could never start or could stop every instance.
    """
    warnings = []
    if max_parallel < 1:
        raise PlanError("service %s: max_parallel %r must be at least 1" % (service, max_parallel))
    resolved = resolve_quorum(quorum, roster_size)
    if roster_size == 0:
        warnings.append(
            "service %s: no host in the roster runs it yet, so quorum %s cannot be checked; "
            "install the agent on its hosts first" % (service, quorum)
        )
        return max(resolved, 1), warnings
    if resolved < 1:
        raise PlanError(
            "service %s: quorum %s resolves to 0 of %d hosts, which would let every instance stop "
            "at once; use a quorum of at least 1" % (service, quorum, roster_size)
        )
    if resolved >= roster_size:
        advice = "add hosts" if roster_size == 1 else "lower the quorum below %d or add hosts" % roster_size
        raise PlanError(
            "service %s: quorum %s needs %d healthy of %d hosts, so no host may ever stop; %s"
            % (service, quorum, resolved, roster_size, advice)
        )
    return resolved, warnings


def plan_release(spec, roster_sizes):
    """Check a ReleaseSpec against the roster (service -> number of hosts) and build its Plan.

    Raises PlanError for cycles, unknown dependencies and impossible quorums.
    """
    if not isinstance(spec, ReleaseSpec):
        raise TypeError("plan_release expects a ReleaseSpec")
    order = deploy_order({s.name: list(s.depends_on) for s in spec.services})
    services = {}
    warnings = []
    for service in spec.services:
        roster_size = roster_sizes.get(service.name, 0)
        quorum, service_warnings = check_service(service.name, service.quorum, roster_size, service.max_parallel)
        warnings.extend(service_warnings)
        services[service.name] = ServicePlan(
            name=service.name,
            roster_size=roster_size,
            quorum=quorum,
            max_parallel=service.max_parallel,
            depends_on=tuple(service.depends_on),
        )
    return Plan(order=tuple(order), services=services, parallel=spec.parallel, warnings=tuple(warnings))
