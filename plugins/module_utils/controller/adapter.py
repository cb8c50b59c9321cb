# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private Ansible adapter of the shared core: the connection argument spec and session.

The only module_utils file that imports Ansible. Every module builds its argument spec with
``zk_argument_spec()`` (documented by the ``zkrollout.dc.zookeeper`` doc fragment) and opens
ZooKeeper with ``zk_session(module)``, which turns connection errors into ``fail_json``.
"""

from __future__ import annotations

import contextlib
import logging
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ..core.layout import Layout, LayoutError
from ..core.model import DEFAULT_JUTE_MAXBUFFER, PayloadError
from ..core.plan import PlanError
from ..core.signing import SigningError, load_private_key, sign_entry
from ..store.client import KAZOO_IMPORT_ERROR, ConnectionOptions, ZkConnectionError, connect, disconnect, parse_acl
from .writes import WriteRefused, read_plan_apply


def zk_argument_spec():
    """Argument spec of the ZooKeeper connection options shared by every module."""
    return dict(
        zk_hosts=dict(type="str", default="127.0.0.1:2181", fallback=(env_fallback, ["ZKROLLOUT_ZK_HOSTS"])),
        zk_root=dict(type="str", default="/dc", fallback=(env_fallback, ["ZKROLLOUT_ZK_ROOT"])),
        zk_timeout=dict(type="float", default=10.0),
        zk_session_timeout=dict(type="float", default=10.0),
        zk_retries=dict(type="int", default=3),
        zk_tls=dict(type="bool", default=False),
        zk_ca=dict(type="path"),
        zk_certfile=dict(type="path"),
        zk_keyfile=dict(type="path"),
        zk_keyfile_password=dict(type="str", no_log=True),
        zk_verify_certs=dict(type="bool", default=True),
        zk_check_hostname=dict(type="bool", default=False),
        zk_digest=dict(type="str", no_log=True, fallback=(env_fallback, ["ZKROLLOUT_ZK_DIGEST"])),
        zk_sasl=dict(type="dict", no_log=True),
        zk_acl=dict(type="list", elements="str", default=[], no_log=True),
        zk_acl_profile=dict(type="dict", no_log=True),
        zk_jute_maxbuffer=dict(type="int", default=DEFAULT_JUTE_MAXBUFFER),
    )


def signing_argument_spec():
    """Argument spec of the release-signing options (documented by the ``zkrollout.dc.signing`` fragment)."""
    return dict(
        signing_key=dict(type="path", fallback=(env_fallback, ["ZKROLLOUT_SIGNING_KEY_FILE"])),
        signing_key_content=dict(type="str", no_log=True, fallback=(env_fallback, ["ZKROLLOUT_SIGNING_KEY"])),
        signing_key_passphrase=dict(type="str", no_log=True, fallback=(env_fallback, ["ZKROLLOUT_SIGNING_KEY_PASSPHRASE"])),
        allow_unsigned=dict(type="bool", default=False),
    )


SIGNING_MUTUALLY_EXCLUSIVE = [("signing_key", "signing_key_content")]


def given(value):
    """``value`` as the user wrote it: the keys that suboptions add as None when absent are dropped, at every level.

    So the core's own defaults and "field is missing" errors apply, not None values.
    """
    if isinstance(value, dict):
        return {key: given(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [given(item) for item in value]
    return value


def wait_argument_spec():
    """Argument spec of the options every waiting module shares (documented by the ``zkrollout.dc.wait`` fragment)."""
    return dict(
        timeout=dict(type="float", default=600.0),
        fail_on_timeout=dict(type="bool", default=True),
        progress_deadline=dict(type="float"),
    )


def check_positive_seconds(module, *names):
    """Fail the module naming the first of the options ``names`` that is set but not a positive number of seconds."""
    for name in names:
        value = module.params.get(name)
        if value is not None and not value > 0:
            module.fail_json(msg="%s must be a positive number of seconds, got %r" % (name, value))


def release_signer(module):
    """The function that signs each release entry the task writes, or None when the task opted out.

    Fails the module when no key is given without ``allow_unsigned``, or the key cannot be used.
    """
    params = module.params
    pem, where = params["signing_key_content"], "signing_key_content"
    if params["signing_key"]:
        where = "signing_key %s" % params["signing_key"]
        try:
            with open(params["signing_key"], "rb") as key_file:
                pem = key_file.read()
        except OSError as exc:
            module.fail_json(msg="%s: cannot read it: %s" % (where, exc))
    if not pem:
        if params["allow_unsigned"]:
            module.warn("the release is written UNSIGNED (allow_unsigned: true): only agents with allow_unsigned_releases "
                        "use it, and anyone who can write the tree could replace it")
            return None
        module.fail_json(msg="no signing key: give signing_key (a file) or signing_key_content (for example from an AWX "
                             "credential) with the deployer's Ed25519 private key, or allow_unsigned: true in a lab whose "
                             "agents set allow_unsigned_releases; see docs/security.md")
    try:
        private_key = load_private_key(pem, params["signing_key_passphrase"], where)
    except SigningError as exc:
        module.fail_json(msg=str(exc))
    return lambda entry: sign_entry(entry, private_key)


def connection_options(module):
    """ConnectionOptions from the module's parameters; fails the module on bad values."""
    try:
        return ConnectionOptions.from_mapping(module.params)
    except ZkConnectionError as exc:
        module.fail_json(msg=str(exc))


@contextlib.contextmanager
def zk_session(module):
    """``with zk_session(module) as (client, layout):`` a connected client and the tree layout.

    Fails the module with one clear message when kazoo is missing, the options are invalid or
    ZooKeeper cannot be reached; always disconnects.
    """
    if KAZOO_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("kazoo"), exception="".join(traceback.format_exception_only(type(KAZOO_IMPORT_ERROR), KAZOO_IMPORT_ERROR)))
    options = connection_options(module)
    try:
        layout = Layout(options.root)
    except LayoutError as exc:
        module.fail_json(msg=str(exc))
    quiet = logging.getLogger("zkrollout.kazoo")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        client = connect(options, logger=quiet)
    except ZkConnectionError as exc:
        module.fail_json(msg=str(exc))
    try:
        yield client, layout
    finally:
        disconnect(client)


def run_change(module, planner, result_keys=None):
    """Plan a write with ``planner(snapshot, layout, missing)``, apply it unless in check mode, exit.

    Validation and refusal errors fail the module with their message and write nothing.
    """
    with zk_session(module) as (client, layout):
        acl = [parse_acl(entry) for entry in module.params["zk_acl"]] or None
        try:
            change = read_plan_apply(client, layout, lambda snapshot, missing: planner(snapshot, layout, missing),
                                     check_mode=module.check_mode, acl=acl, max_request_bytes=connection_options(module).jute_maxbuffer)
        except (PayloadError, PlanError, WriteRefused, LayoutError) as exc:
            module.fail_json(msg=str(exc))
    for warning in change.warnings:
        module.warn(warning)
    result = dict(changed=change.changed, msg=change.message, **change.result)
    if module._diff:
        result["diff"] = change.diff
    module.exit_json(**result)
