# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet as an Ansible inventory: hosts, groups and host variables from one Snapshot.

Pure functions, used by the ``zkrollout.dc.zookeeper`` inventory plugin. The hosts are those of
the roster (and any host registered for a service); each host's variables say, per service,
the version it runs, the target, its state as ``rollout_info`` reports it and whether quorum
counts it healthy, and whether its agent is connected. The group names are raw here; the
plugin makes them valid Ansible group names.
"""

from __future__ import annotations

from ..core.rules import healthy_hosts
from .report import host_report

GROUP_PREFIX = "zkrollout"
ONLINE_GROUP = GROUP_PREFIX + "_online"
OFFLINE_GROUP = GROUP_PREFIX + "_offline"
SERVICES_VARIABLE = GROUP_PREFIX + "_services"
ONLINE_VARIABLE = GROUP_PREFIX + "_online"


def service_group(service):
    """The group of every host that runs ``service``."""
    return "%s_service_%s" % (GROUP_PREFIX, service)


def version_group(service, version):
    """The group of the hosts registered healthy for ``service`` at ``version``."""
    return "%s_%s_%s" % (GROUP_PREFIX, service, version)


def fleet_inventory(snapshot):
    """``{"hosts": {host: host variables}, "groups": {raw group name: sorted hosts}, "problems": [...]}``.

    A host is online while its agent's presence node exists. Hosts without any registration
    are in no version group. The result is plain data, so an inventory cache can store it.
    """
    live_agents = snapshot.live_agents or frozenset()
    healthy = {name: set(healthy_hosts(snapshot, name)) for name in snapshot.services}
    hosts, groups = {}, {ONLINE_GROUP: [], OFFLINE_GROUP: []}
    for host, row in host_report(snapshot).items():
        online = host in live_agents
        services = {}
        for name, entry in row.items():
            services[name] = dict(entry, healthy=host in healthy[name])
            groups.setdefault(service_group(name), []).append(host)
            if entry["version"] is not None:
                groups.setdefault(version_group(name, entry["version"]), []).append(host)
        hosts[host] = {SERVICES_VARIABLE: services, ONLINE_VARIABLE: online}
        groups[ONLINE_GROUP if online else OFFLINE_GROUP].append(host)
    return {
        "hosts": hosts,
        "groups": {group: sorted(members) for group, members in sorted(groups.items())},
        "problems": list(snapshot.problems),
    }
