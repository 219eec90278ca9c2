"""The OpenAPI 3.1 document of the HTTP API, served at ``/v1/openapi.json``; a test validates
it and holds its paths equal to the routes the application registers."""

from __future__ import annotations

from typing import Any

AMOUNT = {"type": "string", "pattern": "^[0-9]+$", "description": "decimal integer (uint256)"}
ADDRESS = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$", "description": "EIP-55 address"}
HEX32 = {"type": "string", "pattern": "^0x[0-9a-f]{64}$"}
NULL_AMOUNT = {"oneOf": [AMOUNT, {"type": "null"}]}
INT = {"type": "integer"}
NULL_INT = {"type": ["integer", "null"]}
NULL_STR = {"type": ["string", "null"]}
TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = sorted(props)
    return out


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


CHAIN_FILTER = _param("chain_id", "query", INT, "only this chain")
WALLET_PATH = _param("address", "path", ADDRESS, "the wallet (lowercase or EIP-55)")

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": {"type": "string"}}),
    "Balance": _obj(
        {
            "chain_id": INT,
            "token": ADDRESS,
            "claimable": AMOUNT,
            "claimed": AMOUNT,
            "in_flight": AMOUNT,
            "queued": AMOUNT,
            "failed": AMOUNT,
            "last_error": NULL_STR,
        }
    ),
    "WalletOverview": _obj(
        {"wallet": ADDRESS, "balances": {"type": "array", "items": _ref("Balance")}}
    ),
    "HistoryItem": {
        "type": "object",
        "required": [
            "kind",
            "chain_id",
            "block_number",
            "log_index",
            "tx_hash",
            "contract",
            "token",
            "amount",
        ],
        "properties": {
            "kind": {"enum": ["added", "claimed", "pushed"]},
            "chain_id": INT,
            "block_number": INT,
            "log_index": INT,
            "tx_hash": {"type": "string"},
            "block_time": TIME,
            "contract": ADDRESS,
            "token": ADDRESS,
            "amount": AMOUNT,
            "batch_id": {"type": "integer", "description": "pushed items only"},
            "external_keys": {"type": "array", "items": {"type": "string"}},
        },
    },
    "HistoryPage": _obj(
        {
            "wallet": ADDRESS,
            "items": {"type": "array", "items": _ref("HistoryItem")},
            "next_cursor": NULL_STR,
        }
    ),
    "RewardStatus": _obj(
        {
            "id": INT,
            "chain_id": INT,
            "bank": ADDRESS,
            "campaign_id": HEX32,
            "token": ADDRESS,
            "wallet": ADDRESS,
            "amount": AMOUNT,
            "external_key": {"type": "string"},
            "status": {"enum": ["pending", "pushed", "confirmed", "failed"]},
            "batch_id": NULL_INT,
            "batch_status": NULL_STR,
            "tx_hash": NULL_STR,
            "confirmed_block": NULL_INT,
            "error": NULL_STR,
        }
    ),
    "EnqueueRequest": {
        **_obj(
            {
                "chain_id": {"type": "integer", "minimum": 1},
                "bank": ADDRESS,
                "campaign_id": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"},
                "token": ADDRESS,
                "wallet": ADDRESS,
                "amount": AMOUNT,
                "external_key": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        ),
        "additionalProperties": False,
    },
    "EnqueueResult": _obj(
        {"id": INT, "status": {"type": "string"}, "external_key": {"type": "string"}}
    ),
    "Campaign": _obj(
        {
            "chain_id": INT,
            "bank": ADDRESS,
            "campaign_id": HEX32,
            "token": ADDRESS,
            "uncapped": {"type": "boolean"},
            "remaining": NULL_AMOUNT,
            "pushed": AMOUNT,
            "queued": AMOUNT,
            "in_flight": AMOUNT,
            "deactivated": {"type": "boolean"},
        }
    ),
    "Campaigns": _obj({"campaigns": {"type": "array", "items": _ref("Campaign")}}),
    "MemberStats": _obj({"member": ADDRESS, "contributed": AMOUNT, "received": AMOUNT}),
    "Chama": _obj(
        {
            "chain_id": INT,
            "contract": ADDRESS,
            "chama_id": AMOUNT,
            "name": {"type": "string"},
            "creator": ADDRESS,
            "contribution_amount": AMOUNT,
            "members": INT,
            "contributed": AMOUNT,
            "paid_out": AMOUNT,
            "current_round": INT,
            "completed": {"type": "boolean"},
            "member_stats": {"type": "array", "items": _ref("MemberStats")},
        }
    ),
    "Chamas": _obj({"chamas": {"type": "array", "items": _ref("Chama")}}),
    "ChainStatus": _obj(
        {
            "chain_id": INT,
            "name": NULL_STR,
            "checkpoint": INT,
            "finalized_block": NULL_INT,
            "head": NULL_INT,
            "lag": NULL_INT,
            "leader": {"type": ["boolean", "null"]},
            "halted_reason": NULL_STR,
            "updated_at": TIME,
            "last_reorg_depth": NULL_INT,
            "last_reorg_at": TIME,
            "open_discrepancies": INT,
        }
    ),
    "Status": _obj({"chains": {"type": "array", "items": _ref("ChainStatus")}}),
}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": ok, "400": _error("a bad parameter")},
        }
    }


