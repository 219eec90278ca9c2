"""The effective configuration written back as TOML with its secrets masked: the output of
``indexer print-config``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from indexer.config import ChainSettings, Settings
from indexer.log import MASK, mask_url


def _mask_rpc(url: str) -> str:
    """Scheme, host and port only: the path and query of a provider URL carry its API key."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    hidden = parts.path.strip("/") or parts.query
    return f"{parts.scheme}://{host}" + (f"/{MASK}" if hidden else "")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # JSON strings are valid TOML basic strings
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def _lines(table: Mapping[str, Any], indent: str = "") -> list[str]:
    return [f"{indent}{k} = {_toml(v)}" for k, v in table.items() if v is not None]


def _render_chain(chain: ChainSettings) -> list[str]:
    out = ["", "[[chains]]"]
    out += _lines(
        {
            "name": chain.name,
            "chain_id": chain.chain_id,
            "rpc_urls": [_mask_rpc(u) for u in chain.rpc_urls],
            "confirmations": chain.confirmations,
            "max_reorg_depth": chain.max_reorg_depth,
            "poll_interval": chain.poll_interval_s,
            "batch_blocks": chain.batch_blocks,
            "finality": chain.finality,
            "multicall3": chain.multicall3 or False,
            "max_response_mb": chain.max_response_bytes // (1024 * 1024),
            "address_chunk": chain.address_chunk,
            "topics_above": chain.topics_above,
            "ws_url": None if chain.ws_url is None else _mask_rpc(chain.ws_url),
        }
    )
    for c in chain.contracts:
        fac = c.factory
        table = {"name": c.name, "abi": c.abi_path, "address": c.address}
        table |= {"start_block": c.start_block}
        if fac is not None:
            table["factory"] = {
                "contract": fac.contract,
                "event": fac.event,
                "parameter": fac.parameter,
            }
        out += ["", "  [[chains.contracts]]", *_lines(table, "  ")]
    return out


def render(settings: Settings) -> str:
    """The effective configuration as TOML, secrets masked (for ``indexer print-config``).

    Every key is shown with its effective value, defaults included. Masked: the database
    password, signer keys, and the path and query of RPC URLs (provider API keys)."""
    svc = settings.service
    out = [f"# effective configuration of {settings.config_path or '(no file)'}; secrets masked"]
    out += ["[database]", f"url = {_toml(mask_url(settings.database_url.reveal()))}"]
    host, port = svc.metrics_listen
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    out += ["", "[service]"]
    out += _lines(
        {
            "metrics_listen": listen,
            "reconcile_interval": svc.reconcile_interval_s,
            "reconcile_max_views": svc.reconcile_max_views,
            "reconcile_share": svc.reconcile_share,
            "ready_max_lag_blocks": svc.ready_max_lag_blocks,
            "shutdown_grace": svc.shutdown_grace_s,
        }
    )
    for chain in settings.chains:
        out += _render_chain(chain)
    if (signer := settings.signer) is not None:
        out += ["", "[signer]", f'key = "{MASK}"']
        out += [f'sender_key = "{MASK}"'] if signer.sender_key is not None else []
        out += _lines(
            {
                "max_batch": signer.max_batch,
                "deadline": signer.deadline_s,
                "push_interval": signer.push_interval_s,
                "replace_after": signer.replace_after_s,
                "max_fee_gwei": signer.max_fee_gwei,
            }
        )
    if (api := settings.api) is not None:
        host, port = api.listen
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        out += ["", "[api]", f"listen = {_toml(listen)}"]
        out += [f'token_file = "{MASK}"'] if api.token is not None else []
    return "\n".join(out) + "\n"
