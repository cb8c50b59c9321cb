# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signed releases: the deployer signs each release entry, every agent checks it against its own keys.

Anyone who can write ``staging/<svc>`` could otherwise choose what every host downloads and
runs: the artifact URL and its sha256 both live in that node. So the controller signs each
entry with an Ed25519 key only the deployer holds, and an agent uses an entry only if it
verifies against one of the public keys in the host's local config (written by the role, never
read from ZooKeeper). Several keys may be trusted at once, so a key is rotated by trusting the
new key on every host, re-seeding with it, then dropping the old one.

What is signed is the entry's canonical JSON without its ``signature`` field, behind a fixed
context line, so a signature over anything else (another payload kind, another protocol) never
verifies as a release entry. Ed25519 signatures are deterministic: the same entry signed with
the same key gives the same bytes, which keeps seeding idempotent.

``cryptography`` is imported only when a key is loaded or a signature checked, so an agent
whose config opts out of signatures (labs) needs no more than kazoo.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib

from .model import Signature, canonical_json
from .snapshot import ReleaseRefusal

CONTEXT = b"zkrollout.dc release entry v1\n"
KEY_ID_HEX = 16


class SigningError(ValueError):
    """A key that cannot be loaded or used; the message says which and what to do."""


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise SigningError("signed releases need the Python library 'cryptography' (pip install cryptography): %s" % exc) from exc
    return InvalidSignature, serialization, ed25519


def _raw_public(public_key):
    _invalid, serialization, _ed25519 = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key):
    """Short id of a public key (hex of its sha256), named in signatures and messages."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:KEY_ID_HEX]


def load_private_key(pem, password=None, where="signing key"):
    """An Ed25519 private key from PEM (PKCS#8, as ``openssl genpkey -algorithm ed25519`` writes)."""
    _invalid, serialization, ed25519 = _crypto()
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(data, password=secret or None)
    except (ValueError, TypeError) as exc:
        raise SigningError("%s: cannot load it as a PEM private key (%s); create one with "
                           "'openssl genpkey -algorithm ed25519 -out release.key'" % (where, exc)) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError("%s: is a %s key; releases are signed with Ed25519 keys "
                           "('openssl genpkey -algorithm ed25519')" % (where, type(key).__name__))
    return key


def load_public_key(text, where="trusted key"):
    """An Ed25519 public key from PEM (``openssl pkey -pubout``) or the base64 of its 32 raw bytes."""
    _invalid, serialization, ed25519 = _crypto()
    if not isinstance(text, str) or not text.strip():
        raise SigningError("%s: expected a PEM public key (-----BEGIN PUBLIC KEY-----) or the base64 of a raw Ed25519 key" % where)
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("utf-8"))
        else:
            key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SigningError("%s: cannot load it as an Ed25519 public key (%s); give the output of "
                           "'openssl pkey -in release.key -pubout'" % (where, exc)) from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningError("%s: is a %s key; releases are verified with Ed25519 keys" % (where, type(key).__name__))
    return key


def public_pem(private_key):
    """The PEM text of a private key's public half, as the hosts' config lists it."""
    _invalid, serialization, _ed25519 = _crypto()
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def public_base64(private_key):
    """The one-line form of a private key's public half: the base64 of its 32 raw bytes."""
    return base64.b64encode(_raw_public(private_key.public_key())).decode("ascii")


def generate_private_pem():
    """A new Ed25519 private key as unencrypted PKCS#8 PEM (for labs, the demo and tests)."""
    _invalid, serialization, ed25519 = _crypto()
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode("ascii")


def signed_bytes(entry):
    """What a release entry's signature covers: the context line and the entry without its signature."""
    raw = entry.to_dict()
    raw.pop("signature", None)
    return CONTEXT + canonical_json(raw)


def sign_entry(entry, private_key):
    """``entry`` (a ReleaseEntry) with a signature by ``private_key`` in place of any earlier one."""
    unsigned = dataclasses.replace(entry, signature=None)
    value = private_key.sign(signed_bytes(unsigned))
    return dataclasses.replace(entry, signature=Signature(key=key_id(private_key.public_key()), value=base64.b64encode(value).decode("ascii")))


class TrustedKeys(object):
    """The public keys a host accepts release signatures from, by key id."""

    def __init__(self, public_keys=()):
        self.keys = {key_id(key): key for key in public_keys}

    @classmethod
    def from_texts(cls, texts, where="trusted_keys"):
        """Load every key of a config list; an error names the entry."""
        return cls([load_public_key(text, "%s[%d]" % (where, index)) for index, text in enumerate(texts)])

    def __bool__(self):
        return bool(self.keys)

    def refusal(self, entry, path):
        """None if ``entry`` carries a valid signature by a trusted key, else the sentence saying why not."""
        signature = entry.signature
        if signature is None:
            return ("%s is not signed, and this host accepts only releases signed by its trusted keys (%s): "
                    "re-seed it with the deployer's signing key" % (path, ", ".join(sorted(self.keys)) or "none"))
        public_key = self.keys.get(signature.key)
        if public_key is None:
            return ("%s is signed by key %s, which this host does not trust (it trusts %s): re-seed it with a trusted "
                    "key, or add that key to the host's trusted keys" % (path, signature.key, ", ".join(sorted(self.keys)) or "none"))
        invalid, _serialization, _ed25519 = _crypto()
        try:
            public_key.verify(base64.b64decode(signature.value), signed_bytes(entry))
        except invalid:
            return ("%s: the signature by key %s does not match the entry: it was changed after signing; "
                    "nothing of it is used until it is re-seeded" % (path, signature.key))
        return None


def screen_releases(snapshot, trusted, layout):
    """``snapshot`` with every release entry this host must not use taken out.

    An entry is refused when it sits under another service's node, or (``trusted`` given) when
    it does not verify with those keys; its service then has no release, a ``refusal`` saying
    why, and the reason among its problems. ``trusted`` None checks no signature (the lab opt-out).
    """
    services = dict(snapshot.services)
    reasons = []
    for name, state in snapshot.services.items():
        release = state.release
        if release is None:
            continue
        path = layout.release(name)
        if release.service != name:
            reason = "%s holds a release entry for service %s, not %s: nothing of it is used; re-seed the rollout" % (path, release.service, name)
        else:
            reason = trusted.refusal(release, path) if trusted is not None else None
        if reason is not None:
            reasons.append(reason)
            services[name] = dataclasses.replace(state, release=None, refusal=ReleaseRefusal(release.rollout, release.version, reason),
                                                 problems=state.problems + (reason,))
    if not reasons:
        return snapshot
    return dataclasses.replace(snapshot, services=services, problems=snapshot.problems + tuple(reasons))
