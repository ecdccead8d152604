"""Write docs/configuration.md from the configuration models (`make docs`); --check fails when stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import BaseModel

from dtf_common.config import CoordinatorConfig, WorkerConfig

OUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

HEADER = """# Configuration

Coordinators read `coordinator.yaml` (`dtf coordinator --config`), workers `worker.yaml`
(`dtf worker --config`). Both are YAML with the sections below. Loading order:

1. the defaults listed here;
2. the file, with `${VAR}` and `${VAR:-default}` replaced from the environment;
3. environment overrides `DTF_<SECTION>__<KEY>=value` (value parsed as YAML), e.g.
   `DTF_SERVER__PORT=9090` or `DTF_LOAD_BALANCER__STRATEGY=least_loaded`.

An unknown key or an invalid value stops start-up with a message naming its dotted path,
e.g. `coordinator.yaml: invalid configuration: server.prot: unknown key`.

The coordinator refuses to start when `security.jwt_secret` is empty, a placeholder or
shorter than 16 characters, unless `security.local_mode: true` (for loopback use).
`dtf up` generates a random secret per data directory.

Examples with every section: [examples/coordinator.yaml](../examples/coordinator.yaml),
[examples/worker.yaml](../examples/worker.yaml). This page is generated from the
configuration models by `make docs`.
"""


def section_tables(title: str, model: type[BaseModel]) -> list[str]:
    lines = [f"## {title}", ""]
    for name, field in model.model_fields.items():
        sub = field.annotation
        assert isinstance(sub, type) and issubclass(sub, BaseModel)
        lines += [f"### `{name}`", "", "| key | default | meaning |", "|---|---|---|"]
        for key, f in sub.model_fields.items():
            default = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            if isinstance(default, BaseModel):
                default = default.model_dump()
            lines.append(f"| `{key}` | `{default!r}` | {f.description or ''} |")
        lines.append("")
    return lines


def render() -> str:
    lines = [HEADER]
    lines += section_tables("coordinator.yaml", CoordinatorConfig)
    lines += section_tables("worker.yaml", WorkerConfig)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    text = render()
    if parser.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            print("docs/configuration.md is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
