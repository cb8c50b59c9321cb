# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download, verify, unpack: a version directory exists only once its artifact is verified.

And the host's own config bounds what a release can make it fetch: normalised URLs under the
allowed prefixes, files confined to allowed directories, bounded downloads and archives, and
no privileges carried out of an archive.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import stat
import tarfile
import threading

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent import artifacts
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.artifacts import (
    VERIFIED_MARKER,
    ArtifactError,
    check_url,
    normalize_url,
    prepare,
    prepared_versions,
)
from ansible_collections.zkrollout.dc.plugins.module_utils.agent.config import FetchPolicy, HealthCheck, ServiceConfig
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import Artifact

PREFIXES = ["https://artifacts.example/releases/"]


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


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read without holding them in memory."""

    def __init__(self, size):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def member(name, size=0, **attributes):
    """A TarInfo for a regular file of ``size`` bytes (or another type with ``type=``), with any other attributes."""
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o644
    for key, value in attributes.items():
        setattr(info, key, value)
    return info


def archive_of(path, members, format=tarfile.GNU_FORMAT):
    """Write a .tar.gz of ``(TarInfo, content or None)`` members (content: bytes or a Zeros stream); return its Artifact."""
    with tarfile.open(str(path), "w:gz", format=format) as archive:
        for info, content in members:
            archive.addfile(info, io.BytesIO(content) if isinstance(content, bytes) else content)
    return Artifact(url=path.as_uri(), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def service(tmp_path, **fetch):
    """Service app under tmp_path/opt/app, allowed to fetch from tmp_path (and whatever ``fetch`` sets)."""
    policy = FetchPolicy(**dict({"allowed_url_prefixes": (tmp_path.as_uri() + "/",)}, **fetch))
    return ServiceConfig(name="app", install_dir=str(tmp_path / "opt" / "app"), command=("{version_dir}/run",),
                         health=HealthCheck(command=("true",)), fetch=policy)


@pytest.fixture
def app(tmp_path):
    """A service installed under tmp_path/opt/app that may fetch files from tmp_path."""
    return service(tmp_path)


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
    assert "zkrollout_agent_allowed_url_prefixes" in raised.value.reason
    assert_nothing_prepared(app)
    assert not os.path.exists(os.path.join(app.install_dir, ".work"))
    assert prepare(app, "2.0", artifact, allowed_prefixes=("https://artifacts.example/", tmp_path.as_uri() + "/"))


def test_a_host_whose_config_allows_no_prefix_downloads_nothing(tmp_path, release):
    artifact, _unused = release
    bare = ServiceConfig(name="app", install_dir=str(tmp_path / "opt" / "app"), command=("true",), health=HealthCheck(command=("true",)))
    with pytest.raises(ArtifactError) as raised:
        prepare(bare, "2.0", artifact)
    assert raised.value.stage == "download" and "allowed_url_prefixes is empty" in raised.value.reason
    assert not os.path.exists(bare.install_dir)


def test_the_explicit_opt_out_allows_any_url(tmp_path, release):
    artifact, _unused = release
    anywhere = service(tmp_path, allowed_url_prefixes=(), allow_any_url=True)
    assert prepare(anywhere, "2.0", artifact)


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


# URL normalisation and the prefix rule.
NORMALISED = [
    pytest.param("HTTPS://Artifacts.EXAMPLE/releases/App-2.0.tar.gz", "https://artifacts.example/releases/App-2.0.tar.gz", id="scheme_and_host_lower_cased"),
    pytest.param("https://artifacts.example:443/a.tgz", "https://artifacts.example/a.tgz", id="default_port_dropped"),
    pytest.param("http://artifacts.example:8080/a.tgz", "http://artifacts.example:8080/a.tgz", id="other_port_kept"),
    pytest.param("https://artifacts.example/%72eleases/%2a.tgz", "https://artifacts.example/releases/%2A.tgz", id="escapes_canonical"),
    pytest.param("https://artifacts.example", "https://artifacts.example/", id="empty_path"),
    pytest.param("https://artifacts.example/a.tgz?X-Sig=ab%2F", "https://artifacts.example/a.tgz?X-Sig=ab%2F", id="query_kept"),
    pytest.param("https://[::1]:8443/a.tgz", "https://[::1]:8443/a.tgz", id="ipv6_host"),
    pytest.param("file://localhost/srv/a.tgz", "file:///srv/a.tgz", id="file_on_localhost"),
    pytest.param("https://artifacts.example/r%C3%A9/\u00e9.tgz", "https://artifacts.example/r%C3%A9/%C3%A9.tgz", id="non_ascii_escaped"),
]


@pytest.mark.parametrize("url, expected", NORMALISED)
def test_a_url_is_normalised_before_any_comparison(url, expected):
    assert normalize_url(url).url == expected


REFUSED = [
    pytest.param("https://artifacts.example/releases/../private/a.tgz", "'..' path segment", id="dot_dot"),
    pytest.param("https://artifacts.example/releases/%2e%2e/private/a.tgz", "'..' path segment", id="encoded_dot_dot"),
    pytest.param("https://artifacts.example/releases/%2E./private/a.tgz", "'..' path segment", id="half_encoded_dot_dot"),
    pytest.param("https://artifacts.example/releases/./a.tgz", "'.' or '..'", id="dot"),
    pytest.param("https://artifacts.example/releases/..;x=1/private/a.tgz", "'..' path segment", id="dot_dot_with_a_parameter"),
    pytest.param("https://artifacts.example/releases/..%2fprivate/a.tgz", "encodes a slash", id="encoded_slash"),
    pytest.param("https://artifacts.example/releases/..\\private\\a.tgz", "backslash", id="backslashes"),
    pytest.param("https://artifacts.example/releases/%5c..%5ca.tgz", "backslash", id="encoded_backslashes"),
    pytest.param("https://artifacts.example/releases/a%00.tgz", "control character", id="encoded_nul"),
    pytest.param("https://artifacts.example/releases/a%zz.tgz", "percent-escape", id="broken_escape"),
    pytest.param("https://user:secret@artifacts.example/releases/a.tgz", "user name or password", id="userinfo"),
    pytest.param("https://artifacts.example@evil.test/releases/a.tgz", "user name or password", id="userinfo_that_looks_like_the_host"),
    pytest.param("https:///releases/a.tgz", "names no host", id="no_host"),
    pytest.param("https://artifacts.example:99999/releases/a.tgz", "cannot be parsed", id="bad_port"),
    pytest.param("https://artifacts.example/releases/a.tgz#x", "fragment", id="fragment"),
    pytest.param("ftp://artifacts.example/releases/a.tgz", "scheme", id="ftp"),
    pytest.param("file:///srv/../../etc/passwd", "'..' path segment", id="file_dot_dot"),
    pytest.param("file://artifacts.example/releases/a.tgz", "not a host", id="file_with_a_host"),
]


@pytest.mark.parametrize("url, fact", REFUSED)
def test_a_url_that_could_leave_its_prefix_or_leak_a_secret_is_refused(url, fact):
    with pytest.raises(ArtifactError) as raised:
        check_url(url, PREFIXES + ["file:///srv/"])
    assert raised.value.stage == "download"
    assert fact in raised.value.reason, raised.value.reason
    assert "secret" not in raised.value.reason


PREFIX_RULE = [
    pytest.param("https://artifacts.example/releases/", "https://artifacts.example/releases/a.tgz", True, id="under_a_directory_prefix"),
    pytest.param("https://artifacts.example/releases", "https://artifacts.example/releases/a.tgz", True, id="under_a_prefix_without_a_slash"),
    pytest.param("https://artifacts.example/releases", "https://artifacts.example/releases", True, id="the_prefix_itself"),
    pytest.param("https://artifacts.example/releases", "https://artifacts.example/releases-old/a.tgz", False, id="not_a_sibling_with_a_longer_name"),
    pytest.param("https://artifacts.example", "https://artifacts.example.evil.test/a.tgz", False, id="not_a_host_with_a_longer_name"),
    pytest.param("https://artifacts.example/releases/", "https://ARTIFACTS.Example/releases/a.tgz", True, id="host_case"),
    pytest.param("HTTPS://artifacts.example/releases/", "https://artifacts.example/releases/a.tgz", True, id="prefix_scheme_case"),
    pytest.param("https://artifacts.example/releases/", "https://artifacts.example:443/releases/a.tgz", True, id="default_port"),
    pytest.param("https://artifacts.example/releases/", "https://artifacts.example:8443/releases/a.tgz", False, id="other_port"),
    pytest.param("https://artifacts.example/releases/", "http://artifacts.example/releases/a.tgz", False, id="other_scheme"),
    pytest.param("https://artifacts.example/releases/", "https://artifacts.example/%72eleases/a.tgz", True, id="escaped_unreserved"),
    pytest.param("https://artifacts.example/releases/", "https://artifacts.example/releases/a.tgz?token=1", True, id="with_a_query"),
    pytest.param("https://artifacts.example/releases/", "https://artifacts.example/RELEASES/a.tgz", False, id="path_case_matters"),
]


@pytest.mark.parametrize("prefix, url, allowed", PREFIX_RULE)
def test_a_prefix_matches_only_at_a_path_segment_boundary_of_the_normalised_forms(prefix, url, allowed):
    if allowed:
        assert check_url(url, [prefix])
    else:
        with pytest.raises(ArtifactError, match="outside the allowed prefixes"):
            check_url(url, [prefix])


@pytest.fixture
def confined(tmp_path):
    """``(srv, secret)``: an allowed directory with an artifact and symlinks, and a file outside it."""
    srv = tmp_path / "srv"
    (srv / "sub").mkdir(parents=True)
    (srv / "sub" / "a.tgz").write_bytes(b"artifact")
    secret = tmp_path / "secret" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0")
    (srv / "passwd.tgz").symlink_to(secret)
    (srv / "up").symlink_to(tmp_path)
    (srv / "alias.tgz").symlink_to(srv / "sub" / "a.tgz")
    (tmp_path / "srv-link").symlink_to(srv)
    return srv, secret


FILE_RULE = [
    pytest.param("srv/sub/a.tgz", "srv/", True, id="a_file_inside"),
    pytest.param("srv/sub/a.tgz", "srv", True, id="a_file_inside_a_prefix_without_a_slash"),
    pytest.param("srv/alias.tgz", "srv/", True, id="a_symlink_to_a_file_inside"),
    pytest.param("srv-link/sub/a.tgz", "srv/", True, id="through_a_symlinked_directory_into_it"),
    pytest.param("srv/sub/a.tgz", "srv-link/", True, id="a_symlinked_prefix"),
    pytest.param("srv/passwd.tgz", "srv/", False, id="a_symlink_escaping_it"),
    pytest.param("srv/up/secret/passwd", "srv/", False, id="a_symlinked_directory_escaping_it"),
    pytest.param("secret/passwd", "srv/", False, id="a_file_outside"),
    pytest.param("srv-other/a.tgz", "srv", False, id="a_sibling_with_a_longer_name"),
]


@pytest.mark.parametrize("target, prefix, allowed", FILE_RULE)
def test_a_file_url_is_confined_to_the_real_path_of_an_allowed_directory(tmp_path, confined, target, prefix, allowed):
    url = "file://" + str(tmp_path / target)
    prefixes = ["file://%s/%s" % (tmp_path, prefix)]
    if allowed:
        assert check_url(url, prefixes)
    else:
        with pytest.raises(ArtifactError, match="outside the allowed prefixes"):
            check_url(url, prefixes)


def test_a_file_prefix_does_not_allow_http_and_an_http_prefix_does_not_allow_files(tmp_path, confined):
    with pytest.raises(ArtifactError, match="outside the allowed prefixes"):
        check_url("file://%s/srv/sub/a.tgz" % tmp_path, ["https://artifacts.example/"])
    with pytest.raises(ArtifactError, match="outside the allowed prefixes"):
        check_url("https://artifacts.example/a.tgz", ["file://%s/srv/" % tmp_path])


def test_a_symlink_out_of_the_allowed_directory_downloads_nothing(tmp_path, confined):
    srv, secret = confined
    app = service(tmp_path, allowed_url_prefixes=(srv.as_uri() + "/",))
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=(srv / "passwd.tgz").as_uri(), sha256=hashlib.sha256(secret.read_bytes()).hexdigest()))
    assert raised.value.stage == "download" and "outside the allowed prefixes" in raised.value.reason
    assert not os.path.exists(app.install_dir)


def test_a_file_larger_than_max_download_bytes_is_cut_at_the_limit(tmp_path):
    path = tmp_path / "big.tar.gz"
    path.write_bytes(os.urandom(300000))
    app = service(tmp_path, max_download_bytes=100000)
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=path.as_uri(), sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    assert raised.value.stage == "download"
    assert "larger than max_download_bytes (100000 bytes)" in raised.value.reason and "zkrollout_agent_max_download_bytes" in raised.value.reason
    assert_nothing_prepared(app)


# Unpacking bounds and what survives unpacking.
def test_a_gzip_bomb_is_refused_at_the_member_that_crosses_max_unpacked_bytes_before_it_is_written(tmp_path):
    bomb = archive_of(tmp_path / "bomb.tar.gz", [(member("run", 5), b"hello"), (member("zeros", 64 << 20), Zeros(64 << 20))])
    assert os.path.getsize(bomb.url[len("file://"):]) < 1 << 20
    app = service(tmp_path, max_unpacked_bytes=1 << 20)
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", bomb)
    assert raised.value.stage == "unpack"
    assert "more than max_unpacked_bytes (1048576 bytes)" in raised.value.reason and "member zeros" in raised.value.reason
    assert "zkrollout_agent_max_unpacked_bytes" in raised.value.reason
    assert_nothing_prepared(app)


def test_a_header_that_tarfile_would_read_into_memory_is_cut_off_while_decompressing(tmp_path):
    forged = member("run", 2)
    forged.pax_headers = {"comment": "x" * (4 << 20)}
    bomb = archive_of(tmp_path / "pax.tar.gz", [(forged, b"ok")], format=tarfile.PAX_FORMAT)
    app = service(tmp_path)
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", bomb)
    assert raised.value.stage == "unpack" and "decompression bomb" in raised.value.reason
    assert_nothing_prepared(app)


def test_an_archive_with_more_than_max_members_is_refused_at_the_first_one_too_many(tmp_path):
    many = archive_of(tmp_path / "many.tar.gz", [(member("f%02d" % index, 1), b"x") for index in range(25)])
    app = service(tmp_path, max_members=10)
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", many)
    assert raised.value.stage == "unpack"
    assert "more than max_members (10) members: refused at member f10" in raised.value.reason
    assert "zkrollout_agent_max_members" in raised.value.reason
    assert_nothing_prepared(app)
    assert prepare(service(tmp_path, max_members=25), "2.0", many)


def test_an_archive_within_every_bound_unpacks(tmp_path):
    exact = archive_of(tmp_path / "exact.tar.gz", [(member("a", 600), bytes(600)), (member("b", 424), bytes(424))])
    final = prepare(service(tmp_path, max_unpacked_bytes=1024, max_members=2), "2.0", exact)
    assert os.path.getsize(os.path.join(final, "a")) == 600


@pytest.fixture(params=["data_filter", "own_checks"])
def extraction(request, monkeypatch):
    """Both ways of dropping privileges: the standard library's data filter, and ours where it is missing."""
    if request.param == "data_filter" and artifacts._DATA_FILTER is None:
        pytest.skip("this Python's tarfile has no data filter")
    if request.param == "own_checks":
        monkeypatch.setattr(artifacts, "_DATA_FILTER", None)
    return request.param


