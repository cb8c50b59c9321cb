# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Payloads of the rollout tree: parse, validate and serialise the JSON of every znode.

Every payload is a JSON object with a ``schema`` field. Parsing is strict: an unknown schema, a
missing field or a value of the wrong shape raises PayloadError, whose message names the znode
path (when known), the field and the offending value. Serialisation is canonical (sorted keys,
no spaces), so two equal payloads are equal bytes and writers can compare before they write.

Znode data is data, never code: versions, URLs and checksums are validated here so that the
agent can use them as file names and download sources, and nothing here is ever executed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import MISSING, dataclass, field, fields

from .layout import VERSION_PATTERN, LayoutError, check_name
from .urls import UrlError, normalize, shown

SCHEMA = 1

_VERSION_RE = re.compile(r"\A" + VERSION_PATTERN + r"\Z")
_SHA256_RE = re.compile(r"\A[0-9a-f]{64}\Z")
_PERCENT_RE = re.compile(r"\A([0-9]{1,3})%\Z")
_ROLLOUT_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}\Z")
_KEY_ID_RE = re.compile(r"\A[0-9a-f]{16}\Z")
# 64 bytes in base64: 86 characters and "==".
_SIGNATURE_RE = re.compile(r"\A[A-Za-z0-9+/]{86}==\Z")
ON_FAILURE = ("halt", "rollback")
ROLLOUT_STATES = ("running", "paused", "aborted", "failed", "done")
ACTIVE_ROLLOUT_STATES = ("running", "paused")
FAILURE_REASON_CHARS = 1024
FAILURE_STAGES = ("signature", "download", "verify", "unpack", "stop", "start", "health", "rollback")


class PayloadError(ValueError):
    """A payload or spec value that does not validate.

    ``path`` is the znode (or spec location), ``field`` the offending field, ``value`` its value.
    """

    def __init__(self, message, path=None, field_name=None, value=None):
        self.path = path
        self.field = field_name
        self.value = value
        prefix = "%s: " % path if path else ""
        super().__init__(prefix + message)


# The size limits of the tree, the one place they are defined.
#
# A znode payload larger than MAX_PAYLOAD_BYTES is refused unread by every reader, so writers
# refuse to send one (check_payload_bytes): every payload of the tree is far smaller.
MAX_PAYLOAD_BYTES = 256 * 1024
# ZooKeeper refuses a request larger than its jute.maxbuffer setting (0xfffff bytes unless the
# servers set another; kazoo has no limit of its own): a bigger one loses the connection and
# writes nothing. A transaction is one request, so all of its operations count together, with
# their paths (chroot included), ACLs and headers. Writers check the serialised request against
# this before sending it; the connection option zk_jute_maxbuffer tells them the servers' value.
# Log and snapshot records of such a request stay within the 1024 bytes ZooKeeper allows on top.
DEFAULT_JUTE_MAXBUFFER = 0xFFFFF
_SHOWN_VALUE_CHARS = 200


def _shown(value):
    """A value fit for a message: JSON, cut short, even when it is huge or nested deeply."""
    try:
        text = json.dumps(value, default=repr)
    except (RecursionError, ValueError):
        text = "a value nested too deeply to show"
    return text if len(text) <= _SHOWN_VALUE_CHARS else text[:_SHOWN_VALUE_CHARS] + "... (%d characters)" % len(text)


# Field validators. Each takes (value, where) and returns the normalised value or raises.
def _fail(where, field_name, value, expectation):
    path, prefix = where
    raise PayloadError(
        "field '%s%s' has %s; %s" % (prefix, field_name, _shown(value), expectation),
        path,
        prefix + field_name,
        value,
    )


def validate_version(value, where=(None, ""), field_name="version"):
    """A version string usable as a directory name: ``[A-Za-z0-9][A-Za-z0-9._+-]*``, 64 chars max."""
    if not isinstance(value, str) or not _VERSION_RE.match(value):
        _fail(where, field_name, value, "expected a version such as 2.0.0 (letters, digits, '.', '_', '+', '-')")
    return value


def validate_sha256(value, where=(None, ""), field_name="sha256"):
    """A sha256 checksum: exactly 64 hex digits (upper case is normalised to lower case)."""
    normalised = value.lower() if isinstance(value, str) else value
    if not isinstance(normalised, str) or not _SHA256_RE.match(normalised):
        _fail(where, field_name, value, "expected 64 hexadecimal digits (the output of sha256sum)")
    return normalised


