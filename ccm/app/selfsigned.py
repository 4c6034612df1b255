"""The secure server's self-signed certificate, encoded here so that generating one loads only
cryptography's EC primitives (``cryptography.x509`` alone costs more CPU than the rest of the
certificate's making).

The certificate is the one :func:`ccm.certs.self_signed` builds with ``usage="server"``: X.509 v3,
a random positive 159-bit serial, ``CN=<common name>`` as subject and issuer, valid from five
minutes before now for ``valid_for``, extensions BasicConstraints (not a CA, critical), KeyUsage
digitalSignature (critical), ExtendedKeyUsage serverAuth and the SubjectAlternativeName DNS names
and IP addresses, signed ECDSA P-256 with SHA-256. The key is unencrypted PKCS#8 PEM.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["self_signed_server_pem"]

_ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
_COMMON_NAME = "2.5.4.3"
_BASIC_CONSTRAINTS = "2.5.29.19"
_KEY_USAGE = "2.5.29.15"
_EXTENDED_KEY_USAGE = "2.5.29.37"
_SUBJECT_ALT_NAME = "2.5.29.17"
_SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
_BACKDATE = dt.timedelta(minutes=5)


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _int(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _time(when: dt.datetime) -> bytes:
    # RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, UTC.
    when = when.astimezone(dt.UTC)
    if when.year < 2050:
        return _tlv(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
    return _tlv(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())


def _extension(oid: str, value: bytes, *, critical: bool) -> bytes:
    flag = _tlv(0x01, b"\xff") if critical else b""
    return _seq(_oid(oid), flag, _tlv(0x04, value))


def self_signed_server_pem(
    common_name: str,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    valid_for: dt.timedelta,
) -> tuple[bytes, bytes]:
    """A fresh key and its self-signed TLS server certificate, PEM-encoded: ``(cert, key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = dt.datetime.now(dt.UTC)
    name = _seq(_tlv(0x31, _seq(_oid(_COMMON_NAME), _tlv(0x0C, common_name.encode()))))
    sans = [_tlv(0x82, d.encode("ascii")) for d in dns_names]
    sans += [_tlv(0x87, ipaddress.ip_address(ip).packed) for ip in ip_addresses]
    extensions = [
        _extension(_BASIC_CONSTRAINTS, _seq(), critical=True),
        _extension(_KEY_USAGE, _tlv(0x03, b"\x07\x80"), critical=True),  # digitalSignature
        _extension(_EXTENDED_KEY_USAGE, _seq(_oid(_SERVER_AUTH)), critical=False),
    ]
    if sans:
        extensions.append(_extension(_SUBJECT_ALT_NAME, _seq(*sans), critical=False))
    algorithm = _seq(_oid(_ECDSA_WITH_SHA256))
    tbs = _seq(
        _tlv(0xA0, _int(2)),  # v3
        _int(int.from_bytes(os.urandom(20), "big") >> 1),
        algorithm,
        name,
        _seq(_time(now - _BACKDATE), _time(now + valid_for)),
        name,
        spki,
        _tlv(0xA3, _seq(*extensions)),
    )
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    der = _seq(tbs, algorithm, _tlv(0x03, b"\x00" + signature))
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    cert_pem = b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines)
    cert_pem += b"\n-----END CERTIFICATE-----\n"
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem
