# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The exec driver with real child processes: a freshly started instance is never judged gone."""

from __future__ import annotations

import sys

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import ServiceConfig
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.drivers import ExecDriver
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
