# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: rollout
short_description: The state of the rollout, or of some of its services, read live from ZooKeeper
version_added: 0.1.0
description:
  - Without terms, returns the summary of the rollout in the tree; with service names as terms,
    the state of each of those services. It is the same read, and the same verdicts, as
    M(zkrollout.dc.rollout_info), shaped for templates and conditionals.
  - The lookup runs on the controller, each time a template uses it; the tree is read once per call,
    in a bounded number of round trips.
  - Malformed znodes do not fail the lookup; each is shown as a warning naming its path and listed
    in the summary's C(problems).
  - A service that the tree does not know at all (no roster entry, no registration, not staged) is an error naming it.
options:
  _terms:
    description: Names of services. Without any, the summary of the whole rollout is returned.
    type: list
    elements: str
    required: false
extends_documentation_fragment:
  - zkrollout.dc.zookeeper_plugin
  - zkrollout.dc.zookeeper_plugin.lookup
seealso:
  - module: zkrollout.dc.rollout_info
  - plugin: zkrollout.dc.zookeeper
    plugin_type: inventory
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
- name: Stop here unless the rollout is done
  ansible.builtin.assert:
    that: lookup('zkrollout.dc.rollout', zk_hosts='zk1:2181,zk2:2181').state == 'done'
    fail_msg: "{{ lookup('zkrollout.dc.rollout', zk_hosts='zk1:2181,zk2:2181').reason }}"

- name: Use the connection variables of the collection's playbooks (zkrollout_zk_hosts, zkrollout_zk_tls, ...)
  vars:
    zkrollout_zk_hosts: zk1:2181,zk2:2181,zk3:2181
    rollout: "{{ lookup('zkrollout.dc.rollout') }}"
  ansible.builtin.debug:
    msg: "rollout {{ rollout.id }} is {{ rollout.state }}; still to roll: {{ rollout.deploy_queue | join(', ') or 'nothing' }}"

- name: Render a page with the version of service web on each host (ZKROLLOUT_ZK_HOSTS set in the environment)
  ansible.builtin.template:
    src: web-versions.html.j2
    dest: /var/www/status/web.html
    mode: "0644"
  vars:
    web: "{{ lookup('zkrollout.dc.rollout', 'web') }}"

- name: Wait for the database tier before touching the web tier by hand
  ansible.builtin.debug:
    msg: "db is {{ item.state }} ({{ item.healthy }} healthy, quorum {{ item.quorum }})"
  loop: "{{ query('zkrollout.dc.rollout', 'db', 'cache') }}"
  failed_when: item.state == 'halted'
"""

RETURN = r"""
_raw:
  description:
    - Without terms, one summary of the rollout; with terms, the state of each service named, in order.
    - "Summary: C(id) (the rollout's id, or null), C(state) (V(none), V(running), V(paused), V(aborted),
      V(failed) or V(done)), C(reason), C(deploy_queue) (the services still to roll, head first),
      C(services_in_order), C(services) (per service its C(state), C(reason), C(target) and C(complete)),
      C(progress) (counts of complete services and of instances on target) and C(problems)
      (malformed znodes, with their path)."
    - "Service: C(service), C(state) (V(done), V(halted), V(paused), V(aborted), V(waiting), V(blocked),
      V(rolling), V(ready) or V(idle)), C(reason), C(target) (the staged version), C(complete),
      C(healthy) (how many instances the quorum counts), C(quorum) (resolved to a number of hosts),
      C(max_parallel), C(budget) (how many may be taken down now), C(versions) (each host of the
      service and the version it runs, null while not registered), C(ready_queue), C(slots) (held
      upgrade slots by host) and C(failures) (failure records by host)."
  type: list
  elements: dict
  sample:
    - service: A
      state: rolling
      reason: 1 of 1 slots held (h2)
      target: 2.0.0
      complete: false
      healthy: 2
      quorum: 2
      max_parallel: 1
      budget: 0
      versions: {h1: 2.0.0, h2: null, h3: 1.0.0}
      ready_queue: [h2, h3]
      slots: {h2: {from: 1.0.0, to: 2.0.0, owner: "agent:h2", since: 1764600000.0}}
      failures: {}
"""

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase
from ansible.utils.display import Display

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.report import rollout_report, rollout_summary, service_summary
from ansible_collections.zkrollout.dc.plugins.plugin_utils.zookeeper import (
    CONNECTION_OPTIONS,
    PLAY_VARIABLE_PREFIX,
    play_connection_variables,
    read_tree,
    settings_problems,
)

display = Display()


class LookupModule(LookupBase):
    """The rollout summary, or the state of the services named, from one read of the tree."""

    def run(self, terms, variables=None, **kwargs):
        play_variables = play_connection_variables(variables, self._templar)
        problems = settings_problems(kwargs, CONNECTION_OPTIONS) + settings_problems(play_variables, CONNECTION_OPTIONS, PLAY_VARIABLE_PREFIX)
        if problems:
            raise AnsibleLookupError("%s: %s" % (self.ansible_name, "; ".join(problems)))
        self.set_options(var_options=play_variables, direct=kwargs)
        for name in terms:
            if not isinstance(name, str) or not name:
                raise AnsibleLookupError("%s: a term must be the name of a service, got %r" % (self.ansible_name, name))
        options, snapshot = read_tree(self, AnsibleLookupError)
        report = rollout_report(snapshot)
        for problem in report["problems"]:
            display.warning("%s: %s" % (self.ansible_name, problem))
        if not terms:
            return [rollout_summary(report)]
        if not snapshot.exists:
            raise AnsibleLookupError("%s: there is no rollout tree %s on %s, so no service %s; check zk_root and zk_hosts" % (
                self.ansible_name, options.root, options.describe(), ", ".join(terms)))
        unknown = [name for name in terms if name not in report["services"]]
        if unknown:
            raise AnsibleLookupError("%s: no service %s in the rollout tree %s on %s; it knows %s" % (
                self.ansible_name, ", ".join(unknown), options.root, options.describe(), ", ".join(sorted(report["services"])) or "none"))
        return [service_summary(report, name) for name in terms]
