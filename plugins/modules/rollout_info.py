#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_info
short_description: Read the whole state of a ZooKeeper-coordinated rollout
version_added: 0.1.0
description:
  - Returns, as structured data, every host's service state (online, offline or upgrading, and
    the version it runs), every service's deploy state (target, quorum, healthy count, upgrade
    budget, ready queue, held slots, failures) with a ready-to-roll verdict and its reason, the
    deploy queue and the overall rollout state.
  - Malformed znodes do not fail the task; they are listed in RV(problems) with their path.
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes.info_module
  - zkrollout.dc.zookeeper
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Read the rollout
  zkrollout.dc.rollout_info:
    zk_hosts: zk1:2181,zk2:2181,zk3:2181
  register: rollout

- name: Show why service B is not rolling
  ansible.builtin.debug:
    msg: "{{ rollout.services.B.verdict }}: {{ rollout.services.B.reason }}"
"""

RETURN = r"""
state:
  description: Overall state (V(none), V(running), V(paused), V(aborted), V(failed) or V(done)).
  returned: always
  type: str
  sample: running
reason:
  description: Why the rollout is in that state.
  returned: always
  type: str
  sample: 1 of 2 services complete
rollout:
  description: The rollout node (id, state, services, parallel, created, by), or null.
  returned: always
  type: dict
deploy_queue:
  description: Services still to roll (the deploy queue without its complete services), head first.
  returned: always
  type: list
  elements: str
services_in_order:
  description: The rollout's services in deploy order.
  returned: always
  type: list
  elements: str
hosts:
  description: Per host, per service, C(state) (online, offline, upgrading), C(version) and C(target).
  returned: always
  type: dict
  sample: {"h1": {"A": {"state": "online", "version": "2.0.0", "target": "2.0.0"}}}
services:
  description:
    - Per service, C(target), C(quorum), C(quorum_resolved), C(max_parallel), C(hosts), C(online),
      C(healthy), C(on_target), C(budget), C(ready_queue), C(slots), C(failures), C(complete),
      C(verdict) and C(reason).
    - C(abandoned_slots) maps each host whose slot's owner (agent or controller session) is no
      longer connected to C(owner), C(instance) (what the tree knows of the host) and
      C(free_with), the command that frees the slot.
  returned: always
  type: dict
progress:
  description: Counts of complete services and of instances on their target.
  returned: always
  type: dict
  sample: {"services_total": 2, "services_complete": 1, "instances_total": 10, "instances_on_target": 7}
problems:
  description: Znodes that could not be read, with their path and what is wrong.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import zk_argument_spec, zk_session
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import rollout_report
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot


def main():
    module = AnsibleModule(argument_spec=zk_argument_spec(), supports_check_mode=True)
    with zk_session(module) as (client, layout):
        report = rollout_report(read_snapshot(client, layout))
    for problem in report["problems"]:
        module.warn(problem)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
