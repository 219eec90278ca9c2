"""Every Prometheus metric of the daemon (prefix ``indexer_``, units in names, low cardinality).

Labels never carry secrets or URLs with credentials: an RPC endpoint is labelled by its index.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HEAD_BLOCK = Gauge("indexer_head_block", "Latest block number reported by the node", ["chain"])
CHECKPOINT_BLOCK = Gauge("indexer_checkpoint_block", "Highest committed block", ["chain"])
FINALIZED_BLOCK = Gauge("indexer_finalized_block", "Finalized block number", ["chain"])
LAG_BLOCKS = Gauge("indexer_lag_blocks", "Head minus checkpoint", ["chain"])
CHECKPOINT_TIME = Gauge(
    "indexer_checkpoint_timestamp_seconds",
    "Block timestamp of the checkpoint (time() minus it: the lag in seconds, per chain)",
    ["chain"],
)
NODE_BEHIND = Gauge(
    "indexer_node_behind_blocks",
    "Blocks the node's head is below our checkpoint with the same hashes (0: not behind)",
    ["chain"],
)
REORGS = Counter("indexer_reorgs_total", "Reorgs detected and rolled back", ["chain"])
REORG_DEPTH = Histogram(
    "indexer_reorg_depth_blocks",
    "Depth of rolled back reorgs",
    ["chain"],
    buckets=(1, 2, 3, 5, 8, 13, 21, 34, 64, 128, 256),
)
RPC_REQUESTS = Counter(
    "indexer_rpc_requests_total", "JSON-RPC requests by method and outcome", ["method", "outcome"]
)
RPC_SECONDS = Histogram("indexer_rpc_request_seconds", "JSON-RPC request latency", ["method"])
RPC_ENDPOINT_ERRORS = Counter(
    "indexer_rpc_endpoint_errors_total",
    "Errors per RPC endpoint (by index)",
    ["chain", "endpoint", "kind"],
)
RPC_LOG_RANGE = Gauge(
    "indexer_rpc_log_range_blocks", "Current adaptive eth_getLogs range", ["chain"]
)
BATCH_COMMIT_SECONDS = Histogram("indexer_batch_commit_seconds", "Batch commit latency", ["chain"])
EVENTS_WRITTEN = Counter("indexer_events_written_total", "Event rows written", ["chain", "table"])
QUARANTINED = Counter("indexer_quarantined_logs_total", "Logs that did not decode", ["chain"])
INVALID_RPC_DATA = Counter(
    "indexer_invalid_rpc_data_total",
    "Ranges rejected because the RPC data did not verify",
    ["chain"],
)
RETRIES = Counter("indexer_step_retries_total", "Retryable failures of a step", ["chain", "kind"])
HEALTHY = Gauge("indexer_healthy", "1 when the chain follows normally, 0 when halted", ["chain"])
HALTED = Gauge("indexer_halted", "1 when the chain is halted (deep reorg, finality)", ["chain"])
LEADER = Gauge("indexer_leader", "1 when this process holds the chain's writer lock", ["chain"])
REWARDS_PUSHED = Counter("indexer_rewards_pushed_total", "Rewards pushed by outcome", ["outcome"])
RECONCILE_MISMATCHES = Counter(
    "indexer_reconcile_mismatches_total", "Discrepancies found by the reconciler", ["chain", "kind"]
)

# Rewards lifecycle, reconciler and pusher.
REWARD_BATCH_TRANSITIONS = Counter(
    "indexer_reward_batch_transitions_total",
    "Reward batch status changes driven by indexed events",
    ["chain", "to"],
)
DISCREPANCIES_OPEN = Gauge(
    "indexer_discrepancies_open", "Open discrepancies by kind", ["chain", "kind"]
)
RECONCILE_LAST_RUN = Gauge(
    "indexer_reconcile_last_run_timestamp_seconds", "Unix time of the last reconcile", ["chain"]
)
RECONCILE_SECONDS = Histogram("indexer_reconcile_seconds", "Reconcile duration", ["chain"])
RECONCILE_COVERAGE_RUNS = Gauge(
    "indexer_reconcile_coverage_runs",
    "Reconcile runs that check every balance once (1: each run checks all)",
    ["chain"],
)
RECONCILE_DRIFT_WINDOW = Gauge(
    "indexer_reconcile_drift_window_seconds",
    "Longest a wrong balance nobody touches can stay unseen (coverage runs x interval)",
    ["chain"],
)
RECONCILE_ITEMS = Counter(
    "indexer_reconcile_items_checked_total", "Items compared by the reconciler", ["chain", "kind"]
)
PUSHER_QUEUE = Gauge("indexer_pusher_queue_rewards", "Rewards waiting to be pushed", ["chain"])
PUSHER_BATCHES = Gauge("indexer_pusher_batches", "Reward batches by status", ["chain", "status"])
PUSHER_SENDER_BALANCE = Gauge(
    "indexer_pusher_sender_balance",
    "The sender account's balance in the chain's native coin (ETH, MATIC, ...), each round",
    ["chain"],
)
PUSHER_OLDEST_PENDING = Gauge(
    "indexer_pusher_oldest_pending_seconds", "Age of the oldest pending reward", ["chain"]
)
PUSHER_GAS = Counter("indexer_pusher_gas_used_total", "Gas used by pushed batches", ["chain"])
PUSHER_STUCK = Gauge(
    "indexer_pusher_stuck_transactions", "Sent transactions not mined after the timeout", ["chain"]
)
PUSHER_ERRORS = Counter(
    "indexer_pusher_errors_total", "Batches refused by the contract, by error", ["chain", "error"]
)

PUSHER_UNWATCHED = Gauge(
    "indexer_pusher_rewards_unwatched_bank",
    "Queued rewards left pending because their bank is no ProductBank this chain watches",
    ["chain"],
)
PUSHER_NO_ROLE = Gauge(
    "indexer_pusher_banks_without_role",
    "Banks with queued rewards on which the signer lacks DISTRIBUTOR_ROLE (skipped)",
    ["chain"],
)
PUSHER_FEE_CAPPED = Gauge(
    "indexer_pusher_fee_capped_transactions",
    "Stuck transactions whose replacement fee reached [signer] max_fee_gwei",
    ["chain"],
)
PUSHER_PAUSED = Gauge(
    "indexer_pusher_paused",
    "1 when the pusher stopped making batches: our sender pushed a batch this database never made",
    ["chain"],
)
PUSHER_NONCE_GAPS = Counter(
    "indexer_pusher_nonce_gaps_filled_total",
    "Account nonces below our recorded ones that the node lacked, filled by a resend or no-op",
    ["chain", "how"],
)
JUDGE_VERDICTS = Counter(
    "indexer_settlement_verdicts_total",
    "Batches settled from the contract's own state at a finalized block, by verdict",
    ["chain", "verdict"],
)
TASK_RESTARTS = Counter(
    "indexer_task_restarts_total",
    "Side tasks (pusher, reconciler, probe) restarted after an unexpected error",
    ["task"],
)


def init_chain(chain: str) -> None:
    """Create the chain's per-chain series at 0, so that dashboards and ``rate()`` or
    ``increase()`` alerts see them before the first event (Prometheus practice)."""
    for counter in (REORGS, QUARANTINED, INVALID_RPC_DATA):
        counter.labels(chain)
    for task in ("pusher", "reconciler", "endpoints"):
        TASK_RESTARTS.labels(f"{task}:{chain}")
    for histogram in (REORG_DEPTH, BATCH_COMMIT_SECONDS):
        histogram.labels(chain)
    for gauge in (
        HALTED,
        LEADER,
        PUSHER_UNWATCHED,
        PUSHER_NO_ROLE,
        PUSHER_FEE_CAPPED,
        PUSHER_PAUSED,
        NODE_BEHIND,
    ):
        gauge.labels(chain)


RPC_ENDPOINT_SECONDS = Histogram(
    "indexer_rpc_endpoint_request_seconds",
    "HTTP round-trip latency per RPC endpoint (by index)",
    ["chain", "endpoint"],
)
RPC_ENDPOINT_HEAD_LAG = Gauge(
    "indexer_rpc_endpoint_head_lag_blocks",
    "Blocks an RPC endpoint's head is behind the best endpoint of its chain",
    ["chain", "endpoint"],
)
RPC_ENDPOINT_UP = Gauge(
    "indexer_rpc_endpoint_up",
    "1 when the RPC endpoint answered its last head probe",
    ["chain", "endpoint"],
)
RPC_ENDPOINT_WRONG_CHAIN = Gauge(
    "indexer_rpc_endpoint_wrong_chain",
    "1 when the RPC endpoint answered another chain id and was taken out of rotation",
    ["chain", "endpoint"],
)
WS_CONNECTED = Gauge(
    "indexer_ws_connected",
    "1 while the newHeads subscription of ws_url is open (0: the follower polls)",
    ["chain"],
)
WS_HEADS = Counter("indexer_ws_heads_total", "newHeads notifications received", ["chain"])
WS_RECONNECTS = Counter(
    "indexer_ws_reconnects_total", "newHeads subscriptions lost and opened again", ["chain"]
)

# The backend's HTTP API (indexer.api, indexer.stream).
API_REQUESTS = Counter(
    "indexer_api_requests_total", "HTTP API requests by route and status", ["route", "status"]
)
API_STREAM_CLIENTS = Gauge("indexer_api_stream_clients", "Live update (SSE) clients connected")
API_STREAM_DROPPED = Counter(
    "indexer_api_stream_dropped_total",
    "Live update clients dropped as too slow (queue_full: wake-ups not taken; write_timeout)",
    ["reason"],
)
