-- Reconciler reads. Every comparison with the chain is made AT a finalized block B ($2): event
-- rows above B are left out, so reorgs above B and blocks indexed after B never raise an alarm.

-- name: rc_balances_at
-- Per (contract, token, wallet) of the given MultiTokenPushPull contracts ($3): the fold of the
-- events at or below B, the fold of all events, the stored reward_balances row, and that row
-- taken back to B (pending minus the net events above B).
WITH added AS (
    SELECT contract, token, wallet,
           COALESCE(sum(amount) FILTER (WHERE block_number <= $2), 0) AS at_b,
           sum(amount) AS total
    FROM reward_added WHERE chain_id = $1 AND contract = ANY($3::text[])
    GROUP BY contract, token, wallet
), claimed AS (
    SELECT contract, token, wallet,
           COALESCE(sum(amount) FILTER (WHERE block_number <= $2), 0) AS at_b,
           sum(amount) AS total
    FROM reward_claimed WHERE chain_id = $1 AND contract = ANY($3::text[])
    GROUP BY contract, token, wallet
), keys AS (
    SELECT contract, token, wallet FROM added
    UNION SELECT contract, token, wallet FROM claimed
    UNION SELECT contract, token, wallet FROM reward_balances
          WHERE chain_id = $1 AND contract = ANY($3::text[])
)
SELECT k.contract, k.token, k.wallet,
       COALESCE(a.at_b, 0) - COALESCE(c.at_b, 0) AS events_at_b,
       COALESCE(a.total, 0) AS events_added,
       COALESCE(c.total, 0) AS events_claimed,
       COALESCE(b.added, 0) AS stored_added,  -- no row: nothing credited (zero-amount events)
       COALESCE(b.claimed, 0) AS stored_claimed,
       COALESCE(b.pending, 0) - (COALESCE(a.total, 0) - COALESCE(a.at_b, 0))
           + (COALESCE(c.total, 0) - COALESCE(c.at_b, 0)) AS stored_at_b
FROM keys k
LEFT JOIN added a USING (contract, token, wallet)
LEFT JOIN claimed c USING (contract, token, wallet)
LEFT JOIN reward_balances b
       ON b.chain_id = $1 AND b.contract = k.contract AND b.token = k.token AND b.wallet = k.wallet
ORDER BY k.contract, k.token, k.wallet;

-- name: rc_contributions_at
-- Per (contract, chama, member) of the given ChamaSavings contracts ($3): contributions at or
-- below B; members who joined but have no contribution row count too (a deleted row shows).
WITH paid AS (
    SELECT contract, chama_id, contributor AS member, sum(amount) AS total
    FROM contributions
    WHERE chain_id = $1 AND block_number <= $2 AND contract = ANY($3::text[])
    GROUP BY contract, chama_id, contributor
), keys AS (
    SELECT contract, chama_id, member FROM paid
    UNION SELECT contract, chama_id, member FROM chama_members
          WHERE chain_id = $1 AND block_number <= $2 AND contract = ANY($3::text[])
)
SELECT k.contract, k.chama_id, k.member, COALESCE(p.total, 0) AS total
FROM keys k LEFT JOIN paid p USING (contract, chama_id, member)
ORDER BY k.contract, k.chama_id, k.member;

-- name: rc_batch_state
-- Every batch with a nonce, with its first RewardsPushed(bank, nonce) at or below B that pays
-- what the batch pays (campaign, token, count, total), whether
-- such an event is indexed at any height, and how many of its rewards are not confirmed.
SELECT b.id, b.bank, b.nonce, b.status, b.deadline, b.block_number, b.tx_hash,
       e.block_number AS event_block, e.tx_hash AS event_tx,
       EXISTS (SELECT 1 FROM rewards_pushed x
               WHERE x.chain_id = b.chain_id AND x.contract = b.bank AND x.nonce = b.nonce
                 AND x.campaign_id = b.campaign_id AND x.token = b.token
                 AND (b.reward_count IS NULL
                      OR (x.count = b.reward_count AND x.total_amount = b.total_amount)))
           AS event_anywhere,
       (SELECT count(*) FROM rewards r WHERE r.batch_id = b.id AND r.status <> 'confirmed')
           AS unconfirmed_rewards