def validate_url(value, where=(None, ""), field_name="url"):
    """An artifact URL every agent fetches as it reads, and that hides nothing (the rules of ``core.urls``).

    The URL is kept as written; agents fetch its normal form. A refused URL is shown with any
    user name or password masked, since the message goes to job logs.
    """
    try:
        normalize(value)
    except UrlError as exc:
        _fail(where, field_name, shown(value) if exc.credentials else value, exc.reason)
    return value


def validate_quorum(value, where=(None, ""), field_name="quorum"):
    """A quorum: a non-negative integer, or a percentage string from "0%" to "100%"."""
    if isinstance(value, bool):
        _fail(where, field_name, value, "expected an integer >= 0 or a percentage such as \"66%\"")
    if isinstance(value, int):
        if value < 0:
            _fail(where, field_name, value, "a quorum cannot be negative")
        return value
    if isinstance(value, str):
        match = _PERCENT_RE.match(value.strip())
        if match and int(match.group(1)) <= 100:
            return "%d%%" % int(match.group(1))
        if re.match(r"\A[0-9]+\Z", value.strip()):
            return int(value.strip())
    _fail(where, field_name, value, "expected an integer >= 0 or a percentage from \"0%\" to \"100%\"")


def validate_positive_int(value, where=(None, ""), field_name="max_parallel"):
    """An integer >= 1 (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(where, field_name, value, "expected an integer >= 1")
    return value


def validate_choice(choices):
    """Validator for one of a fixed set of strings."""

    def validate(value, where=(None, ""), field_name="value"):
        if value not in choices:
            _fail(where, field_name, value, "expected one of %s" % ", ".join(choices))
        return value

    return validate


def validate_name(kind):
    """Validator for a service name or host id (a path segment)."""

    def validate(value, where=(None, ""), field_name="name"):
        try:
            return check_name(kind, value)
        except LayoutError as exc:
            _fail(where, field_name, value, str(exc).split(": ", 1)[1])

    return validate


def validate_names(kind):
    """Validator for a list of distinct service names or host ids."""
    validate_one = validate_name(kind)

    def validate(value, where=(None, ""), field_name="names"):
        if not isinstance(value, (list, tuple)):
            _fail(where, field_name, value, "expected a list of %s names" % kind)
        names = [validate_one(item, where, "%s[%d]" % (field_name, i)) for i, item in enumerate(value)]
        if len(set(names)) != len(names):
            _fail(where, field_name, value, "the list names a %s twice" % kind)
        return names

    return validate


def validate_rollout_id(value, where=(None, ""), field_name="id"):
    """A rollout id: letters, digits and ``._:+-``, up to 128 characters."""
    if not isinstance(value, str) or not _ROLLOUT_ID_RE.match(value):
        _fail(where, field_name, value, "expected an id such as 2026-11-22.1 (letters, digits, '.', '_', ':', '+', '-')")
    return value


def validate_timestamp(value, where=(None, ""), field_name="since"):
    """Seconds since the epoch, as a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        _fail(where, field_name, value, "expected seconds since the epoch")
    return float(value)


