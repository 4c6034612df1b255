"""X.509 certificates made in memory: self-signed serving certificates, CAs, and certificates
they issue.

The one place ccm builds certificates: :mod:`ccm.app.serving` makes a self-signed serving
certificate when no ``--tls-cert-file`` is given, and :mod:`ccm.testing.controlplane` makes the
serving and client CAs of its kube-apiserver and the certificates they sign. Keys are ECDSA P-256
(instant to generate), signatures SHA-256, validity a year by default.

Every certificate carries a critical ``BasicConstraints`` and a critical ``KeyUsage``; leaf
certificates (self-signed or issued) add an ``ExtendedKeyUsage`` for ``"server"`` or ``"client"``
authentication and, when given any, ``SubjectAlternativeName`` entries. CAs and what they issue
carry key identifiers (``SubjectKeyIdentifier``, and ``AuthorityKeyIdentifier`` on issued ones).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_VALIDITY",
    "IPAddressLike",
    "KeyPair",
    "Usage",
    "cert_to_pem",
    "issue",
    "key_to_pem",
    "name",
    "new_ca",
    "new_key",
    "public_key_to_pem",
    "self_signed",
    "write_key",
]

#: What a leaf certificate is for: TLS server or TLS client authentication.
Usage = Literal["server", "client"]
#: An IP SAN: text (``"127.0.0.1"``, ``"::1"``) or an :mod:`ipaddress` address.
IPAddressLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_VALIDITY: Final = dt.timedelta(days=365)

_EXTENDED_KEY_USAGE: Final = {
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
}


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_to_pem(self.key)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both PEM files; the key file is created readable by its owner only."""
        cert_path.write_bytes(self.cert_pem)
        write_key(key_path, self.key)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The public half of ``key`` as SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as PEM to ``path``, creating the file with mode 0600."""
    path.touch(mode=0o600)
    path.write_bytes(key_to_pem(key))


def name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    """``O=<each organization>…, CN=<common_name>`` (Kubernetes reads O as groups, CN as user).

    Kubernetes user and group names may exceed X.509's 64-character upper bound, which Go
    accepts; cryptography only warns when told not to validate, and that warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        attributes = [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org, _validate=False)
            for org in organizations
        ]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False))
    return x509.Name(attributes)


def self_signed(
    common_name: str,
    *,
    usage: Usage = "server",
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[IPAddressLike] = (),
    valid_for: dt.timedelta = DEFAULT_VALIDITY,
    backdate: dt.timedelta = dt.timedelta(minutes=5),
) -> KeyPair:
    """A self-signed leaf certificate (not a CA) for ``usage``, with the given SANs.

    Valid from ``backdate`` before now (tolerates clock skew) until ``valid_for`` after now.
    Carries no key identifiers.
    """
    sans = _sans(dns_names, ip_addresses)
    return _make(name(common_name), None, usage, sans, valid_for, backdate, key_ids=False)


def new_ca(
    common_name: str,
    *,
    valid_for: dt.timedelta = DEFAULT_VALIDITY,
    backdate: dt.timedelta = dt.timedelta(hours=1),
) -> KeyPair:
    """A self-signed CA (``KeyUsage`` digital signature, certificate and CRL signing)."""
    return _make(name(common_name), None, None, [], valid_for, backdate, key_ids=True)


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    usage: Usage,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[IPAddressLike] = (),
    valid_for: dt.timedelta = DEFAULT_VALIDITY,
    backdate: dt.timedelta = dt.timedelta(hours=1),
) -> KeyPair:
    """A leaf certificate with a fresh key, signed by ``ca`` (made by :func:`new_ca`).

    Subject ``O=<organizations>…, CN=<common_name>``; ``usage`` picks the ExtendedKeyUsage.
    """
    subject = name(common_name, organizations)
    sans = _sans(dns_names, ip_addresses)
    return _make(subject, ca, usage, sans, valid_for, backdate, key_ids=True)


def _sans(
    dns_names: Sequence[str], ip_addresses: Sequence[IPAddressLike]
) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    return sans


def _make(
    subject: x509.Name,
    ca: KeyPair | None,
    usage: Usage | None,
    sans: list[x509.GeneralName],
    valid_for: dt.timedelta,
    backdate: dt.timedelta,
    *,
    key_ids: bool,
) -> KeyPair:
    """A fresh key and its certificate: signed by ``ca``, or self-signed when ``ca`` is None.
    No ``usage`` makes a CA, a ``usage`` a leaf with that ExtendedKeyUsage."""
    key = new_key()
    public_key = key.public_key()
    is_ca = usage is None
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if ca is None else ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([_EXTENDED_KEY_USAGE[usage]]), critical=False
        )
    if key_ids:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    if key_ids and ca is not None:
        ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key if ca is None else ca.key, hashes.SHA256())
    return KeyPair(cert, key)
