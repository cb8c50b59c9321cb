# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The znode tree: every path is built under the root, and no name can escape its parent."""

from __future__ import annotations

import pytest

from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import (
    DEFAULT_ROOT,
    Layout,
    LayoutError,
    check_name,
    check_root,
    split_registration,
    split_sequential,
)

# (builder, arguments, path relative to the root)
PATHS = [
    ("roster", None, "/roster"),
    ("current", None, "/current"),
    ("staging", None, "/staging"),
    ("deploy", None, "/deploy"),
    ("rollout", None, "/rollout"),
    ("locks", None, "/locks"),
    ("service_roster", ("web",), "/roster/web"),
    ("roster_member", ("web", "web-01"), "/roster/web/web-01"),
    ("current_service", ("web",), "/current/web"),
    ("registration", ("web", "web-01", "1.2.0+b7"), "/current/web/web-01@1.2.0+b7"),
    ("release", ("web",), "/staging/web"),
    ("ready_queue", ("web",), "/staging/web/ready"),
    ("ready_prefix", ("web", "web-01"), "/staging/web/ready/web-01-"),
    ("slots", ("web",), "/staging/web/upgrading"),
    ("slot", ("web", "web-01"), "/staging/web/upgrading/web-01"),
    ("failures", ("web",), "/staging/web/failed"),
    ("failure", ("web", "web-01"), "/staging/web/failed/web-01"),
    ("deploy_prefix", ("web",), "/deploy/web-"),
    ("deploy_entry", ("web-0000000007",), "/deploy/web-0000000007"),
    ("ready_member", ("web", "web-01-0000000042"), "/staging/web/ready/web-01-0000000042"),
    ("lock", ("web",), "/locks/web"),
    ("hosts", None, "/hosts"),
    ("host", ("web-01",), "/hosts/web-01"),
    ("host_registration", ("web-01", "web", "1.2.0+b7"), "/hosts/web-01/web@1.2.0+b7"),
]

# Builders that take names, with the position of each name and its kind.
NAMED_BUILDERS = [
    ("service_roster", ("web",), 0, "service"),
    ("roster_member", ("web", "web-01"), 0, "service"),
    ("roster_member", ("web", "web-01"), 1, "host"),
    ("current_service", ("web",), 0, "service"),
    ("registration", ("web", "web-01", "1.0"), 0, "service"),
    ("host", ("web-01",), 0, "host"),
    ("host_registration", ("web-01", "web", "1.0"), 0, "host"),
    ("host_registration", ("web-01", "web", "1.0"), 1, "service"),
    ("registration", ("web", "web-01", "1.0"), 1, "host"),
    ("release", ("web",), 0, "service"),
    ("ready_queue", ("web",), 0, "service"),
    ("ready_prefix", ("web", "web-01"), 0, "service"),
    ("ready_prefix", ("web", "web-01"), 1, "host"),
    ("slots", ("web",), 0, "service"),
    ("slot", ("web", "web-01"), 0, "service"),
    ("slot", ("web", "web-01"), 1, "host"),
    ("failures", ("web",), 0, "service"),
    ("failure", ("web", "web-01"), 0, "service"),
    ("failure", ("web", "web-01"), 1, "host"),
    ("deploy_prefix", ("web",), 0, "service"),
    ("ready_member", ("web", "web-01-0000000042"), 0, "service"),
    ("lock", ("web",), 0, "service"),
]

BAD_NAMES = ["../x", "a/b", "", "-x", "x" * 200, ".", "..", ".hidden", "a b", "a\nb", "web\n", None, 7]


def build(layout, builder, args):
    attribute = getattr(layout, builder)
    return attribute if args is None else attribute(*args)


@pytest.mark.parametrize("root", [DEFAULT_ROOT, "/teams/web/dc"])
@pytest.mark.parametrize("builder, args, suffix", PATHS, ids=[p[0] for p in PATHS])
def test_every_path_is_built_under_the_root(root, builder, args, suffix):
    assert build(Layout(root), builder, args) == root + suffix


def test_the_default_root_is_dc():
    assert Layout().root == "/dc"
    assert Layout().rollout == "/dc/rollout"


@pytest.mark.parametrize("root, ancestors", [(DEFAULT_ROOT, []), ("/teams/web/dc", ["/teams", "/teams/web"])])
def test_containers_are_the_root_its_ancestors_and_its_persistent_parents(root, ancestors):
    assert Layout(root).containers() == ancestors + [
        root,
        root + "/roster",
        root + "/current",
        root + "/staging",
        root + "/deploy",
        root + "/locks",
        root + "/agents",
        root + "/sessions",
        root + "/hosts",
    ]


def test_release_children_are_the_ready_queue_slots_and_failures_of_that_service():
    assert Layout("/teams/web/dc").release_children("api") == [
        "/teams/web/dc/staging/api/ready",
        "/teams/web/dc/staging/api/upgrading",
        "/teams/web/dc/staging/api/failed",
    ]