def validate_seconds(value, where=(None, ""), field_name="lease"):
    """A duration in seconds, a number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        _fail(where, field_name, value, "expected a number of seconds > 0")
    return float(value)


def validate_optional(validator):
    """Validator that also accepts None."""

    def validate(value, where=(None, ""), field_name="value"):
        return None if value is None else validator(value, where, field_name)

    return validate


def validate_text(max_length):
    """Validator for free text shown to humans (reasons, owners); bounded, printable."""

    def validate(value, where=(None, ""), field_name="text"):
        if not isinstance(value, str) or len(value) > max_length or any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in value):
            _fail(where, field_name, value, "expected printable text of at most %d characters" % max_length)
        return value

    return validate


def printable(text, max_length):
    """``text`` made fit for a free-text field: control characters (but newline and tab) become spaces, cut to ``max_length``.

    For text the writer does not choose itself (an exception's message, a server's answer), so
    that what it records always parses.
    """
    cleaned = "".join(" " if unicodedata.category(c) == "Cc" and c not in "\n\t" else c for c in str(text))
    return cleaned if len(cleaned) <= max_length else cleaned[:max_length - 3] + "..."


# Who holds an upgrade slot: ``agent:<host>`` or ``controller:<id>`` (rules.controller_owner).
validate_owner = validate_text(256)


def validate_bool(value, where=(None, ""), field_name="flag"):
    """A JSON boolean."""
    if not isinstance(value, bool):
        _fail(where, field_name, value, "expected true or false")
    return value


# Payload classes. Each dataclass field carries its validator and whether it may be omitted.
def _field(validator, default=field, json_name=None):
    # Called only from dataclass bodies, which pylint cannot see from here.
    # pylint: disable=invalid-field-call
    metadata = {"validator": validator, "json_name": json_name}
    if default is field:
        return field(metadata=metadata)
    if isinstance(default, list):
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


class Payload(object):
    """Base of every znode payload: strict parsing and canonical serialisation."""

    kind = "payload"
    # A nested payload (an artifact inside a release entry) has no schema field of its own.
    nested = False

    @classmethod
    def from_dict(cls, raw, path=None, prefix=""):
        """Validate a decoded JSON object and build the payload; errors name path and field."""
        where = (path, prefix)
        if not isinstance(raw, dict):
            if prefix:
                _fail((path, ""), prefix.rstrip("."), raw, "expected a JSON object (%s)" % cls.kind)
            raise PayloadError("expected a JSON object (%s), got %s" % (cls.kind, _shown(raw)), path)
        if not cls.nested or "schema" in raw:
            schema = raw.get("schema")
            if schema != SCHEMA:
                _fail(where, "schema", schema, "this collection reads schema %d; upgrade zkrollout.dc on this side" % SCHEMA)
        values = {}
        known = {"schema"}
        for spec in fields(cls):
            json_name = spec.metadata.get("json_name") or spec.name
            known.add(json_name)
            if json_name in raw:
                values[spec.name] = spec.metadata["validator"](raw[json_name], where, json_name)
            elif not _has_default(spec):
                raise PayloadError("field '%s%s' is missing; every %s has it" % (prefix, json_name, cls.kind), path, prefix + json_name)
        unknown = sorted(set(raw) - known)
        if unknown:
            _fail(where, unknown[0], raw[unknown[0]], "unknown field for a %s" % cls.kind)
        return cls._check(cls(**values), where)

    @classmethod
    def _check(cls, payload, where):
        """Cross-field checks: a service never depends on itself."""
        name = getattr(payload, "service", None) or getattr(payload, "name", None)
        if name is not None and name in getattr(payload, "depends_on", ()):
            _fail(where, "depends_on", payload.depends_on, "service %s cannot depend on itself" % name)
        return payload

    @classmethod
    def from_bytes(cls, data, path=None):
        """Parse znode bytes; malformed JSON is a PayloadError naming the path."""
        if not data:
            raise PayloadError("the znode is empty, expected a %s" % cls.kind, path)
        if len(data) > MAX_PAYLOAD_BYTES:
            raise PayloadError("the znode holds %d bytes, more than the %d allowed for a payload (%s); rewrite or delete the znode"
                               % (len(data), MAX_PAYLOAD_BYTES, cls.kind), path)
        try:
            raw = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError("malformed JSON for a %s (%s); rewrite or delete the znode" % (cls.kind, exc), path) from exc
        except RecursionError as exc:
            raise PayloadError("JSON nested too deeply to be a payload (%s); rewrite or delete the znode" % cls.kind, path) from exc
        return cls.from_dict(raw, path)

    def to_dict(self):
        """The JSON object, with the schema version (a nested payload has none of its own)."""
        raw = {} if self.nested else {"schema": SCHEMA}
        for spec in fields(self):
            value = getattr(self, spec.name)
            raw[spec.metadata.get("json_name") or spec.name] = value.to_dict() if isinstance(value, Payload) else value
        return raw

    def to_bytes(self):
        """Canonical JSON bytes: sorted keys, no spaces."""
        return canonical_json(self.to_dict())


def _has_default(spec):
    return spec.default is not MISSING or spec.default_factory is not MISSING


def canonical_json(value):
    """Canonical JSON bytes of any JSON value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def check_payload_bytes(payload_cls, data, path):
    """Refuse bytes about to be written at ``path`` that a reader would refuse; returns the payload they parse to.

    The bytes go through ``payload_cls.from_bytes``, the parser agents and modules read the node
    with, so a bad value raises PayloadError naming the path, the field and the value; bytes above
    MAX_PAYLOAD_BYTES raise one naming their size and the limit.
    """
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError("the %s is %d bytes, more than the %d bytes a znode payload may hold (readers refuse a larger one "
                           "unread); shorten its longest values, such as an artifact URL" % (payload_cls.kind, len(data), MAX_PAYLOAD_BYTES),
                           path)
    return payload_cls.from_bytes(data, path)


