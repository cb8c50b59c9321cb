# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Payloads: strict parsing whose errors name path, field and value, and canonical bytes."""

from __future__ import annotations

import json

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.agent.artifacts import ArtifactError, normalize_url
from ansible_collections.zkrollout.dc.plugins.module_utils.core.model import (
    FAILURE_REASON_CHARS,
    MAX_PAYLOAD_BYTES,
    ROLLOUT_STATES,
    Artifact,
    DeployEntry,
    Failure,
    PayloadError,
    ReleaseEntry,
    ReleaseSpec,
    RolloutState,
    ServiceSpec,
    Slot,
    canonical_json,
    check_payload_bytes,
    printable,
)

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
ARTIFACT = {"url": "https://artifacts.example/web-2.0.0.tar.gz", "sha256": SHA}
PATH = "/dc/staging/web"

# One valid JSON object per znode payload class (Artifact is nested, so it has no schema).
GOOD = {
    ReleaseEntry: {
        "schema": 1,
        "rollout": "2026-11-22.1",
        "service": "web",
        "version": "2.0.0",
        "artifact": ARTIFACT,
        "quorum": 2,
        "max_parallel": 2,
        "on_failure": "rollback",
        "depends_on": ["db", "cache"],
    },
    DeployEntry: {"schema": 1, "service": "web", "depends_on": ["db"]},
    RolloutState: {
        "schema": 1,
        "id": "2026-11-22.1",
        "state": "running",
        "spec_hash": SHA,
        "services": ["db", "web"],
        "parallel": True,
        "created": 1700000000.5,
        "updated": 1700000100,
        "by": "awx job 42",
        "reason": "",
    },
    Slot: {
        "schema": 1,
        "from": "1.9.3",
        "to": "2.0.0",
        "since": 1700000000,
        "owner": "controller:job-7",
        "session": "0x100002a3b4c0001",
        "deadline": 1700000600,
    },
    Failure: {"schema": 1, "version": "2.0.0", "stage": "health", "reason": "3 health checks failed", "at": 1700000000, "rolled_back_to": "1.9.3"},
    ServiceSpec: {
        "schema": 1,
        "name": "web",
        "version": "2.0.0",
        "artifact": ARTIFACT,
        "quorum": "50%",
        "max_parallel": 1,
        "on_failure": "halt",
        "depends_on": ["db"],
    },
}

# Fields a payload cannot do without (JSON names).
REQUIRED = {
    ReleaseEntry: ["rollout", "service", "version", "artifact", "quorum"],
    DeployEntry: ["service"],
    RolloutState: ["id", "state", "spec_hash", "services"],
    Slot: ["to", "since"],
    Failure: ["version", "stage", "reason", "at"],
    ServiceSpec: ["name", "version", "artifact", "quorum"],
}

PAYLOADS = list(GOOD)


def class_id(cls):
    return cls.__name__


def release_entry(**changes):
    """A valid release entry dict with some fields replaced (or removed, with a value of ...)."""
    raw = dict(GOOD[ReleaseEntry], **changes)
    return {key: value for key, value in raw.items() if value is not Ellipsis}


def refused(cls, raw, path=PATH):
    """The PayloadError raised by parsing ``raw`` (a dict or bytes) as ``cls``."""
    with pytest.raises(PayloadError) as caught:
        if isinstance(raw, (bytes, str)):
            cls.from_bytes(raw, path)
        else:
            cls.from_dict(raw, path)
    return caught.value


def assert_names(error, path, field, value):
    """The message names the path, the field and the offending value; so do the attributes."""
    message = str(error)
    assert message.startswith(path + ": ")
    assert "'%s'" % field in message
    assert json.dumps(value) in message
    assert error.path == path
    assert error.field == field
    assert error.value == value


def canonical(data):
    return json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode("utf-8")


