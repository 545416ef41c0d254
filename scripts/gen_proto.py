"""Regenerate src/meshsec/_proto from proto/ (run: make proto).

The generated modules are checked in so that installing meshsec needs no protoc. Imports inside
the generated code are rewritten to be package-relative, so they never clash with another
distribution's top-level ``workload_pb2`` (py-spiffe ships one).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "meshsec" / "_proto"

# proto file -> flat module stem inside meshsec._proto
PROTOS = {
    "istio/v1/auth/ca.proto": "istio_ca",
    "spiffe/workload.proto": "spiffe_workload",
}


# Our messages live in a private descriptor pool: the SPIFFE Workload API proto is package-less,
# so sharing the default pool with py-spiffe (which registers the same names) would fail with
# "duplicate symbol" in any process that imports both.
INIT = '''"""Generated protobuf/gRPC modules (scripts/gen_proto.py). Do not edit."""

from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf import struct_pb2 as _struct_pb2

POOL = _descriptor_pool.DescriptorPool()
POOL.AddSerializedFile(_struct_pb2.DESCRIPTOR.serialized_pb)
'''


def main() -> int:
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        for proto, stem in PROTOS.items():
            staged = Path(tmp) / f"{stem}.proto"
            shutil.copy(PROTO_DIR / proto, staged)
            rc = protoc.main(
                [
                    "grpc_tools.protoc",
                    f"-I{tmp}",
                    f"-I{include}",
                    f"--python_out={tmp}",
                    f"--pyi_out={tmp}",
                    f"--grpc_python_out={tmp}",
                    str(staged),
                ]
            )
            if rc != 0:
                print(f"protoc failed for {proto}", file=sys.stderr)
                return rc
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(tmp).glob("*_pb2*")):
            text = path.read_text()
            text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
            text = text.replace(
                "_descriptor_pool.Default().AddSerializedFile(",
                "_PRIVATE_POOL.AddSerializedFile(",
            ).replace(
                "_sym_db = _symbol_database.Default()",
                "from . import POOL as _PRIVATE_POOL\n\n_sym_db = _symbol_database.Default()",
            )
            (OUT_DIR / path.name).write_text(text)
    (OUT_DIR / "__init__.py").write_text(INIT)
    print(f"generated {len(PROTOS)} protos into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
