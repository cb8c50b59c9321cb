# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The molecule scenario molecule/default, run the way CI runs it: ``molecule test`` from the
repository root, no TTY, ``CI=true``. The scenario brings a fleet of namespace hosts up,
applies the role zkrollout.dc.agent over SSH, converges a second time without a change, checks
every host's registration in ZooKeeper and tears the fleet down; this test then checks that the
fleet really is gone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.zkrollout.dc.tests.bed.fleet import our_namespaces

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "molecule" / "default"
# About two minutes alone on two cores; the bound leaves room for a loaded machine.
MOLECULE_TIMEOUT = 540
DESTROY_TIMEOUT = 120

pytestmark = [pytest.mark.fleet, pytest.mark.zookeeper, pytest.mark.slow, pytest.mark.timeout(MOLECULE_TIMEOUT + DESTROY_TIMEOUT + 60)]


def scenario_prefix():
    """The name prefix of the scenario's fleet, from the scenario's own settings."""
    with open(SCENARIO / "vars" / "fleet.yml") as settings:
        return yaml.safe_load(settings)["fleet_prefix"]


def molecule(*arguments, timeout):
    """Run ``molecule ARGUMENTS`` from the repository root; return (exit code or None on timeout, output).

    molecule and its ansible-playbook runs get a session of their own, so a timeout ends all of
    them and nothing else; the fleet's server has its own session and is left to destroy.yml.
    """
    # NO_COLOR: plain text, for the assertions below and for a readable failure message.
    process = subprocess.Popen(
        [sys.executable, "-m", "molecule", *arguments],
        cwd=REPO,
        env=dict(os.environ, CI="true", NO_COLOR="1"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None, process.communicate()[0]
    return process.returncode, output


def tail(output, lines=150):
    """The last ``lines`` lines of ``output``: where molecule says what failed."""
    return "\n".join(output.splitlines()[-lines:])


def test_molecule_test_converges_idempotently_verifies_and_leaves_no_fleet_behind(request):
    started = time.monotonic()
    status, output = molecule("test", "--scenario-name", "default", timeout=MOLECULE_TIMEOUT)
    took = time.monotonic() - started
    request.node.user_properties.append(("molecule_test_seconds", round(took, 1)))
    print("molecule test: exit %s after %.0fs" % (status, took))

    if status is None:
        destroy_status, destroy_output = molecule("destroy", "--scenario-name", "default", timeout=DESTROY_TIMEOUT)
        pytest.fail(
            "molecule test did not finish within %ds; molecule destroy then exited %s.\n%s\n--- destroy ---\n%s"
            % (MOLECULE_TIMEOUT, destroy_status, tail(output), tail(destroy_output, 40))
        )
    assert status == 0, "molecule test failed (exit %d):\n%s" % (status, tail(output))
    # molecule's closing summary: one line per step, "default > STEP: Executed: Successful" without colours.
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(r"^default\W+%s: Executed: Successful" % step, output, re.M), "molecule test did not run %s:\n%s" % (step, tail(output))

    prefix = scenario_prefix()
    assert our_namespaces(prefix) == [], "molecule test left network namespaces of its fleet (%s-*) behind" % prefix
