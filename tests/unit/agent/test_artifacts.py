# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download, verify, unpack: a version directory exists only once its artifact is verified."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.artifacts import (
    VERIFIED_MARKER,
    ArtifactError,
    prepare,
    prepared_versions,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import HealthCheck, ServiceConfig
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact


def tarball(path, files=(), links=(), dirs=()):
    """Write a .tar.gz at ``path`` with ``(name, text)`` files, ``(name, target)`` symlinks and dirs; return its sha256."""
    with tarfile.open(str(path), "w:gz") as archive:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, text in files:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def app(tmp_path):
    """A service installed under tmp_path/opt/app."""
    return ServiceConfig(name="app", install_dir=str(tmp_path / "opt" / "app"), command=("{version_dir}/run",), health=HealthCheck(command=("true",)))


@pytest.fixture
def release(tmp_path):
    """A good 2.0 artifact as ``(Artifact, path)``."""
    path = tmp_path / "app-2.0.tar.gz"
    sha = tarball(path, files=[("run", "#!/bin/sh\necho 2.0\n"), ("lib/app.py", "VERSION = '2.0'\n")], dirs=["lib"])
    return Artifact(url=path.as_uri(), sha256=sha), path


def assert_nothing_prepared(app):
    """No version directory, no scratch left behind, nothing listed as prepared."""
    assert prepared_versions(app) == frozenset()
    assert not os.path.exists(os.path.join(app.install_dir, "versions"))
    work = os.path.join(app.install_dir, ".work")
    assert not os.path.exists(work) or os.listdir(work) == []


def test_a_good_artifact_is_verified_and_unpacked_into_its_version_directory(app, release):
    artifact, _unused = release
    final = prepare(app, "2.0", artifact)
    assert final == os.path.join(app.install_dir, "versions", "2.0")
    assert open(os.path.join(final, "run")).read() == "#!/bin/sh\necho 2.0\n"
    assert open(os.path.join(final, "lib", "app.py")).read() == "VERSION = '2.0'\n"
    assert open(os.path.join(final, VERIFIED_MARKER)).read().strip() == artifact.sha256
    assert prepared_versions(app) == frozenset(["2.0"])
    assert os.listdir(os.path.join(app.install_dir, ".work")) == []


def test_a_prepared_version_is_not_downloaded_again(app, release):
    artifact, path = release
    prepare(app, "2.0", artifact)
    path.unlink()
    assert prepare(app, "2.0", artifact) == os.path.join(app.install_dir, "versions", "2.0")


def test_a_wrong_checksum_fails_at_verify_and_creates_no_version_directory(app, release):
    artifact, _unused = release
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=artifact.url, sha256="0" * 64))
    assert raised.value.stage == "verify"
    assert "sha256 mismatch" in raised.value.reason and artifact.sha256 in raised.value.reason
    assert_nothing_prepared(app)


def test_a_missing_file_fails_at_download(app, tmp_path):
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=(tmp_path / "nowhere.tar.gz").as_uri(), sha256="0" * 64))
    assert raised.value.stage == "download"
    assert "cannot download" in raised.value.reason and "nowhere.tar.gz" in raised.value.reason
    assert_nothing_prepared(app)


UNSAFE = [
    pytest.param(dict(files=[("run", "ok"), ("../../../../escaped", "owned")]), "would land outside the version directory", id="a_dot_dot_member"),
    pytest.param(dict(files=[("{tmp}/escaped", "owned")]), "would land outside the version directory", id="an_absolute_member"),
    pytest.param(dict(files=[("run", "ok")], links=[("passwd", "/etc/passwd")]), "is a link or device", id="a_symlink"),
    pytest.param(dict(links=[("lib", "../../..")], files=[("lib/escaped", "owned")]), "is a link or device", id="a_symlinked_directory"),
]


@pytest.mark.parametrize("content, fact", UNSAFE)
def test_an_archive_that_could_write_outside_its_directory_fails_at_unpack_and_creates_nothing(app, tmp_path, content, fact):
    path = tmp_path / "evil.tar.gz"
    files = [(name.format(tmp=tmp_path), text) for name, text in content["files"]]
    sha = tarball(path, files=files, links=content.get("links", ()))
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=path.as_uri(), sha256=sha))
    assert raised.value.stage == "unpack" and fact in raised.value.reason
    assert_nothing_prepared(app)
    assert [name for _directory, _subdirectories, names in os.walk(str(tmp_path)) for name in names if name == "escaped"] == []


def test_a_verified_file_that_is_not_an_archive_fails_at_unpack(app, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a tarball")
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=path.as_uri(), sha256=hashlib.sha256(b"not a tarball").hexdigest()))
    assert raised.value.stage == "unpack"
    assert_nothing_prepared(app)


def test_a_url_outside_the_allowed_prefixes_is_refused_before_any_download(app, release, tmp_path):
    artifact, _unused = release
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", artifact, allowed_prefixes=("https://artifacts.example/",))
    assert raised.value.stage == "download"
    assert "outside the allowed prefixes https://artifacts.example/" in raised.value.reason
    assert_nothing_prepared(app)
    assert not os.path.exists(os.path.join(app.install_dir, ".work"))
    assert prepare(app, "2.0", artifact, allowed_prefixes=("https://artifacts.example/", tmp_path.as_uri() + "/"))


def test_a_version_that_is_not_a_plain_name_is_refused_before_anything_is_written(app, release):
    artifact, _unused = release
    with pytest.raises(ValueError):
        prepare(app, "../../etc", artifact)
    assert not os.path.exists(app.install_dir)


def test_prepared_versions_lists_only_verified_directories(app, release):
    artifact, _unused = release
    prepare(app, "2.0", artifact)
    os.makedirs(os.path.join(app.install_dir, "versions", "1.0", "bin"))
    open(os.path.join(app.install_dir, "versions", "1.0", "bin", "run"), "w").close()
    assert prepared_versions(app) == frozenset(["2.0"])


def test_an_unverified_leftover_directory_is_replaced(app, release):
    artifact, _unused = release
    leftover = os.path.join(app.install_dir, "versions", "2.0")
    os.makedirs(leftover)
    open(os.path.join(leftover, "stale"), "w").close()
    prepare(app, "2.0", artifact)
    assert sorted(os.listdir(leftover)) == sorted([VERIFIED_MARKER, "lib", "run"])


@pytest.fixture
def artifact_server(tmp_path):
    """A tiny HTTP server on 127.0.0.1 serving tmp_path; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/" % server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args):
        """No request lines on the test output."""


def test_an_artifact_is_downloaded_over_http(app, release, artifact_server):
    artifact, path = release
    assert prepare(app, "2.0", Artifact(url=artifact_server + path.name, sha256=artifact.sha256), timeout=5)
    assert prepared_versions(app) == frozenset(["2.0"])


def test_an_http_error_fails_at_download(app, artifact_server):
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=artifact_server + "missing.tar.gz", sha256="0" * 64), timeout=5)
    assert raised.value.stage == "download" and "missing.tar.gz" in raised.value.reason
    assert_nothing_prepared(app)