@pytest.mark.parametrize(
    "root, normalised",
    [("/dc", "/dc"), ("/dc/", "/dc"), ("/dc///", "/dc"), ("/teams/web/dc", "/teams/web/dc"), ("/a.b/c_d-1", "/a.b/c_d-1")],
)
def test_a_root_loses_its_trailing_slashes(root, normalised):
    assert check_root(root) == normalised
    assert Layout(root).root == normalised


@pytest.mark.parametrize(
    "root",
    ["", "dc", "/", "//", "/a//b", "/..", "/dc/..", "/.", "/zookeeper", "/zookeeper/dc", " /dc", None, 5],
)
def test_an_unusable_root_is_refused_naming_it(root):
    with pytest.raises(LayoutError) as caught:
        Layout(root)
    assert repr(root) in str(caught.value)
    assert "zk_root" in str(caught.value)


def test_a_relative_root_is_told_to_be_absolute():
    with pytest.raises(LayoutError, match="absolute path"):
        check_root("dc")


@pytest.mark.parametrize(
    "root, segment",
    [("/a//b", "''"), ("/dc/..", "'..'"), ("/zookeeper", "'zookeeper'"), ("/teams/a b/dc", "'a b'"), ("/-x", "'-x'")],
)
def test_a_refused_root_names_the_offending_segment(root, segment):
    with pytest.raises(LayoutError) as caught:
        check_root(root)
    assert "zk_root" in str(caught.value)
    assert "segment %s" % segment in str(caught.value) or "segment name %s" % segment in str(caught.value)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("kind", ["service", "host"])
def test_a_name_that_could_escape_its_parent_is_refused_naming_it(kind, name):
    with pytest.raises(LayoutError) as caught:
        check_name(kind, name)
    message = str(caught.value)
    assert repr(name) in message
    assert kind in message


@pytest.mark.parametrize("name", ["web", "web-01", "w", "1", "a.b_c-d", "x" * 128])
def test_a_name_of_letters_digits_dots_underscores_and_dashes_is_accepted(name):
    assert check_name("host", name) == name


@pytest.mark.parametrize("builder, args, position, kind", NAMED_BUILDERS)
@pytest.mark.parametrize("bad", ["../x", "a/b", "", "-x", "x" * 200])
def test_every_builder_refuses_a_bad_name(builder, args, position, kind, bad):
    args = list(args)
    args[position] = bad
    with pytest.raises(LayoutError) as caught:
        build(Layout(), builder, tuple(args))
    assert repr(bad) in str(caught.value)
    assert "invalid %s name" % kind in str(caught.value)


@pytest.mark.parametrize(
    "node_name, expected",
    [
        ("web-0000000000", ("web", 0)),
        ("web-0000000042", ("web", 42)),
        ("web-01-0000000042", ("web-01", 42)),
        ("a.b_c-2147483647", ("a.b_c", 2147483647)),
    ],
)
def test_a_sequential_name_splits_into_name_and_number(node_name, expected):
    assert split_sequential(node_name) == expected


@pytest.mark.parametrize(
    "node_name",
    [
        "web",
        "web-",
        "web-42",
        "web-00000000042",
        "web_0000000042",
        "-0000000042",
        "0000000042",
        "../x-0000000042",
        "web-0000000042\n",
        "web-000000004x",
        "lock-0000000042/x",
    ],
)
def test_a_stray_node_is_not_a_sequential_name(node_name):
    assert split_sequential(node_name) is None


@pytest.mark.parametrize("node_name", ["web", "web-42", "../web-0000000001", "web-0000000001/..", ""])
def test_deploy_entry_refuses_a_stray_name(node_name):
    with pytest.raises(LayoutError) as caught:
        Layout().deploy_entry(node_name)
    assert repr(node_name) in str(caught.value)
    assert "deploy queue" in str(caught.value)


@pytest.mark.parametrize("node_name", ["web-01", "web-01-7", "../web-01-0000000001", ""])
def test_ready_member_refuses_a_stray_name(node_name):
    with pytest.raises(LayoutError) as caught:
        Layout().ready_member("web", node_name)
    assert repr(node_name) in str(caught.value)
    assert "ready queue" in str(caught.value)


def test_ready_member_also_checks_the_service():
    with pytest.raises(LayoutError, match=r"invalid service name '\.\.'"):
        Layout().ready_member("..", "web-01-0000000001")


def test_a_layout_shows_its_root():
    assert repr(Layout("/teams/web/dc/")) == "Layout('/teams/web/dc')"


@pytest.mark.parametrize("version", ["../1", "1/2", "", "-1", "1@2", "v" * 65, None])
def test_a_registration_refuses_a_version_that_is_not_one(version):
    with pytest.raises(LayoutError) as caught:
        Layout().registration("web", "web-01", version)
    assert repr(version) in str(caught.value)


@pytest.mark.parametrize("node, parsed", [
    ("web-01@1.2.0+b7", ("web-01", "1.2.0+b7")),
    ("h.example.com@2", ("h.example.com", "2")),
    ("web-01", None),
    ("web-01@", None),
    ("@1.0", None),
    ("web-01@1.0@2.0", None),
    ("../x@1.0", None),
])
def test_a_registration_name_tells_the_host_and_its_version(node, parsed):
    assert split_registration(node) == parsed