# Round trips and canonical bytes.
@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_a_good_payload_round_trips_through_its_bytes(cls):
    payload = cls.from_dict(GOOD[cls], PATH)
    data = payload.to_bytes()
    assert isinstance(data, bytes)
    assert cls.from_bytes(data, PATH) == payload
    assert cls.from_bytes(data.decode("utf-8"), PATH) == payload


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_bytes_are_canonical_sorted_keys_and_no_spaces(cls):
    data = cls.from_dict(GOOD[cls], PATH).to_bytes()
    assert data == canonical(data)
    written = json.loads(data)
    assert list(written) == sorted(written)
    assert b'", "' not in data and b'": ' not in data
    assert written["schema"] == 1


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_equal_payloads_are_equal_bytes_whatever_the_key_order(cls):
    reversed_keys = dict(reversed(list(GOOD[cls].items())))
    assert list(reversed_keys) != list(GOOD[cls])
    first, second = cls.from_dict(GOOD[cls], PATH), cls.from_dict(reversed_keys, PATH)
    assert first == second
    assert first.to_bytes() == second.to_bytes()


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_a_payload_written_by_the_code_parses_to_the_same_dict(cls):
    payload = cls.from_dict(GOOD[cls], PATH)
    assert cls.from_dict(payload.to_dict(), PATH) == payload


def test_defaults_are_written_out_so_readers_never_guess():
    minimal = {"schema": 1, "rollout": "r1", "service": "web", "version": "2.0.0", "artifact": ARTIFACT, "quorum": 1}
    written = json.loads(ReleaseEntry.from_dict(minimal).to_bytes())
    assert written["max_parallel"] == 1
    assert written["on_failure"] == "halt"
    assert written["depends_on"] == []


def test_an_artifact_round_trips_inside_its_release_entry():
    entry = ReleaseEntry.from_dict(GOOD[ReleaseEntry], PATH)
    assert entry.artifact == Artifact(url=ARTIFACT["url"], sha256=SHA)
    assert json.loads(entry.to_bytes())["artifact"] == ARTIFACT
    assert ReleaseEntry.from_bytes(entry.to_bytes(), PATH).artifact == entry.artifact


def test_an_artifact_tolerates_a_schema_field_when_nested():
    entry = ReleaseEntry.from_dict(release_entry(artifact=dict(ARTIFACT, schema=1)), PATH)
    assert entry.artifact.sha256 == SHA


def test_a_nested_artifact_with_a_foreign_schema_is_refused():
    error = refused(ReleaseEntry, release_entry(artifact=dict(ARTIFACT, schema=2)))
    assert_names(error, PATH, "artifact.schema", 2)


def test_an_artifact_round_trips_through_its_own_bytes():
    artifact = Artifact(url=ARTIFACT["url"], sha256=SHA)
    assert Artifact.from_bytes(artifact.to_bytes(), PATH) == artifact


def test_slot_uses_from_and_to_as_json_names():
    slot = Slot(to_version="2.0.0", from_version="1.9.3", since=1700000000.0)
    written = json.loads(slot.to_bytes())
    assert written["from"] == "1.9.3"
    assert written["to"] == "2.0.0"
    assert "from_version" not in written and "to_version" not in written
    parsed = Slot.from_bytes(b'{"schema":1,"to":"2.0.0","since":1}', PATH)
    assert parsed.to_version == "2.0.0"
    assert parsed.from_version is None
    assert parsed.owner == "agent"


def test_slot_refuses_its_python_attribute_names_in_json():
    error = refused(Slot, {"schema": 1, "to_version": "2.0.0", "since": 1})
    assert "'to' is missing" in str(error)


# Envelope errors: schema, missing and unknown fields, bytes that are not a JSON object.
@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
@pytest.mark.parametrize("schema", [2, 0, "1", None])
def test_a_foreign_schema_is_refused_naming_path_field_and_value(cls, schema):
    error = refused(cls, dict(GOOD[cls], schema=schema))
    assert_names(error, PATH, "schema", schema)
    assert "schema 1" in str(error)


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_a_payload_without_schema_is_refused(cls):
    raw = {key: value for key, value in GOOD[cls].items() if key != "schema"}
    error = refused(cls, raw)
    assert error.field == "schema"
    assert "'schema' has null" in str(error)


@pytest.mark.parametrize("cls, field", [(cls, field) for cls in REQUIRED for field in REQUIRED[cls]], ids=lambda v: getattr(v, "__name__", v))
def test_a_missing_field_is_refused_naming_path_and_field(cls, field):
    raw = {key: value for key, value in GOOD[cls].items() if key != field}
    error = refused(cls, raw)
    assert str(error).startswith(PATH + ": ")
    assert "'%s' is missing" % field in str(error)
    assert error.field == field


