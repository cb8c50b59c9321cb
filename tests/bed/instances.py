# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local side of one service in memory, for the real agent code run in-process.

``InMemoryInstance(version)`` stands in for both a driver and a health tracker of an ``Agent``
(``agent.drivers[name] = agent.health[name] = instance``): it "runs" a version, is healthy
``rise_seconds`` after a start, and records every stop. Used where the ZooKeeper side is what is
measured or tested (``benchmarks/scale.py``, ``tests/integration/test_views.py``), never where the
quorum is judged: the independent monitor needs real services.
"""

from __future__ import annotations

import time


class InMemoryInstance(object):
    """A version that "runs" in memory; see the module docstring."""

    def __init__(self, version, rise_seconds=0.0):
        self.version = version
        self.rise_seconds = rise_seconds
        self.healthy = True
        self.stops = []

    # Driver.
    def running_version(self, _progress):
        return self.version

    def start(self, version):
        self.version = version

    def stop(self, _progress):
        self.stops.append(self.version)
        self.version = None

    # HealthTracker.
    def reset(self):
        pass

    def update(self, version):
        return version is not None

    def wait_healthy(self, _version, _is_running, _stop=None):
        time.sleep(self.rise_seconds)
        return True, "in-memory instance healthy"
