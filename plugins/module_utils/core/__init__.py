# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure core: znode layout, payloads, the plan and the rules. No I/O, no kazoo, no Ansible."""
