# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pure half of the client factory: connection strings, options and ACLs (no server)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from kazoo.security import Permissions

from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import (
    ConnectionOptions,
    ZkConnectionError,
    parse_acl,
    parse_hosts,
)


@pytest.mark.parametrize(
    "hosts, servers, chroot",
    [
        ("127.0.0.1:2181", [("127.0.0.1", 2181)], None),
        (" zk1.example:2181 ", [("zk1.example", 2181)], None),
        ("zk1:2181,zk2:2182,zk3:2183", [("zk1", 2181), ("zk2", 2182), ("zk3", 2183)], None),
        ("zk1:2181, zk2:2182", [("zk1", 2181), ("zk2", 2182)], None),
        ("[::1]:2181", [("::1", 2181)], None),
        ("[fe80::1]:2181,10.0.0.2:2181", [("fe80::1", 2181), ("10.0.0.2", 2181)], None),
        ("zk1:2181,zk2:2181/apps/rollout", [("zk1", 2181), ("zk2", 2181)], "/apps/rollout"),
        ("zk1:2181/apps/", [("zk1", 2181)], "/apps"),
        ("zk1:1", [("zk1", 1)], None),
        ("zk1:65535", [("zk1", 65535)], None),
        (["zk1:2181", " zk2:2182 "], [("zk1", 2181), ("zk2", 2182)], None),
        (("zk1:2181", "zk2:2182/apps"), [("zk1", 2181), ("zk2", 2182)], "/apps"),
    ],
    ids=repr,
)
def test_a_connection_string_splits_into_servers_and_chroot(hosts, servers, chroot):
    assert parse_hosts(hosts) == (servers, chroot)


@pytest.mark.parametrize(
    "hosts, address",
    [
        ("zk1:0", "zk1:0"),
        ("zk1:70000", "zk1:70000"),
        ("zk1:65536", "zk1:65536"),
        ("zk1", "zk1"),
        ("zk1:", "zk1:"),
        (":2181", ":2181"),
        ("zk1:2181,", ""),
        ("zk1:2181,,zk2:2181", ""),
        ("::1:2181", "::1:2181"),
        ("zk 1:2181", "zk 1:2181"),
        ("zk1:21a1", "zk1:21a1"),
    ],
)
def test_a_bad_address_is_refused_naming_it_and_the_whole_string(hosts, address):
    with pytest.raises(ZkConnectionError) as caught:
        parse_hosts(hosts)
    message = str(caught.value)
    assert "invalid ZooKeeper address %r" % address in message
    assert repr(hosts) in message
    assert "host:port" in message


@pytest.mark.parametrize("hosts", ["", "   ", [], (), None, 2181])
def test_an_empty_connection_string_is_refused(hosts):
    with pytest.raises(ZkConnectionError, match="zk_hosts is empty"):
        parse_hosts(hosts)


@pytest.mark.parametrize("hosts", ["zk1:2181/..", "zk1:2181/a//b", "zk1:2181/zookeeper"])
def test_a_bad_chroot_is_refused_naming_the_connection_string(hosts):
    with pytest.raises(ZkConnectionError) as caught:
        parse_hosts(hosts)
    assert "invalid chroot in zk_hosts %r" % hosts in str(caught.value)


def test_default_options_connect_to_the_local_server_under_dc():
    options = ConnectionOptions()
    assert options.servers == [("127.0.0.1", 2181)]
    assert options.chroot is None
    assert options.root == "/dc"
    assert options.acl == ()
    assert options.describe() == "127.0.0.1:2181"
    assert options.jute_maxbuffer == 0xFFFFF, "ZooKeeper's own default request limit"


def test_options_expose_servers_chroot_and_a_description_without_credentials():
    options = ConnectionOptions(hosts="zk1:2181,zk2:2181/apps", root="/teams/web/dc/", tls=True, digest="deployer:s3cret")
    assert options.servers == [("zk1", 2181), ("zk2", 2181)]
    assert options.chroot == "/apps"
    assert options.root == "/teams/web/dc"
    assert options.describe() == "zk1:2181,zk2:2181/apps (TLS)"
    assert "s3cret" not in options.describe()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"timeout": -1}, "zk_timeout must be a positive number of seconds, got -1"),
        ({"timeout": 0}, "zk_timeout must be a positive number of seconds, got 0"),
        ({"session_timeout": -5.0}, "zk_session_timeout must be a positive number of seconds, got -5.0"),
        ({"retry_deadline": True}, "zk_retry_deadline must be a positive number of seconds, got True"),
        ({"timeout": "10"}, "zk_timeout must be a positive number of seconds, got '10'"),
        ({"check_hostname": True, "verify_certs": False}, "zk_check_hostname needs zk_verify_certs"),
        ({"certfile": "/etc/zk/client.pem"}, "zk_certfile and zk_keyfile go together"),
        ({"keyfile": "/etc/zk/client.key"}, "zk_certfile and zk_keyfile go together"),
        ({"digest": "deployer"}, "zk_digest must be 'user:password'"),
        ({"digest": 42}, "zk_digest must be 'user:password'"),
        ({"sasl": {"username": "deployer"}}, "zk_sasl must be a mapping with at least 'mechanism'"),
        ({"sasl": "DIGEST-MD5"}, "zk_sasl must be a mapping with at least 'mechanism'"),
        ({"root": "dc"}, "invalid zk_root 'dc'"),
        ({"root": "/"}, "invalid zk_root '/'"),
        ({"root": "/zookeeper"}, "invalid zk_root '/zookeeper'"),
        ({"hosts": "zk1"}, "invalid ZooKeeper address 'zk1'"),
        ({"hosts": ""}, "zk_hosts is empty"),
        ({"jute_maxbuffer": 0}, "zk_jute_maxbuffer must be the servers' jute.maxbuffer in bytes"),
        ({"jute_maxbuffer": "4194304"}, "zk_jute_maxbuffer must be the servers' jute.maxbuffer in bytes"),
        ({"jute_maxbuffer": True}, "zk_jute_maxbuffer must be the servers' jute.maxbuffer in bytes"),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else "",
)
def test_unusable_options_are_refused_saying_which_option(changes, message):
    with pytest.raises(ZkConnectionError) as caught:
        ConnectionOptions(**changes)
    assert message in str(caught.value)


