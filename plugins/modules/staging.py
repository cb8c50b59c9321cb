#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: staging
short_description: Add, update or remove one staged service of a rollout
version_added: 0.1.0
description:
  - The first of the two manual steps of a rollout (stage each service, then set the deploy
    order with M(zkrollout.dc.deploy_queue)). Most users seed a whole release at once with
    M(zkrollout.dc.rollout) instead.
  - Writes the service's release entry (version, artifact and checksum, quorum, dependencies)
    to C(<root>/staging/<name>). Agents start downloading and verifying the artifact as soon as
    it appears; nothing is switched before the service reaches the head of the deploy queue.
  - Updating an entry clears the service's ready queue and failure records, so every host
    downloads and verifies the new artifact. Refused while hosts hold upgrade slots of it.
options:
  name:
    description: The service.
    type: str
    required: true
  state:
    description: V(present) stages the service, V(absent) removes it and its deploy queue entry.
    type: str
    choices: [present, absent]
    default: present
  version:
    description: Target version (letters, digits, C(.), C(_), C(+), C(-)). Required when O(state=present).
    type: str
  artifact:
    description: Where to download the version. Required when O(state=present).
    type: dict
    suboptions:
      url:
        description:
          - http, https or file URL of the artifact (a tarball).
          - http and https name a host and hold no user or password (agents take credentials from
            their own config or a netrc); file names an absolute path and no other host than
            localhost; no C(.) or C(..) path segments, percent-encoded or not, and no backslashes.
        type: str
        required: true
      sha256:
        description: sha256 of the artifact; agents refuse an artifact that does not match.
        type: str
        required: true
  quorum:
    description:
      - Instances that must stay healthy at all times, as an integer or a percentage of the
        service's hosts such as V(66%) (rounded up). Required when O(state=present).
    type: str
  max_parallel:
    description: Upgrade slots of this service that may be held at once.
    type: int
    default: 1
  on_failure:
    description: V(halt) stops the service's rollout at the first failure; V(rollback) also rolls back the hosts already upgraded.
    type: str
    choices: [halt, rollback]
    default: halt
  depends_on:
    description: Services whose instances must all run their target before this one switches.
    type: list
    elements: str
    default: []
  rollout_id:
    description:
      - Rollout the entry belongs to; defaults to the entry's or the current rollout's id, else a generated one.
      - Letters, digits, C(.), C(_), C(:), C(+) and C(-), starting with a letter or digit, at most 128 characters.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes
  - zkrollout.dc.zookeeper
  - zkrollout.dc.signing
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Stage service A
  zkrollout.dc.staging:
    name: A
    version: 2.0.0
    artifact:
      url: https://artifacts.example/A-2.0.0.tar.gz
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    quorum: 2
    rollout_id: "2026-11-22.1"
    signing_key: /etc/zkrollout/release.key

- name: Remove service C from staging
  zkrollout.dc.staging:
    name: C
    state: absent
"""

RETURN = r"""
entry:
  description: The release entry as written.
  returned: when O(state=present)
  type: dict
  sample: {"service": "A", "version": "2.0.0", "quorum": 2, "max_parallel": 1, "rollout": "2026-11-22.1"}
msg:
  description: What was done.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import (
    SIGNING_MUTUALLY_EXCLUSIVE,
    release_signer,
    run_change,
    signing_argument_spec,
    zk_argument_spec,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import plan_stage, plan_unstage
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import PayloadError, ServiceSpec


def _quorum(value):
    """Module params arrive as strings; a plain number is an integer quorum."""
    return int(value) if value is not None and value.strip().lstrip("-").isdigit() else value


def main():
    argument_spec = zk_argument_spec()
    argument_spec.update(signing_argument_spec())
    argument_spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        version=dict(type="str"),
        artifact=dict(type="dict", options=dict(url=dict(type="str", required=True), sha256=dict(type="str", required=True))),
        quorum=dict(type="str"),
        max_parallel=dict(type="int", default=1),
        on_failure=dict(type="str", choices=["halt", "rollback"], default="halt"),
        depends_on=dict(type="list", elements="str", default=[]),
        rollout_id=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        mutually_exclusive=SIGNING_MUTUALLY_EXCLUSIVE,
        required_if=[("state", "present", ["version", "artifact", "quorum"])],
    )
    params = module.params
    if params["state"] == "absent":
        run_change(module, lambda snapshot, layout, missing: plan_unstage(snapshot, layout, params["name"]))
    raw = dict(name=params["name"], version=params["version"], artifact=params["artifact"], quorum=_quorum(params["quorum"]),
               max_parallel=params["max_parallel"], on_failure=params["on_failure"], depends_on=params["depends_on"])
    try:
        service = ServiceSpec.from_dict(dict(raw, schema=1), "service %s" % params["name"])
    except PayloadError as exc:
        module.fail_json(msg=str(exc))
    sign = release_signer(module)
    run_change(module, lambda snapshot, layout, missing: plan_stage(snapshot, layout, missing, service, params["rollout_id"], sign=sign))


if __name__ == "__main__":
    main()