FROM reward_batches b
LEFT JOIN LATERAL (
    SELECT block_number, tx_hash FROM rewards_pushed e
    WHERE e.chain_id = b.chain_id AND e.contract = b.bank AND e.nonce = b.nonce
      AND e.campaign_id = b.campaign_id AND e.token = b.token
      AND (b.reward_count IS NULL
           OR (e.count = b.reward_count AND e.total_amount = b.total_amount))
      AND e.block_number <= $2
    ORDER BY e.block_number LIMIT 1
) e ON true
WHERE b.chain_id = $1 AND b.nonce IS NOT NULL
ORDER BY b.id;

-- name: rc_unrecorded_pushes
-- RewardsPushed events at or below B that no reward_batches row accounts for (a batch pushed
-- outside the daemon).
SELECT e.contract, e.nonce, e.campaign_id, e.token, e.total_amount, e.count,
       e.block_number, e.tx_hash
FROM rewards_pushed e
WHERE e.chain_id = $1 AND e.block_number <= $2
  AND NOT EXISTS (SELECT 1 FROM reward_batches b
                  WHERE b.chain_id = e.chain_id AND b.bank = e.contract AND b.nonce = e.nonce)
ORDER BY e.block_number, e.log_index;

-- name: rc_direct_rewards
-- RewardAdded events at or below B whose emitter pushed no RewardsPushed in the same
-- transaction (credited straight through MultiTokenPushPull, not by a bank's batch), per
-- (transaction, emitter).
SELECT a.tx_hash, a.emitter, a.token, min(a.block_number) AS block_number,
       count(*) AS n, sum(a.amount) AS total
FROM reward_added a
WHERE a.chain_id = $1 AND a.block_number <= $2
  AND NOT EXISTS (SELECT 1 FROM rewards_pushed e WHERE e.chain_id = a.chain_id
                  AND e.tx_hash = a.tx_hash AND e.contract = a.emitter)
GROUP BY a.tx_hash, a.emitter, a.token
ORDER BY min(a.block_number), a.tx_hash;

-- name: rc_direct_rewards_in
-- rc_direct_rewards for the blocks in ($2, $3] only (an incremental run: the reward events
-- since the last run, read by the block key).
SELECT a.tx_hash, a.emitter, a.token, min(a.block_number) AS block_number,
       count(*) AS n, sum(a.amount) AS total
FROM reward_added a
WHERE a.chain_id = $1 AND a.block_number > $2 AND a.block_number <= $3
  AND NOT EXISTS (SELECT 1 FROM rewards_pushed e WHERE e.chain_id = a.chain_id
                  AND e.tx_hash = a.tx_hash AND e.contract = a.emitter)
GROUP BY a.tx_hash, a.emitter, a.token
ORDER BY min(a.block_number), a.tx_hash;

-- name: rc_confirmed_rewards_astray
-- Confirmed rewards whose batch is missing or not confirmed: from the batches that are not
-- confirmed (a partial index) and the confirmed rewards without a batch (another), never a
-- scan of the whole queue.
SELECT r.id, r.external_key, r.batch_id, b.status AS batch_status
FROM reward_batches b JOIN rewards r ON r.batch_id = b.id
WHERE b.chain_id = $1 AND b.status NOT IN ('confirmed', 'reconciled')
  AND r.chain_id = $1 AND r.status = 'confirmed'
UNION ALL
SELECT r.id, r.external_key, r.batch_id, NULL
FROM rewards r
WHERE r.chain_id = $1 AND r.status = 'confirmed' AND r.batch_id IS NULL
ORDER BY 1;

-- name: rc_stored_time_at
-- Timestamp of the newest stored header at or below a height (the lifecycle's own lower bound
-- for the time of a finalized block).
SELECT timestamp FROM blocks WHERE chain_id = $1 AND number <= $2 ORDER BY number DESC LIMIT 1;

-- name: rc_acknowledged
-- Subjects a fix acknowledged for good (direct pushes): not reported again.
SELECT DISTINCT subject FROM discrepancies
WHERE chain_id = $1 AND resolved_at IS NOT NULL AND resolution LIKE 'acknowledged:%';

-- name: rc_lock
-- One reconciler at a time per chain records and fixes (transaction-scoped advisory lock).
SELECT pg_advisory_xact_lock($1);

-- name: rc_open
-- The chain's open discrepancies.
SELECT id, kind, subject, expected, actual FROM discrepancies
WHERE chain_id = $1 AND resolved_at IS NULL ORDER BY id;

-- name: rc_insert
-- Record a newly found discrepancy.
INSERT INTO discrepancies (chain_id, kind, subject, expected, actual, at_block)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id;

-- name: rc_update
-- A still-open discrepancy whose values moved on (same kind and subject).
UPDATE discrepancies SET expected = $2, actual = $3, at_block = $4 WHERE id = $1;

-- name: rc_resolve
-- Close a discrepancy with how it ended (cleared, fixed: ..., acknowledged: ...).
UPDATE discrepancies SET resolved_at = now(), resolution = $2
WHERE id = $1 AND resolved_at IS NULL;

-- name: rc_open_by_kind
-- Open discrepancies per kind, for the gauge.
SELECT kind, count(*) AS n FROM discrepancies
WHERE chain_id = $1 AND resolved_at IS NULL GROUP BY kind;

-- name: rc_record_push
-- Fix for a batch pushed outside the daemon: record it, settled by the reconciler.
INSERT INTO reward_batches (chain_id, bank, campaign_id, token, nonce, status, tx_hash,
                            confirmed_at, block_number, error, reward_count, total_amount,
                            evidence)
VALUES ($1, $2, $3, $4, $5, 'reconciled', $6, now(), $7, 'pushed outside the daemon', $8, $9,
        'reconciler')
ON CONFLICT (nonce) DO NOTHING;

-- name: rc_settle_batch
-- Fix: the batch's RewardsPushed is final at block $2 (tx $3): reconciled, whatever it said.
UPDATE reward_batches
SET status = 'reconciled', block_number = $2, tx_hash = $3,
    confirmed_at = COALESCE(confirmed_at, now()), error = NULL
WHERE id = $1;

-- name: rc_confirm_batch_rewards
-- Fix: the rewards of a settled batch are confirmed at its block; rewards requeued when the
-- batch was wrongly failed come back to it unless they were batched again meanwhile.
UPDATE rewards
SET status = 'confirmed', batch_id = $1::bigint, confirmed_block = $2,
    confirmed_at = COALESCE(confirmed_at, now()), error = NULL
WHERE (batch_id = $1::bigint AND status <> 'confirmed')
   OR (batch_id IS NULL AND status = 'pending'
       AND error = 'requeued: batch ' || $1::bigint::text || ' expired');

-- name: rc_unsettle_batch
-- Fix: a batch said confirmed has no final event: back to pending (it may still land).
UPDATE reward_batches SET status = 'pending', block_number = NULL, confirmed_at = NULL,
       error = 'reconcile: no RewardsPushed at or below block ' || $2::bigint::text
WHERE id = $1;

-- name: rc_unconfirm_batch_rewards
-- Fix: the rewards of a batch back in flight are pushed, not confirmed.
UPDATE rewards SET status = 'pushed', confirmed_block = NULL, confirmed_at = NULL
WHERE batch_id = $1 AND status = 'confirmed';

-- name: rc_reward_follow_batch
-- Fix: a confirmed reward whose batch is not confirmed takes its batch's state.
UPDATE rewards r
SET status = CASE WHEN b.status IN ('draft', 'pending') THEN 'pushed' ELSE 'pending' END,
    batch_id = CASE WHEN b.status IN ('draft', 'pending') THEN r.batch_id END,
    confirmed_block = NULL, confirmed_at = NULL
FROM rewards r2 LEFT JOIN reward_batches b ON b.id = r2.batch_id
WHERE r.id = $1 AND r2.id = r.id;

-- name: rc_balance_keys_over
-- Whether the chain holds more than $3 balance keys of the given contracts ($2): read at most
-- $3 + 1 rows, whatever the table's size (the reconciler's choice of a full or an
-- incremental run).
SELECT count(*) AS n FROM (
    SELECT 1 FROM reward_balances WHERE chain_id = $1 AND contract = ANY($2::text[]) LIMIT $3 + 1
) s;

