"""The ledger contract: Vyper source in ``assets/contracts/``, compiled once and cached.

The cache file name carries a hash of the contract source, every module it imports (snekmate) and
the compiler version, so editing the source or upgrading vyper/snekmate rebuilds it, and an unchanged
source never pays for the compiler again (about half a second, but it imports all of vyper).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import ASSETS
from core.chain.errors import ChainError

CONTRACTS_DIR = ASSETS / "contracts"
LEDGER_SOURCE = CONTRACTS_DIR / "ContributionLedger.vy"


@dataclass(frozen=True)
class CompiledContract:
    """ABI + creation bytecode of one contract, with the hash of what it was compiled from."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    source_hash: str


def _snekmate_dir() -> Path:
    import snekmate

    return (
        Path(snekmate.__file__).resolve().parent
        if getattr(snekmate, "__file__", None)
        else Path(next(iter(snekmate.__path__))).resolve()
    )


def source_hash(source: Path = LEDGER_SOURCE) -> str:
    """sha256 over the contract source, every snekmate module and the vyper version."""
    import vyper

    digest = hashlib.sha256()
    digest.update(f"vyper {vyper.__version__}\n".encode())
    digest.update(source.read_bytes())
    for path in sorted(_snekmate_dir().rglob("*.vy*")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def compile_ledger(cache_dir: Path | str, source: Path = LEDGER_SOURCE) -> CompiledContract:
    """ABI and bytecode of the ledger: from ``cache_dir`` when the source is unchanged, else compiled."""
    if not source.is_file():
        raise ChainError(f"The contract source {source} is missing", hint="reinstall the studio (assets/contracts)")
    key = source_hash(source)
    cache = Path(cache_dir) / f"{source.stem}-{key[:16]}.json"
    if cache.is_file():
        data = json.loads(cache.read_text())
        return CompiledContract(source.stem, data["abi"], data["bytecode"], key)
    compiled = _compile(source, key)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:  # write-then-rename: a crash never leaves a half cache file
        json.dump({"abi": compiled.abi, "bytecode": compiled.bytecode, "source_hash": key}, handle)
    os.replace(tmp, cache)
    return compiled


def _compile(source: Path, key: str) -> CompiledContract:
    from vyper.compiler import compile_code
    from vyper.compiler.input_bundle import FilesystemInputBundle

    search = [source.parent] + [Path(p) for p in sys.path if p and Path(p).is_dir()]
    try:
        out = compile_code(
            source.read_text(),
            contract_path=source.name,
            resolved_path=source,
            input_bundle=FilesystemInputBundle(search),
            output_formats=["abi", "bytecode"],
        )
    except Exception as exc:  # vyper raises many exception types; all mean the same thing here
        raise ChainError(
            f"Compiling {source.name} failed: {exc}", hint="fix the contract source or reinstall vyper/snekmate"
        ) from exc
    return CompiledContract(source.stem, out["abi"], out["bytecode"], key)