def _nested(payload_cls):
    def validate(value, where=(None, ""), field_name="value"):
        return payload_cls.from_dict(value, where[0], where[1] + field_name + ".")

    return validate


@dataclass(frozen=True)
class Artifact(Payload):
    """Where to download a version and its mandatory sha256."""

    kind = "artifact"
    nested = True
    url: str = _field(validate_url)
    sha256: str = _field(validate_sha256)


def validate_match(pattern, expectation):
    """Validator for a string matching the compiled ``pattern`` whole; ``expectation`` says what is expected."""

    def validate(value, where=(None, ""), field_name="value"):
        if not isinstance(value, str) or not pattern.match(value):
            _fail(where, field_name, value, expectation)
        return value

    return validate


# A signing key id (core.signing.key_id) and an Ed25519 signature.
validate_key_id = validate_match(_KEY_ID_RE, "expected a key id of 16 hexadecimal digits")
validate_signature_value = validate_match(_SIGNATURE_RE, "expected the base64 of a 64-byte Ed25519 signature")


@dataclass(frozen=True)
class Signature(Payload):
    """Who signed a release entry (the key id) and the signature itself (see core.signing)."""

    kind = "signature"
    nested = True
    key: str = _field(validate_key_id)
    value: str = _field(validate_signature_value)


@dataclass(frozen=True)
class ReleaseEntry(Payload):
    """``staging/<svc>``: the target of one service in a rollout."""

    kind = "release entry"
    rollout: str = _field(validate_rollout_id)
    service: str = _field(validate_name("service"))
    version: str = _field(validate_version)
    artifact: Artifact = _field(_nested(Artifact))
    quorum: object = _field(validate_quorum)
    max_parallel: int = _field(validate_positive_int, 1)
    on_failure: str = _field(validate_choice(ON_FAILURE), "halt")
    depends_on: list = _field(validate_names("service"), [])
    signature: Signature = _field(validate_optional(_nested(Signature)), None)

    def to_dict(self):
        raw = super().to_dict()
        if self.signature is None:
            # An unsigned entry keeps the bytes it had before signatures existed.
            del raw["signature"]
        return raw


@dataclass(frozen=True)
class DeployEntry(Payload):
    """``deploy/<svc>-<seq>``: one service in the deploy order."""

    kind = "deploy queue entry"
    service: str = _field(validate_name("service"))
    depends_on: list = _field(validate_names("service"), [])


@dataclass(frozen=True)
class RolloutState(Payload):
    """``rollout``: the state of the whole rollout."""

    kind = "rollout state"
    id: str = _field(validate_rollout_id)
    state: str = _field(validate_choice(ROLLOUT_STATES))
    spec_hash: str = _field(validate_sha256)
    services: list = _field(validate_names("service"))
    parallel: bool = _field(validate_bool, False)
    created: float = _field(validate_timestamp, 0.0)
    updated: float = _field(validate_timestamp, 0.0)
    by: str = _field(validate_text(256), "")
    reason: str = _field(validate_text(1024), "")

    @property
    def active(self):
        """True while agents may still take slots or finish upgrades."""
        return self.state in ACTIVE_ROLLOUT_STATES


@dataclass(frozen=True)
class Slot(Payload):
    """``staging/<svc>/upgrading/<host>``: an upgrade slot.

    ``owner`` says who took it (``agent:<host>`` or ``controller:<id>``) and ``session`` (hex)
    the ZooKeeper session that took it. A controller's slot is a lease: it counts as abandoned
    only once its owner's session is gone *and* ``lease`` seconds passed since the node's last
    write (its ``mtime``, ZooKeeper's clock; the controller rewrites the slot while its play
    runs). ``deadline`` is the taker's own-clock estimate of that moment, for people and for
    slots written before leases.
    """

    kind = "upgrade slot"
    to_version: str = _field(validate_version, json_name="to")
    since: float = _field(validate_timestamp)
    from_version: str = _field(validate_optional(validate_version), None, json_name="from")
    owner: str = _field(validate_owner, "agent")
    session: str = _field(validate_optional(validate_text(32)), None)
    deadline: float = _field(validate_optional(validate_timestamp), None)
    lease: float = _field(validate_optional(validate_seconds), None)


