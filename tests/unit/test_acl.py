# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACL profile's one table: every path kind of the tree, who gets what, and bad profiles (no server)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.core import layout as kinds
from ansible_collections.zkrollout.dc.plugins.module_utils.core.acl import RULES, AclError, AclProfile, Identity, digest_id, names_host
from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout, LayoutError
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import ConnectionOptions, ZkConnectionError

LAYOUT = Layout("/team/dc")

# (path, kind): every kind of node, reached through the builders the rest of the code uses.
PATHS = [
    ("/team", kinds.ROOT_ANCESTOR),
    ("/team/dc", kinds.ROOT),
    (LAYOUT.roster, kinds.ROSTER),
    (LAYOUT.current, kinds.CURRENT),
    (LAYOUT.staging, kinds.STAGING),
    (LAYOUT.deploy, kinds.DEPLOY),
    (LAYOUT.locks, kinds.LOCKS),
    (LAYOUT.agents, kinds.AGENTS),
    (LAYOUT.sessions, kinds.SESSIONS),
    (LAYOUT.service_roster("web"), kinds.SERVICE_ROSTER),
    (LAYOUT.roster_member("web", "h1"), kinds.ROSTER_MEMBER),
    (LAYOUT.current_service("web"), kinds.CURRENT_SERVICE),
    (LAYOUT.registration("web", "h1", "1.2.0+b7"), kinds.REGISTRATION),
    (LAYOUT.release("web"), kinds.RELEASE),
    (LAYOUT.ready_queue("web"), kinds.READY_QUEUE),
    (LAYOUT.slots("web"), kinds.SLOTS),
    (LAYOUT.failures("web"), kinds.FAILURES),
    (LAYOUT.ready_prefix("web", "h1"), kinds.READY_MEMBER),
    (LAYOUT.ready_member("web", "h1-0000000007"), kinds.READY_MEMBER),
    (LAYOUT.slot("web", "h1"), kinds.SLOT),
    (LAYOUT.failure("web", "h1"), kinds.FAILURE),
    (LAYOUT.deploy_prefix("web"), kinds.DEPLOY_ENTRY),
    (LAYOUT.deploy_entry("web-0000000003"), kinds.DEPLOY_ENTRY),
    (LAYOUT.rollout, kinds.ROLLOUT),
    (LAYOUT.lock("web"), kinds.SERVICE_LOCK),
    (LAYOUT.lock("web") + "/0f1e2d3c4b5a69788796a5b4c3d2e1f0__lock__", kinds.LOCK_CONTENDER),
    (LAYOUT.lock("web") + "/0f1e2d3c4b5a69788796a5b4c3d2e1f0__lock__0000000012", kinds.LOCK_CONTENDER),
    (LAYOUT.agent("h1"), kinds.PRESENCE),
    (LAYOUT.session("1a2b3c"), kinds.SESSION),
    (LAYOUT.hosts, kinds.HOSTS),
    (LAYOUT.host("h1"), kinds.HOST),
    (LAYOUT.host_registration("h1", "web", "1.2.0+b7"), kinds.HOST_REGISTRATION),
    (LAYOUT.host_slot("h1", "web"), kinds.HOST_SLOT),
    (LAYOUT.host_failure("h1", "web"), kinds.HOST_FAILURE),
]


@pytest.mark.parametrize("path, kind", PATHS, ids=[entry[0] for entry in PATHS])
def test_every_node_of_the_tree_has_its_kind(path, kind):
    assert LAYOUT.kind(path) == kind


def test_every_kind_has_a_path_and_a_rule():
    assert {entry[1] for entry in PATHS} == set(kinds.NODE_KINDS) == set(RULES)


@pytest.mark.parametrize("path", [
    "/other", "/team/dcx", "/team/dc/unknown", "/team/dc/rollout/x", "/team/dc/staging/web/other", "/team/dc/staging/web/ready/h1-/x",
    "/team/dc/current/web/h1", "/team/dc/roster/web/h1/x", "/team/dc/roster/../rollout", "/team/dc/agents/h1/x", "team/dc",
    "/team/dc/hosts/h1/web", "/team/dc/hosts/h1/web@1.0/x", "/team/dc/hosts/../rollout", "/team/dc/hosts/h1/slot:", "/team/dc/hosts/h1/lock:web",
    "/team/dc/hosts/h1/slot:web/x",
])
def test_a_path_outside_the_tree_is_refused_by_name(path):
    with pytest.raises(LayoutError, match="rollout tree|absolute"):
        LAYOUT.kind(path)


def test_a_digest_identity_is_hashed_as_zookeepers_digest_provider_does():
    # The id a ZooKeeper 3.8 server gave an ``auth`` ACL of a session authenticated as digest u:p.
    assert digest_id("u", "p") == "u:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ="
    assert digest_id("u", "p") == "u:" + base64.b64encode(hashlib.sha1(b"u:p").digest()).decode()


