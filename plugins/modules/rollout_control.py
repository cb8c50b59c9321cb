#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollout_control
short_description: Pause, resume, abort or retry a ZooKeeper-coordinated rollout
version_added: 0.1.0
description:
  - Steers a running rollout by changing its state; agents read the state before taking any
    upgrade slot.
  - V(pause) and V(abort) stop new upgrades; upgrades in flight finish or roll back.
    V(resume) continues a paused rollout. V(retry) clears a service's failure records and
    resumes a failed rollout. V(release_slot) frees the upgrade slot of a host whose owner
    (the host's agent, or the controller session that took it) is no longer connected; the
    message says what the tree knows of the host (registered on a version, or not registered).
    A slot whose owner is connected is refused, whatever its deadline says.
  - V(leave_roster) removes a host from a service's roster once it no longer runs the service
    (the quorum of a percentage is resolved against the roster). Agents add themselves to
    rosters but, under the ACL profile, may not remove anyone, so that no host can shrink a
    roster; a host still registered for the service or holding its slot is refused.
  - V(prepare) creates the tree's containers and, under O(zk_acl_profile), the own parent
    (C(hosts/<host>)) of every host the profile's agent identities are named after, and gives the
    shared parents the profile's ACL again. Agents may create none of these under the profile, so
    run it as the deployer before the agents start, and again after adding hosts to the profile.
    Seeding a release does the same.
options:
  action:
    description: What to do.
    type: str
    required: true
    choices: [pause, resume, abort, retry, release_slot, leave_roster, prepare]
  service:
    description: The service, for O(action=retry), O(action=release_slot) and O(action=leave_roster).
    type: str
  host:
    description: The host whose slot to release (O(action=release_slot)), or to remove from the roster (O(action=leave_roster)).
    type: str
  force:
    description:
      - With O(action=release_slot), release the slot even while its owner is connected, or when its
        payload is malformed (owner unknown). Only do this after checking that the host is not upgrading.
      - With O(action=leave_roster), remove the host even while it is registered or holds a slot.
    type: bool
    default: false
  reason:
    description: Why, recorded in the rollout state; printable text of at most 1024 characters.
    type: str
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes
  - zkrollout.dc.zookeeper
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Create the tree and every host's own parent before the agents start (as the deployer)
  zkrollout.dc.rollout_control:
    action: prepare
    zk_certfile: /etc/zkrollout/deployer.pem
    zk_keyfile: /etc/zkrollout/deployer-key.pem
    zk_tls: true
    zk_ca: /etc/zkrollout/zk-ca.pem
    zk_acl_profile:
      deployer: ["x509:CN=deployer,O=example"]
      agents: ["x509:CN=web1,O=example", "x509:CN=web2,O=example"]
      readers: ["world:anyone"]

- name: Pause the rollout during the incident
  zkrollout.dc.rollout_control:
    action: pause
    reason: incident 4711

- name: Retry service B after fixing its release
  zkrollout.dc.rollout_control:
    action: retry
    service: B

- name: web3 no longer runs service B
  zkrollout.dc.rollout_control:
    action: leave_roster
    service: B
    host: web3

- name: Free the slot a dead controller left behind
  zkrollout.dc.rollout_control:
    action: release_slot
    service: B
    host: web3
"""

RETURN = r"""
msg:
  description: What was done.
  returned: always
  type: str
  sample: rollout 2026-11-22.1 paused
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import run_change, zk_argument_spec
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import CONTROL_ACTIONS, plan_control


def main():
    argument_spec = zk_argument_spec()
    argument_spec.update(
        action=dict(type="str", required=True, choices=list(CONTROL_ACTIONS)),
        service=dict(type="str"),
        host=dict(type="str"),
        force=dict(type="bool", default=False),
        reason=dict(type="str", default=""),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[("action", "retry", ["service"]), ("action", "release_slot", ["service", "host"]), ("action", "leave_roster", ["service", "host"])],
    )
    params = module.params
    run_change(module, lambda snapshot, layout, missing: plan_control(
        snapshot, layout, params["action"], service=params["service"], host=params["host"], force=params["force"], reason=params["reason"],
        missing=missing))


if __name__ == "__main__":
    main()
