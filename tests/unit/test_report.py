# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the report and the status view say about a tree: the README's example, and a halted service."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.render import status_lines
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import rollout_report
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact, Failure, ReleaseEntry, RolloutState, Slot
from ansible_collections.zkrollout.dc.plugins.module_utils.core.snapshot import QueueMember, ServiceState, Snapshot

README = Path(__file__).resolve().parents[2] / "README.md"
ROLLOUT = "2026-11-22.1"
ARTIFACT = Artifact(url="https://artifacts.example/app.tar.gz", sha256="0" * 64)


def _queue(*names):
    return tuple(QueueMember("%s-%010d" % (name, sequence), name, sequence) for sequence, name in enumerate(names))


def _service(name, version, quorum, hosts, registrations, ready=(), slots=None, failures=None, depends_on=()):
    entry = ReleaseEntry(rollout=ROLLOUT, service=name, version=version, artifact=ARTIFACT, quorum=quorum, depends_on=list(depends_on))
    return ServiceState(name=name, release=entry, release_version=0, roster=tuple(hosts), registrations=registrations,
                        ready_queue=_queue(*ready), slots=slots or {}, failures=failures or {})


def _tree(services, parallel=False):
    names = [service.name for service in services]
    rollout = RolloutState(id=ROLLOUT, state="running", spec_hash="0" * 64, services=names, parallel=parallel)
    hosts = frozenset(host for service in services for host in service.roster)
    return Snapshot(rollout=rollout, rollout_version=0, deploy_queue=_queue(*names), services={s.name: s for s in services},
                    live_agents=hosts, live_sessions=frozenset())


def _readme_block(after):
    text = README.read_text()
    start = text.index("```\n", text.index(after)) + len("```\n")
    return text[start:text.index("```", start)].rstrip("\n").splitlines()


def test_the_readme_status_example_is_what_status_yml_prints_for_the_tree_it_describes():
    hosts = ("h1", "h2", "h3", "h4")
    # h2 holds A's slot (its instance deregistered in the slot's transaction), h4 is offline,
    # every host prepared B's target and waits in B's ready queue.
    a = _service("A", "2.0.0", 2, hosts, {"h1": "2.0.0", "h3": "1.0.0"}, ready=("h2", "h3"),
                 slots={"h2": Slot(to_version="2.0.0", from_version="1.0.0", since=1.0, owner="agent:h2", session="1a")})
    b = _service("B", "1.4.0", "50%", hosts, {host: "1.0.0" for host in hosts}, ready=hosts, depends_on=["A"])

    assert status_lines(rollout_report(_tree([a, b]))) == _readme_block("`status.yml` prints (here in the middle of a rollout")


def _halted_tree(parallel):
    hosts = ("h1", "h2", "h3")
    failure = Failure(version="2.0.0", stage="health", reason="health check failed: HTTP 500", at=1.0, rolled_back_to="1.0.0")
    a = _service("A", "2.0.0", 1, hosts, {"h1": "2.0.0", "h2": "1.0.0", "h3": "1.0.0"}, ready=("h3",), failures={"h2": failure})
    b = _service("B", "2.0.0", 1, hosts, {host: "1.0.0" for host in hosts}, ready=hosts)
    c = _service("C", "2.0.0", 1, hosts, {host: "1.0.0" for host in hosts}, ready=hosts, depends_on=["A"])
    return rollout_report(_tree([a, b, c], parallel=parallel))


@pytest.mark.parametrize("parallel, b_verdict", [(True, "ready"), (False, "waiting")])
def test_one_hosts_failure_halts_its_service_and_the_rollout_reads_failed_while_an_independent_one_still_rolls_in_parallel(parallel, b_verdict):
    report = _halted_tree(parallel)

    assert (report["state"], report["reason"]) == ("failed", "A on h2: health check failed: HTTP 500 (health)")
    assert report["services"]["A"]["verdict"] == "halted"
    assert report["services"]["B"]["verdict"] == b_verdict
    assert report["services"]["C"]["verdict"] == "waiting"