def test_no_setuid_setgid_sticky_or_group_writable_bit_survives_unpacking(tmp_path, extraction):
    privileged = archive_of(tmp_path / "modes.tar.gz", [
        (member("suid", 2, mode=0o4755), b"#!"),
        (member("sgid", 2, mode=0o2755), b"#!"),
        (member("shared", 2, mode=0o666), b"ok"),
        (member("private", 2, mode=0o600), b"ok"),
        (member("tmp", type=tarfile.DIRTYPE, mode=0o1777), None),
    ])
    final = prepare(service(tmp_path), "2.0", privileged)
    modes = {name: stat.S_IMODE(os.stat(os.path.join(final, name)).st_mode) for name in ("suid", "sgid", "shared", "private", "tmp")}
    assert (modes["suid"], modes["sgid"], modes["shared"], modes["private"]) == (0o755, 0o755, 0o644, 0o600)
    assert not modes["tmp"] & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)


def test_unpacked_files_belong_to_the_agent_user_whatever_the_archive_says(tmp_path, extraction):
    foreign = archive_of(tmp_path / "owners.tar.gz", [
        (member("lib", type=tarfile.DIRTYPE, mode=0o755, uid=4242, gid=4343, uname="builder", gname="builders"), None),
        (member("lib/app.py", 2, uid=4242, gid=4343, uname="builder", gname="builders"), b"ok"),
        (member("run", 2, uid=0, gid=0, uname="root", gname="root"), b"ok"),
    ])
    final = prepare(service(tmp_path), "2.0", foreign)
    for name in ("lib", "lib/app.py", "run"):
        info = os.stat(os.path.join(final, name))
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid()), name


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.LNKTYPE],
                         ids=["char_device", "block_device", "fifo", "hard_link"])
