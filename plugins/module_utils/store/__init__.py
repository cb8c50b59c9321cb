# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store: the only code that talks to ZooKeeper (client factory, reads and views, watches, fenced commits)."""
