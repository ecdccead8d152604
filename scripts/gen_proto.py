"""Regenerate the protobuf and gRPC code under src/dtf_common/pb from proto/.

This script is the only writer of generated code (`make proto`). With --check it
regenerates into a temporary folder and fails when the committed code differs.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "dtf_common" / "pb"
PKG = "dtf_common.pb"


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    outputs = [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", *outputs, *protos])
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    # protoc writes imports relative to the proto root (`from dtf.v1 import x_pb2`);
    # rewrite them so the generated modules live inside our package.
    for path in out.rglob("*.py*"):
        text = path.read_text()
        fixed = re.sub(r"^from dtf\.v1 import", f"from {PKG}.dtf.v1 import", text, flags=re.M)
        fixed = re.sub(r"^import dtf\.v1\.", f"import {PKG}.dtf.v1.", fixed, flags=re.M)
        path.write_text(fixed)
    for folder in [out, *[p for p in out.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    mismatch = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1]
    return not mismatch and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            if not OUT_DIR.exists() or not same_tree(Path(tmp), OUT_DIR):
                print("generated protobuf code is stale: run `make proto` and commit the result", file=sys.stderr)
                return 1
        print("generated protobuf code is up to date")
        return 0
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    generate(OUT_DIR)
    print(f"generated {sum(1 for _ in OUT_DIR.rglob('*_pb2*.py*'))} files under {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