def test_a_digest_identity_may_be_given_by_its_hash_alone():
    assert Identity.parse("digest-hash:u:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ=", "x") == Identity.parse("digest:u:p", "x")


def test_a_digest_password_may_hold_colons():
    assert Identity.parse("digest:deployer:a:b", "x") == Identity("digest", digest_id("deployer", "a:b"))


DEPLOYER, AGENT, READER = "digest:deployer:d-secret", "x509:CN=h1,O=example", "ip:10.0.0.0/8"
PROFILE = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": [AGENT], "readers": [READER]})
DEPLOYER_ID, AGENT_ID, READER_ID = ("digest", digest_id("deployer", "d-secret")), ("x509", "CN=h1,O=example"), ("ip", "10.0.0.0/8")
CREATOR = ("auth", "")
DEPLOYERS_ONLY = {DEPLOYER_ID: "rwcda", AGENT_ID: "r", READER_ID: "r"}
AGENTS_ADD_CHILDREN = {DEPLOYER_ID: "rwcda", AGENT_ID: "rc", READER_ID: "r"}
AGENTS_ADD_AND_REMOVE_CHILDREN = {DEPLOYER_ID: "rwcda", AGENT_ID: "rcd", READER_ID: "r"}
CREATORS = {DEPLOYER_ID: "rwcda", AGENT_ID: "r", READER_ID: "r", CREATOR: "rwcda"}

TABLE = [
    (kinds.ROOT_ANCESTOR, DEPLOYERS_ONLY),
    (kinds.ROOT, DEPLOYERS_ONLY),
    (kinds.ROSTER, AGENTS_ADD_CHILDREN),
    (kinds.CURRENT, AGENTS_ADD_CHILDREN),
    (kinds.LOCKS, AGENTS_ADD_CHILDREN),
    (kinds.STAGING, DEPLOYERS_ONLY),
    (kinds.DEPLOY, DEPLOYERS_ONLY),
    (kinds.AGENTS, AGENTS_ADD_AND_REMOVE_CHILDREN),
    (kinds.SESSIONS, DEPLOYERS_ONLY),
    (kinds.SERVICE_ROSTER, AGENTS_ADD_CHILDREN),
    (kinds.CURRENT_SERVICE, AGENTS_ADD_AND_REMOVE_CHILDREN),
    (kinds.SERVICE_LOCK, AGENTS_ADD_AND_REMOVE_CHILDREN),
    (kinds.RELEASE, DEPLOYERS_ONLY),
    (kinds.READY_QUEUE, AGENTS_ADD_AND_REMOVE_CHILDREN),
    (kinds.SLOTS, AGENTS_ADD_AND_REMOVE_CHILDREN),
    (kinds.FAILURES, AGENTS_ADD_AND_REMOVE_CHILDREN),
    (kinds.DEPLOY_ENTRY, DEPLOYERS_ONLY),
    (kinds.ROLLOUT, DEPLOYERS_ONLY),
    (kinds.SESSION, DEPLOYERS_ONLY),
    (kinds.ROSTER_MEMBER, CREATORS),
    (kinds.REGISTRATION, CREATORS),
    (kinds.READY_MEMBER, CREATORS),
    (kinds.SLOT, CREATORS),
    (kinds.FAILURE, CREATORS),
    (kinds.LOCK_CONTENDER, CREATORS),
    (kinds.PRESENCE, CREATORS),
    (kinds.HOSTS, DEPLOYERS_ONLY),
    (kinds.HOST, DEPLOYERS_ONLY),
    (kinds.HOST_REGISTRATION, CREATORS),
    (kinds.HOST_SLOT, CREATORS),
    (kinds.HOST_FAILURE, CREATORS),
]


@pytest.mark.parametrize("kind, granted", TABLE, ids=[entry[0] for entry in TABLE])
def test_each_kind_grants_each_identity_what_the_table_says(kind, granted):
    assert {(scheme, ident): perms for perms, scheme, ident in PROFILE.acl(kind)} == granted


def test_the_table_covers_every_kind_and_says_why():
    assert {entry[0] for entry in TABLE} == set(RULES)
    assert all(rule.reason for rule in RULES.values())


def test_an_identity_in_two_groups_gets_one_entry_with_both_rights():
    profile = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": [AGENT], "readers": [AGENT]})

    assert ("rc", "x509", "CN=h1,O=example") in profile.acl(kinds.ROSTER)
    assert len(profile.acl(kinds.ROSTER)) == 2


