# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release tarball as users get it: built by ``ansible-galaxy collection build``, installed
with ``ansible-galaxy collection install`` where the work tree is invisible, and put into an
execution environment by a real ``ansible-builder``.

There is no container runtime here, so the execution environment is made with ``ansible-builder
create``, and the two steps of its container build that read the collection (the galaxy stage's
install and the builder stage's ``introspect``) run on the context it wrote, outside a container.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from .tree import COLLECTION_ROOT, PlaybookRun

BIN = Path(sys.executable).parent
# Where the build stage of scripts/test.sh leaves the tarball; reused when it is up to date.
DIST = COLLECTION_ROOT / "build" / "dist"
# What decides what ships and what an execution environment installs: a tarball in build/dist
# older than any of them was built from another packaging and is not reused.
PACKAGING_INPUTS = ("galaxy.yml", "meta/execution-environment.yml", "requirements.txt")
# What users run, and so what every tarball must hold.
MUST_SHIP = (
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "LICENSE",
    "requirements.txt",
    "meta/runtime.yml",
    "meta/execution-environment.yml",
    "plugins/modules/rollout.py",
    "plugins/module_utils/agent/__main__.py",
    "plugins/doc_fragments/zookeeper.py",
    "plugins/strategy/quorum.py",
    "roles/agent/tasks/main.yml",
    "roles/agent/files/pack_core.py",
    "roles/agent/meta/argument_specs.yml",
    "playbooks/rollout.yml",
    "playbooks/vars/connection.yml",
    "docs/architecture.md",
    "changelogs/changelog.yaml",
)
# The development tree: the test suite, its tooling and configuration, work-tree output.
NEVER_SHIPS = (
    "tests", "scripts", "molecule", "benchmarks", "requirements", ".ci", ".venv", "build", ".git",
    "Makefile", "pyproject.toml", ".ansible-lint", ".gitignore",
)
# The trees whose every tracked file a user may run or read.
SHIPPED_TREES = ("plugins", "roles", "playbooks", "meta", "docs", "changelogs")

pytestmark = pytest.mark.timeout(300)


def _run(command, **kwargs):
    completed = subprocess.run([str(part) for part in command], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               check=False, **kwargs)
    assert completed.returncode == 0, "%s failed (exit %d):\n%s\n%s" % (
        " ".join(str(part) for part in command), completed.returncode, completed.stdout, completed.stderr)
    return completed


def _user_environment(collections_path, ansible_cfg=None):
    """An environment that sees only ``collections_path``: no work-tree collection path, no PYTHONPATH into it."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("ANSIBLE_") and key not in ("PYTHONPATH", "ZKROLLOUT_SIGNING_KEY_FILE")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections_path), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
    if ansible_cfg is not None:
        env["ANSIBLE_CONFIG"] = str(ansible_cfg)
    return env


def _build(output_dir):
    _run([BIN / "ansible-galaxy", "collection", "build", "--output-path", output_dir, COLLECTION_ROOT])
    (tarball,) = Path(output_dir).glob("zkrollout-dc-*.tar.gz")
    return tarball


def _members(tarball):
    with tarfile.open(tarball) as archive:
        return [member.name for member in archive.getmembers() if member.isfile()]


def _requirement_names(lines):
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(Requirement(line).name.lower())
    return names


@pytest.fixture(scope="module")
def fresh_tarball(tmp_path_factory):
    """A tarball built now from the work tree, as a release would be."""
    return _build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def release_tarball(request):
    """The build stage's tarball in build/dist if it is newer than the packaging, else a fresh one."""
    built = sorted(DIST.glob("zkrollout-dc-*.tar.gz")) if DIST.is_dir() else []
    newest_input = max((COLLECTION_ROOT / name).stat().st_mtime for name in PACKAGING_INPUTS if (COLLECTION_ROOT / name).exists())
    if len(built) == 1 and built[0].stat().st_mtime >= newest_input:
        return built[0]
    return request.getfixturevalue("fresh_tarball")


@pytest.fixture(scope="module")
def installed(fresh_tarball, tmp_path_factory):
    """The fresh tarball installed with ``ansible-galaxy collection install``; the collection's directory."""
    collections = tmp_path_factory.mktemp("collections")
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-p", collections, fresh_tarball],
         env=_user_environment(collections), cwd=str(collections))
    return collections / "ansible_collections" / "zkrollout" / "dc"


def test_the_tarball_ships_what_users_run_and_nothing_of_the_development_tree(fresh_tarball):
    members = _members(fresh_tarball)

    stray = [name for name in members
             if name.split("/")[0] in NEVER_SHIPS or "__pycache__" in name.split("/") or name.endswith(".pyc")]
    assert stray == [], "the tarball ships files of the development tree; extend build_ignore in galaxy.yml"
    assert [name for name in MUST_SHIP if name not in members] == []
    tracked = _run(["git", "-C", COLLECTION_ROOT, "ls-files", "--", *SHIPPED_TREES]).stdout.split()
    assert tracked, "git lists no file under %s" % ", ".join(SHIPPED_TREES)
    assert sorted(set(tracked) - set(members)) == []


