#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_queue
short_description: Set the deploy order of staged services and start their rollout
version_added: 0.1.0
description:
  - The second of the two manual steps of a rollout, after M(zkrollout.dc.staging). Writes the
    deploy queue (one sequential child of C(<root>/deploy) per service, head first) and the
    rollout state in one transaction; agents start taking turns as soon as it lands.
  - Every service must be staged with the same rollout id and listed after its dependencies.
    Refused while hosts hold upgrade slots.
options:
  services:
    description: Staged services in deploy order, head first.
    type: list
    elements: str
    required: true
  by:
    description: Who starts the rollout, recorded in the rollout state; printable text of at most 256 characters.
    type: str
    default: ansible
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes
  - zkrollout.dc.zookeeper
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Roll A first, then B
  zkrollout.dc.deploy_queue:
    services: [A, B]
"""

RETURN = r"""
rollout_id:
  description: Id of the rollout the queue belongs to.
  returned: always
  type: str
  sample: 2026-11-22.1
msg:
  description: What was done.
  returned: always
  type: str
  sample: "deploy queue set: A -> B"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import run_change, zk_argument_spec
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import plan_deploy_queue


def main():
    argument_spec = zk_argument_spec()
    argument_spec.update(services=dict(type="list", elements="str", required=True), by=dict(type="str", default="ansible"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    run_change(module, lambda snapshot, layout, missing: plan_deploy_queue(snapshot, layout, missing, params["services"], by=params["by"]))


if __name__ == "__main__":
    main()
