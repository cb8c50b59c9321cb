# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's persisted state machine, one record per service.

A switch moves through explicit steps, each written to disk (atomically: temp file, fsync,
rename) before the action it announces, so an agent killed at any point knows on restart
whether it still has to stop, start, health-check, register or roll back.

    idle --take slot--> switching/slot_taken --> switching/stopped --> switching/started
         --> (healthy) switching/registered --> idle
         --> (unhealthy) rolling_back/stopped --> rolling_back/started --> idle (failure recorded)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace

PHASES = ("idle", "switching", "rolling_back")


@dataclass(frozen=True)
class ServiceProgress(object):
    """Where one service stands on this host.

    ``version`` is the version that should be running (the last one started), ``previous`` the
    one before the current or last switch, ``target`` the version a switch is heading for.
    """

    phase: str = "idle"
    step: str = ""
    version: str = None
    previous: str = None
    target: str = None
    rollout: str = None
    pid: int = None
    since: float = 0.0
    reason: str = ""

    @property
    def in_switch(self):
        """True while a switch or a rollback is unfinished."""
        return self.phase != "idle"


class LocalState(object):
    """The state file of one agent: ``{"services": {name: ServiceProgress}}``."""

    def __init__(self, path):
        self.path = path
        self._services = {}
        if os.path.exists(path):
            with open(path) as handle:
                raw = json.load(handle)
            known = set(ServiceProgress.__dataclass_fields__)
            for name, values in raw.get("services", {}).items():
                self._services[name] = ServiceProgress(**{k: v for k, v in values.items() if k in known})

    def get(self, service):
        """The progress record of ``service`` (idle and empty if never written)."""
        return self._services.get(service, ServiceProgress())

    def update(self, service, **changes):
        """Change fields of one record and persist the whole file before returning it.

        If the write fails, the error propagates and the record keeps its old value, so the
        agent never acts on a step that is not on disk.
        """
        progress = replace(self.get(service), **changes)
        self._write({**self._services, service: progress})
        self._services[service] = progress
        return progress

    def as_dict(self):
        """Plain data, for status output."""
        return _as_dict(self._services)

    def _write(self, services):
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".state-", dir=directory)
        try:
            with os.fdopen(handle, "w") as out:
                json.dump({"services": _as_dict(services)}, out, sort_keys=True, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise


def _as_dict(services):
    return {name: asdict(progress) for name, progress in sorted(services.items())}
