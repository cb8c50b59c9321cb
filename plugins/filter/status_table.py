# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: status_table
short_description: Render a rollout report as readable lines of text
version_added: 0.1.0
description:
  - Turns the result of M(zkrollout.dc.rollout_info) into a hosts x services table (the version
    each host runs, C(offline), or C((upgrading)); C(*) marks a version that is not the target),
    then one line per service with its quorum, healthy count, budget, ready queue, slots and
    ready-to-roll verdict with its reason, then the recorded failures.
options:
  _input:
    description: The registered result of M(zkrollout.dc.rollout_info).
    type: dict
    required: true
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Read the rollout
  zkrollout.dc.rollout_info:
  register: rollout

- name: Show it
  ansible.builtin.debug:
    msg: "{{ rollout | zkrollout.dc.status_table }}"
"""

RETURN = r"""
_value:
  description: The lines of the status view.
  type: list
  elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.render import status_lines


def status_table(report):
    """Lines of the status view of a rollout_info result."""
    if not isinstance(report, dict) or "services" not in report or "hosts" not in report:
        raise AnsibleFilterError("status_table expects the registered result of zkrollout.dc.rollout_info")
    return status_lines(report)


class FilterModule(object):
    def filters(self):
        return {"status_table": status_table}