@pytest.mark.parametrize("field", ["url", "sha256"])
def test_a_missing_artifact_field_is_named_with_its_parent(field):
    artifact = {key: value for key, value in ARTIFACT.items() if key != field}
    error = refused(ReleaseEntry, release_entry(artifact=artifact))
    assert "'artifact.%s' is missing" % field in str(error)
    assert error.field == "artifact." + field


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_an_unknown_field_is_refused_naming_path_field_and_value(cls):
    error = refused(cls, dict(GOOD[cls], colour="blue"))
    assert_names(error, PATH, "colour", "blue")
    assert "unknown field" in str(error)


def test_an_unknown_artifact_field_is_named_with_its_parent():
    error = refused(ReleaseEntry, release_entry(artifact=dict(ARTIFACT, md5="abc")))
    assert_names(error, PATH, "artifact.md5", "abc")


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
@pytest.mark.parametrize("data", [b'{"schema": 1,', b"not json", b"\xff\xfe{}", b"   "], ids=repr)
def test_malformed_json_is_refused_naming_the_path(cls, data):
    error = refused(cls, data)
    assert str(error).startswith(PATH + ": malformed JSON for a %s" % cls.kind)
    assert error.path == PATH


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
@pytest.mark.parametrize("data", [b"", None])
def test_an_empty_znode_is_refused_naming_the_path(cls, data):
    with pytest.raises(PayloadError) as caught:
        cls.from_bytes(data, PATH)
    assert str(caught.value).startswith(PATH + ": the znode is empty")
    assert cls.kind in str(caught.value)


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
@pytest.mark.parametrize("data, shown", [(b"[1, 2]", "[1, 2]"), (b'"web"', '"web"'), (b"42", "42"), (b"null", "null")])
def test_json_that_is_not_an_object_is_refused_naming_the_path_and_what_it_got(cls, data, shown):
    error = refused(cls, data)
    assert str(error).startswith(PATH + ": expected a JSON object")
    assert str(error).endswith("got " + shown)


def test_a_payload_error_without_a_path_has_no_prefix():
    with pytest.raises(PayloadError) as caught:
        Slot.from_bytes(b'{"schema":1,"to":"../1","since":1}')
    assert str(caught.value).startswith("field 'to'")
    assert caught.value.path is None


# Field validators, exercised through the payloads that carry them.
@pytest.mark.parametrize("version", ["2.0.0", "1.0+build.5", "v2_rc-1", "7", "x" * 64])
def test_a_version_usable_as_a_directory_name_is_accepted(version):
    assert ReleaseEntry.from_dict(release_entry(version=version)).version == version


@pytest.mark.parametrize("version", ["2.0 0", "", "../1", ".1", "-1", "1/2", "x" * 65, 1.0, 2, None, ["1"]], ids=repr)
def test_a_version_that_is_not_a_safe_file_name_is_refused(version):
    assert_names(refused(ReleaseEntry, release_entry(version=version)), PATH, "version", version)


def test_upper_case_sha256_is_normalised_to_lower_case():
    upper = ReleaseEntry.from_dict(release_entry(artifact=dict(ARTIFACT, sha256=SHA.upper())), PATH)
    lower = ReleaseEntry.from_dict(release_entry(), PATH)
    assert upper.artifact.sha256 == SHA
    assert upper.to_bytes() == lower.to_bytes()


@pytest.mark.parametrize("sha256", ["abc", SHA[:-1], SHA + "0", "g" * 64, " " + SHA[1:], 1, None], ids=repr)
def test_a_sha256_that_is_not_64_hex_digits_is_refused(sha256):
    error = refused(ReleaseEntry, release_entry(artifact=dict(ARTIFACT, sha256=sha256)))
    assert_names(error, PATH, "artifact.sha256", sha256)
    assert "64 hexadecimal digits" in str(error)