def test_the_installed_role_packs_the_agent_from_its_own_copy_of_the_collection(installed, tmp_path):
    # The role's pack task: roles/agent/files/pack_core.py on {{ role_path }}/../../plugins/module_utils.
    role_path = installed / "roles" / "agent"
    pack = tmp_path / "zkrollout_core.zip"
    _run([sys.executable, role_path / "files" / "pack_core.py", role_path / ".." / ".." / "plugins" / "module_utils", pack])

    with zipfile.ZipFile(pack) as archive:
        names = archive.namelist()
    assert "zkrollout_core/agent/__main__.py" in names
    assert "zkrollout_core/core/model.py" in names
    assert not [name for name in names if name.startswith("zkrollout_core/controller/")]
    # The host's command, with the zip alone on its path.
    help_text = _run([sys.executable, "-m", "zkrollout_core.agent", "--help"],
                     env=dict(_user_environment(tmp_path), PYTHONPATH=str(pack)), cwd=str(tmp_path)).stdout
    assert "--config" in help_text


# By its name, as an operator runs it; and imported by a playbook of the user's own project, as an AWX job template needs it.
@pytest.mark.zookeeper
@pytest.mark.parametrize("how", ["by name", "imported"])
def test_the_installed_status_playbook_runs_with_the_users_own_ansible_cfg(installed, zk, zk_root, tmp_path, how):
    ansible_cfg = tmp_path / "ansible.cfg"
    ansible_cfg.write_text("[defaults]\ncallback_result_format = json\n")
    playbook = "zkrollout.dc.status"
    if how == "imported":
        playbook = str(tmp_path / "status.yml")
        Path(playbook).write_text("---\n- name: Show the rollout\n  ansible.builtin.import_playbook: zkrollout.dc.status\n")
    env = _user_environment(installed.parents[2], ansible_cfg)
    env.update(ANSIBLE_SHOW_CUSTOM_STATS="true", ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    completed = subprocess.run(
        [str(BIN / "ansible-playbook"), playbook, "-e", "zkrollout_zk_hosts=%s" % zk.hosts, "-e", "zkrollout_zk_root=%s" % zk_root],
        env=env, cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)
    run = PlaybookRun(completed.returncode, completed.stdout, completed.stderr)

    assert run.returncode == 0, run.output
    assert run.task_result("Show hosts x services and the deploy state")["msg"][0] == "rollout -: none (no rollout in the tree)"
    assert run.custom_stats["zkrollout_state"] == "none"
    assert str(COLLECTION_ROOT) not in run.output


def test_an_execution_environment_with_the_tarball_installs_kazoo_and_no_development_tool(release_tarball, tmp_path):
    definition = tmp_path / "execution-environment.yml"
    definition.write_text(yaml.safe_dump({
        "version": 3,
        "images": {"base_image": {"name": "registry.example/ee-minimal:latest"}},
        "additional_build_files": [{"src": str(release_tarball), "dest": "collections"}],
        "dependencies": {
            "ansible_core": {"package_pip": "ansible-core>=2.19,<2.20"},
            "ansible_runner": {"package_pip": "ansible-runner"},
            "galaxy": {"collections": [{"name": "collections/%s" % release_tarball.name, "type": "file"}]},
        },
    }))
    context = tmp_path / "context"
    _run([BIN / "ansible-builder", "create", "--file", definition, "--context", context], cwd=str(tmp_path))
    build = context / "_build"
    assert (build / "collections" / release_tarball.name).is_file()
    assert (context / "Dockerfile").is_file() or (context / "Containerfile").is_file()

    # The galaxy stage: install the context's requirements.yml from inside _build.
    collections = tmp_path / "usr-share-ansible-collections"
    _run([BIN / "ansible-galaxy", "collection", "install", "--offline", "-r", build / "requirements.yml",
          "--collections-path", collections], env=_user_environment(collections), cwd=str(build))
    # The builder stage: the context's own introspect script over what the galaxy stage installed.
    pip_file, bindep_file = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    _run([sys.executable, build / "scripts" / "introspect.py", "introspect", "--write-pip=%s" % pip_file,
          "--write-bindep=%s" % bindep_file, collections])

    # introspect would also fall back to a root requirements.txt; the metadata must name what exists.
    installed_copy = collections / "ansible_collections" / "zkrollout" / "dc"
    metadata = yaml.safe_load((installed_copy / "meta" / "execution-environment.yml").read_text())
    assert sorted(metadata["dependencies"]) == ["python"]
    assert (installed_copy / metadata["dependencies"]["python"]).is_file()
    python_requirements = _requirement_names(pip_file.read_text().splitlines())
    assert {"kazoo", "cryptography"} <= python_requirements, pip_file.read_text()
    development = _requirement_names((COLLECTION_ROOT / "requirements" / "requirements.in").read_text().splitlines())
    # Run-time needs that the development list pins too (kazoo, the exporter's prometheus_client) are fine.
    assert sorted(python_requirements & (development - {"kazoo", "ansible-core", "prometheus_client", "prometheus-client"})) == [], pip_file.read_text()
    assert "zkrollout.dc" in pip_file.read_text()
    assert python_requirements == _requirement_names((COLLECTION_ROOT / "requirements.txt").read_text().splitlines())
