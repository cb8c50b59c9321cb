# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of zkrollout.dc.rollout_wait: run the module in rounds and print each change as it happens.

A module reports only when it returns. Run in rounds (each ends at the first change, or after
ROUND_SECONDS), the wait can print every round's new lines on the controller's display at
once; the default callback writes that display, and ansible-runner (AWX) records it as job
output events. The module's own options say everything else; see its documentation.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

MODULE = "zkrollout.dc.rollout_wait"
# How long a round may last when nothing changes: one new ZooKeeper session per round.
ROUND_SECONDS = 30.0


class ActionModule(ActionBase):
    """Runs zkrollout.dc.rollout_wait round by round while printing its progress lines."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if self._task.async_val or not args.get("progress", True) or args.get("round_timeout") is not None or args.get("since") is not None:
            # The caller runs the rounds (or wants one silent wait): one plain module call.
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars, wrap_async=self._task.async_val))
            return result
        host = (task_vars or {}).get("inventory_hostname", "localhost")
        events, cursor = [], None
        while True:
            round_args = dict(args, round_timeout=ROUND_SECONDS)
            if cursor is not None:
                round_args["since"] = cursor
            outcome = self._execute_module(module_name=MODULE, module_args=round_args, task_vars=task_vars)
            for line in outcome.get("events") or []:
                display.display("rollout_wait [%s] %s" % (host, line.strip()))
            events.extend(outcome.get("events") or [])
            if outcome.get("failed") or outcome.get("finished", True) or not outcome.get("cursor"):
                break
            cursor = outcome["cursor"]
        outcome["events"] = events
        result.update(outcome)
        return result
