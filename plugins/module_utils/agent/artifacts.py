# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download, verify and unpack a release artifact into its own version directory.

The sha256 is checked before anything is unpacked; a version directory appears (by an atomic
rename) only once its artifact is verified and safely extracted, so "prepared" always means
"verified". Archive members that would land outside the version directory are refused.

What a release in ZooKeeper may make the agent fetch is bounded by the host's own config (a
``FetchPolicy``, see ``config.py``):

- every URL, and every redirect target, is normalised (``normalize_url``) and must lie under one
  of ``allowed_url_prefixes`` (``Location.under``); a ``file`` URL's real path (symlinks
  resolved) must lie inside the real path of a ``file`` prefix; https never redirects to http;
- a download stops at ``max_download_bytes`` and at ``download_timeout`` (the whole download,
  enforced by shutting the connection down), and each socket read waits at most
  ``download_read_timeout``;
- unpacking stops at ``max_members`` members or ``max_unpacked_bytes`` declared bytes, before
  the member that crosses the limit is written; extracted files get no setuid, setgid or sticky
  bit, no group or other write bit, and belong to the agent's own user.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import http.client
import lzma
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import threading
import time
import zlib
from urllib.error import URLError
from urllib.parse import urljoin
from urllib.request import HTTPHandler, HTTPRedirectHandler, HTTPSHandler, build_opener

from ..core.model import validate_version
from ..core.urls import UrlError, normalize, shown

VERIFIED_MARKER = ".zkrollout-sha256"
MAX_REDIRECTS = 5
REDIRECT_CODES = (301, 302, 303, 307, 308)
_CHUNK = 1 << 16
# tarfile reads pax records and GNU long names into memory; one header may be this large.
_HEADER_ALLOWANCE = 64 * 1024
# The standard library's extraction policy (Python 3.8.17+, 3.11.4+); older hosts get the same by hand.
_DATA_FILTER = getattr(tarfile, "data_filter", None)


class ArtifactError(Exception):
    """Preparing an artifact failed at ``stage`` (download, verify or unpack)."""

    def __init__(self, stage, reason):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def prepared_versions(service_config):
    """Versions of the service that are verified and unpacked on disk."""
    root = os.path.join(service_config.install_dir, "versions")
    try:
        names = os.listdir(root)
    except OSError:
        return frozenset()
    return frozenset(name for name in names if os.path.exists(os.path.join(root, name, VERIFIED_MARKER)))


def _refused(what, url, reason):
    return ArtifactError("download", "%s %r is refused: %s" % (what, shown(url), reason))


def normalize_url(url, what="artifact URL"):
    """The Location of ``url`` (``core.urls.normalize``), or ArtifactError("download") saying why it is refused."""
    try:
        return normalize(url)
    except UrlError as exc:
        raise _refused(what, url, exc.reason) from exc


def normalize_prefix(prefix):
    """The Location of an allowed URL prefix (normalised like an artifact URL, and without a query)."""
    location = normalize_url(prefix, "allowed URL prefix")
    if location.query or "?" in prefix:
        raise ArtifactError("download", "allowed URL prefix %r is refused: a prefix has no query (?...)" % prefix)
    return location


def _inside(path, directory):
    return path == directory or os.path.commonpath([path, directory]) == directory


def _allowed(location, allowed_prefixes):
    """True if ``location`` lies under one of ``allowed_prefixes`` (the config's strings); a file by its real path."""
    prefixes = [normalize_prefix(prefix) for prefix in allowed_prefixes]
    if location.scheme == "file":
        real = os.path.realpath(location.local_path)
        return any(_inside(real, os.path.realpath(prefix.local_path)) for prefix in prefixes if prefix.scheme == "file")
    return any(location.under(prefix) for prefix in prefixes)


_PREFIX_HINT = ("add the server's prefix to allowed_url_prefixes in this host's agent config "
                "(role variable zkrollout_agent_allowed_url_prefixes) if that server is trusted")