def test_a_device_fifo_or_hard_link_member_is_refused(tmp_path, kind, extraction):
    special = archive_of(tmp_path / "special.tar.gz", [(member("run", 2), b"ok"), (member("dev", type=kind, linkname="run", devmajor=1, devminor=3), None)])
    app = service(tmp_path)
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", special)
    assert raised.value.stage == "unpack" and "archive member dev is a link or device" in raised.value.reason
    assert_nothing_prepared(app)


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz", "w"])
def test_other_compressions_and_a_plain_tar_unpack_too(tmp_path, mode):
    path = tmp_path / "app.tar"
    with tarfile.open(str(path), mode) as archive:
        archive.addfile(member("run", 2), io.BytesIO(b"ok"))
    final = prepare(service(tmp_path), "2.0", Artifact(url=path.as_uri(), sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    assert open(os.path.join(final, "run")).read() == "ok"


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
    assert prepare(app, "2.0", Artifact(url=artifact_server + path.name, sha256=artifact.sha256), allowed_prefixes=(artifact_server,), timeout=5)
    assert prepared_versions(app) == frozenset(["2.0"])


def test_an_http_error_fails_at_download(app, artifact_server):
    with pytest.raises(ArtifactError) as raised:
        prepare(app, "2.0", Artifact(url=artifact_server + "missing.tar.gz", sha256="0" * 64), allowed_prefixes=(artifact_server,), timeout=5)
    assert raised.value.stage == "download" and "missing.tar.gz" in raised.value.reason
    assert_nothing_prepared(app)