-- name: rc_balance_keys_estimate
-- The planner's row estimate of reward_balances (no scan): sizes the rotating sample.
SELECT GREATEST(reltuples, 0)::bigint AS n FROM pg_class WHERE oid = 'reward_balances'::regclass;

-- name: rc_cursor_load
SELECT touched_block, wallet, contract, token FROM reconcile_cursor WHERE chain_id = $1;

-- name: rc_cursor_save
INSERT INTO reconcile_cursor (chain_id, touched_block, wallet, contract, token)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (chain_id) DO UPDATE
SET touched_block = EXCLUDED.touched_block, wallet = EXCLUDED.wallet,
    contract = EXCLUDED.contract, token = EXCLUDED.token, updated_at = now();

-- name: rc_touched_upto
-- The block up to which the reward events after $2 and at or below $3 number at most $4 rows
-- (all of them: $3; else at least the first block that has any), read by the (chain_id,
-- block_number) key: the bound on the wallets one run checks for recent changes.
WITH per_block AS (
    SELECT block_number, count(*) AS n FROM (
        SELECT block_number FROM reward_added
        WHERE chain_id = $1 AND block_number > $2 AND block_number <= $3
        UNION ALL
        SELECT block_number FROM reward_claimed
        WHERE chain_id = $1 AND block_number > $2 AND block_number <= $3
    ) e GROUP BY block_number
), cum AS (
    SELECT block_number, sum(n) OVER (ORDER BY block_number) AS c FROM per_block
)
SELECT CASE WHEN COALESCE(max(c), 0) <= $4 THEN $3::bigint
            ELSE COALESCE(max(block_number) FILTER (WHERE c <= $4), min(block_number)) END
       AS upto