def check_url(url, allowed_prefixes, allow_any=False):
    """The normalised Location of ``url`` if this host may fetch it; ArtifactError("download") if not.

    ``allowed_prefixes`` are the config's prefix strings; an empty list allows nothing unless
    ``allow_any`` (the config's explicit ``allow_any_url``) is set.
    """
    location = normalize_url(url)
    if allow_any:
        return location
    if not allowed_prefixes:
        raise ArtifactError("download", "artifact URL %s is refused: this host's config allows no artifact URL (allowed_url_prefixes is empty); "
                                        "list the artifact servers in allowed_url_prefixes (role variable zkrollout_agent_allowed_url_prefixes)" % url)
    if not _allowed(location, allowed_prefixes):
        raise ArtifactError("download", "artifact URL %s is outside the allowed prefixes %s of this host's config: publish it under one of them, or %s"
                            % (url, ", ".join(allowed_prefixes), _PREFIX_HINT))
    return location


def _follow(start, current, target, policy):
    """The Location a redirect from ``current`` to ``target`` (its Location header) leads to, once checked."""
    if not target:
        raise _refused_redirect(start, "nowhere", policy, "the redirect has no Location", "fix the artifact server")
    target = urljoin(current.url, target)
    try:
        location = normalize_url(target, "redirect target")
    except ArtifactError as exc:
        raise _refused_redirect(start, target, policy, exc.reason, "publish the artifact at a plain URL under an allowed prefix") from exc
    if location.scheme not in ("http", "https"):
        raise _refused_redirect(start, target, policy, "a redirect may only lead to http or https", "publish the artifact at its final URL")
    if current.scheme == "https" and location.scheme == "http":
        raise _refused_redirect(start, target, policy, "a redirect from https to http is refused", "serve the artifact over https")
    if not policy.allow_any_url and not _allowed(location, policy.allowed_url_prefixes):
        raise _refused_redirect(start, target, policy, "the target is outside the allowed prefixes",
                                "publish the artifact where it needs no redirect out of them, or " + _PREFIX_HINT)
    return location


def _refused_redirect(start, target, policy, reason, hint):
    return ArtifactError("download", "artifact URL %s redirected to %s: %s (allowed prefixes: %s); %s"
                         % (start.url, shown(target), reason, ", ".join(policy.allowed_url_prefixes) or "any URL", hint))


class _Deadline(object):
    """The whole download's time limit; a timer shuts the open connection down when it passes.

    A per-read socket timeout cannot bound a server that sends one byte just often enough, nor
    a header line that never ends: only closing the socket under the blocked read can.
    """

    def __init__(self, seconds):
        self.ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socket = None
        self._timer = None
        self._fired = False

    @property
    def expired(self):
        """True once the deadline has passed."""
        return self._fired or time.monotonic() >= self.ends

    def remaining(self):
        """Seconds left, at least a millisecond (a socket timeout of 0 would mean non-blocking)."""
        return max(0.001, self.ends - time.monotonic())

    def watch(self, sock):
        """Shut ``sock`` down when the deadline passes (at once if it has)."""
        with self._lock:
            self._socket = sock
            if self._timer is None:
                self._timer = threading.Timer(self.remaining(), self._expire)
                self._timer.daemon = True
                self._timer.start()
        if self.expired:
            self._expire()

    def _expire(self):
        with self._lock:
            self._fired = True
            sock = self._socket
        if sock is not None:
            try:
                # The plain socket's shutdown, also under TLS: it ends a read blocked in another
                # thread without touching the TLS object that read is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self):
        """Stop the timer (the download is over)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class _WatchedConnection(object):
    """An http.client connection whose socket the download's deadline can shut down."""

    def __init__(self, host, deadline, **kwargs):
        super().__init__(host, **kwargs)
        self.deadline = deadline

    def connect(self):
        super().connect()
        self.deadline.watch(self.sock)


class _WatchedHTTPConnection(_WatchedConnection, http.client.HTTPConnection):
    """Plain HTTP under a deadline."""


class _WatchedHTTPSConnection(_WatchedConnection, http.client.HTTPSConnection):
    """HTTPS (certificates verified as urllib does) under a deadline."""


class _DeadlineHTTPHandler(HTTPHandler):
    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_WatchedHTTPConnection, req, deadline=self.deadline)


class _DeadlineHTTPSHandler(HTTPSHandler):
    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_WatchedHTTPSConnection, req, context=self._context, deadline=self.deadline)


class _HandBackRedirects(HTTPRedirectHandler):
    """Returns a redirect response to the caller, which checks its target before following it."""

    def http_error_302(self, req, fp, code, msg, headers):
        return fp

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _limit_hint(key, what):
    return "if %s, raise %s in this host's agent config (role variable zkrollout_agent_%s)" % (what, key, key)


