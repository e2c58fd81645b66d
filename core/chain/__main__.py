"""Chain CLI: ``launch.py chain deploy|status`` (or ``python -m core.chain ...``).

``deploy`` puts a fresh ledger contract on the chain at ``STUDIO_CHAIN_RPC_URL`` with the operator key
from the environment (``STUDIO_CHAIN_OPERATOR_KEY``, or ``STUDIO_CHAIN_KEYSTORE`` +
``STUDIO_CHAIN_KEYSTORE_PASSWORD``) and prints the address to put in ``STUDIO_CHAIN_CONTRACT``.
``status`` shows the batches of a data dir (the server must be stopped: DuckDB has one writer).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import StudioError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="launch.py chain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    deploy = sub.add_parser("deploy", help="deploy the ledger contract to STUDIO_CHAIN_RPC_URL")
    deploy.add_argument("--rpc-url", default=os.environ.get("STUDIO_CHAIN_RPC_URL"))
    deploy.add_argument("--cache-dir", default=str(Path("data") / "chain" / "build"))
    status = sub.add_parser("status", help="batches of a data dir")
    status.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR", "data"))
    args = parser.parse_args(argv)
    try:
        if args.command == "deploy":
            from web3 import HTTPProvider, Web3

            from core.chain.contract import compile_ledger
            from core.chain.ledger import Ledger, load_operator

            if not args.rpc_url:
                print("error: give --rpc-url or set STUDIO_CHAIN_RPC_URL", file=sys.stderr)
                return 2
            w3 = Web3(HTTPProvider(args.rpc_url, request_kwargs={"timeout": 30}))
            ledger = Ledger.deploy(w3, compile_ledger(args.cache_dir), load_operator())
            print(
                f"STUDIO_CHAIN_RPC_URL={args.rpc_url}\nSTUDIO_CHAIN_ID={ledger.chain_id}\n"
                f"STUDIO_CHAIN_CONTRACT={ledger.address}"
            )
        else:
            from core.chain import views
            from storage.db import Database

            if not (Path(args.data_dir) / "studio.duckdb").is_file():
                print(f"error: no studio database in {args.data_dir}", file=sys.stderr)
                return 2
            db = Database.in_data_dir(args.data_dir)
            for b in views.batches(db):
                print(
                    f"batch {b['id']}: {b['status']} {b['contributors']} contributors, {b['contributions']} "
                    f"contributions, {views.tokens(b['total_amount'])} tokens, tx {b['tx_hash'] or '-'}"
                    + (f", last error: {b['last_error']}" if b["last_error"] else "")
                )
            db.close()
    except StudioError as exc:
        print(f"error [{exc.code}]: {exc.message}" + (f" — {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
