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
       b.added AS stored_added,
       b.claimed AS stored_claimed,
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

-- name: rc_confirmed_rewards_astray
-- Confirmed rewards whose batch is missing or not confirmed.
SELECT r.id, r.external_key, r.batch_id, b.status AS batch_status
FROM rewards r LEFT JOIN reward_batches b ON b.id = r.batch_id
WHERE r.chain_id = $1 AND r.status = 'confirmed'
  AND (b.id IS NULL OR b.status NOT IN ('confirmed', 'reconciled'))
ORDER BY r.id;

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