def _copy(read, out, digest, url, policy, deadline):
    """Copy ``read(n)`` chunks into ``out`` until EOF, within max_download_bytes and the deadline; return the byte count."""
    size = 0
    while True:
        chunk = read(_CHUNK)
        if deadline.expired:
            raise _too_slow(url, policy)
        if not chunk:
            return size
        size += len(chunk)
        if size > policy.max_download_bytes:
            raise ArtifactError("download", "%s is larger than max_download_bytes (%d bytes): the download was stopped at that limit; %s"
                                % (url, policy.max_download_bytes, _limit_hint("max_download_bytes", "the artifact really is that large")))
        digest.update(chunk)
        out.write(chunk)


def _too_slow(url, policy):
    return ArtifactError("download", "downloading %s took longer than download_timeout (%ss for the whole download) and was stopped; %s"
                         % (url, policy.download_timeout, _limit_hint("download_timeout", "the artifact server is this slow")))


def _copy_file(location, out, digest, policy, deadline):
    # The real path is what was checked against the prefixes; O_NOFOLLOW refuses a symlink put there since.
    descriptor = os.open(os.path.realpath(location.local_path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(descriptor, "rb") as source:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ArtifactError("download", "cannot download %s: not a regular file" % location.url)
        _copy(source.read, out, digest, location.url, policy, deadline)


def _copy_http(start, out, digest, policy, deadline):
    opener = build_opener(_HandBackRedirects, _DeadlineHTTPHandler(deadline), _DeadlineHTTPSHandler(deadline))
    current = start
    for _hop in range(MAX_REDIRECTS + 1):
        if deadline.expired:
            raise _too_slow(start.url, policy)
        with opener.open(current.url, timeout=min(policy.download_read_timeout, deadline.remaining())) as response:
            if response.status in REDIRECT_CODES:
                current = _follow(start, current, response.headers.get("Location"), policy)
                continue
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > policy.max_download_bytes:
                raise ArtifactError("download", "%s announces %s bytes, more than max_download_bytes (%d bytes): not downloaded; %s"
                                    % (start.url, announced, policy.max_download_bytes,
                                       _limit_hint("max_download_bytes", "the artifact really is that large")))
            size = _copy(response.read1, out, digest, start.url, policy, deadline)
            if announced.isdigit() and size != int(announced):
                raise ArtifactError("download", "cannot download %s: the connection ended after %d of the %s bytes announced" % (start.url, size, announced))
            return
    raise ArtifactError("download", "artifact URL %s redirected more than %d times: refused; publish the artifact at a URL that needs fewer redirects"
                        % (start.url, MAX_REDIRECTS))


def _download(location, target, policy):
    digest = hashlib.sha256()
    deadline = _Deadline(policy.download_timeout)
    try:
        with open(target, "wb") as out:
            if location.scheme == "file":
                _copy_file(location, out, digest, policy, deadline)
            else:
                _copy_http(location, out, digest, policy, deadline)
    except (URLError, OSError, ValueError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise _too_slow(location.url, policy) from exc
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, socket.timeout):
            reason = "no data for download_read_timeout (%ss)" % policy.download_read_timeout
        raise ArtifactError("download", "cannot download %s: %s" % (location.url, reason)) from exc
    finally:
        deadline.cancel()
    return digest.hexdigest()


class _BoundedStream(object):
    """The decompressed tar stream, cut off once it outgrows what the accepted members declare.

    Member sizes are checked before each member is written, but tarfile reads pax records and
    GNU long names into memory itself: without this bound one forged header could make it
    decompress gigabytes before any member reaches a check.
    """

    def __init__(self, source, url):
        self.source = source
        self.url = url
        self.consumed = 0
        self.allowed = _HEADER_ALLOWANCE

    def accept(self, size):
        """Let the stream carry a member of ``size`` bytes (padded to tar blocks) and the next header."""
        self.allowed += size + tarfile.BLOCKSIZE + _HEADER_ALLOWANCE

    def read(self, size=_CHUNK):
        chunk = self.source.read(size if size is not None and size >= 0 else _CHUNK)
        self.consumed += len(chunk)
        if self.consumed > self.allowed:
            raise ArtifactError("unpack", "archive %s has a header larger than %d KiB (a pax record or long name) or more data than its members "
                                          "declare: refused as a likely decompression bomb" % (self.url, _HEADER_ALLOWANCE // 1024))
        return chunk


def _decompressed(raw):
    """``raw`` read through the decompressor its first bytes call for (gzip, bzip2, xz), or as it is (a plain tar)."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def _check_member(member, destination):
    if not (member.isfile() or member.isdir()):
        raise ArtifactError("unpack", "archive member %s is a link or device or another special file; only files and directories are allowed"
                            % member.name)
    path = os.path.realpath(os.path.join(destination, member.name))
    if not _inside(path, destination):
        raise ArtifactError("unpack", "archive member %s would land outside the version directory" % member.name)


def _data_mode(member):
    """The mode the standard library's data filter gives: no special bits, no group or other write."""
    mode = member.mode & 0o755
    if member.isdir():
        return mode | 0o700
    if not mode & 0o100:
        mode &= ~0o111
    return mode | 0o600


def _extract(archive, member, destination):
    if _DATA_FILTER is not None:
        archive.extract(member, destination, filter=_DATA_FILTER)
        return
    member.mode = _data_mode(member)
    member.uid, member.gid, member.uname, member.gname = os.geteuid(), os.getegid(), "", ""
    archive.extract(member, destination, numeric_owner=True)


def _unpack(archive_path, destination, policy, url):
    """Extract member by member, refusing at the first member past max_members or max_unpacked_bytes."""
    destination = os.path.realpath(destination)
    members = unpacked = 0
    with open(archive_path, "rb") as raw:
        stream = _BoundedStream(_decompressed(raw), url)
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                members += 1
                if members > policy.max_members:
                    raise ArtifactError("unpack", "archive %s has more than max_members (%d) members: refused at member %s; %s"
                                        % (url, policy.max_members, member.name, _limit_hint("max_members", "the release really has that many files")))
                _check_member(member, destination)
                size = member.size if member.isfile() else 0
                unpacked += size
                if unpacked > policy.max_unpacked_bytes:
                    raise ArtifactError("unpack", "archive %s unpacks to more than max_unpacked_bytes (%d bytes): refused at member %s (%d bytes) "
                                                  "before writing it; %s" % (url, policy.max_unpacked_bytes, member.name, size,
                                                                             _limit_hint("max_unpacked_bytes", "the release really is that large")))
                stream.accept(size)
                _extract(archive, member, destination)


def prepare(service_config, version, artifact, allowed_prefixes=None, timeout=None):
    """Make ``version`` of ``artifact`` (a model.Artifact) available under ``versions/<version>``.

    The fetch policy is ``service_config.fetch`` (the agent config's, see config.FetchPolicy);
    ``allowed_prefixes`` and ``timeout``, when given, replace its prefixes and its whole-download
    deadline. Returns the version directory.

    Raises ArtifactError(stage, reason) and leaves no partial version directory behind.
    """
    version = validate_version(version)
    final = service_config.version_dir(version)
    if os.path.exists(os.path.join(final, VERIFIED_MARKER)):
        return final
    policy = service_config.fetch
    if allowed_prefixes is not None:
        policy = dataclasses.replace(policy, allowed_url_prefixes=tuple(allowed_prefixes))
    if timeout is not None:
        policy = dataclasses.replace(policy, download_timeout=timeout)
    location = check_url(artifact.url, policy.allowed_url_prefixes, policy.allow_any_url)
    work = os.path.join(service_config.install_dir, ".work")
    os.makedirs(work, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="%s-" % version, dir=work)
    try:
        archive_path = os.path.join(scratch, "artifact")
        actual = _download(location, archive_path, policy)
        if actual != artifact.sha256:
            raise ArtifactError("verify", "sha256 mismatch for %s: the release says %s, the download has %s"
                                % (artifact.url, artifact.sha256, actual))
        unpacked = os.path.join(scratch, "unpacked")
        os.makedirs(unpacked)
        try:
            _unpack(archive_path, unpacked, policy, artifact.url)
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise ArtifactError("unpack", "cannot unpack %s: %s" % (artifact.url, exc)) from exc
        with open(os.path.join(unpacked, VERIFIED_MARKER), "w") as marker:
            marker.write(actual + "\n")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(unpacked, final)
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
