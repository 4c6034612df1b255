"""ccm.certs: self-signed certificates, CAs and what they issue, checked with cryptography and a
real TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
import warnings
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ccm import certs

_E = TypeVar("_E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E]:
    return cert.extensions.get_extension_for_class(kind)


def _has_ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> bool:
    try:
        cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return False
    return True


def _validity(cert: x509.Certificate) -> tuple[dt.timedelta, dt.timedelta]:
    """(how long before now it became valid, how long after now it stays valid)."""
    now = dt.datetime.now(dt.UTC)
    return now - cert.not_valid_before_utc, cert.not_valid_after_utc - now


def _close(actual: dt.timedelta, expected: dt.timedelta) -> bool:
    return abs(actual - expected) < dt.timedelta(minutes=1)


# -- keys -----------------------------------------------------------------------------------------


def test_new_key_is_ecdsa_p256() -> None:
    key = certs.new_key()
    assert isinstance(key.curve, ec.SECP256R1)
    assert certs.new_key().private_numbers() != key.private_numbers()


def test_key_pem_round_trips() -> None:
    key = certs.new_key()
    pem = certs.key_to_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    public = serialization.load_pem_public_key(certs.public_key_to_pem(key))
    assert public == key.public_key()


def test_write_key_is_private(tmp_path: Path) -> None:
    path = tmp_path / "tls.key"
    key = certs.new_key()
    certs.write_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == certs.key_to_pem(key)


def test_key_pair_write(tmp_path: Path) -> None:
    pair = certs.self_signed("x", dns_names=["localhost"])
    pair.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes()) == pair.cert
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert (tmp_path / "tls.key").read_bytes() == pair.key_pem
    assert pair.cert_pem == certs.cert_to_pem(pair.cert)


# -- names ----------------------------------------------------------------------------------------


def test_name_has_organizations_then_common_name() -> None:
    name = certs.name("alice", ["devs", "ops"])
    assert [(a.oid, a.value) for a in name] == [
        (NameOID.ORGANIZATION_NAME, "devs"),
        (NameOID.ORGANIZATION_NAME, "ops"),
        (NameOID.COMMON_NAME, "alice"),
    ]


def test_name_accepts_kubernetes_names_longer_than_x509_allows() -> None:
    long_user = "system:serviceaccount:" + "n" * 63 + ":" + "s" * 63
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        name = certs.name(long_user, ["g" * 100])
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == long_user


# -- self-signed ----------------------------------------------------------------------------------


def test_self_signed_verifies_its_own_signature_and_has_the_sans() -> None:
    pair = certs.self_signed(
        "localhost@1", dns_names=["localhost", "ccm.local"], ip_addresses=["127.0.0.1", "::1"]
    )
    cert = pair.cert
    cert.verify_directly_issued_by(cert)
    assert cert.subject == cert.issuer == certs.name("localhost@1")
    assert cert.public_key() == pair.key.public_key()
    san = _ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "ccm.local"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_self_signed_is_a_server_leaf_valid_for_a_year() -> None:
    cert = certs.self_signed("localhost@1", dns_names=["localhost"]).cert
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not _has_ext(cert, x509.SubjectKeyIdentifier)
    assert not _has_ext(cert, x509.AuthorityKeyIdentifier)
    before, after = _validity(cert)
    assert _close(before, dt.timedelta(minutes=5))
    assert _close(after, dt.timedelta(days=365))
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"


def test_self_signed_validity_and_usage_are_parameters() -> None:
    cert = certs.self_signed(
        "c",
        usage="client",
        valid_for=dt.timedelta(hours=2),
        backdate=dt.timedelta(0),
    ).cert
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    before, after = _validity(cert)
    assert _close(before, dt.timedelta(0))
    assert _close(after, dt.timedelta(hours=2))
    assert not _has_ext(cert, x509.SubjectAlternativeName)


# -- CA and issued certificates -------------------------------------------------------------------


def test_new_ca_signs_certificates() -> None:
    ca = certs.new_ca("test-ca").cert
    ca.verify_directly_issued_by(ca)
    assert ca.subject == ca.issuer == certs.name("test-ca")
    basic = _ext(ca, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length is None
    usage = _ext(ca, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature and usage.value.key_cert_sign and usage.value.crl_sign
    assert not _has_ext(ca, x509.ExtendedKeyUsage)
    assert _ext(ca, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        ca.public_key()
    )
    before, after = _validity(ca)
    assert _close(before, dt.timedelta(hours=1))
    assert _close(after, dt.timedelta(days=365))


def test_issued_server_cert_chains_to_the_ca() -> None:
    ca = certs.new_ca("serving-ca")
    pair = certs.issue(
        ca,
        "kube-apiserver",
        usage="server",
        dns_names=["localhost", "kubernetes.default.svc"],
        ip_addresses=["127.0.0.1", ipaddress.IPv4Address("10.96.0.1")],
    )
    cert = pair.cert
    cert.verify_directly_issued_by(ca.cert)
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(certs.new_ca("serving-ca").cert)  # same name, other key
    assert cert.issuer == ca.cert.subject
    assert cert.subject == certs.name("kube-apiserver")
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    basic = _ext(cert, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = _ext(cert, x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    ca_ski = _ext(ca.cert, x509.SubjectKeyIdentifier).value
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert _has_ext(cert, x509.SubjectKeyIdentifier)
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "kubernetes.default.svc"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.96.0.1"),
    ]
    before, after = _validity(cert)
    assert _close(before, dt.timedelta(hours=1))
    assert _close(after, dt.timedelta(days=365))


def test_issued_client_cert_carries_the_groups() -> None:
    ca = certs.new_ca("client-ca")
    cert = certs.issue(ca, "admin", usage="client", organizations=["system:masters", "devs"]).cert
    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:masters", "devs"]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not _has_ext(cert, x509.SubjectAlternativeName)


def test_issued_keys_are_fresh() -> None:
    ca = certs.new_ca("ca")
    one = certs.issue(ca, "a", usage="client")
    two = certs.issue(ca, "a", usage="client")
    assert one.key.private_numbers() != two.key.private_numbers()
    assert one.cert.serial_number != two.cert.serial_number


# -- the certificates work for TLS ----------------------------------------------------------------


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> ssl.SSLObject:
    """Run a TLS handshake in memory; return the server side (to read the peer's cert)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, name, out, peer_in in (
            (client_side, "client", c_out, s_in),
            (server_side, "server", s_out, c_in),
        ):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return server_side
    raise AssertionError("handshake did not finish")