@pytest.mark.parametrize("profile, message", [
    ("digest:deployer:x", "must be a mapping"),
    ({"deployer": [DEPLOYER], "writers": []}, "unknown keys writers"),
    ({"deployer": DEPLOYER}, r"zk_acl_profile.deployer must be a list"),
    ({"deployer": []}, "zk_acl_profile.deployer is empty"),
    ({"deployer": [DEPLOYER], "agents": ["digest:agent"]}, r"zk_acl_profile.agents\[0\] 'digest:\*\*\*': a digest identity is"),
    ({"deployer": [DEPLOYER], "agents": ["digest:agent:"]}, r"agents\[0\] 'digest:agent:\*\*\*': a digest identity is digest:user:password"),
    ({"deployer": ["kerberos:x"]}, r"deployer\[0\] 'kerberos:x' has an unknown scheme 'kerberos'"),
    ({"deployer": [DEPLOYER], "readers": ["world:everyone"]}, r"readers\[0\] 'world:everyone': the only world identity"),
    ({"deployer": [DEPLOYER], "readers": ["ip:10.0.0.0/33"]}, r"readers\[0\] 'ip:10.0.0.0/33'"),
    ({"deployer": [DEPLOYER], "readers": ["x509:"]}, r"readers\[0\] 'x509:' has an empty id"),
    ({"deployer": ["digest-hash:u:p"]}, r"deployer\[0\] 'digest-hash:u:p': expected digest-hash:user:<base64"),
    ({"deployer": ["digest-hash::Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ="]}, r"deployer\[0\] .*expected digest-hash:user:"),
    ({"deployer": [DEPLOYER], "readers": [7]}, r"readers\[0\] 7 is not an identity"),
    ({"deployer": [DEPLOYER], "agents": ["world:anyone"]}, r"agents\[0\] world:anyone cannot own nodes"),
    ({"deployer": [DEPLOYER], "agents": ["ip:10.0.0.1"]}, r"agents\[0\] ip:10.0.0.1 cannot own nodes"),
    ({"deployer": [DEPLOYER], "agents": ["x509:O=example"]}, r"agents\[0\] x509:O=example does not name a host"),
    ({"deployer": [DEPLOYER], "agents": ["x509:CN=a,CN=b"]}, r"agents\[0\] x509:CN=a,CN=b does not name a host"),
    ({"deployer": [DEPLOYER], "agents": ["sasl:/x@EXAMPLE"]}, r"agents\[0\] sasl:/x@EXAMPLE does not name a host"),
])
def test_a_bad_profile_is_refused_naming_the_entry(profile, message):
    with pytest.raises(AclError, match=message):
        AclProfile.from_mapping(profile)


def test_a_refused_digest_entry_never_shows_its_password():
    with pytest.raises(AclError) as error:
        AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": ["digest:agent:top-secret", "bogus"]})

    assert "top-secret" not in str(error.value)


def test_connection_options_take_a_profile_and_refuse_it_with_an_acl():
    options = ConnectionOptions.from_mapping({"zk_acl_profile": {"deployer": [DEPLOYER], "agents": [AGENT]}})

    assert options.acl_profile.deployer == (Identity(*DEPLOYER_ID),)
    with pytest.raises(ZkConnectionError, match="zk_acl and zk_acl_profile exclude each other"):
        ConnectionOptions(acl=["world:anyone:r"], acl_profile={"deployer": [DEPLOYER]})
    with pytest.raises(ZkConnectionError, match="zk_acl_profile.deployer is empty"):
        ConnectionOptions(acl_profile={"deployer": []})


@pytest.mark.parametrize("scheme, ident, host, names", [
    ("digest", "h1:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ=", "h1", True),
    ("digest", "h10:Jq7wMyA/w2Vd5WIDAKdu4OIIFEQ=", "h1", False),
    ("x509", "CN=h1,O=example", "h1", True),
    ("x509", "O=example,cn=h1", "h1", True),
    ("x509", "CN=h1.example,O=example", "h1", False),
    ("x509", "CN=deployer,O=h1", "h1", False),
    ("sasl", "h1/host.example@EXAMPLE", "h1", True),
    ("sasl", "h1@EXAMPLE", "h1", True),
    ("sasl", "h2@EXAMPLE", "h1", False),
    ("ip", "h1", "h1", False),
    ("world", "anyone", "anyone", False),
])
def test_an_identity_names_its_host_by_digest_user_certificate_cn_or_principal(scheme, ident, host, names):
    assert names_host(scheme, ident, host) is names


HOST_AGENT = ("digest", digest_id("h1", "h1-secret"))
OTHER_AGENT = ("digest", digest_id("h2", "h2-secret"))


