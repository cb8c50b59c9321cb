# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download, verify and unpack a release artifact into its own version directory.

The sha256 is checked before anything is unpacked; a version directory appears (by an atomic
rename) only once its artifact is verified and safely extracted, so "prepared" always means
"verified". Archive members that would land outside the version directory are refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from urllib.error import URLError
from urllib.request import build_opener

from ..core.model import validate_version

VERIFIED_MARKER = ".zkrollout-sha256"
_CHUNK = 1 << 16


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


def check_url(url, allowed_prefixes):
    """Refuse a URL outside the host's allowed prefixes (when the local config sets any)."""
    if allowed_prefixes and not any(url.startswith(prefix) for prefix in allowed_prefixes):
        raise ArtifactError("download", "artifact URL %s is outside the allowed prefixes %s of this host's config" % (url, ", ".join(allowed_prefixes)))


def _download(url, target, timeout):
    digest = hashlib.sha256()
    try:
        with build_opener().open(url, timeout=timeout) as response, open(target, "wb") as out:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
    except (URLError, OSError, ValueError) as exc:
        raise ArtifactError("download", "cannot download %s: %s" % (url, getattr(exc, "reason", exc))) from exc
    return digest.hexdigest()


def _safe_members(archive, destination):
    destination = os.path.realpath(destination)
    for member in archive.getmembers():
        path = os.path.realpath(os.path.join(destination, member.name))
        if not (member.isfile() or member.isdir()):
            raise ArtifactError("unpack", "archive member %s is a link or device; only files and directories are allowed" % member.name)
        if path != destination and not path.startswith(destination + os.sep):
            raise ArtifactError("unpack", "archive member %s would land outside the version directory" % member.name)
        yield member


def prepare(service_config, version, artifact, allowed_prefixes=(), timeout=60.0):
    """Make ``version`` of ``artifact`` (a model.Artifact) available under ``versions/<version>``.

    Returns the version directory.

    Raises ArtifactError(stage, reason) and leaves no partial version directory behind.
    """
    version = validate_version(version)
    final = service_config.version_dir(version)
    if os.path.exists(os.path.join(final, VERIFIED_MARKER)):
        return final
    check_url(artifact.url, allowed_prefixes)
    work = os.path.join(service_config.install_dir, ".work")
    os.makedirs(work, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="%s-" % version, dir=work)
    try:
        archive_path = os.path.join(scratch, "artifact")
        actual = _download(artifact.url, archive_path, timeout)
        if actual != artifact.sha256:
            raise ArtifactError("verify", "sha256 mismatch for %s: the release says %s, the download has %s"
                                % (artifact.url, artifact.sha256, actual))
        unpacked = os.path.join(scratch, "unpacked")
        os.makedirs(unpacked)
        try:
            with tarfile.open(archive_path) as archive:
                archive.extractall(unpacked, members=list(_safe_members(archive, unpacked)))
        except (tarfile.TarError, OSError) as exc:
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