def test_issued_pairs_do_mutual_tls(tmp_path: Path) -> None:
    serving_ca, client_ca = certs.new_ca("serving-ca"), certs.new_ca("client-ca")
    serving = certs.issue(serving_ca, "server", usage="server", ip_addresses=["127.0.0.1"])
    admin = certs.issue(client_ca, "admin", usage="client", organizations=["system:masters"])
    for stem, pair in (("serving-ca", serving_ca), ("client-ca", client_ca)):
        (tmp_path / f"{stem}.crt").write_bytes(pair.cert_pem)
    serving.write(tmp_path / "serving.crt", tmp_path / "serving.key")
    admin.write(tmp_path / "admin.crt", tmp_path / "admin.key")

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "serving.crt", tmp_path / "serving.key")
    server.load_verify_locations(cafile=tmp_path / "client-ca.crt")
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(cafile=tmp_path / "serving-ca.crt")
    client.load_cert_chain(tmp_path / "admin.crt", tmp_path / "admin.key")

    server_side = _handshake(server, client, "127.0.0.1")
    peer = server_side.getpeercert()
    assert peer is not None
    assert (("organizationName", "system:masters"),) in peer["subject"]
    assert (("commonName", "admin"),) in peer["subject"]


@pytest.mark.parametrize(
    ("usage", "hostname"),
    [
        pytest.param("server", "elsewhere.example", id="server cert for another host"),
        pytest.param("client", "localhost", id="client-only cert presented by a server"),
    ],
)
def test_tls_client_rejects_a_wrong_server_cert(
    tmp_path: Path, usage: certs.Usage, hostname: str
) -> None:
    ca = certs.new_ca("serving-ca")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    pair = certs.issue(ca, "server", usage=usage, dns_names=["localhost"])
    pair.write(tmp_path / "s.crt", tmp_path / "s.key")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    client = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, hostname)
