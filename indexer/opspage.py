"""The ops page at ``/`` of the API listener: one server-rendered HTML document (no script,
no build step) with the chains, their lag, the last reorgs, open discrepancies and recent
batches; it reloads itself every ``REFRESH_S`` seconds. Every value is HTML-escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

REFRESH_S = 5

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { padding: .2em .6em; border-bottom: 1px solid #ddd;
  text-align: left; font-variant-numeric: tabular-nums; }
.bad { color: #b00; font-weight: 600; } .ok { color: #070; } .muted { color: #777; }
"""


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="muted">-</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    text = str(value)
    if text.startswith("halted: "):
        return f'<td class="bad">{escape(text)}</td>'
    return f"<td>{escape(text)}</td>"


def _table(
    section: str, title: str, columns: Sequence[str], rows: Sequence[dict[str, Any]], empty: str
) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="muted">{escape(empty)}</td></tr>'
    else:
        body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows)
    return (
        f'<section id="{section}"><h2>{escape(title)}</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>"
    )


def _chain_rows(chains: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in chains:
        state = f"halted: {c['halted_reason']}" if c.get("halted_reason") else "following"
        out.append({**c, "state": state})
    return out


def render(facts: dict[str, Any], *, generated_at: str) -> str:
    """The page for ``apidata.ops_facts``."""
    chains = _chain_rows(facts["chains"])
    halted = [c for c in chains if c.get("halted_reason")]
    summary = (
        f'<p class="bad">{len(halted)} chain(s) halted</p>'
        if halted
        else f'<p class="ok">{len(chains)} chain(s), none halted</p>'
    )
    parts = [
        _table(
            "chains",
            "Chains",
            (
                "chain_id",
                "name",
                "state",
                "head",
                "checkpoint",
                "lag",
                "finalized_block",
                "leader",
                "last_reorg_at",
                "open_discrepancies",
            ),
            chains,
            "no chain indexed yet",
        ),
        _table(
            "reorgs",
            "Last reorgs",
            ("detected_at", "chain_id", "kind", "depth", "common_ancestor"),
            facts["reorgs"],
            "no reorg",
        ),
        _table(
            "discrepancies",
            "Open discrepancies",
            ("detected_at", "chain_id", "kind", "subject", "expected", "actual", "at_block"),
            facts["discrepancies"],
            "no open discrepancy",
        ),
        _table(
            "batches",
            "Recent batches",
            (
                "id",
                "chain_id",
                "bank",
                "status",
                "reward_count",
                "total_amount",
                "tx_hash",
                "block_number",
                "created_at",
                "error",
            ),
            facts["batches"],
            "no batch yet",
        ),
    ]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        "<title>rewardsync ops</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>rewardsync</h1>{summary}" + "".join(parts) + f'<p class="muted">generated '
        f"{escape(generated_at)}, refreshes every {REFRESH_S} s · "
        '<a href="/v1/status">/v1/status</a> · <a href="/v1/openapi.json">OpenAPI</a></p>'
        "</body></html>"
    )
