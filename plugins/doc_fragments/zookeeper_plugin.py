# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ZooKeeper connection options of the controller plugins (inventory, lookup), documented once.

The same names and defaults as the modules' (the ``zkrollout.dc.zookeeper`` fragment), minus
the options only writers use (ACLs, request size). Plugins read options through Ansible's
configuration, so each option also has its environment variable (what an AWX credential
injects) and, unless it is a secret, a key of the ``[zkrollout]`` section of ansible.cfg. ``LOOKUP`` adds the
play variables of the collection's playbooks (``zkrollout_zk_*``) for the lookup plugins.
"""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  zk_hosts:
    description:
      - Comma-separated C(host:port) list of the ZooKeeper ensemble, optionally followed by a chroot
        such as C(/teams/web).
    type: str
    default: 127.0.0.1:2181
    env:
      - name: ZKROLLOUT_ZK_HOSTS
    ini:
      - section: zkrollout
        key: zk_hosts
  zk_root:
    description: Root znode of the rollout tree (relative to the chroot, if any).
    type: str
    default: /dc
    env:
      - name: ZKROLLOUT_ZK_ROOT
    ini:
      - section: zkrollout
        key: zk_root
  zk_timeout:
    description: Seconds to wait for a ZooKeeper session before failing with the cause.
    type: float
    default: 10
    env:
      - name: ZKROLLOUT_ZK_TIMEOUT
    ini:
      - section: zkrollout
        key: zk_timeout
  zk_session_timeout:
    description: Session timeout, in seconds, requested from ZooKeeper.
    type: float
    default: 10
    env:
      - name: ZKROLLOUT_ZK_SESSION_TIMEOUT
    ini:
      - section: zkrollout
        key: zk_session_timeout
  zk_retries:
    description: How many times a ZooKeeper request is retried after a connection loss.
    type: int
    default: 3
    env:
      - name: ZKROLLOUT_ZK_RETRIES
    ini:
      - section: zkrollout
        key: zk_retries
  zk_tls:
    description: Connect with TLS (the server's C(secureClientPort)).
    type: bool
    default: false
    env:
      - name: ZKROLLOUT_ZK_TLS
    ini:
      - section: zkrollout
        key: zk_tls
  zk_ca:
    description: CA bundle that signed the server certificates.
    type: path
    env:
      - name: ZKROLLOUT_ZK_CA
    ini:
      - section: zkrollout
        key: zk_ca
  zk_certfile:
    description: Client certificate for TLS client authentication; requires O(zk_keyfile).
    type: path
    env:
      - name: ZKROLLOUT_ZK_CERTFILE
    ini:
      - section: zkrollout
        key: zk_certfile
  zk_keyfile:
    description: Private key of O(zk_certfile).
    type: path
    env:
      - name: ZKROLLOUT_ZK_KEYFILE
    ini:
      - section: zkrollout
        key: zk_keyfile
  zk_keyfile_password:
    description: Password of O(zk_keyfile), if it is encrypted.
    type: str
    env:
      - name: ZKROLLOUT_ZK_KEYFILE_PASSWORD
  zk_verify_certs:
    description: Verify the server certificate against O(zk_ca).
    type: bool
    default: true
    env:
      - name: ZKROLLOUT_ZK_VERIFY_CERTS
    ini:
      - section: zkrollout
        key: zk_verify_certs
  zk_check_hostname:
    description: Check that the server certificate names the host connected to; requires O(zk_verify_certs).
    type: bool
    default: false
    env:
      - name: ZKROLLOUT_ZK_CHECK_HOSTNAME
    ini:
      - section: zkrollout
        key: zk_check_hostname
  zk_digest:
    description:
      - Digest credentials C(user:password) added to the session at connect time.
      - Reading needs only the readers' rights of the ACL profile (see C(docs/security.md)).
    type: str
    env:
      - name: ZKROLLOUT_ZK_DIGEST
  zk_sasl:
    description:
      - SASL options passed to kazoo at connect time, for example C(mechanism=DIGEST-MD5), C(username) and C(password).
    type: dict
  zk_acl_profile:
    description:
      - The least-privilege ACL profile the tree was created with (C(deployer), C(agents), C(readers); see C(docs/security.md)).
        This plugin never writes; with the profile, what it reports is confirmed by the hosts' own parents, as the modules do,
        so registrations, slots and failure records that one host forged in the shared listings are left out and those it
        deleted there are still counted. Without it, the shared listings are reported as they are.
      - Costs one listing per host (and, once, each host parent's ACL) per read.
    type: dict
requirements:
  - kazoo >= 2.9 on the controller
"""

    # The lookup plugins also read the connection variables of the collection's playbooks.
    LOOKUP = r"""
options:
  zk_hosts:
    vars:
      - name: zkrollout_zk_hosts
  zk_root:
    vars:
      - name: zkrollout_zk_root
  zk_timeout:
    vars:
      - name: zkrollout_zk_timeout
  zk_session_timeout:
    vars:
      - name: zkrollout_zk_session_timeout
  zk_retries:
    vars:
      - name: zkrollout_zk_retries
  zk_tls:
    vars:
      - name: zkrollout_zk_tls
  zk_ca:
    vars:
      - name: zkrollout_zk_ca
  zk_certfile:
    vars:
      - name: zkrollout_zk_certfile
  zk_keyfile:
    vars:
      - name: zkrollout_zk_keyfile
  zk_keyfile_password:
    vars:
      - name: zkrollout_zk_keyfile_password
  zk_verify_certs:
    vars:
      - name: zkrollout_zk_verify_certs
  zk_check_hostname:
    vars:
      - name: zkrollout_zk_check_hostname
  zk_digest:
    vars:
      - name: zkrollout_zk_digest
  zk_sasl:
    vars:
      - name: zkrollout_zk_sasl
  zk_acl_profile:
    vars:
      - name: zkrollout_zk_acl_profile
"""