@pytest.mark.parametrize(
    "url",
    [
        "https://artifacts.example/web-2.0.0.tar.gz",
        "http://10.0.0.1:8080/web.tgz",
        "HTTPS://artifacts.example/web.tgz",
        "file:///srv/artifacts/web.tgz",
        "file://localhost/srv/artifacts/web.tgz",
        "http://[::1]:8080/web.tgz",
        "https://artifacts.example/web..2.tgz",
        "https://artifacts.example/web.tgz?path=/../b",
        "https://artifacts.example/web%202.0.tgz",
    ],
)
def test_an_http_https_or_absolute_file_url_is_accepted(url):
    entry = ReleaseEntry.from_dict(release_entry(artifact=dict(ARTIFACT, url=url)))
    assert entry.artifact.url == url


@pytest.mark.parametrize(
    "url, expectation",
    [
        ("ftp://artifacts.example/web.tgz", "scheme must be one of http, https, file"),
        ("artifacts.example/web.tgz", "expected a URL"),
        ("http://", "no spaces"),
        ("http://artifacts.example/web 2.tgz", "no spaces"),
        ("http://artifacts.example/web\t2.tgz", "no spaces"),
        ("http://artifacts.example/web\x002.tgz", "no spaces"),
        ("file:relative/web.tgz", "expected a URL"),
        ("file://relative/web.tgz", "absolute path"),
        ("", "expected a URL"),
        (None, "expected a URL"),
        ("https:///A.tgz", "an https URL names a host"),
        ("http://:8080/A.tgz", "an http URL names a host"),
        ("file:///srv/../../etc/passwd", "'.' or '..' segments"),
        ("https://h/a/%2e%2e/b.tgz", "'.' or '..' segments"),
        ("https://h/a/.%2E/b.tgz", "'.' or '..' segments"),
        ("https://h/a/./b.tgz", "'.' or '..' segments"),
        ("https://h/a%2f..%2fb.tgz", "'.' or '..' segments"),
        ("https://h/a/..", "'.' or '..' segments"),
        ("https://h/a\\b.tgz", "backslash"),
        ("https://h\\@evil.example/a.tgz", "backslash"),
        ("https://h/a%5cb.tgz", "backslash"),
        ("file://fileserver/srv/a.tgz", "names no host (or localhost)"),
        ("http://h:99999/a.tgz", "valid host and port"),
        ("http://h:0/a.tgz", "valid host and port"),
        ("http://[::1/a.tgz", "valid host and port"),
        ("http://ho%20st/a.tgz", "names a host"),
        ("https://h/a\x85b.tgz", "no spaces"),
    ],
    ids=repr,
)
def test_an_unsafe_or_unusable_url_is_refused_saying_why(url, expectation):
    error = refused(ReleaseEntry, release_entry(artifact=dict(ARTIFACT, url=url)))
    assert_names(error, PATH, "artifact.url", url)
    assert expectation in str(error)


@pytest.mark.parametrize(
    "url, shown, hidden",
    [
        ("https://user:secret@host/a.tgz", "https://***@host/a.tgz", "user:secret"),
        ("https://alice:s3cr3t@host/a.tgz", "https://***@host/a.tgz", "s3cr3t"),
        ("https://alice@host:8443/a.tgz", "https://***@host:8443/a.tgz", "alice"),
        ("file://alice:s3cr3t@localhost/srv/a.tgz", "file://***@localhost/srv/a.tgz", "alice"),
    ],
)
def test_a_url_with_credentials_is_refused_without_showing_them_saying_where_they_belong(url, shown, hidden):
    error = refused(ReleaseEntry, release_entry(artifact=dict(ARTIFACT, url=url)))
    assert_names(error, PATH, "artifact.url", shown)
    assert "credentials must not live in the tree" in str(error) and "host's local config or a netrc" in str(error)
    assert hidden not in str(error)


@pytest.mark.parametrize(
    "quorum, parsed",
    [(2, 2), (0, 0), ("50%", "50%"), ("100%", "100%"), ("0%", "0%"), ("050%", "50%"), (" 66% ", "66%"), ("3", 3)],
    ids=repr,
)
def test_a_quorum_is_a_count_or_a_percentage(quorum, parsed):
    entry = ReleaseEntry.from_dict(release_entry(quorum=quorum))
    assert entry.quorum == parsed
    assert type(entry.quorum) is type(parsed)


