#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_wait
short_description: Wait for a ZooKeeper-coordinated rollout to finish, showing each change as it happens
version_added: 0.1.0
description:
  - Waits until the rollout is done, failed or aborted, or O(timeout) seconds pass, and returns
    a progress summary.
  - Woken by ZooKeeper watches on the rollout state, the deploy queue and each service's
    registrations, slots and failures; there is no fixed polling interval.
  - While it waits, every change (a host taking a slot or coming back on its new version, a
    host failing, a service done) is printed as a line at once, in C(ansible-playbook) output
    and in an AWX/Tower job's output, unless O(progress=false). See the notes for how.
  - The rollout does not depend on this task; the hosts go on upgrading themselves if it ends.
  - Fails when the rollout fails (naming each failed host and its reason), is aborted, stalls
    (O(progress_deadline)), or, with O(fail_on_timeout=true), when the timeout passes.
options:
  progress:
    description:
      - Print each change as a line while waiting (handled by the collection's action plugin of
        this module, see the notes).
      - With V(false) the task is silent until it returns; O(round_timeout) and O(since) imply it.
    type: bool
    default: true
  round_timeout:
    description:
      - Wait one round only, which returns at the first change seen, or after this many seconds, with
        RV(finished=false) and a RV(cursor) to continue the wait with O(since).
      - For plays that run the rounds themselves (for example one round per included task file,
        each passing on the previous round's RV(cursor)); the action plugin already does so when
        O(progress=true). An C(until) loop cannot pass the cursor on, since a task's options are set
        once for all its retries.
    type: float
  since:
    description:
      - The RV(cursor) of the previous round. RV(events) then holds only what changed after it, and
        O(timeout) and O(progress_deadline) count from the start of the first round.
      - A cursor of another rollout (the rollout was replaced meanwhile) starts over on the current one.
    type: dict
notes:
  - A module reports only when it returns, so a single call could not show anything during an
    hour-long wait. This module therefore comes with an action plugin of the same name that runs
    it in short rounds (each ends at the first change, or after 30 seconds) and prints each
    round's new lines on the controller's display as they arrive. That display is the same one the
    default callback writes to, and ansible-runner (AWX, Tower, ansible-navigator) records it as
    job output events, so no callback plugin has to be enabled and no C(until) loop written.
  - >-
    Each line reads C(<seconds since the wait began> <what changed>), for example
    C(12.3s A on h1: upgrading -> online 2.0.0). The task's RV(events) repeats all of them.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes.info_module
  - zkrollout.dc.zookeeper
  - zkrollout.dc.wait
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Wait up to an hour for the hosts to finish, printing each change; fail after 10 minutes without a host switching
  zkrollout.dc.rollout_wait:
    timeout: 3600
    progress_deadline: 600
  register: waited

- name: Show what happened
  ansible.builtin.debug:
    var: waited.events

- name: Wait one round (until the first change, at most 30 seconds)
  zkrollout.dc.rollout_wait:
    round_timeout: 30
  register: first_round

- name: Wait another round, reporting only what changed after the first
  zkrollout.dc.rollout_wait:
    round_timeout: 30
    since: "{{ first_round.cursor }}"
  when: not first_round.finished
"""

RETURN = r"""
state:
  description: Final state (V(done), V(failed), V(aborted)), or the state at the timeout, stall or end of the round.
  returned: always
  type: str
  sample: done
reason:
  description: Why the rollout is in that state; for a failure, each failed host and its reason.
  returned: always
  type: str
finished:
  description: False only when a round (O(round_timeout)) ended with the rollout still going; continue with O(since=cursor).
  returned: always
  type: bool
timed_out:
  description: Whether the timeout ended the wait.
  returned: always
  type: bool
stalled:
  description: Whether O(progress_deadline) ended the wait.
  returned: always
  type: bool
elapsed:
  description: Seconds since the wait began (the first round's start).
  returned: always
  type: float
events:
  description: Progress lines, one per change seen (host versions, verdicts, deploy queue); of this round only with O(since).
  returned: always
  type: list
  elements: str
  sample: ["    4.2s A on h1: online 1.0.0 -> upgrading", "    9.8s A on h1: upgrading -> online 2.0.0"]
cursor:
  description: Where the wait stands, to pass as O(since) to the next round. Its content is not an interface.
  returned: always
  type: dict
progress:
  description: Counts of complete services and of instances on their target.
  returned: always
  type: dict
report:
  description: The full state, as returned by M(zkrollout.dc.rollout_info).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import (
    check_positive_seconds,
    wait_argument_spec,
    zk_argument_spec,
    zk_session,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.waiter import WaitCursor, WaitError, wait_for_rollout


def main():
    argument_spec = zk_argument_spec()
    argument_spec.update(wait_argument_spec())
    argument_spec.update(progress=dict(type="bool", default=True), round_timeout=dict(type="float"), since=dict(type="dict"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    check_positive_seconds(module, "timeout", "progress_deadline", "round_timeout")
    try:
        since = None if params["since"] is None else WaitCursor.from_dict(params["since"])
    except WaitError as exc:
        module.fail_json(msg=str(exc))
    with zk_session(module) as (client, layout):
        waited = wait_for_rollout(client, layout, params["timeout"], progress_deadline=params["progress_deadline"],
                                  round_timeout=params["round_timeout"], since=since)
    report = waited.report
    result = dict(
        changed=False, state=report["state"], reason=report["reason"], finished=waited.finished, timed_out=waited.timed_out,
        stalled=waited.stalled is not None, elapsed=waited.elapsed, events=waited.events, cursor=waited.cursor.to_dict(),
        progress=report["progress"], report=report,
    )
    if report["state"] == "none":
        module.fail_json(msg="there is no rollout to wait for; seed one with zkrollout.dc.rollout", **result)
    if report["state"] in ("failed", "aborted"):
        module.fail_json(msg="rollout %s: %s" % (report["state"], report["reason"]), **result)
    if waited.stalled is not None:
        module.fail_json(msg="rollout stalled: %s; the hosts go on upgrading if they can" % waited.stalled, **result)
    if waited.timed_out and params["fail_on_timeout"]:
        module.fail_json(msg="timed out after %.0fs with the rollout %s (%s); the hosts go on upgrading"
                         % (params["timeout"], report["state"], report["reason"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
