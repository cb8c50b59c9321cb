# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ACL profile's one table: every path kind of the tree, who gets what, and bad profiles (no server)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.core import layout as kinds
from ansible_collections.zkrollout.dc.plugins.module_utils.core.acl import RULES, AclError, AclProfile, Identity, digest_id
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
]


@pytest.mark.parametrize("path, kind", PATHS, ids=[entry[0] for entry in PATHS])
def test_every_node_of_the_tree_has_its_kind(path, kind):
    assert LAYOUT.kind(path) == kind


def test_every_kind_has_a_path_and_a_rule():
    assert {entry[1] for entry in PATHS} == set(kinds.NODE_KINDS) == set(RULES)


@pytest.mark.parametrize("path", [
    "/other", "/team/dcx", "/team/dc/unknown", "/team/dc/rollout/x", "/team/dc/staging/web/other", "/team/dc/staging/web/ready/h1-/x",
    "/team/dc/current/web/h1", "/team/dc/roster/web/h1/x", "/team/dc/roster/../rollout", "/team/dc/agents/h1/x", "team/dc",
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
    (kinds.SERVICE_ROSTER, AGENTS_ADD_AND_REMOVE_CHILDREN),
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