@pytest.mark.parametrize("quorum", [-1, "-1", "101%", "1000%", "2.5", 2.5, 1.0, True, False, "", "%", "half", None, [2]], ids=repr)
def test_a_quorum_that_is_not_a_count_or_a_percentage_is_refused(quorum):
    assert_names(refused(ReleaseEntry, release_entry(quorum=quorum)), PATH, "quorum", quorum)


def test_a_quorum_of_non_ascii_digits_is_refused_as_a_payload_error():
    assert_names(refused(ReleaseEntry, release_entry(quorum="²")), PATH, "quorum", "²")


@pytest.mark.parametrize("max_parallel", [1, 2, 100])
def test_max_parallel_is_a_positive_integer(max_parallel):
    assert ReleaseEntry.from_dict(release_entry(max_parallel=max_parallel)).max_parallel == max_parallel


@pytest.mark.parametrize("max_parallel", [0, -1, True, False, "2", 1.5, None], ids=repr)
def test_a_max_parallel_below_one_or_not_an_integer_is_refused(max_parallel):
    error = refused(ReleaseEntry, release_entry(max_parallel=max_parallel))
    assert_names(error, PATH, "max_parallel", max_parallel)
    assert "integer >= 1" in str(error)


@pytest.mark.parametrize("on_failure", ["halt", "rollback"])
def test_on_failure_is_halt_or_rollback(on_failure):
    assert ReleaseEntry.from_dict(release_entry(on_failure=on_failure)).on_failure == on_failure


@pytest.mark.parametrize("on_failure", ["ignore", "HALT", "", None, True])
def test_another_on_failure_is_refused_listing_the_choices(on_failure):
    error = refused(ReleaseEntry, release_entry(on_failure=on_failure))
    assert_names(error, PATH, "on_failure", on_failure)
    assert "halt, rollback" in str(error)


def test_depends_on_naming_a_service_twice_is_refused():
    error = refused(ReleaseEntry, release_entry(depends_on=["db", "cache", "db"]))
    assert_names(error, PATH, "depends_on", ["db", "cache", "db"])
    assert "twice" in str(error)


def test_a_release_entry_depending_on_its_own_service_is_refused():
    error = refused(ReleaseEntry, release_entry(depends_on=["db", "web"]))
    assert_names(error, PATH, "depends_on", ["db", "web"])
    assert "web cannot depend on itself" in str(error)


@pytest.mark.parametrize("depends_on", ["db", {"db": 1}, None, 3], ids=repr)
def test_depends_on_that_is_not_a_list_is_refused(depends_on):
    error = refused(ReleaseEntry, release_entry(depends_on=depends_on))
    assert_names(error, PATH, "depends_on", depends_on)
    assert "list of service names" in str(error)


def test_a_bad_name_in_depends_on_is_named_with_its_index():
    assert_names(refused(ReleaseEntry, release_entry(depends_on=["db", "../etc"])), PATH, "depends_on[1]", "../etc")


def test_a_service_name_that_could_escape_its_parent_is_refused():
    error = refused(ReleaseEntry, release_entry(service="../hosts"))
    assert_names(error, PATH, "service", "../hosts")
    assert "letters, digits" in str(error)


@pytest.mark.parametrize("rollout", ["", "a b", "-1", "x" * 129, 7])
def test_a_rollout_id_that_is_not_a_simple_token_is_refused(rollout):
    assert_names(refused(ReleaseEntry, release_entry(rollout=rollout)), PATH, "rollout", rollout)


@pytest.mark.parametrize("state", ROLLOUT_STATES)
def test_a_rollout_state_is_one_of_the_five_states(state):
    parsed = RolloutState.from_dict(dict(GOOD[RolloutState], state=state))
    assert parsed.state == state
    assert parsed.active == (state in ("running", "paused"))


@pytest.mark.parametrize("state", ["finished", "RUNNING", "", None])
def test_another_rollout_state_is_refused_listing_the_states(state):
    error = refused(RolloutState, dict(GOOD[RolloutState], state=state), "/dc/rollout")
    assert_names(error, "/dc/rollout", "state", state)
    assert "running, paused, aborted, failed, done" in str(error)


@pytest.mark.parametrize("parallel", ["yes", 1, None])
def test_rollout_parallel_must_be_a_json_boolean(parallel):
    assert_names(refused(RolloutState, dict(GOOD[RolloutState], parallel=parallel)), PATH, "parallel", parallel)


