# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of every waiting module, documented once: how long, and how long without progress."""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  timeout:
    description:
      - Seconds to wait at most, counted from the start of the wait.
    type: float
    default: 600
  fail_on_timeout:
    description: Fail the task when O(timeout) passes before the rollout ends.
    type: bool
    default: true
  progress_deadline:
    description:
      - Fail the task when no host switched for this many seconds, naming what each unfinished
        service is waiting on (its verdict and reason). A host switches when it takes or gives
        back an upgrade slot or runs another version; a host that only goes offline or comes back
        does not count.
      - Independent of O(timeout), which bounds the whole wait however much progress is made.
      - Unset, only O(timeout) ends a wait that makes no progress.
    type: float
"""
