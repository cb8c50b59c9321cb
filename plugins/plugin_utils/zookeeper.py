# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private helper of the controller plugins (inventory, lookup): their connection options and one read of the tree.

The options are the ones the ``zkrollout.dc.zookeeper_plugin`` doc fragment documents, set
through Ansible's configuration; the read is the store's ``read_snapshot``, the same one
``rollout_info`` makes, so the plugins report exactly what the module reports.
"""

from __future__ import annotations

import logging

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.zkrollout.dc.plugins.module_utils.core.layout import Layout, LayoutError
from ansible_collections.zkrollout.dc.plugins.module_utils.store.client import ZK_ERRORS, ConnectionOptions, ZkConnectionError, session
from ansible_collections.zkrollout.dc.plugins.module_utils.store.reads import read_snapshot

CONNECTION_OPTIONS = (
    "zk_hosts",
    "zk_root",
    "zk_timeout",
    "zk_session_timeout",
    "zk_retries",
    "zk_tls",
    "zk_ca",
    "zk_certfile",
    "zk_keyfile",
    "zk_keyfile_password",
    "zk_verify_certs",
    "zk_check_hostname",
    "zk_digest",
    "zk_sasl",
    "zk_acl_profile",
)
BOOLEAN_OPTIONS = ("zk_tls", "zk_verify_certs", "zk_check_hostname")
PLAY_VARIABLE_PREFIX = "zkrollout_"


def settings_problems(given, known, prefix=""):
    """Sentences naming each setting of ``given`` that is not in ``known``, or that is not a clear boolean where one is due.

    The keys of ``given`` are ``prefix`` and an option's name (``zkrollout_`` for play variables).
    Ansible ignores unknown settings and reads any unknown word as false, so a typo such as
    ``zk_host`` or ``zk_tls: ture`` would silently connect elsewhere, or without TLS.
    """
    names = {prefix + option for option in known}
    problems = ["unknown option %s (the options are %s)" % (name, ", ".join(sorted(names))) for name in sorted(set(given) - names)]
    for name in (prefix + option for option in BOOLEAN_OPTIONS):
        if name in given:
            try:
                boolean(given[name], strict=True)
            except TypeError:
                problems.append("%s must be true or false, got %r" % (name, given[name]))
    return problems


def play_connection_variables(variables, templar):
    """The playbooks' connection variables (``zkrollout_zk_*``) among ``variables``, rendered with ``templar``.

    A lookup receives the task's variables as written; a variable set to a template (``"{{ zk }}"``)
    would reach the option, and its type check, unrendered.
    """
    names = [PLAY_VARIABLE_PREFIX + option for option in CONNECTION_OPTIONS]
    return {name: templar.template(variables[name]) for name in names if name in (variables or {})}


def connection_options(plugin):
    """ConnectionOptions from ``plugin``'s options; raises ZkConnectionError naming a bad one."""
    return ConnectionOptions.from_mapping({name: plugin.get_option(name) for name in CONNECTION_OPTIONS})


def _quiet_logger():
    # The cause of a failure is in the error raised; kazoo's own retries would only add noise to stderr.
    logger = logging.getLogger("zkrollout.kazoo")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def read_tree(plugin, error):
    """``(ConnectionOptions, Snapshot)`` of the whole tree that ``plugin``'s options name.

    Every failure (bad options, unreachable ZooKeeper, a read refused by an ACL) raises
    ``error``, an Ansible error class, with one sentence that names the plugin and the cause.
    """
    try:
        options = connection_options(plugin)
        layout = Layout(options.root)
        with session(options, logger=_quiet_logger()) as client:
            return options, read_snapshot(client, layout)
    # The sentences are complete: Ansible would append the chained cause's message a second time.
    except (ZkConnectionError, LayoutError) as exc:
        raise error("%s: %s" % (plugin.ansible_name, exc)) from None
    except ZK_ERRORS as exc:  # pylint: disable=catching-non-exception
        raise error("%s: reading the rollout tree %s on %s failed: %s%s; check that ZooKeeper is up and that the session's "
                    "identity (zk_digest, or the client certificate) may read the tree (see docs/security.md)"
                    % (plugin.ansible_name, options.root, options.describe(), exc.__class__.__name__, " (%s)" % exc if str(exc) else "")) from None