@pytest.mark.parametrize("since", [-1, float("-inf"), "1700000000", True, None])
def test_a_timestamp_must_be_non_negative_seconds(since):
    assert_names(refused(Slot, dict(GOOD[Slot], since=since)), PATH, "since", since)


def test_an_integer_timestamp_is_read_as_seconds():
    assert Slot.from_dict(dict(GOOD[Slot], since=1700000000)).since == 1700000000.0


@pytest.mark.parametrize("value", [b"NaN", b"Infinity"])
def test_a_timestamp_that_is_not_a_finite_number_is_refused(value):
    refused(Slot, b'{"schema":1,"to":"2.0.0","since":1,"deadline":' + value + b"}")


def test_free_text_is_bounded():
    assert_names(refused(Slot, dict(GOOD[Slot], session="a" * 33)), PATH, "session", "a" * 33)
    assert Slot.from_dict(dict(GOOD[Slot], session="a" * 32)).session == "a" * 32


def test_free_text_refuses_terminal_control_characters():
    refused(Failure, dict(GOOD[Failure], reason="\x1b[2J\x1b[Hall good"))


@pytest.mark.parametrize("text", ["\x00", "\x7f", "\x85", "\x9b31m", "line\r"], ids=repr)
def test_free_text_refuses_every_control_character_but_newline_and_tab(text):
    assert_names(refused(RolloutState, dict(GOOD[RolloutState], by=text)), PATH, "by", text)


def test_free_text_keeps_newlines_tabs_and_other_languages():
    assert RolloutState.from_dict(dict(GOOD[RolloutState], reason="Grund:\tÄnderung\n変更")).reason == "Grund:\tÄnderung\n変更"


@pytest.mark.parametrize("stage", ["fetch", "", None])
def test_a_failure_stage_must_be_a_known_stage(stage):
    assert_names(refused(Failure, dict(GOOD[Failure], stage=stage)), PATH, "stage", stage)


def test_the_rollout_services_are_a_list_of_distinct_service_names():
    assert_names(refused(RolloutState, dict(GOOD[RolloutState], services=["web", "web"])), PATH, "services", ["web", "web"])
    assert_names(refused(RolloutState, dict(GOOD[RolloutState], services=["web", "a/b"])), PATH, "services[1]", "a/b")


def test_a_deploy_entry_names_a_valid_service():
    assert_names(refused(DeployEntry, {"schema": 1, "service": ".."}), PATH, "service", "..")


def test_an_artifact_that_is_not_an_object_is_refused_naming_the_field():
    assert_names(refused(ReleaseEntry, release_entry(artifact="https://x/a.tgz")), PATH, "artifact", "https://x/a.tgz")


def test_an_artifact_that_is_not_an_object_is_refused_naming_the_path_and_value():
    error = refused(ReleaseEntry, release_entry(artifact="https://x/a.tgz"))
    assert str(error).startswith(PATH + ": ")
    assert '"https://x/a.tgz"' in str(error)


# The release spec a user writes.
def service(name, version="2.0.0", **extra):
    return dict({"name": name, "version": version, "artifact": dict(ARTIFACT), "quorum": 1}, **extra)


def release(*services, **top):
    return dict(top, services=list(services))


def release_spec_as_dict(spec):
    """A ReleaseSpec written back as the mapping a user would declare."""
    raw = {"parallel": spec.parallel, "services": [s.to_dict() for s in spec.services]}
    if spec.id is not None:
        raw["id"] = spec.id
    return raw


def spec_refused(raw):
    with pytest.raises(PayloadError) as caught:
        ReleaseSpec.from_dict(raw)
    return caught.value


def test_a_release_spec_keeps_its_services_in_declared_order():
    spec = ReleaseSpec.from_dict(release(service("db"), service("web", depends_on=["db"]), id="r1", parallel=True))
    assert [s.name for s in spec.services] == ["db", "web"]
    assert spec.id == "r1"
    assert spec.parallel is True
    assert spec.service("web").depends_on == ["db"]
    with pytest.raises(KeyError):
        spec.service("cache")


