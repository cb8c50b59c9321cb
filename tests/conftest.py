# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pytest fixtures: real ZooKeeper servers from tests/bed and clients made by the core.

The servers are module-scoped (starting a JVM costs about a second; an ensemble two) and
shared by the tests of one module. After every test, whatever it froze or stopped is thawed
and started again, so a fault test cannot break the next test. Each test gets its own
``zk_root`` path, so tests sharing a server do not see each other's znodes.
See docs/testing.md.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile

import pytest
from ansible.plugins.loader import init_plugin_loader

# Ansible's collection loader must own the ansible_collections namespace before any collection
# code is imported; pytest-ansible installs it too late for the imports below.
init_plugin_loader()

from ansible_collections.zkrollout.dc.plugins.module_utils.store import client as zkclient  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed import signing as release_signing  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed import tls as tls_material  # noqa: E402
from ansible_collections.zkrollout.dc.tests.bed.zookeeper import ZooKeeper  # noqa: E402

# Every module a test runs signs the releases it writes, as a deployer's would.
release_signing.use_everywhere()

# Tests open short sessions so that expiry-based behaviour is observable in seconds.
TEST_CONNECT_TIMEOUT = 5.0
TEST_SESSION_TIMEOUT = 4.0

_shared_beds = []
_root_numbers = itertools.count(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "zookeeper: needs real ZooKeeper processes from tests/bed (JRE and the Debian zookeeper package)"
    )


def _shared_bed(**settings):
    bed = ZooKeeper(**settings).start()
    _shared_beds.append(bed)
    return bed


def _release_shared_bed(bed):
    _shared_beds.remove(bed)
    bed.stop()


@pytest.fixture(autouse=True)
def _heal_shared_beds():
    yield
    for bed in _shared_beds:
        bed.heal()


@pytest.fixture(scope="module")
def zk():
    """A single ZooKeeper node (``ZooKeeper`` from tests/bed); ``zk.hosts`` is its connection string."""
    bed = _shared_bed(size=1)
    yield bed
    _release_shared_bed(bed)


@pytest.fixture(scope="module")
def zk_ensemble():
    """A 3-member ZooKeeper ensemble; ``zk_ensemble.members``, ``.leader()``, ``.hosts``."""
    bed = _shared_bed(size=3)
    yield bed
    _release_shared_bed(bed)


@pytest.fixture(scope="module")
def zk_tls():
    """A single node with a TLS client port that needs no client certificate.

    ``zk_tls.secure_hosts`` is the TLS connection string, ``zk_tls.tls.ca_cert`` the CA to trust;
    ``zk_tls.hosts`` is the plain port of the same server.
    """
    bed = _shared_bed(size=1, tls=True, client_auth="none")
    yield bed
    _release_shared_bed(bed)


@pytest.fixture(scope="module")
def zk_mtls():
    """A single node whose TLS port requires a client certificate signed by ``zk_mtls.tls.ca_cert``.

    ``zk_mtls.tls.client_cert`` / ``client_key`` (or ``client_key_encrypted`` with
    ``tests.bed.tls.CLIENT_KEY_PASSWORD``) are accepted.
    """
    bed = _shared_bed(size=1, tls=True, client_auth="need")
    yield bed
    _release_shared_bed(bed)


@pytest.fixture(scope="module")
def foreign_tls():
    """A complete TLS set (``TlsFiles``) from a CA that no test server trusts or uses."""
    directory = tempfile.mkdtemp(prefix="zkrollout-tls-")
    try:
        yield tls_material.generate(directory, name="foreign")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def zookeeper_factory():
    """``zookeeper_factory(size=1, tls=False, client_auth="none")`` starts a private bed for one test.

    For tests that wreck their server beyond ``heal()`` or need another shape; it is stopped and
    removed when the test ends.
    """
    beds = []

    def start(**settings):
        bed = ZooKeeper(**settings).start()
        beds.append(bed)
        return bed

    yield start
    for bed in beds:
        bed.stop()


@pytest.fixture
def zk_connect():
    """``zk_connect(hosts, **options)``: a started kazoo client from the core's ``zkclient.connect``.

    ``options`` are ``zkclient.ConnectionOptions`` fields (``tls``, ``ca``, ``digest``, ``acl``...);
    ``timeout`` and ``session_timeout`` default to 5 s and 4 s. Every client is disconnected when
    the test ends.
    """
    clients = []

    def connect(hosts, **options):
        options.setdefault("timeout", TEST_CONNECT_TIMEOUT)
        options.setdefault("session_timeout", TEST_SESSION_TIMEOUT)
        client = zkclient.connect(zkclient.ConnectionOptions(hosts=hosts, **options))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        zkclient.disconnect(client)


@pytest.fixture
def zk_root(request):
    """A root path of the test's own (``/test-<name>-<n>``), valid as ``zk_root``; not created."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", request.node.name)[:100]
    return "/test-%s-%d" % (name, next(_root_numbers))