def document() -> dict[str, Any]:
    """The whole document (a fresh dict)."""
    wallet = _get(
        "A wallet's money per chain and token: claimable, claimed, in flight, queued, failed",
        [WALLET_PATH],
        _json(_ref("WalletOverview"), "the overview"),
    )
    history = _get(
        "A wallet's RewardAdded, RewardClaimed and pushed batches, newest first",
        [
            WALLET_PATH,
            _param("cursor", "query", {"type": "string"}, "next_cursor of the previous page"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "≤ 500"),
            CHAIN_FILTER,
        ],
        _json(_ref("HistoryPage"), "one page; next_cursor null on the last"),
    )
    reward = _get(
        "One reward by its idempotency key",
        [_param("external_key", "path", {"type": "string"}, "the backend's key")],
        _json(_ref("RewardStatus"), "where the reward is"),
    )
    reward["get"]["responses"]["404"] = _error("no such reward")
    enqueue = {
        "post": {
            "summary": "Queue a reward (idempotent on external_key)",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("EnqueueRequest")}},
            },
            "responses": {
                "200": _json(_ref("EnqueueResult"), "queued, or the same reward again"),
                "400": _error("a bad field"),
                "401": _error("no bearer token"),
                "403": _error("a wrong token, or no token configured"),
                "409": _error("the external_key is queued with other values"),
            },
        }
    }
    campaigns = _get(
        "Campaign budgets as the chain and the queue see them",
        [
            CHAIN_FILTER,
            _param("bank", "query", ADDRESS, "only this bank"),
            _param("campaign_id", "query", HEX32, "only this campaign"),
        ],
        _json(_ref("Campaigns"), "the budgets"),
    )
    campaign = _get(
        "The budgets of one campaign id (every bank and token)",
        [_param("campaign_id", "path", HEX32, "the campaign"), CHAIN_FILTER],
        _json(_ref("Campaigns"), "the budgets"),
    )
    chama = _get(
        "A chama's contributions, payouts, current round and members",
        [_param("chama_id", "path", {"type": "integer", "minimum": 0}, "the id"), CHAIN_FILTER],
        _json(_ref("Chamas"), "one entry per chain and ChamaSavings contract"),
    )
    chama["get"]["responses"]["404"] = _error("no such chama")
    status = _get("Sync status per chain", [], _json(_ref("Status"), "per chain"))
    stream = _get(
        "Live updates of one wallet (Server-Sent Events: overview, reward, reorg)",
        [
            _param("wallet", "query", ADDRESS, "the wallet"),
            _param("Last-Event-ID", "header", {"type": "string"}, "resume after this event"),
        ],
        {"description": "an event stream", "content": {"text/event-stream": {}}},
    )
    stream["get"]["parameters"][0]["required"] = True
    spec = _get("This document", [], {"description": "OpenAPI 3.1", "content": {}})
    ops = _get(
        "The ops page (HTML, refreshes itself)",
        [],
        {"description": "HTML", "content": {"text/html": {}}},
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "rewardsync", "version": "1"},
        "paths": {
            "/": ops,
            "/v1/openapi.json": spec,
            "/v1/status": status,
            "/v1/wallets/{address}": wallet,
            "/v1/wallets/{address}/history": history,
            "/v1/rewards": enqueue,
            "/v1/rewards/{external_key}": reward,
            "/v1/campaigns": campaigns,
            "/v1/campaigns/{campaign_id}": campaign,
            "/v1/chamas/{chama_id}": chama,
            "/v1/stream": stream,
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