FROM cum;

-- name: rc_touched_keys
-- The balance keys of the given contracts ($4) whose reward events lie in ($2, $3].
SELECT DISTINCT contract, token, wallet FROM (
    SELECT contract, token, wallet FROM reward_added
    WHERE chain_id = $1 AND block_number > $2 AND block_number <= $3 AND contract = ANY($4::text[])
    UNION ALL
    SELECT contract, token, wallet FROM reward_claimed
    WHERE chain_id = $1 AND block_number > $2 AND block_number <= $3 AND contract = ANY($4::text[])
) e;

-- name: rc_sample_keys
-- The next $6 balance keys after the cursor ($2 wallet, $3 contract, $4 token), in the order of
-- reward_balances' primary key (wallet, chain_id, contract, token), which serves the scan.
SELECT wallet, contract, token FROM reward_balances
WHERE (wallet, chain_id, contract, token) > ($2, $1, $3, $4) AND chain_id = $1
  AND contract = ANY($5::text[])
ORDER BY wallet, chain_id, contract, token
LIMIT $6;

-- name: rc_stored_at
-- Per given key ($2, $3, $4: contract, token, wallet): reward_balances taken back to B ($5):
-- the stored pending minus the net reward events above B (a short range of the block key).
WITH k AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[]) AS k(contract, token, wallet)
), above AS (
    SELECT contract, token, wallet, sum(amount) AS net FROM (
        SELECT contract, token, wallet, amount FROM reward_added
        WHERE chain_id = $1 AND block_number > $5
        UNION ALL
        SELECT contract, token, wallet, -amount FROM reward_claimed
        WHERE chain_id = $1 AND block_number > $5
    ) e GROUP BY contract, token, wallet
)
SELECT k.contract, k.token, k.wallet,
       COALESCE(b.pending, 0) - COALESCE(a.net, 0) AS stored_at_b
