-- name: schema_version
-- The highest applied schema version (NULL on an empty database).
SELECT max(version) FROM schema_version;

-- name: record_schema_version
-- Record that schema.sql at this version was applied.
INSERT INTO schema_version (version) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: has_schema_table
-- Whether the schema_version table exists (an empty database has none).
SELECT to_regclass('public.schema_version') IS NOT NULL;

-- name: ensure_checkpoint
-- Create the chain's checkpoint row at start_block - 1 when the chain is new.
INSERT INTO checkpoints (chain_id, block_number, block_hash, start_block)
VALUES ($1, $2 - 1, NULL, $2) ON CONFLICT (chain_id) DO NOTHING;

-- name: load_checkpoint
-- The chain's checkpoint, finalized height seen at the last commit and halt state.
SELECT block_number, block_hash, finalized_block, halted_reason, start_block, updated_at
FROM checkpoints WHERE chain_id = $1;

-- name: lock_checkpoint
-- Lock the checkpoint row for the commit transaction (serialises writers of one chain).
SELECT block_number, block_hash, finalized_block, halted_reason
FROM checkpoints WHERE chain_id = $1 FOR UPDATE;

-- name: update_checkpoint
-- Move the checkpoint; runs inside the batch transaction.
UPDATE checkpoints
SET block_number = $2, block_hash = $3, finalized_block = GREATEST(COALESCE(finalized_block, $4), $4),
    updated_at = now()
WHERE chain_id = $1;

-- name: reset_finalized
-- After a manual rewind the finalized height we saw can no longer be trusted above the target.
UPDATE checkpoints SET finalized_block = LEAST(finalized_block, $2) WHERE chain_id = $1;

-- name: set_halted
-- Halt (reason) or resume (NULL) a chain; nothing else changes.
UPDATE checkpoints SET halted_reason = $2, updated_at = now() WHERE chain_id = $1;

-- name: recent_blocks
-- Stored headers at or below a height, newest first (common-ancestor walk).
SELECT number, hash, parent_hash, timestamp FROM blocks
WHERE chain_id = $1 AND number <= $2 ORDER BY number DESC LIMIT $3;

-- name: block_hash_at
-- The stored hash at one height (NULL when that height is not stored).
SELECT hash FROM blocks WHERE chain_id = $1 AND number = $2;

-- name: delete_blocks_above
-- Rollback: forget headers above the common ancestor.
DELETE FROM blocks WHERE chain_id = $1 AND number > $2;

-- name: insert_reorg
-- Record a rollback (automatic reorg or manual rewind).
INSERT INTO reorgs (chain_id, depth, common_ancestor, old_hash, new_hash, kind)
VALUES ($1, $2, $3, $4, $5, $6);

-- name: last_reorg
-- The newest reorg of a chain.
SELECT detected_at, depth, common_ancestor, kind FROM reorgs
WHERE chain_id = $1 ORDER BY id DESC LIMIT 1;

-- name: add_balances
-- Add a committed range's reward events to reward_balances, aggregated by PostgreSQL from the
-- rows just COPYed (every row of the range belongs to the batch: nothing lies above the
-- checkpoint it extends). Returns at most $4 distinct wallets whose balances changed, for
-- NOTIFY (which lists 100 and says when there were more): returning every upserted row cost
-- PostgreSQL and the client 200,000 rows per 200,000 new wallets in a backfill.
WITH d AS (
    SELECT contract COLLATE "C" AS contract, token COLLATE "C" AS token,
           wallet COLLATE "C" AS wallet, amount AS added, 0::numeric AS claimed
    FROM reward_added WHERE chain_id = $1 AND block_number BETWEEN $2 AND $3
    UNION ALL
    SELECT contract COLLATE "C", token COLLATE "C", wallet COLLATE "C", 0::numeric, amount
    FROM reward_claimed WHERE chain_id = $1 AND block_number BETWEEN $2 AND $3
), up AS (
INSERT INTO reward_balances (chain_id, contract, token, wallet, added, claimed)
SELECT $1, contract, token, wallet, sum(added), sum(claimed)
FROM d GROUP BY contract, token, wallet
HAVING sum(added) <> 0 OR sum(claimed) <> 0  -- zero-amount events alone make no row
ON CONFLICT (chain_id, contract, token, wallet) DO UPDATE
SET added = reward_balances.added + EXCLUDED.added,
    claimed = reward_balances.claimed + EXCLUDED.claimed
RETURNING wallet
)
-- Every row of `up` is written whatever the outer query reads (a data-modifying WITH always
-- runs to completion).
SELECT DISTINCT wallet FROM up LIMIT $4;