def test_a_release_spec_round_trips_through_its_services():
    spec = ReleaseSpec.from_dict(release(service("db"), service("web", depends_on=["db"], quorum="50%"), id="r1"))
    again = ReleaseSpec.from_dict(release_spec_as_dict(spec))
    assert again == spec
    assert again.spec_hash == spec.spec_hash


def test_a_release_spec_has_canonical_bytes():
    spec = ReleaseSpec.from_dict(release(service("db"), id="r1"))
    assert ReleaseSpec.from_dict(json.loads(spec.to_bytes())) == spec


def test_a_service_spec_becomes_its_release_entry():
    spec = ReleaseSpec.from_dict(release(service("db"), service("web", depends_on=["db"], max_parallel=2)))
    entry = spec.service("web").release_entry("r1")
    assert entry == ReleaseEntry.from_bytes(entry.to_bytes())
    assert (entry.rollout, entry.service, entry.version, entry.max_parallel, entry.depends_on) == ("r1", "web", "2.0.0", 2, ["db"])


def test_a_service_declared_twice_is_refused_naming_it():
    error = spec_refused(release(service("web"), service("db"), service("web", version="3")))
    assert "service web is declared twice" in str(error)
    assert str(error).startswith("zkrollout_release.services[2] (web): ")
    assert (error.field, error.value) == ("name", "web")


@pytest.mark.parametrize("services", [[], None, "web", {"name": "web"}], ids=repr)
def test_a_release_without_a_list_of_services_is_refused(services):
    error = spec_refused({"services": services})
    assert "'services' must be a non-empty list" in str(error)
    assert error.field == "services"


def test_an_unknown_top_level_key_is_refused_naming_it():
    error = spec_refused(release(service("web"), serial=1))
    assert "unknown key 'serial'" in str(error)
    assert error.field == "serial"


@pytest.mark.parametrize("raw", [["web"], "web", None])
def test_a_release_that_is_not_a_mapping_is_refused(raw):
    assert "expected a mapping" in str(spec_refused(raw))


def test_an_error_in_a_service_is_labelled_with_its_index_and_name():
    error = spec_refused(release(service("A"), service("B", version="2.0 0")))
    assert str(error).startswith("zkrollout_release.services[1] (B): field 'version'")
    assert '"2.0 0"' in str(error)


def test_an_error_in_a_nested_artifact_is_labelled_with_the_service_and_the_field():
    error = spec_refused(release(service("A"), service("B", artifact={"url": "ftp://x/b", "sha256": SHA})))
    assert str(error).startswith("zkrollout_release.services[1] (B): field 'artifact.url'")


def test_a_service_without_a_usable_name_is_labelled_with_its_index_only():
    error = spec_refused(release(service("A"), {"version": "1"}))
    assert str(error).startswith("zkrollout_release.services[1]: ")
    assert "'name' is missing" in str(error)


def test_a_service_that_is_not_a_mapping_is_labelled_with_its_index():
    assert str(spec_refused(release(service("A"), "B"))).startswith("zkrollout_release.services[1]: expected a mapping")


def test_a_user_may_not_pass_an_unknown_service_key():
    error = spec_refused(release(service("A", serial=2)))
    assert str(error).startswith("zkrollout_release.services[0] (A): field 'serial'")


def test_a_service_depending_on_itself_is_refused_by_the_model():
    error = spec_refused(release(service("A", depends_on=["A"])))
    assert "A cannot depend on itself" in str(error)


@pytest.mark.parametrize("rollout_id", ["a b", ""])
def test_a_bad_release_id_is_refused(rollout_id):
    error = spec_refused(release(service("A"), id=rollout_id))
    assert error.field == "id"
    assert json.dumps(rollout_id) in str(error)


def test_release_parallel_must_be_a_boolean():
    assert spec_refused(release(service("A"), parallel="yes")).field == "parallel"


def test_the_spec_hash_ignores_the_release_id():
    one = ReleaseSpec.from_dict(release(service("db"), service("web"), id="r1"))
    two = ReleaseSpec.from_dict(release(service("db"), service("web"), id="r2"))
    unnamed = ReleaseSpec.from_dict(release(service("db"), service("web")))
    assert one.spec_hash == two.spec_hash == unnamed.spec_hash
    assert len(one.spec_hash) == 64


