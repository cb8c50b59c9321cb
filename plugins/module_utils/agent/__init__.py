# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host agent: every machine upgrades itself, in dependency order, never below quorum.

It is built from the same shared core as the modules (the parent package) and installed on
hosts by the ``zkrollout.dc.agent`` role; ``python -m <package>.agent --config FILE`` runs it.

- ``config``: the host's local configuration, the only source of commands.
- ``decide``: the pure decision function over a snapshot and the local view.
- ``localstate``: the persisted state machine of a switch, so a restart resumes it.
- ``drivers`` / ``health`` / ``artifacts``: the instances, their health checks, the downloads.
- ``runtime``: the level-triggered loop that talks to ZooKeeper and performs one step at a time.
- ``cli``: run, once, status; ``metrics``: the Prometheus endpoint.
"""
