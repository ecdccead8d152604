"""`dtf certs`: the cluster CA and the coordinators' certificates for mutual TLS on the Raft port."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dtf_common.errors import DtfError, InvalidArgument

if TYPE_CHECKING:
    from dtf_common.tls import CertificateInfo

DEFAULT_HOSTS = "127.0.0.1,localhost"

# the fields `dtf_common.tls` names in its errors, as the options of `dtf certs create`
_OPTION_OF_FIELD = {"directory": "--out", "node_id": "--nodes", "hosts": "--hosts", "days": "--days"}


def add_certs_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("certs", help="create and inspect certificates for the coordinators' Raft port")
    csub = p.add_subparsers(dest="certs_command", required=True)

    c = csub.add_parser(
        "create",
        help="create (or reuse) the cluster CA and issue one certificate per coordinator",
        description="Creates DIR/ca.pem and DIR/ca-key.pem unless they exist (then they are reused), "
        "and DIR/<node>.pem and DIR/<node>-key.pem for every node. Keep ca-key.pem off the coordinators.",
    )
    c.add_argument("--out", required=True, metavar="DIR", help="directory of the CA and the certificates")
    c.add_argument(
        "--nodes", required=True, metavar="ID,ID,...", help="coordinator ids, e.g. coordinator-1,coordinator-2"
    )
    c.add_argument(
        "--hosts",
        default=DEFAULT_HOSTS,
        metavar="HOST,HOST,...",
        help=f"IP addresses and DNS names added to every node's SANs (default {DEFAULT_HOSTS})",
    )
    c.add_argument("--days", type=int, default=825, help="validity of the node certificates (default 825)")
    c.add_argument("--force", action="store_true", help="replace an existing CA (its certificates stop working)")
    c.set_defaults(func=cmd_certs_create)

    s = csub.add_parser("show", help="print a certificate's subject, SANs, issuer and validity")
    s.add_argument("file", metavar="FILE", help="a PEM certificate")
    s.set_defaults(func=cmd_certs_show)


def cmd_certs_create(args: argparse.Namespace) -> int:
    import yaml

    from dtf_common import tls

    out = Path(args.out)
    nodes = _split(args.nodes)
    hosts = _split(args.hosts)
    if not nodes:
        raise InvalidArgument("name at least one node id", field="--nodes")
    duplicates = sorted({n for n in nodes if nodes.count(n) > 1})
    if duplicates:
        raise InvalidArgument(f"repeated node id: {', '.join(duplicates)}", field="--nodes")
    if args.days < 1:
        raise InvalidArgument(f"must be at least 1, not {args.days}", field="--days")
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"{out} is not a directory", field="--out")

    with _as_options():
        for node in nodes:
            tls.check_node_id(node)
        tls.check_hosts(hosts)
        reused = not args.force and (out / tls.CA_CERT).exists() and (out / tls.CA_KEY).exists()
        ca = tls.create_ca(out, force=args.force)
        issued = [tls.create_node_cert(out, node, hosts, days=args.days) for node in nodes]

    print(f"CA ({'reused' if reused else 'created'}): {ca.cert}  key: {ca.key}")
    for node, paths in zip(nodes, issued, strict=True):
        print(f"{node}: {paths.cert}  key: {paths.key}")
    print()
    print(f"Copy {tls.CA_CERT} and a node's two files to that node; keep {tls.CA_KEY} elsewhere.")
    for node, paths in zip(nodes, issued, strict=True):
        section = {
            "high_availability": {
                "tls": {
                    "ca_file": str(paths.ca.resolve()),
                    "cert_file": str(paths.cert.resolve()),
                    "key_file": str(paths.key.resolve()),
                }
            }
        }
        print()
        print(f"# {node}")
        print(yaml.safe_dump(section, sort_keys=False).rstrip())
    return 0


def cmd_certs_show(args: argparse.Namespace) -> int:
    from dtf_common import tls

    path = Path(args.file)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror or exc}", field="FILE") from None
    try:
        infos = tls.certificate_infos(pem)
    except ValueError:
        raise InvalidArgument(f"{path} holds no PEM certificate", field="FILE") from None

    now = dt.datetime.now(dt.UTC)
    for i, info in enumerate(infos):
        if i:
            print()
        sans = [f"DNS:{n}" for n in info.dns_names] + [f"IP:{a}" for a in info.ip_addresses]
        print(f"subject:   {info.subject}")
        print(f"SANs:      {', '.join(sans) or '-'}")
        print(f"issuer:    {info.issuer}")
        validity = f"{info.not_before:%Y-%m-%d %H:%M} to {info.not_after:%Y-%m-%d %H:%M} UTC"
        print(f"validity:  {validity} ({_state(info, now)})")
        print(f"CA:        {'yes' if info.is_ca else 'no'}")
        print(f"serial:    {info.serial:x}")
        print(f"sha256:    {info.sha256}")
    return 0


def _state(info: CertificateInfo, now: dt.datetime) -> str:
    if now < info.not_before:
        return "not yet valid"
    if now > info.not_after:
        return f"expired {(now - info.not_after).days} days ago"
    return f"valid, {(info.not_after - now).days} days left"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@contextmanager
def _as_options() -> Iterator[None]:
    """Name the command-line option, not the library's parameter, in an error."""
    try:
        yield
    except DtfError as exc:
        if exc.field in _OPTION_OF_FIELD:
            exc.field = _OPTION_OF_FIELD[exc.field]
        raise
