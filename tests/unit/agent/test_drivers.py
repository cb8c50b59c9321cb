# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The exec driver with real child processes: a freshly started instance is never judged gone."""

from __future__ import annotations

import os
import sys

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import ServiceConfig
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.drivers import ExecDriver, ExternalDriver
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.localstate import ServiceProgress

VERSIONS = ["2.0.%d" % i for i in range(30)]


def test_an_instance_is_running_from_the_moment_it_was_started(tmp_path):
    install = tmp_path / "install"
    for version in VERSIONS:
        (install / "versions" / version).mkdir(parents=True)
    config = ServiceConfig(name="app", install_dir=str(install), stop_timeout=5.0,
                           command=(sys.executable, "-c", "import time; time.sleep(30)", "{version_dir}"))
    driver = ExecDriver(config, str(tmp_path / "logs"))
    started = []
    try:
        for version in VERSIONS:
            started.append(ServiceProgress(version=version, pid=driver.start(version)))
            assert driver.running_version(started[-1]) == version
    finally:
        for progress in started:
            driver.stop(progress)
    assert [driver.running_version(progress) for progress in started] == [None] * len(VERSIONS)


def test_an_external_version_file_rewritten_within_one_timestamp_tick_is_read_again(tmp_path):
    version_file = tmp_path / "version"
    driver = ExternalDriver(ServiceConfig(name="app", install_dir=str(tmp_path), driver="external", version_file=str(version_file)))
    version_file.write_text("1.0.0\n")
    assert driver.running_version(ServiceProgress()) == "1.0.0"
    # Same size, same inode, likely the same mtime: a cache keyed on those alone would miss it.
    with open(version_file, "r+") as handle:
        handle.write("2.0.0\n")
    assert driver.running_version(ServiceProgress()) == "2.0.0"
    version_file.unlink()
    assert driver.running_version(ServiceProgress()) is None


def test_an_old_external_version_file_is_read_once_until_it_changes(tmp_path, monkeypatch):
    version_file = tmp_path / "version"
    version_file.write_text("1.0.0\n")
    os.utime(version_file, (1000000000, 1000000000))
    driver = ExternalDriver(ServiceConfig(name="app", install_dir=str(tmp_path), driver="external", version_file=str(version_file)))
    assert driver.running_version(ServiceProgress()) == "1.0.0"
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    assert [driver.running_version(ServiceProgress()) for _unused in range(3)] == ["1.0.0"] * 3 and opened == []
    version_file.write_text("1.0.10\n")
    assert driver.running_version(ServiceProgress()) == "1.0.10" and opened == [str(version_file)]
