# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: zookeeper
short_description: The hosts of a ZooKeeper-coordinated fleet, grouped by service, version and agent presence
version_added: 0.1.0
description:
  - Builds the inventory from the live rollout tree in ZooKeeper, the same read that M(zkrollout.dc.rollout_info)
    makes. Every host of the roster (and any host registered for a service) becomes an inventory host.
  - "Groups: C(zkrollout_service_<service>) holds every host that runs the service;
    C(zkrollout_<service>_<version>) the hosts registered healthy at that version (a host that is
    not registered, because it is down or upgrading, is in none); C(zkrollout_online) the hosts
    whose agent is connected (its presence node under C(<zk_root>/agents) exists) and
    C(zkrollout_offline) the others."
  - "Group names are made valid variable names the way Ansible's C(force) sanitising does: every
    character other than a letter, a digit or C(_) becomes C(_), so version C(2.0.0) of service C(A)
    is the group C(zkrollout_A_2_0_0). The same applies to the groups of O(groups) and O(keyed_groups)."
  - "Host variables: C(zkrollout_services) maps each service of the host to its C(version) (null
    while not registered), C(target) (the staged version, or null), C(state) (V(online),
    V(offline) or V(upgrading), as M(zkrollout.dc.rollout_info) reports it) and C(healthy) (true
    when the quorum counts the host: registered and holding no upgrade slot); C(zkrollout_online)
    says whether the host's agent is connected."
  - The tree is read in a bounded number of round trips, whatever the size of the fleet.
    Malformed znodes never fail the inventory; each is shown as a warning naming its path, as
    M(zkrollout.dc.rollout_info) lists it in its C(problems).
  - "The configuration file must be YAML whose name ends with C(zookeeper.yml) or C(zookeeper.yaml)
    and which says C(plugin: zkrollout.dc.zookeeper)."
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
  - zkrollout.dc.zookeeper_plugin
options:
  plugin:
    description: The name of this plugin, which marks the file as its configuration.
    type: str
    required: true
    choices:
      - zkrollout.dc.zookeeper
notes:
  - "With O(cache=true) the inventory is read from ZooKeeper once per O(cache_timeout) seconds and
    from the cache plugin otherwise; C(ansible-inventory --flush-cache) (or C(meta: refresh_inventory))
    reads it again. Use a persistent cache plugin such as C(ansible.builtin.jsonfile) with
    O(cache_connection); the default C(memory) cache lasts one run only."
  - "If ZooKeeper cannot be reached the source fails with an error naming O(zk_hosts). Ansible
    then only warns and goes on with the other sources unless C(inventory_unparsed_failed) (or
    E(ANSIBLE_INVENTORY_UNPARSED_FAILED)) is set; in AWX an inventory update fails either way."
seealso:
  - module: zkrollout.dc.rollout_info
  - plugin: zkrollout.dc.rollout
    plugin_type: lookup
author:
  - zkrollout.dc contributors (@zkrollout)
"""

EXAMPLES = r"""
# inventories/dc1.zookeeper.yml: every host of the fleet, its groups and variables
plugin: zkrollout.dc.zookeeper
zk_hosts: zk1.example:2181,zk2.example:2181,zk3.example:2181
zk_root: /dc

---
# inventories/dc1-tls.zookeeper.yml: over TLS, with the reader's credentials from the environment
# (ZKROLLOUT_ZK_DIGEST=reader:secret, as an AWX credential injects it), an address per host,
# more groups, and a cache that keeps ZooKeeper out of every ad hoc command
plugin: zkrollout.dc.zookeeper
zk_hosts: zk1.example:2281,zk2.example:2281,zk3.example:2281
zk_tls: true
zk_ca: /etc/zkrollout/ca.pem
compose:
  ansible_host: inventory_hostname ~ '.dc1.example'
groups:
  # hosts with an instance that the quorum does not count (down, or upgrading)
  zkrollout_degraded: zkrollout_services.values() | rejectattr('healthy') | list | length > 0
keyed_groups:
  # web_online, web_offline, web_upgrading: the state of service web on each host that runs it
  - key: zkrollout_services.web.state | default('')
    prefix: web
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /var/cache/ansible/zkrollout
cache_timeout: 60
"""

from ansible.errors import AnsibleParserError
from ansible.inventory.group import to_safe_group_name
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.zkrollout.dc.plugins.module_utils.controller.inventory import fleet_inventory
from ansible_collections.zkrollout.dc.plugins.plugin_utils.zookeeper import read_tree, settings_problems

CONFIG_SUFFIXES = ("zookeeper.yml", "zookeeper.yaml")


def safe_group_name(name):
    """``name`` as a valid Ansible group name: every character but letters, digits and ``_`` becomes ``_``."""
    return to_safe_group_name(name, force=True, silent=True)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Hosts, groups and host variables from the live rollout tree."""

    NAME = "zkrollout.dc.zookeeper"
    # One rule for every group this source makes, its own and those of groups/keyed_groups.
    _sanitize_group_name = staticmethod(safe_group_name)

    def verify_file(self, path):
        """True for a readable file whose name ends with zookeeper.yml or zookeeper.yaml."""
        return super().verify_file(path) and path.endswith(CONFIG_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        config = self._read_config_data(path)
        problems = settings_problems(config, self._options)
        if problems:
            raise AnsibleParserError("%s: %s: %s" % (self.NAME, path, "; ".join(problems)))
        cache_key = self.get_cache_key(path)
        # Ansible's convention: cache=False from the caller (--flush-cache, refresh_inventory) means "read, then refresh the cache".
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        fleet = None
        if use_cache:
            try:
                fleet = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if fleet is None:
            _options, snapshot = read_tree(self, AnsibleParserError)
            if not snapshot.exists:
                self.display.warning("%s: there is no rollout tree at %s on %s: the inventory is empty"
                                     % (self.NAME, self.get_option("zk_root"), self.get_option("zk_hosts")))
            fleet = fleet_inventory(snapshot)
        if update_cache:
            self._cache[cache_key] = fleet
        self._populate(fleet)

    def _populate(self, fleet):
        for problem in fleet["problems"]:
            self.display.warning("%s: %s" % (self.NAME, problem))
        for host, variables in fleet["hosts"].items():
            self.inventory.add_host(host)
            for name, value in variables.items():
                self.inventory.set_variable(host, name, value)
        members = {}
        for raw_name, hosts in fleet["groups"].items():
            group = safe_group_name(raw_name)
            if group in members and members[group] != raw_name:
                self.display.warning("%s: groups %s and %s are both named %s; it holds the hosts of both" % (self.NAME, members[group], raw_name, group))
            members[group] = raw_name
            self.inventory.add_group(group)
            for host in hosts:
                self.inventory.add_host(host, group=group)
        strict = self.get_option("strict")
        for host in fleet["hosts"]:
            variables = self.inventory.get_host(host).get_vars()
            self._set_composite_vars(self.get_option("compose"), variables, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, host, strict=strict)