-- name: delete_balances
-- Rebuild, step 1 (sink.rebuild_balances: rollback, repair, reconcile): drop the balances of
-- the keys whose events changed.
DELETE FROM reward_balances b
USING unnest($2::text[], $3::text[], $4::text[]) AS k(contract, token, wallet)
WHERE b.chain_id = $1 AND b.contract = k.contract AND b.token = k.token AND b.wallet = k.wallet;

-- name: rebuild_balances
-- Rebuild, step 2: recompute those keys from the events now stored (a row exists while the
-- key's events credit or claim something: zero-amount events alone make none, as in
-- add_balances). Each key's sums scan the event tables (no wallet index is kept on them: it
-- would cost every commit), so this serves the repair paths (verify --repair, reconcile
-- --fix), not rollbacks (rollback_balances).
INSERT INTO reward_balances (chain_id, contract, token, wallet, added, claimed)
SELECT $1, contract, token, wallet, added, claimed FROM (
    SELECT k.contract, k.token, k.wallet,
           COALESCE((SELECT sum(a.amount) FROM reward_added a WHERE a.chain_id = $1
                     AND a.contract = k.contract AND a.token = k.token AND a.wallet = k.wallet), 0)
               AS added,
           COALESCE((SELECT sum(c.amount) FROM reward_claimed c WHERE c.chain_id = $1
                     AND c.contract = k.contract AND c.token = k.token AND c.wallet = k.wallet), 0)
               AS claimed
    FROM (SELECT DISTINCT * FROM unnest($2::text[], $3::text[], $4::text[]))
         AS k(contract, token, wallet)
) s
WHERE added <> 0 OR claimed <> 0;

-- name: delete_zero_balances
-- Rollback, last step: the keys whose rows the rolled-back events brought to nothing credited
-- and nothing claimed lose their row (as if those events had never been indexed).
DELETE FROM reward_balances b
USING unnest($2::text[], $3::text[], $4::text[]) AS k(contract, token, wallet)
WHERE b.wallet = k.wallet AND b.chain_id = $1 AND b.contract = k.contract AND b.token = k.token
  AND b.added = 0 AND b.claimed = 0;

-- name: known_banks
-- Every discovered ProductBank of a chain (addresses to watch after a restart).
SELECT bank, block_number FROM product_banks WHERE chain_id = $1 ORDER BY block_number, log_index;

-- name: notify
-- Tell subscribers what a commit or rollback touched (delivered at COMMIT).
SELECT pg_notify('rewardsync', $1);

-- name: chains_status
-- Per-chain checkpoint and halt state for `indexer status`.
SELECT chain_id, block_number, block_hash, finalized_block, halted_reason, updated_at
FROM checkpoints ORDER BY chain_id;

-- name: rewards_by_status
-- Reward counts by status for `indexer status`.
SELECT status, count(*) AS n FROM rewards GROUP BY status ORDER BY status;

-- name: open_discrepancies
-- Open discrepancies count for `indexer status`.
SELECT count(*) FROM discrepancies WHERE resolved_at IS NULL;

-- name: holds_writer_lock
-- Fencing: whether backend $1 still holds advisory lock $2 (checked inside each commit).
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = $1 AND objsubid = 1
      AND classid::bigint = ($2::bigint >> 32) AND objid::bigint = ($2::bigint & 4294967295)
);

-- name: init_meta
-- A fact about this database, written once (a later migrate keeps the first value).
INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING;

-- name: meta_value
-- A fact about this database.
SELECT value FROM meta WHERE key = $1;

-- name: api_roles
-- The API's group roles (NOLOGIN; grant them to login roles): rewardsync_reader reads the
-- views and read functions, rewardsync_backend also queues rewards. Nothing on public.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rewardsync_reader') THEN
        CREATE ROLE rewardsync_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rewardsync_backend') THEN
        CREATE ROLE rewardsync_backend NOLOGIN;
    END IF;
    GRANT USAGE ON SCHEMA rewardsync_api TO rewardsync_reader, rewardsync_backend;
    GRANT SELECT ON rewardsync_api.sync_status, rewardsync_api.campaign_budgets,
        rewardsync_api.chama_stats, rewardsync_api.chama_member_stats
        TO rewardsync_reader, rewardsync_backend;
    REVOKE ALL ON FUNCTION rewardsync_api.enqueue_reward(bigint, text, text, text, text, numeric, text) FROM PUBLIC;
    REVOKE ALL ON FUNCTION rewardsync_api.reward_status(text) FROM PUBLIC;
    REVOKE ALL ON FUNCTION rewardsync_api.wallet_overview(text) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION rewardsync_api.reward_status(text), rewardsync_api.wallet_overview(text)
        TO rewardsync_reader, rewardsync_backend;
    GRANT EXECUTE ON FUNCTION rewardsync_api.enqueue_reward(bigint, text, text, text, text, numeric, text)
        TO rewardsync_backend;
END
$roles$;
