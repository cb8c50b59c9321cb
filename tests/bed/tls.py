# Copyright: contributors to zkrollout.dc
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throwaway certificates for TLS tests: one CA, a server certificate, client certificates.

Everything is PEM, which both sides read directly: ZooKeeper 3.8 loads a key store and a trust
store of type PEM (``ssl.keyStore.type=PEM``), and kazoo hands the files to Python's ``ssl``.
Keys are EC P-256 because they are generated in milliseconds. The certificates are valid for
a day, starting an hour back so that a slightly skewed clock does not reject them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_KEY_PASSWORD = "client-key-secret"


@dataclass(frozen=True)
class TlsFiles(object):
    """Paths of one generated set.

    ``server_keystore`` holds the server's private key followed by its certificate, the single
    file ZooKeeper's PEM key store expects. ``client_key_encrypted`` is the client key
    encrypted with ``CLIENT_KEY_PASSWORD``, for testing ``zk_keyfile_password``.
    """

    directory: str
    ca_cert: str
    ca_key: str
    server_keystore: str
    client_cert: str
    client_key: str
    client_key_encrypted: str


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "zkrollout test bed"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, key, issuer, issuer_key, is_ca, usage=None, san=None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key, password=None):
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(directory, filename, content):
    # Private keys live here too: readable by the owner only, like a real key directory.
    path = os.path.join(directory, filename)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return path


def generate(directory, name="zkrollout-test"):
    """Create a CA, a server and a client certificate in ``directory`` (created if missing).

    The server certificate names ``localhost`` and ``127.0.0.1``, so clients may check the host
    name. ``name`` goes into the common names, which tells two generated sets apart in errors.
    Returns TlsFiles.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(name + " CA")
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, is_ca=True)

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _certificate(_name(name + " server"), server_key, ca_name, ca_key, is_ca=False,
                          usage=ExtendedKeyUsageOID.SERVER_AUTH, san=server_san)

    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(_name(name + " client"), client_key, ca_name, ca_key, is_ca=False,
                          usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    return TlsFiles(
        directory=directory,
        ca_cert=_write(directory, "ca.pem", _pem_cert(ca)),
        ca_key=_write(directory, "ca-key.pem", _pem_key(ca_key)),
        server_keystore=_write(directory, "server-keystore.pem", _pem_key(server_key) + _pem_cert(server)),
        client_cert=_write(directory, "client.pem", _pem_cert(client)),
        client_key=_write(directory, "client-key.pem", _pem_key(client_key)),
        client_key_encrypted=_write(directory, "client-key-encrypted.pem", _pem_key(client_key, CLIENT_KEY_PASSWORD)),
    )


def client_certificate(files, common_name, organization="example"):
    """A client certificate with subject ``CN=<common_name>,O=<organization>`` signed by the CA of ``files``.

    For tests of x509 identities (one per host). Returns ``(certfile, keyfile)`` in the set's
    directory.
    """
    with open(files.ca_cert, "rb") as handle:
        ca = x509.load_pem_x509_certificate(handle.read())
    with open(files.ca_key, "rb") as handle:
        ca_key = serialization.load_pem_private_key(handle.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    # Encoded most significant first, so ZooKeeper (RFC 2253, last first) names it CN=...,O=...
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                         x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = _certificate(subject, key, ca.subject, ca_key, is_ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return (_write(files.directory, "client-%s.pem" % common_name, _pem_cert(cert)),
            _write(files.directory, "client-%s-key.pem" % common_name, _pem_key(key)))