def test_a_hosts_own_parent_lets_only_that_hosts_identity_add_and_remove_children():
    profile = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": [AGENT, "digest:h2:h2-secret"], "readers": [READER]})

    assert {(scheme, ident): perms for perms, scheme, ident in profile.acl(kinds.HOST, "h1")} == {
        DEPLOYER_ID: "rwcda", AGENT_ID: "rcd", OTHER_AGENT: "r", READER_ID: "r"}
    assert profile.host_names() == ["h1", "h2"]


@pytest.mark.parametrize("acl, refused", [
    ([("cdrwa", *HOST_AGENT), ("cdrwa", *DEPLOYER_ID), ("r", *OTHER_AGENT)], None),
    ([("cdrwa", *DEPLOYER_ID), ("r", *OTHER_AGENT)], None),
    ([("cdrwa", *OTHER_AGENT), ("cdrwa", *DEPLOYER_ID)], "digest:h2 may add or remove its nodes, and is neither the deployer nor named after h1"),
    # What an agent reads: ZooKeeper hides digest hashes from identities without the admin right.
    ([("rcd", "digest", "h1:x"), ("cdrwa", "digest", "deployer:x"), ("r", "digest", "h2:x")], None),
    ([("cdrwa", *HOST_AGENT), ("c", *OTHER_AGENT)], "digest:h2 may add or remove"),
    ([("cdrwa", *HOST_AGENT), ("rwcda", "world", "anyone")], "world:anyone may add or remove"),
    ([("rw", "world", "anyone"), ("cdrwa", *HOST_AGENT)], None),
])
def test_a_host_parent_is_the_hosts_only_if_nobody_else_may_add_or_remove_its_children(acl, refused):
    profile = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": ["digest:h1:h1-secret", "digest:h2:h2-secret"]})
    refusal = profile.host_refusal(acl, "h1")
    if refused is None:
        assert refusal is None
    else:
        assert refused in refusal and "own identity" in refusal and "secret" not in refusal


def test_with_world_read_an_acl_lists_only_who_may_do_more_than_read():
    agents = ["digest:h%d:secret" % i for i in range(1, 1001)]
    profile = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": agents, "readers": ["world:anyone"]})

    assert {(scheme, ident): perms for perms, scheme, ident in profile.acl(kinds.RELEASE)} == {DEPLOYER_ID: "rwcda", ("world", "anyone"): "r"}
    assert len(profile.acl(kinds.CURRENT_SERVICE)) == 1002
    assert {(scheme, ident): perms for perms, scheme, ident in profile.acl(kinds.HOST, "h7")} == {
        DEPLOYER_ID: "rwcda", ("digest", digest_id("h7", "secret")): "rcd", ("world", "anyone"): "r"}
    assert {(scheme, ident): perms for perms, scheme, ident in profile.acl(kinds.REGISTRATION)} == {
        DEPLOYER_ID: "rwcda", CREATOR: "rwcda", ("world", "anyone"): "r"}


def test_a_host_parent_that_does_not_let_its_host_add_children_is_not_its_own_for_the_host():
    profile = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": ["digest:h1:h1-secret", "digest:h2:h2-secret"]})
    made_for_an_older_identity = [("cdrwa", *DEPLOYER_ID), ("r", *HOST_AGENT)]

    assert profile.host_refusal(made_for_an_older_identity, "h1") is None
    assert "does not let h1's identity add and remove children" in profile.host_refusal(made_for_an_older_identity, "h1", own=True)
    assert profile.host_refusal([("rcd", "digest", "h1:x"), ("cdrwa", "digest", "deployer:x")], "h1", own=True) is None


@pytest.mark.parametrize("acl, refused", [
    ([("cdrwa", *DEPLOYER_ID), ("cdrwa", *HOST_AGENT), ("r", *OTHER_AGENT)], None),
    # What an agent reads: digest hashes hidden, the creator still named by its user.
    ([("cdrwa", "digest", "deployer:x"), ("cdrwa", "digest", "h1:x"), ("r", "world", "anyone")], None),
    ([("cdrwa", "x509", "CN=h1,O=example"), ("cdrwa", *DEPLOYER_ID)], None),
    ([("cdrwa", *DEPLOYER_ID), ("cdrwa", *OTHER_AGENT)], "created by digest:h2, not by h1's identity"),
    ([("cdrwa", *DEPLOYER_ID)], "created by the deployer, not by h1's identity"),
    ([("cdrwa", "world", "anyone")], "created by world:anyone"),
])
def test_a_ready_member_is_its_hosts_only_if_that_hosts_identity_created_it(acl, refused):
    profile = AclProfile.from_mapping({"deployer": [DEPLOYER], "agents": ["digest:h1:h1-secret", "digest:h2:h2-secret", "x509:CN=h1,O=example"]})
    refusal = profile.creator_refusal(acl, "h1")
    if refused is None:
        assert refusal is None
    else:
        assert refused in refusal and "secret" not in refusal