def test_a_refused_digest_is_not_echoed():
    with pytest.raises(ZkConnectionError) as caught:
        ConnectionOptions(digest="s3cret-without-user")
    assert "s3cret" not in str(caught.value)


def test_tls_with_a_client_certificate_and_hostname_checks_is_accepted():
    options = ConnectionOptions(
        tls=True,
        ca="/etc/zk/ca.pem",
        certfile="/etc/zk/c.pem",
        keyfile="/etc/zk/c.key",
        check_hostname=True,
        sasl={"mechanism": "DIGEST-MD5", "username": "u", "password": "p"},
    )
    assert options.tls and options.check_hostname and options.verify_certs


def test_from_mapping_reads_prefixed_names_and_ignores_none_and_strangers():
    options = ConnectionOptions.from_mapping(
        {
            "zk_hosts": "zk1:2181/apps",
            "zk_root": "/teams/web/dc",
            "zk_timeout": 3,
            "zk_session_timeout": None,
            "zk_tls": False,
            "zk_acl": ["world:anyone:r", "digest:deployer:s3cret:cdrwa"],
            "zk_unknown": "ignored",
            "hosts": "not-prefixed:1",
            "state": "present",
        }
    )
    assert options.hosts == "zk1:2181/apps"
    assert options.root == "/teams/web/dc"
    assert options.timeout == 3
    assert options.session_timeout == 10.0
    assert options.acl == ("world:anyone:r", "digest:deployer:s3cret:cdrwa")


def test_from_mapping_with_nothing_set_gives_the_defaults():
    assert ConnectionOptions.from_mapping({"zk_hosts": None, "zk_root": None}) == ConnectionOptions()


def test_from_mapping_honours_another_prefix():
    options = ConnectionOptions.from_mapping({"zookeeper_hosts": "zk9:2181", "zk_hosts": "zk1:2181"}, prefix="zookeeper_")
    assert options.hosts == "zk9:2181"


def test_from_mapping_validates_like_the_constructor():
    with pytest.raises(ZkConnectionError, match="zk_timeout must be a positive number"):
        ConnectionOptions.from_mapping({"zk_timeout": -1})


def test_from_mapping_takes_a_single_acl_string_as_one_acl():
    assert ConnectionOptions.from_mapping({"zk_acl": "world:anyone:r"}).acl == ("world:anyone:r",)


def perms(*names):
    flags = {"r": Permissions.READ, "w": Permissions.WRITE, "c": Permissions.CREATE, "d": Permissions.DELETE, "a": Permissions.ADMIN}
    total = 0
    for name in names:
        total |= flags[name]
    return total


@pytest.mark.parametrize(
    "entry, scheme, ident, expected_perms",
    [
        ("world:anyone:r", "world", "anyone", perms("r")),
        ("world:anyone:cdrwa", "world", "anyone", perms("c", "d", "r", "w", "a")),
        ("ip:127.0.0.1:rw", "ip", "127.0.0.1", perms("r", "w")),
        ("ip:10.0.0.0/8:r", "ip", "10.0.0.0/8", perms("r")),
        ("ip:::1:ra", "ip", "::1", perms("r", "a")),
        ("sasl:deployer:cd", "sasl", "deployer", perms("c", "d")),
    ],
)
def test_an_acl_entry_becomes_a_kazoo_acl(entry, scheme, ident, expected_perms):
    acl = parse_acl(entry)
    assert (acl.id.scheme, acl.id.id, acl.perms) == (scheme, ident, expected_perms)


def test_a_digest_acl_is_hashed_so_no_cleartext_password_reaches_the_server():
    acl = parse_acl("digest:deployer:s3cret:cdrwa")
    expected = base64.b64encode(hashlib.sha1(b"deployer:s3cret").digest()).decode("ascii")
    assert acl.id.scheme == "digest"
    assert acl.id.id == "deployer:" + expected
    assert "s3cret" not in acl.id.id
    assert acl.perms == perms("c", "d", "r", "w", "a")


@pytest.mark.parametrize(
    "entry",
    ["world:anyone:x", "world:anyone:R", "world:anyone:", "world:anyone", "world", "", "ip:10.0.0.1:rwz", None, 7],
    ids=repr,
)
def test_a_malformed_acl_is_refused_naming_it(entry):
    with pytest.raises(ZkConnectionError) as caught:
        parse_acl(entry)
    assert "invalid ACL %r" % (entry,) in str(caught.value)
    assert "rwcda" in str(caught.value)


@pytest.mark.parametrize("entry", ["digest:deployer:cdrwa", "digest:a:b:c:r"])
def test_a_digest_acl_needs_exactly_user_and_password(entry):
    with pytest.raises(ZkConnectionError, match="expected digest:user:password:perms"):
        parse_acl(entry)


def test_a_refused_digest_acl_does_not_echo_its_password():
    with pytest.raises(ZkConnectionError) as caught:
        parse_acl("digest:deployer:s3cret:rwx")
    assert "s3cret" not in str(caught.value)
