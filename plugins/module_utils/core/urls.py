# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Artifact URLs: one normal form and one set of rules, for whoever writes them and whoever fetches them.

The controller refuses, before writing, every URL an agent would refuse to fetch
(``model.validate_url``), and the agent compares the normal form with its allowed prefixes
(``agent.artifacts``). A URL is refused, never repaired: anything that could make two readers
see two different locations (dot segments, encoded slashes, backslashes, credentials before
the host) is an error that says why.
"""

from __future__ import annotations

import dataclasses
import re
import string
import unicodedata
from urllib.parse import quote, unquote, urlsplit, urlunsplit

SCHEMES = ("http", "https", "file")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_RE = re.compile(r"\A[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?\Z")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_USERINFO_RE = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# Characters a path segment keeps as they are (RFC 3986 sub-delims, ':' and '@').
_SEGMENT_SAFE = "!$&'()*+,;=:@"
EXAMPLE = "https://artifacts.example/app-2.0.0.tar.gz"


class UrlError(ValueError):
    """A URL that is refused; ``reason`` says why and what is expected.

    ``credentials`` is True when the URL carries a user name or password: show it only through ``shown()``.
    """

    def __init__(self, reason, credentials=False):
        super().__init__(reason)
        self.reason = reason
        self.credentials = credentials


@dataclasses.dataclass(frozen=True)
class Location(object):
    """A normalised URL: lower-case ``scheme``, ``netloc`` (host[:port], no default port; empty for file), canonical ``path``."""

    scheme: str
    netloc: str
    path: str
    query: str = ""

    @property
    def url(self):
        """The URL to request: exactly what was checked."""
        return urlunsplit((self.scheme, self.netloc, self.path, self.query, ""))

    @property
    def local_path(self):
        """The file a ``file`` location names."""
        return unquote(self.path)

    def under(self, prefix):
        """True if this location lies under ``prefix`` (a Location).

        Same scheme and host:port, and the path equals the prefix's path or continues it after a
        ``/``: ``https://h/releases`` and ``https://h/releases/`` both allow ``https://h/releases/a.tgz``,
        neither allows ``https://h/releases-old/a.tgz``. The query takes no part.
        """
        if (self.scheme, self.netloc) != (prefix.scheme, prefix.netloc):
            return False
        directory = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
        return self.path == prefix.path or self.path.startswith(directory)


def shown(url):
    """``url`` fit for a message, log or failure record: a user name or password before the host is masked."""
    return _USERINFO_RE.sub(r"\1***@", url) if isinstance(url, str) else url


def _control(text):
    return any(unicodedata.category(c) == "Cc" for c in text)


def _canonical_escape(match):
    character = chr(int(match.group(1), 16))
    return character if character in _UNRESERVED else "%" + match.group(1).upper()


def _netloc(scheme, parts, port):
    """The normal ``host[:port]`` of an http(s) URL, or '' for a file URL."""
    host = parts.hostname or ""
    if scheme == "file":
        if host not in ("", "localhost") or port is not None:
            raise UrlError("a file URL names no host (or localhost) and an absolute path, such as file:///srv/app-2.0.0.tar.gz: "
                           "a path on this host, not a host")
        return ""
    example = "%s://artifacts.example/app-2.0.0.tar.gz" % scheme
    if not host:
        raise UrlError("it names no host: an %s URL names a host, such as %s" % (scheme, example))
    if ":" in host:
        netloc = "[%s]" % host
    elif _HOST_RE.match(host):
        netloc = host
    else:
        raise UrlError("the host %r is not a plain DNS name or IP address: an %s URL names a host, such as %s" % (host, scheme, example))
    return netloc if port is None or port == _DEFAULT_PORTS[scheme] else "%s:%d" % (netloc, port)


def _path(path):
    """The canonical form of an absolute path, segment by segment."""
    if not path.startswith("/"):
        raise UrlError("the path must be absolute, such as file:///srv/app-2.0.0.tar.gz")
    segments = []
    for segment in path.split("/"):
        if "%" in _ESCAPE_RE.sub("", segment):
            raise UrlError("it has a '%' that does not start a percent-escape")
        decoded = unquote(segment)
        if decoded.split(";", 1)[0] in (".", ".."):
            raise UrlError("it has a '.' or '..' path segment (also percent-encoded, as %2e%2e): the path cannot have '.' or '..' "
                           "segments; name the artifact by its plain path")
        if "/" in decoded:
            raise UrlError("a path segment encodes a slash (%2f), which can hide '.' or '..' segments; name the artifact by its plain path")
        if "\\" in decoded:
            raise UrlError("a URL cannot contain a backslash (%5c; some clients read it as '/'); use '/'")
        if _control(decoded):
            raise UrlError("a path segment encodes a control character")
        segments.append(quote(_ESCAPE_RE.sub(_canonical_escape, segment), safe=_SEGMENT_SAFE + "%"))
    return "/".join(segments)


def normalize(url):
    """The Location of ``url``, or UrlError saying why it is refused.

    Lower-cases the scheme (http, https or file) and the host, drops a default port, decodes
    percent-escapes of unreserved characters and upper-cases the others. Refuses a user name or
    password before the host, an http(s) URL without a host, a file URL with a host other than
    localhost, a fragment, backslashes, spaces and control characters, and any path segment
    that is ``.`` or ``..`` once decoded (``%2e%2e``, and ``..;param`` as some servers read it)
    or that decodes to a slash or a control character.
    """
    if not isinstance(url, str) or "://" not in url:
        raise UrlError("expected a URL such as %s, with a scheme (the scheme must be one of %s)" % (EXAMPLE, ", ".join(SCHEMES)))
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise UrlError("the scheme must be one of %s" % ", ".join(SCHEMES))
    if "\\" in url:
        raise UrlError("a URL cannot contain a backslash (some clients read it as '/'); use '/'")
    if not url.split("://", 1)[1] or any(c.isspace() for c in url) or _control(url):
        raise UrlError("expected a URL with a host or path and no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlError("it cannot be parsed (%s): expected a URL with a valid host and port, such as https://artifacts.example:8443/app.tar.gz"
                       % exc) from exc
    if port == 0:
        raise UrlError("it cannot be parsed (port 0): expected a URL with a valid host and port, such as https://artifacts.example:8443/app.tar.gz")
    if "@" in parts.netloc:
        raise UrlError("it carries a user name or password: credentials must not live in the tree, where every reader of the znode "
                       "sees them; remove them from the URL and give them to the agents in their host's local config or a netrc instead",
                       credentials=True)
    if parts.fragment or url.endswith("#"):
        raise UrlError("it has a fragment (#...); name the artifact without one")
    netloc = _netloc(scheme, parts, port)
    return Location(scheme=scheme, netloc=netloc, path=_path(parts.path or "/"), query=parts.query)
