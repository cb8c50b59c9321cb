#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_wait
short_description: Wait for a ZooKeeper-coordinated rollout to finish
version_added: 0.1.0
description:
  - Waits until the rollout is done, failed or aborted, or O(timeout) seconds pass, and returns
    a progress summary.
  - Woken by ZooKeeper watches on the rollout state, the deploy queue and each service's
    registrations, slots and failures; there is no fixed polling interval.
  - The rollout does not depend on this task; the hosts go on upgrading themselves if it ends.
  - Fails when the rollout fails (naming each failed host and its reason), is aborted, or, with
    O(fail_on_timeout=true), when the timeout passes.
options:
  timeout:
    description: Seconds to wait at most.
    type: float
    default: 600
  fail_on_timeout:
    description: Fail the task when O(timeout) passes before the rollout ends.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes.info_module
  - zkrollout.dc.zookeeper
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Wait up to an hour for the hosts to finish
  zkrollout.dc.rollout_wait:
    timeout: 3600
  register: waited

- name: Show what happened
  ansible.builtin.debug:
    var: waited.events
"""

RETURN = r"""
state:
  description: Final state (V(done), V(failed), V(aborted)), or the state at the timeout.
  returned: always
  type: str
  sample: done
reason:
  description: Why the rollout is in that state; for a failure, each failed host and its reason.
  returned: always
  type: str
timed_out:
  description: Whether the timeout ended the wait.
  returned: always
  type: bool
elapsed:
  description: Seconds waited.
  returned: always
  type: float
events:
  description: Progress lines, one per change seen (host versions, verdicts, deploy queue).
  returned: always
  type: list
  elements: str
  sample: ["    4.2s A on h1: online 1.0.0 -> upgrading 1.0.0"]
progress:
  description: Counts of complete services and of instances on their target.
  returned: always
  type: dict
report:
  description: The full state, as returned by M(zkrollout.dc.rollout_info).
  returned: always
  type: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import zk_argument_spec, zk_session
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.waiter import wait_for_rollout


def main():
    argument_spec = zk_argument_spec()
    argument_spec.update(timeout=dict(type="float", default=600.0), fail_on_timeout=dict(type="bool", default=True))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    started = time.monotonic()
    with zk_session(module) as (client, layout):
        report, events, timed_out = wait_for_rollout(client, layout, module.params["timeout"])
    result = dict(
        changed=False, state=report["state"], reason=report["reason"], timed_out=timed_out,
        elapsed=round(time.monotonic() - started, 3), events=events, progress=report["progress"], report=report,
    )
    if report["state"] == "none":
        module.fail_json(msg="there is no rollout to wait for; seed one with zkrollout.dc.rollout", **result)
    if report["state"] in ("failed", "aborted"):
        module.fail_json(msg="rollout %s: %s" % (report["state"], report["reason"]), **result)
    if timed_out and module.params["fail_on_timeout"]:
        module.fail_json(msg="timed out after %.0fs with the rollout %s (%s); the hosts go on upgrading"
                         % (module.params["timeout"], report["state"], report["reason"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
