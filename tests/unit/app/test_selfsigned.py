"""The secure server's self-signed certificate (ccm.app.selfsigned): byte for byte the
certificate cryptography's builder makes from the same key, serial and times, as
ccm.certs.self_signed builds it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from collections.abc import Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ccm.app import selfsigned


def _builder_tbs(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, dns: Sequence[str], ips: Sequence[str]
) -> bytes:
    """The TBS bytes of the certificate ccm.certs._make builds (server usage, no key IDs) with
    ``cert``'s serial, times and subject, for ``key``."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.subject)
        .public_key(key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).tbs_certificate_bytes


@pytest.mark.parametrize(
    ("cn", "dns", "ips", "valid_for"),
    [
        ("localhost@1700000000", ("localhost",), ("127.0.0.1",), dt.timedelta(days=365)),
        ("no-sans", (), (), dt.timedelta(days=1)),
        ("two-of-each", ("a.example", "b"), ("::1", "10.0.0.1"), dt.timedelta(hours=1)),
        ("x" * 64, ("localhost",) * 20, (), dt.timedelta(days=365 * 40)),  # long SANs; year 2066
    ],
)
def test_same_certificate_as_the_certificate_toolkit(
    cn: str, dns: tuple[str, ...], ips: tuple[str, ...], valid_for: dt.timedelta
) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert_pem, key_pem = selfsigned.self_signed_server_pem(
        cn, dns_names=dns, ip_addresses=ips, valid_for=valid_for
    )
    after = dt.datetime.now(dt.UTC)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, as certs.key_to_pem
    assert cert.tbs_certificate_bytes == _builder_tbs(cert, key, dns, ips)
    cert.verify_directly_issued_by(cert)  # signed by its own key, ECDSA with SHA-256
    assert cert.version == x509.Version.v3
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert 0 < cert.serial_number < 2**159
    assert before - dt.timedelta(minutes=5) <= cert.not_valid_before_utc
    assert cert.not_valid_before_utc <= after - dt.timedelta(minutes=5)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == valid_for + dt.timedelta(
        minutes=5
    )
    assert cert_pem == cert.public_bytes(serialization.Encoding.PEM)


def test_fresh_key_and_serial_each_time() -> None:
    pems = [
        selfsigned.self_signed_server_pem(
            "a", dns_names=(), ip_addresses=(), valid_for=dt.timedelta(days=1)
        )
        for _ in range(2)
    ]
    first, second = (x509.load_pem_x509_certificate(c) for c, _ in pems)
    assert first.serial_number != second.serial_number
    assert pems[0][1] != pems[1][1]


def test_generating_does_not_load_the_x509_toolkit() -> None:
    code = (
        "import sys, datetime as dt\n"
        "from ccm.app import selfsigned\n"
        "selfsigned.self_signed_server_pem("
        "'a', dns_names=('localhost',), ip_addresses=(), valid_for=dt.timedelta(days=1))\n"
        "print('cryptography.x509' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["False"]
