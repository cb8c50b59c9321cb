# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The persisted state machine of a switch: atomic writes, faithful reloads, tolerant reads."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent import localstate
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.localstate import LocalState, ServiceProgress


def test_a_service_never_written_is_idle_and_empty(tmp_path):
    state = LocalState(str(tmp_path / "state.json"))
    assert state.get("app") == ServiceProgress()
    assert not state.get("app").in_switch
    assert not (tmp_path / "state.json").exists()


def test_every_update_is_on_disk_and_a_reload_sees_the_same_records(tmp_path):
    path = str(tmp_path / "missing-dir" / "state.json")
    state = LocalState(path)
    state.update("app", version="1.0", pid=4242, since=1700000000.0)
    progress = state.update("app", phase="switching", step="slot_taken", previous="1.0", target="2.0", rollout="r1")
    state.update("db", version="5.1")
    assert progress == ServiceProgress(phase="switching", step="slot_taken", version="1.0", previous="1.0", target="2.0",
                                       rollout="r1", pid=4242, since=1700000000.0)
    reloaded = LocalState(path)
    assert reloaded.get("app") == progress and reloaded.get("app").in_switch
    assert reloaded.get("db") == ServiceProgress(version="5.1")
    assert reloaded.as_dict() == state.as_dict()
    assert json.loads(open(path).read())["services"]["app"]["step"] == "slot_taken"


def test_no_temporary_file_is_left_beside_the_state(tmp_path):
    state = LocalState(str(tmp_path / "state.json"))
    for step in ("slot_taken", "stopped", "started", "registered"):
        state.update("app", phase="switching", step=step)
    assert os.listdir(str(tmp_path)) == ["state.json"]


def test_a_failed_write_leaves_the_file_and_the_record_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    state = LocalState(str(path))
    state.update("app", phase="switching", step="slot_taken", target="2.0")
    before = path.read_bytes()

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(localstate.os, "replace", disk_full)
    with pytest.raises(OSError):
        state.update("app", step="stopped")
    assert path.read_bytes() == before
    assert os.listdir(str(tmp_path)) == ["state.json"]
    # The agent must not act on a step it could not persist.
    assert state.get("app").step == "slot_taken"


def test_a_write_is_a_rename_of_a_complete_file(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def watching_replace(source, target):
        renamed.append((os.path.dirname(source), json.loads(open(source).read())))
        real_replace(source, target)

    monkeypatch.setattr(localstate.os, "replace", watching_replace)
    LocalState(str(tmp_path / "state.json")).update("app", version="1.0")
    assert renamed == [(str(tmp_path), {"services": {"app": asdict(ServiceProgress(version="1.0"))}})]


def test_unknown_keys_from_another_agent_version_are_ignored(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({
        "format": 7,
        "services": {"app": {"phase": "rolling_back", "step": "failed", "version": "2.0", "previous": "1.0", "target": "2.0",
                             "attempts": 3, "cgroup": "/system.slice/app"}},
    }))
    state = LocalState(str(path))
    assert state.get("app") == ServiceProgress(phase="rolling_back", step="failed", version="2.0", previous="1.0", target="2.0")
    state.update("app", step="stopped_failed")
    assert "attempts" not in json.loads(path.read_text())["services"]["app"]
