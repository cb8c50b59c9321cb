# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ZooKeeper connection options, documented once for every module."""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  zk_hosts:
    description:
      - Comma-separated C(host:port) list of the ZooKeeper ensemble, optionally followed by a chroot
        such as C(/teams/web).
      - Falls back to the E(ZKROLLOUT_ZK_HOSTS) environment variable.
    type: str
    default: 127.0.0.1:2181
  zk_root:
    description:
      - Root znode of the rollout tree (relative to the chroot, if any).
      - Falls back to the E(ZKROLLOUT_ZK_ROOT) environment variable.
    type: str
    default: /dc
  zk_timeout:
    description: Seconds to wait for a ZooKeeper session before failing with the cause.
    type: float
    default: 10
  zk_session_timeout:
    description: Session timeout, in seconds, requested from ZooKeeper.
    type: float
    default: 10
  zk_retries:
    description: How many times a ZooKeeper request is retried after a connection loss.
    type: int
    default: 3
  zk_tls:
    description: Connect with TLS (the server's C(secureClientPort)).
    type: bool
    default: false
  zk_ca:
    description: CA bundle that signed the server certificates.
    type: path
  zk_certfile:
    description: Client certificate for TLS client authentication; requires O(zk_keyfile).
    type: path
  zk_keyfile:
    description: Private key of O(zk_certfile).
    type: path
  zk_keyfile_password:
    description: Password of O(zk_keyfile), if it is encrypted.
    type: str
  zk_verify_certs:
    description: Verify the server certificate against O(zk_ca).
    type: bool
    default: true
  zk_check_hostname:
    description: Check that the server certificate names the host connected to; requires O(zk_verify_certs).
    type: bool
    default: false
  zk_digest:
    description:
      - Digest credentials C(user:password) added to the session at connect time.
      - Falls back to the E(ZKROLLOUT_ZK_DIGEST) environment variable.
    type: str
  zk_sasl:
    description:
      - SASL options passed to kazoo at connect time, for example C(mechanism=DIGEST-MD5), C(username) and C(password).
    type: dict
  zk_acl:
    description:
      - ACL for the znodes this task creates, as C(scheme:id:perms) entries, for example
        C(world:anyone:r) and C(digest:deployer:secret:cdrwa). Digest passwords are hashed before they are sent.
      - When empty, the ZooKeeper default (open) ACL is used.
      - Mutually exclusive with O(zk_acl_profile).
    type: list
    elements: str
    default: []
  zk_acl_profile:
    description:
      - The least-privilege ACL profile; every znode the task creates gets the ACL the profile defines for its kind
        (see C(docs/security.md)). The deployer may do everything, agents create and delete only the nodes they own,
        readers read.
      - A mapping of three lists of identities, C(deployer), C(agents) and C(readers). An identity is
        C(digest:user:password) (hashed before it is sent), C(digest-hash:user:<base64 sha1 of user:password>),
        C(x509:CN=host,O=example) (the subject of a client certificate over mutual TLS), C(ip:10.0.0.0/8),
        C(sasl:principal) or C(world:anyone). Agents need digest or x509 identities.
      - The task's own identity is O(zk_digest) or the client certificate of O(zk_certfile); it must be one of C(deployer).
      - Mutually exclusive with O(zk_acl).
    type: dict
  zk_jute_maxbuffer:
    description:
      - The largest request, in bytes, that the ZooKeeper servers accept (their C(jute.maxbuffer) setting).
        A write is one transaction, so one request; a larger one fails before anything is sent,
        with a message naming its size, this limit and its largest node.
      - Change it only together with the servers' C(jute.maxbuffer). Whatever it says, a single
        payload (a release entry, the rollout state) never exceeds 262144 bytes, the most that readers accept.
    type: int
    default: 1048575
requirements:
  - kazoo >= 2.9 on the host that runs the task (usually the controller)
notes:
  - Set these once for all modules of the collection with C(module_defaults) and the
    C(group/zkrollout.dc.zookeeper) action group.
"""