@dataclass(frozen=True)
class Failure(Payload):
    """``staging/<svc>/failed/<host>``: why the upgrade failed on that host."""

    kind = "failure record"
    version: str = _field(validate_version)
    stage: str = _field(validate_choice(FAILURE_STAGES))
    reason: str = _field(validate_text(FAILURE_REASON_CHARS))
    at: float = _field(validate_timestamp)
    rolled_back_to: str = _field(validate_optional(validate_version), None)


# The release spec: what a user writes (zkrollout_release), before it becomes payloads.
@dataclass(frozen=True)
class ServiceSpec(Payload):
    """One service of a release spec."""

    kind = "service spec"
    name: str = _field(validate_name("service"))
    version: str = _field(validate_version)
    artifact: Artifact = _field(_nested(Artifact))
    quorum: object = _field(validate_quorum)
    max_parallel: int = _field(validate_positive_int, 1)
    on_failure: str = _field(validate_choice(ON_FAILURE), "halt")
    depends_on: list = _field(validate_names("service"), [])

    def release_entry(self, rollout_id):
        """The ``staging/<svc>`` payload of this service in rollout ``rollout_id``."""
        return ReleaseEntry(
            rollout=rollout_id,
            service=self.name,
            version=self.version,
            artifact=self.artifact,
            quorum=self.quorum,
            max_parallel=self.max_parallel,
            on_failure=self.on_failure,
            depends_on=list(self.depends_on),
        )


@dataclass(frozen=True)
class ReleaseSpec(object):
    """A whole release as the user declares it (``zkrollout_release``)."""

    services: tuple
    id: str = None
    parallel: bool = False

    @classmethod
    def from_dict(cls, raw, where="zkrollout_release"):
        """Validate a user's release; errors name the service and the field."""
        if not isinstance(raw, dict):
            raise PayloadError("expected a mapping with a 'services' list", where)
        unknown = sorted(set(raw) - {"id", "parallel", "services"})
        if unknown:
            raise PayloadError("unknown key '%s'; expected id, parallel and services" % unknown[0], where, unknown[0])
        rollout_id = validate_optional(validate_rollout_id)(raw.get("id"), (where, ""), "id")
        parallel = validate_bool(raw.get("parallel", False), (where, ""), "parallel")
        services = raw.get("services")
        if not isinstance(services, list) or not services:
            raise PayloadError("'services' must be a non-empty list of services", where, "services", services)
        parsed = []
        seen = set()
        for index, service in enumerate(services):
            name = service.get("name") if isinstance(service, dict) else None
            label = "%s.services[%d]%s" % (where, index, " (%s)" % name if isinstance(name, str) else "")
            spec = _parse_service(service, label)
            if spec.name in seen:
                raise PayloadError("service %s is declared twice; merge the two entries" % spec.name, label, "name", spec.name)
            seen.add(spec.name)
            parsed.append(spec)
        return cls(services=tuple(parsed), id=rollout_id, parallel=parallel)

    def service(self, name):
        """The spec of one service by name."""
        for spec in self.services:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self):
        """The release as the user would write it (service entries without their schema field)."""
        services = [{k: v for k, v in s.to_dict().items() if k != "schema"} for s in self.services]
        return {"id": self.id, "parallel": self.parallel, "services": services}

    def to_bytes(self):
        """Canonical JSON bytes of the release."""
        return canonical_json(self.to_dict())

    @property
    def spec_hash(self):
        """sha256 of the canonical spec without its id: the same release always hashes the same."""
        return hashlib.sha256(canonical_json(dict(self.to_dict(), id=None))).hexdigest()


def _parse_service(raw, label):
    if not isinstance(raw, dict):
        raise PayloadError("expected a mapping with name, version, artifact and quorum", label)
    return ServiceSpec.from_dict(dict(raw, schema=SCHEMA), label, "")
