# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-only code: planned writes, the waiter, reports, text views and the Ansible adapter. Never shipped to hosts."""
