# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes of the collection's modules, documented once: writers and readers."""

from __future__ import annotations


class ModuleDocFragment(object):
    # Modules that write the rollout tree: full check mode and diff.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    details: Plans the write on a fresh read and reports it without writing.
  diff_mode:
    support: full
    details: Shows the rollout tree before and after the write.
  platform:
    platforms: posix
"""

    # Modules that only read: they run the same in check mode.
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
