"""Certificates and mutual TLS for the coordinators' Raft port.

One cluster CA signs one certificate per coordinator. A node certificate names the node id
as its common name and as a DNS SAN, lists the node's hosts as further SANs, and serves both
ends of a connection (serverAuth and clientAuth), so the Raft port can require a client
certificate and learn which node sent a message (`peer_node_id`).

Keys are ECDSA P-256. Key files are written with mode 0600; an existing CA is reused unless
`force=True`. Time is a parameter (`now`) wherever validity matters, for tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dtf_common.errors import ConfigError, InvalidArgument

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
DEFAULT_FIELD_PREFIX = "high_availability.tls"
TARGET_NAME_OVERRIDE = "grpc.ssl_target_name_override"

_CLOCK_SKEW = dt.timedelta(minutes=5)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NODE_ID = re.compile(_LABEL)
_DNS_NAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")


@dataclass(frozen=True)
class CertPaths:
    """Where a certificate, its key and the CA that signed it lie. For the CA itself `cert == ca`."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of one node's TLS identity, checked by `load_tls`; `node_id` is its certificate's CN."""

    ca: bytes
    cert: bytes
    key: bytes = dataclasses.field(repr=False)
    node_id: str


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int
    is_ca: bool
    sha256: str


# ---------------------------------------------------------------- creating


def create_ca(
    directory: Path,
    *,
    common_name: str = "dtf cluster CA",
    days: int = 3650,
    force: bool = False,
    now: dt.datetime | None = None,
) -> CertPaths:
    """Write `ca.pem` and `ca-key.pem` in `directory`, or reuse the CA already there.

    With `force=True` an existing CA is replaced (every node certificate it signed stops
    being trusted). Half a CA (a certificate without its key, or the reverse) is refused.
    """
    _check_days(days)
    directory = Path(directory)
    paths = CertPaths(cert=directory / CA_CERT, key=directory / CA_KEY, ca=directory / CA_CERT)
    present = [p for p in (paths.cert, paths.key) if p.exists()]
    if present and not force:
        if len(present) == 1:
            missing = paths.key if present[0] == paths.cert else paths.cert
            raise ConfigError(
                f"{present[0]} exists but {missing} does not; restore it or replace the CA with force",
                field="directory",
            )
        _load_ca(directory)  # reuse only a CA that can sign
        return paths

    now = _utc(now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write(paths.key, _key_pem(key), private=True)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return paths


def create_node_cert(
    directory: Path,
    node_id: str,
    hosts: Sequence[str],
    *,
    days: int = 825,
    now: dt.datetime | None = None,
) -> CertPaths:
    """Issue `<node_id>.pem` and `<node_id>-key.pem` in `directory`, signed by its CA.

    CN is the node id; the SANs are the node id (DNS) and every host (IP addresses as
    IPAddress SANs, names as DNSName SANs). The certificate never outlives its CA.
    """
    check_node_id(node_id)
    _check_days(days)
    directory = Path(directory)
    ca_cert, ca_key = _load_ca(directory)
    dns_names, ips = _split_hosts([node_id, *hosts])

    now = _utc(now)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
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
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = CertPaths(cert=directory / f"{node_id}.pem", key=directory / f"{node_id}-key.pem", ca=directory / CA_CERT)
    _write(paths.key, _key_pem(key), private=True)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return paths


def check_node_id(node_id: str) -> str:
    """A node id must be a DNS label: it is a SAN, a file name and the TLS target name."""
    if not _NODE_ID.fullmatch(node_id):
        raise InvalidArgument(
            f"node id {node_id!r} must be 1-63 letters, digits or '-', not starting or ending with '-'",
            field="node_id",
        )
    return node_id


def check_hosts(hosts: Sequence[str]) -> None:
    """Each host must be an IP address or a DNS name."""
    _split_hosts(hosts)


# ---------------------------------------------------------------- loading


def load_tls(
    ca_file: str | Path,
    cert_file: str | Path,
    key_file: str | Path,
    *,
    field_prefix: str = DEFAULT_FIELD_PREFIX,
    now: dt.datetime | None = None,
) -> TlsMaterial:
    """Read and check one node's TLS files; a `ConfigError` names the config field at fault.

    Checked: each file is readable PEM of the right kind, the CA and the certificate are
    valid at `now`, the CA signed the certificate, and the key belongs to the certificate.
    """
    ca_field, cert_field, key_field = (f"{field_prefix}.{n}" for n in ("ca_file", "cert_file", "key_file"))
    now = _utc(now)
    ca_pem = _read(ca_file, ca_field)
    cert_pem = _read(cert_file, cert_field)
    key_pem = _read(key_file, key_field)

    cas = _parse_certs(ca_pem, ca_file, ca_field)
    cert = _parse_certs(cert_pem, cert_file, cert_field)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_file} is not an unencrypted PEM private key: {exc}", field=key_field) from exc

    for ca in cas:
        _check_validity(ca, now, ca_file, ca_field)
    _check_validity(cert, now, cert_file, cert_field)
    if not any(_issued_by(cert, ca) for ca in cas):
        raise ConfigError(
            f"{cert_file} ({_name(cert.subject)}, issued by {_name(cert.issuer)}) is not signed by the CA in {ca_file}",
            field=cert_field,
        )
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(f"{key_file} is not the private key of {cert_file}", field=key_field)
    node_id = _common_name(cert)
    if not node_id:
        raise ConfigError(f"{cert_file} has no common name (the node id)", field=cert_field)
    return TlsMaterial(ca=ca_pem, cert=cert_pem, key=key_pem, node_id=node_id)