@pytest.mark.parametrize(
    "changed",
    [
        release(service("db"), service("web", version="2.0.1")),
        release(service("db"), service("web", quorum=2)),
        release(service("db"), service("web", max_parallel=2)),
        release(service("db"), service("web", depends_on=["db"])),
        release(service("db"), service("web", artifact={"url": ARTIFACT["url"], "sha256": "0" * 64})),
        release(service("db"), service("web"), parallel=True),
        release(service("db")),
    ],
)
def test_the_spec_hash_changes_when_the_release_changes(changed):
    base = ReleaseSpec.from_dict(release(service("db"), service("web")))
    assert ReleaseSpec.from_dict(changed).spec_hash != base.spec_hash


def test_the_spec_hash_ignores_spelling_that_normalises_away():
    base = ReleaseSpec.from_dict(release(service("web", quorum=2)))
    respelled = ReleaseSpec.from_dict(release(service("web", quorum="2", artifact={"sha256": SHA.upper(), "url": ARTIFACT["url"]}, max_parallel=1)))
    assert respelled.spec_hash == base.spec_hash


def test_a_payload_nested_deeper_than_python_can_parse_is_a_named_problem():
    deep = b'{"schema":1,"to":' + b"[" * 100000 + b"]" * 100000 + b',"since":1}'
    error = refused(Slot, deep)
    assert str(error).startswith(PATH + ": JSON nested too deeply to be a payload (upgrade slot)")


def test_a_deeply_nested_field_value_is_refused_with_a_short_message():
    error = refused(Failure, dict(GOOD[Failure], reason=[[[[[[[[["x" * 500]]]]]]]]]))
    assert error.field == "reason"
    assert len(str(error)) < 600


@pytest.mark.parametrize("cls", PAYLOADS, ids=class_id)
def test_bytes_a_writer_checks_are_parsed_by_the_readers_parser(cls):
    assert check_payload_bytes(cls, canonical_json(GOOD[cls]), PATH) == cls.from_dict(GOOD[cls])


def test_a_writer_check_refuses_what_readers_refuse_naming_path_field_and_value():
    data = canonical_json(dict(GOOD[RolloutState], by="ops\x1b[8m"))
    assert_names(pytest.raises(PayloadError, check_payload_bytes, RolloutState, data, "/dc/rollout").value, "/dc/rollout", "by", "ops\x1b[8m")


def test_a_writer_check_refuses_a_payload_above_the_size_cap_naming_size_and_limit():
    data = canonical_json(release_entry(artifact=dict(ARTIFACT, url="https://artifacts.example/" + "a" * MAX_PAYLOAD_BYTES)))
    error = pytest.raises(PayloadError, check_payload_bytes, ReleaseEntry, data, PATH).value
    assert str(error).startswith(PATH + ": the release entry is %d bytes, more than the %d bytes a znode payload may hold" % (len(data), MAX_PAYLOAD_BYTES))


def test_a_payload_above_the_size_cap_is_refused_unread():
    error = refused(Slot, b'{"schema":1,"to":"2.0","since":1,"owner":"' + b"a" * 300000 + b'"}')
    assert "300044 bytes, more than the 262144 allowed" in str(error)


def test_text_the_writer_does_not_choose_is_made_printable_and_short_enough_to_parse():
    reason = printable("HTTP 500\r\n\x1b[31mboom\x00" + "x" * 2000, FAILURE_REASON_CHARS)
    record = Failure(version="2.0.0", stage="download", reason=reason, at=1.0)
    assert Failure.from_bytes(record.to_bytes()).reason.startswith("HTTP 500 \n [31mboom ")
    assert len(reason) == FAILURE_REASON_CHARS and reason.endswith("...")


@pytest.mark.parametrize("url", [
    "https://artifacts.example/a.tgz#part",
    "https://artifacts.example/a%zz.tgz",
    "https://artifacts.example/releases/..;x=1/a.tgz",
    "https://artifacts.example/a%00.tgz",
])
def test_a_url_an_agent_would_refuse_to_fetch_is_never_written(url):
    with pytest.raises(PayloadError):
        ReleaseEntry.from_dict(release_entry(artifact=dict(ARTIFACT, url=url)))
    with pytest.raises(ArtifactError):
        normalize_url(url)
