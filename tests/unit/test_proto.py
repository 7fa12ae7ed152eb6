"""The generated gRPC code in ipamd/rpc/pb is what proto/generate.py makes from proto/ipamd.proto."""

from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "ipamd" / "rpc" / "pb"


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generate = runpy.run_path(str(ROOT / "proto" / "generate.py"))["generate"]
    fresh = generate(tmp_path / "pb")
    assert fresh, "generate() produced nothing"
    names = sorted(p.name for p in fresh)
    assert names == sorted(p.name for p in COMMITTED.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    for path in fresh:
        committed = (COMMITTED / path.name).read_text()
        assert path.read_text() == committed, f"{path.name} is stale: run python proto/generate.py"


def test_service_has_every_cni_verb() -> None:
    from ipamd.rpc.pb import ipamd_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["IpamBackend"]
    assert sorted(m.name for m in service.methods) == ["Add", "Check", "Del", "Gc", "Status"]
    assert pb.DESCRIPTOR.package == "cloudcni.v1"