def certificate_infos(pem: bytes) -> list[CertificateInfo]:
    """What `dtf certs show` prints about each certificate in `pem`; ValueError if there is none."""
    return [_info(cert) for cert in x509.load_pem_x509_certificates(pem)]


def _info(cert: x509.Certificate) -> CertificateInfo:
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    is_ca = False
    with contextlib.suppress(x509.ExtensionNotFound):
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        common_name=_common_name(cert),
        dns_names=dns_names,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial=cert.serial_number,
        is_ca=is_ca,
        sha256=cert.fingerprint(hashes.SHA256()).hex(":"),
    )


# ---------------------------------------------------------------- gRPC


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Credentials for the Raft port: present this node's certificate, require one from the CA."""
    return grpc.ssl_server_credentials(
        [(material.key, material.cert)],
        root_certificates=material.ca,
        require_client_auth=True,
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Credentials to dial a peer's Raft port: trust only the CA, present this node's certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca,
        private_key=material.key,
        certificate_chain=material.cert,
    )


def target_name_override(node_id: str) -> tuple[str, str]:
    """The channel option to dial a peer by address while verifying its certificate as `node_id`."""
    return (TARGET_NAME_OVERRIDE, node_id)


def peer_node_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The node id (certificate CN) of the peer of an RPC over mutual TLS; None without one."""
    auth = context.auth_context()
    if b"ssl" not in _values(auth.get("transport_security_type")):
        return None
    names = _values(auth.get("x509_common_name"))
    return names[0].decode() if names else None


# ---------------------------------------------------------------- helpers


def _values(value: Iterable[bytes] | bytes | None) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value]
    return list(value)


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def _check_days(days: int) -> None:
    if days < 1:
        raise InvalidArgument(f"days must be at least 1, not {days}", field="days")


def _split_hosts(hosts: Iterable[str]) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    dns_names: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in hosts:
        host = raw.strip()
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if not _DNS_NAME.fullmatch(host):
                raise InvalidArgument(f"{raw!r} is neither an IP address nor a DNS name", field="hosts") from None
            if host.lower() not in (n.lower() for n in dns_names):
                dns_names.append(host)
        else:
            if ip not in ips:
                ips.append(ip)
    return dns_names, ips


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically; a private file is 0600 from the moment it exists."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if not private:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise ConfigError(f"no CA in {directory} ({CA_CERT} and {CA_KEY}); create it first", field="directory")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the CA in {directory}: {exc}", field="directory") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path} is not an ECDSA key", field="directory")
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ConfigError(f"{key_path} is not the private key of {cert_path}", field="directory")
    return cert, key


def _read(path: str | Path, field: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", field=field) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", field=field) from None


def _parse_certs(pem: bytes, path: str | Path, field: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{path} holds no PEM certificate", field=field) from None


def _check_validity(cert: x509.Certificate, now: dt.datetime, path: str | Path, field: str) -> None:
    if now > cert.not_valid_after_utc:
        raise ConfigError(
            f"{path} ({_name(cert.subject)}) expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", field=field
        )
    if now < cert.not_valid_before_utc:
        raise ConfigError(
            f"{path} ({_name(cert.subject)}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            field=field,
        )


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _public_der(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "no subject"
