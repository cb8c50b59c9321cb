# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release-signing options, documented once for every module that writes release entries."""

from __future__ import annotations


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  signing_key:
    description:
      - Path, on the host that runs the task (usually the controller), of the deployer's Ed25519
        private key in PEM, as C(openssl genpkey -algorithm ed25519 -out release.key) writes it.
      - Every release entry the task writes is signed with it; agents use only entries that verify
        against the public keys of their own config (role variable C(zkrollout_agent_trusted_keys)).
      - Falls back to the E(ZKROLLOUT_SIGNING_KEY_FILE) environment variable (an AWX credential
        can inject the key as a file and set it).
      - Mutually exclusive with O(signing_key_content).
    type: path
  signing_key_content:
    description:
      - The private key itself, as PEM text, instead of a file.
      - Falls back to the E(ZKROLLOUT_SIGNING_KEY) environment variable.
    type: str
  signing_key_passphrase:
    description:
      - Passphrase of an encrypted private key.
      - Falls back to the E(ZKROLLOUT_SIGNING_KEY_PASSPHRASE) environment variable.
    type: str
  allow_unsigned:
    description:
      - Write release entries without a signature when no key is given (labs only). The task warns;
        only agents whose config sets C(allow_unsigned_releases) use such entries.
      - Without a key and without this option the task fails and writes nothing.
    type: bool
    default: false
notes:
  - Signatures are deterministic, so re-running a task with the same release and key changes
    nothing; with another key it re-signs the staged entries in place (key rotation) without
    resetting the hosts' ready queue.
"""
