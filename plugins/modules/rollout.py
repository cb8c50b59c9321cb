#!/usr/bin/python
# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: rollout
short_description: Seed or cancel a ZooKeeper-coordinated rolling upgrade
version_added: 0.1.0
description:
  - Writes a release (services, versions, artifacts, checksums, quorum, dependencies) into the
    ZooKeeper rollout tree; the agents on the hosts then upgrade themselves in dependency order,
    never below each service's quorum.
  - The staging entries, the deploy queue (topological order of the dependencies) and the
    rollout state are written in one ZooKeeper transaction, so a rollout is either seeded
    whole or not at all.
  - Everything is validated before anything is written; a bad release fails the task and
    leaves the tree unchanged.
  - Seeding the same release again reports no change. A different release while one is
    running is refused unless O(force=true).
options:
  release:
    description:
      - The release, usually the C(zkrollout_release) variable. Required when O(state=present).
      - The module validates every field (the rules below) before anything is written; a bad
        value fails the task naming the service, the field and the value.
      - Pass the release as data. Ansible renders templates in strings it trusts (playbooks,
        inventory, vars files and extra vars) before the module sees them, so a template hidden in a
        version or URL would run on the controller. The P(zkrollout.dc.verbatim#lookup) lookup passes
        a variable exactly as it was loaded (for example from C(-e @release.yml)), so such a template
        reaches the module as text and is refused; the P(ansible.builtin.file#lookup) lookup with the
        P(ansible.builtin.from_yaml#filter) filter reads a release file as data (lookup results are
        never trusted as templates); a release tagged C(!unsafe) in YAML is data too. See the examples;
        C(playbooks/rollout.yml) uses the first.
      - What the module adds to each service's entry (the rollout id, the signature of
        O(signing_key)) is not part of the release.
    type: dict
    suboptions:
      id:
        description:
          - Id of the rollout; generated from the time and the release when absent.
          - Letters, digits, C(.), C(_), C(:), C(+) and C(-), starting with a letter or digit, at most 128 characters.
        type: str
      parallel:
        description:
          - V(true) lets services without a dependency path between them roll at the same time.
          - Default V(false), one service after the other in the deploy order.
        type: bool
      services:
        description: The services to upgrade, at least one, each name once.
        type: list
        elements: dict
        suboptions:
          name:
            description: The service (letters, digits, C(.), C(_), C(-), starting with a letter or digit). Required.
            type: str
          version:
            description: Target version (letters, digits, C(.), C(_), C(+), C(-), starting with a letter or digit). Required.
            type: str
          artifact:
            description: Where agents download the version. Required.
            type: dict
            suboptions:
              url:
                description:
                  - http, https or file URL of the artifact (a tarball). Required.
                  - An http or https URL names a host and holds no user or password (agents take credentials
                    from their own config or a netrc); a file URL names an absolute path and no other host than
                    localhost; no URL has C(.) or C(..) path segments, percent-encoded or not, or backslashes.
                type: str
              sha256:
                description: sha256 of the artifact, 64 hexadecimal digits; agents refuse an artifact that does not match. Required.
                type: str
          quorum:
            description:
              - Instances that must stay healthy at all times, as an integer or a percentage of the
                service's hosts such as V(66%) (rounded up). Required.
              - Refused when no host could ever stop (as large as the service's hosts) or every one could (zero).
            type: raw
          max_parallel:
            description: Upgrade slots of this service that may be held at once; default 1.
            type: int
          on_failure:
            description:
              - V(halt) (the default) stops the service's rollout at the first failure; V(rollback) also rolls back the
                hosts already upgraded.
            type: str
          depends_on:
            description: Services of the release whose instances must all run their target before this one switches; default none.
            type: list
            elements: str
  state:
    description: V(present) seeds the release, V(absent) removes the whole rollout.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - Replace a running or paused rollout with a different release.
      - Never replaces a rollout while hosts hold upgrade slots.
    type: bool
    default: false
  by:
    description:
      - Who seeds the rollout, recorded in the rollout state (for example the AWX job id).
      - Printable text of at most 256 characters.
    type: str
    default: ansible
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zkrollout.dc.attributes
  - zkrollout.dc.zookeeper
  - zkrollout.dc.signing
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Seed a release; hosts upgrade A, then B
  zkrollout.dc.rollout:
    zk_hosts: zk1:2181,zk2:2181,zk3:2181
    signing_key: /etc/zkrollout/release.key
    release:
      id: "2026-11-22.1"
      services:
        - name: A
          version: 2.0.0
          artifact:
            url: https://artifacts.example/A-2.0.0.tar.gz
            sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          quorum: 2
        - name: B
          version: 1.4.0
          artifact:
            url: https://artifacts.example/B-1.4.0.tar.gz
            sha256: 60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752
          quorum: 50%
          depends_on: [A]

- name: Cancel the rollout
  zkrollout.dc.rollout:
    state: absent

- name: Seed the release given with -e @release.yml as data, never as templates
  zkrollout.dc.rollout:
    release: "{{ lookup('zkrollout.dc.verbatim', 'zkrollout_release') }}"

- name: Seed a release read from a file as data
  zkrollout.dc.rollout:
    release: "{{ lookup('ansible.builtin.file', 'releases/2026-11-22.1.yml') | ansible.builtin.from_yaml }}"
"""

RETURN = r"""
rollout_id:
  description: Id of the seeded (or cancelled) rollout.
  returned: always
  type: str
  sample: 2026-11-22.1
deploy_order:
  description: The deploy queue, head first.
  returned: when O(state=present)
  type: list
  elements: str
  sample: [A, B]
msg:
  description: What was done.
  returned: always
  type: str
  sample: "seeded rollout 2026-11-22.1: A -> B"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.adapter import (
    SIGNING_MUTUALLY_EXCLUSIVE,
    given,
    release_signer,
    run_change,
    signing_argument_spec,
    zk_argument_spec,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.controller.writes import plan_cancel, plan_seed
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import PayloadError, ReleaseSpec

# The shape of a release, for ansible-doc and the argument spec. No defaults, choices or
# requirements here: ReleaseSpec validates the values and says what is wrong in its own words.
RELEASE_OPTIONS = dict(
    id=dict(type="str"),
    parallel=dict(type="bool"),
    services=dict(type="list", elements="dict", options=dict(
        name=dict(type="str"),
        version=dict(type="str"),
        artifact=dict(type="dict", options=dict(url=dict(type="str"), sha256=dict(type="str"))),
        quorum=dict(type="raw"),
        max_parallel=dict(type="int"),
        on_failure=dict(type="str"),
        depends_on=dict(type="list", elements="str"),
    )),
)


def main():
    argument_spec = zk_argument_spec()
    argument_spec.update(signing_argument_spec())
    argument_spec.update(
        release=dict(type="dict", options=RELEASE_OPTIONS),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        force=dict(type="bool", default=False),
        by=dict(type="str", default="ansible"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, mutually_exclusive=SIGNING_MUTUALLY_EXCLUSIVE,
                           required_if=[("state", "present", ["release"])])
    params = module.params
    if params["state"] == "absent":
        run_change(module, plan_cancel)
    try:
        spec = ReleaseSpec.from_dict(given(params["release"]), "release")
    except PayloadError as exc:
        module.fail_json(msg=str(exc))
    sign = release_signer(module)
    run_change(module, lambda snapshot, layout, missing: plan_seed(snapshot, layout, spec, missing, force=params["force"], by=params["by"],
                                                                   sign=sign))


if __name__ == "__main__":
    main()
