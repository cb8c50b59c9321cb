# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet exporter: the rollout tree as Prometheus metrics, for dashboards (docs/metrics.md).

``python -m <collection>.plugins.module_utils.controller.exporter --zk-hosts ... --listen ...``
runs it on a controller or monitoring host (it is controller code: never shipped to hosts).

- ``collector``: the families, built from the controller report, and the reader of the tree.
- ``cli``: the options (the modules' ``zk_*`` ones and their environment variables) and the server.
"""
