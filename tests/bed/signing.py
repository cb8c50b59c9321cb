# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test bed's release-signing key: one Ed25519 key pair per checkout, under build/keys.

Tests, benchmarks and the demo sign every release with it, the way a deployer would, and give
its public half to every agent. ``use_everywhere()`` points the modules' environment fallback
(ZKROLLOUT_SIGNING_KEY_FILE) at the key, so every ansible-playbook run a test starts signs too.
The pair is made once; processes that race to make it agree on the first one written.
"""

from __future__ import annotations

import os
import tempfile

from ansible_collections.zkrollout.dc.plugins.module_utils.core import signing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
KEY_DIR = os.path.join(REPO, "build", "keys")
PRIVATE_KEY_FILE = os.path.join(KEY_DIR, "release.key")


def private_key_file():
    """Path of the private key (PEM, mode 0600), made on first use."""
    if not os.path.exists(PRIVATE_KEY_FILE):
        os.makedirs(KEY_DIR, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=KEY_DIR, prefix=".release.key.")
        try:
            with os.fdopen(handle, "w") as out:
                out.write(signing.generate_private_pem())
            try:
                # A hard link never replaces: whoever links first made the key everyone uses.
                os.link(temp, PRIVATE_KEY_FILE)
            except FileExistsError:
                pass
        finally:
            os.unlink(temp)
    return PRIVATE_KEY_FILE


def private_key():
    """The private key object."""
    with open(private_key_file(), "rb") as key_file:
        return signing.load_private_key(key_file.read())


def public_pem():
    """The public key as the agents' ``trusted_keys`` list it."""
    return signing.public_pem(private_key())


def public_line():
    """The public key in its one-line form (base64), for INI inventories."""
    return signing.public_base64(private_key())


def sign(entry):
    """A release entry signed with the test bed's key (the ``sign`` of writes.plan_seed)."""
    return signing.sign_entry(entry, private_key())


def use_everywhere():
    """Make modules started from this process sign with the test bed's key (unless told otherwise)."""
    os.environ.setdefault("ZKROLLOUT_SIGNING_KEY_FILE", private_key_file())
