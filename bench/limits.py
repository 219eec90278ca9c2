"""The two limits the backfill is compared with, each run as its own process by bench/run.py
(so its wall time and peak RSS are its own):

- ``rpc``: a lean aiohttp + orjson client fetching every watched log of the range with
  ``eth_getLogs`` in spans of ``--span`` blocks, ``--inflight`` requests at a time, nothing
  else (no validation, no headers, no database); bench/run.py keeps the best of 1, 2, 4 and 8
  in flight: what the node can serve.
- ``db``: COPY of the same logs, decoded and written by the indexer's own ``sink.write_rows``
  (headers, events, quarantine) into the same tables of a freshly migrated database (the
  sink's write path, CHECKs and indexes included); with ``--bare`` the same COPY text into
  copies of those tables that keep only their primary key: what PostgreSQL can take. Only the
  COPY transactions are timed.

Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from indexer import runtime
from indexer.config import load
from indexer.decode import EVENT_TABLE_NAMES, Event, Undecodable
from indexer.rpcdata import parse_header, parse_log
from indexer.sink import Batch, write_rows
from indexer.types import BlockHeader

_JSON = {"Content-Type": "application/json"}


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with session.post(url, data=orjson.dumps(body), headers=_JSON) as resp:
        return orjson.loads(await resp.read())


def _spans(first: int, last: int, span: int) -> list[tuple[int, int]]:
    return [(s, min(last, s + span - 1)) for s in range(first, last + 1, span)]


async def fetch_logs(
    session: aiohttp.ClientSession, url: str, addresses: list[str], lo: int, hi: int
) -> list[Any]:
    flt = {"fromBlock": hex(lo), "toBlock": hex(hi), "address": addresses}
    answer = await _post(
        session, url, {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [flt]}
    )
    return list(answer["result"])


async def rpc_limit(
    url: str, addresses: list[str], first: int, last: int, span: int, inflight: int = 1
) -> dict[str, Any]:
    t0 = time.perf_counter()
    gate = asyncio.Semaphore(inflight)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(lo: int, hi: int) -> int:
            async with gate:
                return len(await fetch_logs(session, url, addresses, lo, hi))

        counts = await asyncio.gather(*(one(lo, hi) for lo, hi in _spans(first, last, span)))
    return {"events": sum(counts), "wall_s": time.perf_counter() - t0}


# Every table the sink COPYs into, as a twin with its primary key and nothing else.
_BARE_TABLES = tuple(dict.fromkeys(("blocks", *EVENT_TABLE_NAMES, "quarantine")))


async def _bare_twins(con: asyncpg.Connection) -> None:
    """``bare_<table>``: same columns and defaults, no CHECK, no index but the primary key."""
    for table in _BARE_TABLES:
        pk = await con.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = $1::regclass AND contype = 'p'",
            table,
        )
        await con.execute(
            f"CREATE TABLE bare_{table} (LIKE {table} INCLUDING DEFAULTS INCLUDING GENERATED)"
        )
        if pk:
            await con.execute(f"ALTER TABLE bare_{table} ADD {pk}")


class _Bare:
    """A connection whose COPYs land in the bare twins (``write_rows`` is unchanged)."""

    def __init__(self, con: asyncpg.Connection) -> None:
        self.con = con

    async def copy_to_table(self, table: str, **kw: Any) -> Any:
        return await self.con.copy_to_table(f"bare_{table}", **kw)

    async def copy_records_to_table(self, table: str, **kw: Any) -> Any:
        return await self.con.copy_records_to_table(f"bare_{table}", **kw)


async def db_limit(
    url: str, dsn: str, config: str, first: int, last: int, span: int, *, bare: bool = False
) -> dict[str, Any]:
    settings = load(Path(config))
    chain = settings.chains[0]
    _spec, registry = runtime.follower_spec(chain)
    addresses = sorted({c.address for c in chain.contracts if c.address is not None})
    con = await asyncpg.connect(dsn)
    if bare:
        await _bare_twins(con)
    target: Any = _Bare(con) if bare else con
    copy_s = 0.0
    events = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            for lo, hi in _spans(first, last, span):
                logs = [parse_log(r) for r in await fetch_logs(session, url, addresses, lo, hi)]
                numbers = sorted({lg.block_number for lg in logs})
                calls = [
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "eth_getBlockByNumber",
                        "params": [hex(n), False],
                    }
                    for i, n in enumerate(numbers)
                ]
                raws = await _post(session, url, calls) if calls else []
                headers: dict[int, BlockHeader] = {}
                for item in raws:
                    h = parse_header(item["result"])
                    headers[h.number] = h
                decoded = [registry.decode(lg) for lg in logs]
                batch = Batch(
                    chain_id=chain.chain_id,
                    from_block=lo,
                    to_block=hi,
                    parent=(lo - 1, None),
                    head=headers[numbers[-1]] if numbers else BlockHeader(hi, "", "", 0),
                    headers=[headers[n] for n in numbers],
                    events=[e for e in decoded if isinstance(e, Event)],
                    quarantined=[e for e in decoded if isinstance(e, Undecodable)],
                    header_by_number=headers,
                )
                t0 = time.perf_counter()
                async with con.transaction():
                    written = await write_rows(target, batch)
                events += sum(n for table, n in written.items() if table != "blocks")
                copy_s += time.perf_counter() - t0
    finally:
        await con.close()
    return {"events": events, "wall_s": copy_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.limits")
    p.add_argument("kind", choices=["rpc", "db"])
    p.add_argument("--url", required=True)
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--last", type=int, required=True)
    p.add_argument("--span", type=int, default=2000)
    p.add_argument("--inflight", type=int, default=1)
    p.add_argument("--bare", action="store_true")
    p.add_argument("--address", action="append", default=[])
    p.add_argument("--dsn")
    p.add_argument("--config")
    a = p.parse_args(argv)
    if a.kind == "rpc":
        out = asyncio.run(rpc_limit(a.url, a.address, a.first, a.last, a.span, a.inflight))
    else:
        out = asyncio.run(db_limit(a.url, a.dsn, a.config, a.first, a.last, a.span, bare=a.bare))
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