FROM k
LEFT JOIN reward_balances b
       ON b.wallet = k.wallet AND b.chain_id = $1 AND b.contract = k.contract AND b.token = k.token
LEFT JOIN above a
       ON a.contract = k.contract AND a.token = k.token AND a.wallet = k.wallet;

-- name: rc_totals_stored_at
-- Per (contract, token) of the given contracts ($2): the sum of reward_balances taken back to
-- B ($3). Reads the whole table: run once per cycle of the incremental reconciler.
WITH b AS (
    SELECT contract, token, sum(pending) AS s FROM reward_balances
    WHERE chain_id = $1 AND contract = ANY($2::text[]) GROUP BY contract, token
), above AS (
    SELECT contract, token, sum(amount) AS net FROM (
        SELECT contract, token, amount FROM reward_added WHERE chain_id = $1 AND block_number > $3
        UNION ALL
        SELECT contract, token, -amount FROM reward_claimed WHERE chain_id = $1 AND block_number > $3
    ) e GROUP BY contract, token
)
SELECT b.contract, b.token, b.s - COALESCE(a.net, 0) AS total_at_b
FROM b LEFT JOIN above a ON a.contract = b.contract AND a.token = b.token
ORDER BY b.contract, b.token;

-- name: rc_balances_at_keys
-- rc_balances_at for the given keys only ($3, $4, $5: contract, token, wallet): the full
-- comparison (events fold and stored row) of the keys an incremental run found in doubt.
WITH k AS (
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[]) AS k(contract, token, wallet)
), added AS (
    SELECT a.contract, a.token, a.wallet,
           COALESCE(sum(a.amount) FILTER (WHERE a.block_number <= $2), 0) AS at_b,
           sum(a.amount) AS total
    FROM reward_added a JOIN k USING (contract, token, wallet)
    WHERE a.chain_id = $1
    GROUP BY a.contract, a.token, a.wallet
), claimed AS (
    SELECT c.contract, c.token, c.wallet,
           COALESCE(sum(c.amount) FILTER (WHERE c.block_number <= $2), 0) AS at_b,
           sum(c.amount) AS total
    FROM reward_claimed c JOIN k USING (contract, token, wallet)
    WHERE c.chain_id = $1
    GROUP BY c.contract, c.token, c.wallet
)
SELECT k.contract, k.token, k.wallet,
       COALESCE(a.at_b, 0) - COALESCE(c.at_b, 0) AS events_at_b,
       COALESCE(a.total, 0) AS events_added,
       COALESCE(c.total, 0) AS events_claimed,
       COALESCE(b.added, 0) AS stored_added,  -- no row: nothing credited (zero-amount events)
       COALESCE(b.claimed, 0) AS stored_claimed,
       COALESCE(b.pending, 0) - (COALESCE(a.total, 0) - COALESCE(a.at_b, 0))
           + (COALESCE(c.total, 0) - COALESCE(c.at_b, 0)) AS stored_at_b
FROM k
LEFT JOIN added a USING (contract, token, wallet)
LEFT JOIN claimed c USING (contract, token, wallet)
LEFT JOIN reward_balances b
       ON b.chain_id = $1 AND b.contract = k.contract AND b.token = k.token AND b.wallet = k.wallet
ORDER BY k.contract, k.token, k.wallet;
