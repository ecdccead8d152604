"""Certificates for the Raft port: the CA, node certificates, and the checks of `load_tls`.

Real keys and certificates throughout; time is passed in (`now`) to make expired ones.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dtf.cli.main import main
from dtf_common import tls
from dtf_common.errors import ConfigError, InvalidArgument

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def files_with(paths: tls.CertPaths, which: str, replacement: Path) -> tuple[Path, Path, Path]:
    """The (ca_file, cert_file, key_file) of `paths` with the one named `which` replaced."""
    files = {"ca_file": paths.ca, "cert_file": paths.cert, "key_file": paths.key, which: replacement}
    return files["ca_file"], files["cert_file"], files["key_file"]


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    tls.create_ca(directory)
    return directory


# ---------------------------------------------------------------- the CA


def test_create_ca_writes_a_ca_with_a_private_key(tmp_path: Path) -> None:
    paths = tls.create_ca(tmp_path / "new" / "dir", common_name="test CA", days=30)

    assert paths == tls.CertPaths(
        cert=tmp_path / "new/dir/ca.pem", key=tmp_path / "new/dir/ca-key.pem", ca=tmp_path / "new/dir/ca.pem"
    )
    assert mode(paths.key) == 0o600
    assert mode(paths.cert) == 0o644
    cert = cert_of(paths.cert)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "test CA"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert sorted(p.name for p in paths.cert.parent.iterdir()) == ["ca-key.pem", "ca.pem"]


def test_an_existing_ca_is_reused_unless_forced(ca_dir: Path) -> None:
    cert, key = (ca_dir / "ca.pem").read_bytes(), (ca_dir / "ca-key.pem").read_bytes()

    tls.create_ca(ca_dir)
    assert (ca_dir / "ca.pem").read_bytes() == cert
    assert (ca_dir / "ca-key.pem").read_bytes() == key

    tls.create_ca(ca_dir, force=True)
    assert (ca_dir / "ca.pem").read_bytes() != cert
    assert (ca_dir / "ca-key.pem").read_bytes() != key
    assert mode(ca_dir / "ca-key.pem") == 0o600


def test_half_a_ca_is_refused(ca_dir: Path) -> None:
    (ca_dir / "ca-key.pem").unlink()
    with pytest.raises(ConfigError, match=r"ca-key\.pem does not"):
        tls.create_ca(ca_dir)


# ---------------------------------------------------------------- node certificates


def test_node_cert_names_the_node_and_its_hosts(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "coordinator-1", ["127.0.0.1", "::1", "localhost", "raft.example.com"])

    assert paths == tls.CertPaths(
        cert=ca_dir / "coordinator-1.pem", key=ca_dir / "coordinator-1-key.pem", ca=ca_dir / "ca.pem"
    )
    assert mode(paths.key) == 0o600
    cert = cert_of(paths.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "coordinator-1"
    assert cert.issuer == cert_of(ca_dir / "ca.pem").subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["coordinator-1", "localhost", "raft.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(cert_of(ca_dir / "ca.pem"))


def test_node_cert_does_not_repeat_its_node_id_or_hosts(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", ["n1", "127.0.0.1", "127.0.0.1", "LOCALHOST", "localhost"])
    san = cert_of(paths.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["n1", "LOCALHOST"]
    assert len(san.get_values_for_type(x509.IPAddress)) == 1


def test_node_cert_never_outlives_its_ca(tmp_path: Path) -> None:
    tls.create_ca(tmp_path, days=10)
    paths = tls.create_node_cert(tmp_path, "n1", [], days=825)
    assert cert_of(paths.cert).not_valid_after_utc == cert_of(tmp_path / "ca.pem").not_valid_after_utc


@pytest.mark.parametrize("node_id", ["", "-a", "a-", "a_b", "a/b", "../x", "a\n", "x" * 64])
def test_a_node_id_must_be_a_dns_label(ca_dir: Path, node_id: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        tls.create_node_cert(ca_dir, node_id, [])
    assert info.value.field == "node_id"


def test_a_host_must_be_an_address_or_a_name(ca_dir: Path) -> None:
    with pytest.raises(InvalidArgument) as info:
        tls.create_node_cert(ca_dir, "n1", ["127.0.0.1", "not a host"])
    assert info.value.field == "hosts"
    assert not (ca_dir / "n1.pem").exists()


def test_a_node_cert_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no CA"):
        tls.create_node_cert(tmp_path, "n1", [])


# ---------------------------------------------------------------- load_tls


def test_load_tls_returns_the_checked_material(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "coordinator-2", ["127.0.0.1"])
    material = tls.load_tls(paths.ca, paths.cert, paths.key)
    assert material == tls.TlsMaterial(
        ca=paths.ca.read_bytes(), cert=paths.cert.read_bytes(), key=paths.key.read_bytes(), node_id="coordinator-2"
    )


@pytest.mark.parametrize("which", ["ca_file", "cert_file", "key_file"])
def test_load_tls_names_a_missing_file(ca_dir: Path, which: str) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [])
    with pytest.raises(ConfigError, match=r"absent\.pem: no such file") as info:
        tls.load_tls(*files_with(paths, which, ca_dir / "absent.pem"))
    assert info.value.field == f"high_availability.tls.{which}"


def test_load_tls_names_an_unreadable_file(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [])
    with pytest.raises(ConfigError, match="cannot read") as info:
        tls.load_tls(paths.ca, paths.cert, ca_dir)
    assert info.value.field == "high_availability.tls.key_file"


def test_material_does_not_show_its_key(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [])
    material = tls.load_tls(paths.ca, paths.cert, paths.key)
    assert b"PRIVATE KEY" in material.key
    assert "PRIVATE KEY" not in repr(material)


@pytest.mark.parametrize("which", ["ca_file", "cert_file", "key_file"])
def test_load_tls_names_a_file_that_is_not_pem(ca_dir: Path, which: str) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [])
    junk = ca_dir / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"junk\.pem") as info:
        tls.load_tls(*files_with(paths, which, junk))
    assert info.value.field == f"high_availability.tls.{which}"


def test_load_tls_refuses_a_key_in_place_of_a_certificate(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [])
    with pytest.raises(ConfigError, match="no PEM certificate") as info:
        tls.load_tls(paths.ca, paths.key, paths.key)
    assert info.value.field == "high_availability.tls.cert_file"


def test_load_tls_refuses_an_expired_certificate(ca_dir: Path) -> None:
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    paths = tls.create_node_cert(ca_dir, "n1", [], days=1, now=issued)
    with pytest.raises(ConfigError, match="expired on") as info:
        tls.load_tls(paths.ca, paths.cert, paths.key)
    assert info.value.field == "high_availability.tls.cert_file"


def test_load_tls_checks_validity_at_the_time_given(ca_dir: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [], days=30)
    assert tls.load_tls(paths.ca, paths.cert, paths.key, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=29))
    with pytest.raises(ConfigError, match="expired on") as info:
        tls.load_tls(paths.ca, paths.cert, paths.key, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=31))
    assert info.value.field == "high_availability.tls.cert_file"
    with pytest.raises(ConfigError, match="not valid before") as info:
        tls.load_tls(paths.ca, paths.cert, paths.key, now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))


def test_load_tls_refuses_an_expired_ca(tmp_path: Path) -> None:
    tls.create_ca(tmp_path, days=1, now=NOW)
    paths = tls.create_node_cert(tmp_path, "n1", [], now=NOW)
    with pytest.raises(ConfigError, match="expired on") as info:
        tls.load_tls(paths.ca, paths.cert, paths.key, now=NOW + dt.timedelta(days=2))
    assert info.value.field == "high_availability.tls.ca_file"


def test_load_tls_refuses_a_certificate_of_another_ca(ca_dir: Path, tmp_path: Path) -> None:
    tls.create_ca(tmp_path / "other")
    stranger = tls.create_node_cert(tmp_path / "other", "n1", [])
    with pytest.raises(ConfigError, match="not signed by the CA") as info:
        tls.load_tls(ca_dir / "ca.pem", stranger.cert, stranger.key)
    assert info.value.field == "high_availability.tls.cert_file"


def test_load_tls_refuses_a_ca_of_the_same_name_with_another_key(ca_dir: Path, tmp_path: Path) -> None:
    paths = tls.create_node_cert(ca_dir, "n1", [])
    tls.create_ca(tmp_path / "impostor")  # same default CN, different key
    with pytest.raises(ConfigError, match="not signed by the CA") as info:
        tls.load_tls(tmp_path / "impostor" / "ca.pem", paths.cert, paths.key)
    assert info.value.field == "high_availability.tls.cert_file"


def test_load_tls_accepts_a_certificate_of_any_ca_in_a_bundle(ca_dir: Path, tmp_path: Path) -> None:
    tls.create_ca(tmp_path / "next")
    paths = tls.create_node_cert(tmp_path / "next", "n1", [])
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((ca_dir / "ca.pem").read_bytes() + paths.ca.read_bytes())
    assert tls.load_tls(bundle, paths.cert, paths.key).node_id == "n1"


def test_load_tls_refuses_the_key_of_another_certificate(ca_dir: Path) -> None:
    one = tls.create_node_cert(ca_dir, "n1", [])
    two = tls.create_node_cert(ca_dir, "n2", [])
    with pytest.raises(ConfigError, match="not the private key") as info:
        tls.load_tls(one.ca, one.cert, two.key)
    assert info.value.field == "high_availability.tls.key_file"


def test_load_tls_names_fields_under_another_prefix(ca_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        tls.load_tls(ca_dir / "nope.pem", ca_dir / "ca.pem", ca_dir / "ca-key.pem", field_prefix="peers.tls")
    assert info.value.field == "peers.tls.ca_file"


def test_target_name_override_is_the_grpc_channel_option() -> None:
    assert tls.target_name_override("coordinator-3") == ("grpc.ssl_target_name_override", "coordinator-3")


# ---------------------------------------------------------------- the `dtf certs` command


def test_certs_show_prints_subject_sans_issuer_and_validity(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = tls.create_node_cert(ca_dir, "coordinator-1", ["10.0.0.5", "localhost"], days=100)
    assert main(["certs", "show", str(paths.cert)]) == 0
    out = capsys.readouterr().out
    assert "subject:   CN=coordinator-1" in out
    assert "SANs:      DNS:coordinator-1, DNS:localhost, IP:10.0.0.5" in out
    assert "issuer:    CN=dtf cluster CA" in out
    assert "valid, 99 days left" in out or "valid, 100 days left" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--nodes", "a,,a"], "dtf: error (--nodes): repeated node id: a"),
        (["--nodes", " , "], "dtf: error (--nodes): name at least one node id"),
        (["--nodes", "a_b"], "dtf: error (--nodes): node id 'a_b' must be"),
        (["--nodes", "a", "--hosts", "127.0.0.1,bad host"], "dtf: error (--hosts): 'bad host' is neither"),
        (["--nodes", "a", "--days", "0"], "dtf: error (--days): must be at least 1, not 0"),
    ],
)
def test_certs_create_names_the_bad_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["certs", "create", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_certs_create_refuses_an_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("")
    assert main(["certs", "create", "--out", str(tmp_path / "f"), "--nodes", "a"]) == 2
    assert capsys.readouterr().err.startswith("dtf: error (--out): ")


def test_certs_show_names_a_file_without_a_certificate(ca_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "show", str(ca_dir / "ca-key.pem")]) == 2
    assert capsys.readouterr().err == f"dtf: error (FILE): {ca_dir / 'ca-key.pem'} holds no PEM certificate\n"
