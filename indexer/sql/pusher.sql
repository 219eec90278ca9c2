-- name: take_pending_rewards
-- Queued rewards of a chain, locked for this pusher only (two pushers never share one).
SELECT id, bank, campaign_id, token, wallet, amount FROM rewards
WHERE chain_id = $1 AND status = 'pending' AND batch_id IS NULL
ORDER BY bank, campaign_id, token, id
LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: insert_batch
-- A new draft batch (its nonce is derived from the id, set right after).
INSERT INTO reward_batches (chain_id, bank, campaign_id, token, deadline, status)
VALUES ($1, $2, $3, $4, $5, 'draft') RETURNING id;

-- name: set_batch_nonce
-- The deterministic nonce of a batch (from its database id).
UPDATE reward_batches SET nonce = $2 WHERE id = $1;

-- name: assign_rewards
-- Rewards join a batch; they are in flight from now on.
UPDATE rewards SET status = 'pushed', batch_id = $1, pushed_at = now(), error = NULL
WHERE id = ANY($2::bigint[]) AND status = 'pending' AND batch_id IS NULL;

-- name: drafts_due
-- Draft batches ready to be signed, locked for this pusher.
SELECT id, bank, campaign_id, token, nonce, deadline FROM reward_batches
WHERE chain_id = $1 AND status = 'draft' AND (next_attempt_at IS NULL OR next_attempt_at <= now())
ORDER BY id FOR UPDATE SKIP LOCKED;

-- name: batch_rewards
-- The (wallet, amount) entries of a batch, in a fixed order (the signed order).
SELECT wallet, amount FROM rewards WHERE batch_id = $1 ORDER BY id;

-- name: sender_lock
-- Serialise the use of one sender's account nonces across pushers (transaction scope).
SELECT pg_advisory_xact_lock($1);

-- name: max_sender_nonce
-- The highest account nonce this database has recorded for a sender.
SELECT max(sender_nonce) FROM reward_batches WHERE chain_id = $1 AND sender = $2;

-- name: record_signed
-- The outbox: the signed transaction and its hash are recorded BEFORE broadcast.
UPDATE reward_batches
SET status = 'pending', raw_tx = $2, tx_hash = $3, sender = $4, sender_nonce = $5,
    max_fee = $6, priority_fee = $7, call_data = $8, gas_limit = $9,
    submitted_at = now(),
    attempts = attempts + 1,
    next_attempt_at = NULL, error = NULL
WHERE id = $1 AND status IN ('draft', 'pending');

-- name: pending_batches
-- In-flight batches to broadcast again and watch.
SELECT id, bank, nonce, deadline, raw_tx, tx_hash, sender, sender_nonce, max_fee,
       priority_fee, call_data, gas_limit, submitted_at, broadcast_at, next_attempt_at
FROM reward_batches
WHERE chain_id = $1 AND status = 'pending' AND raw_tx IS NOT NULL
ORDER BY id;

-- name: mark_broadcast
-- Remember when a batch's transaction was last handed to the node.
UPDATE reward_batches SET broadcast_at = now() WHERE id = $1;

-- name: record_mined
-- Gas used by a batch's mined transaction, once (confirmation comes from the indexed event).
UPDATE reward_batches SET gas_used = $2 WHERE id = $1 AND gas_used IS NULL RETURNING id;

-- name: batch_refused
-- The contract refused the batch for a reason that may pass (budget, balance): keep its nonce,
-- record the error, try again later. Back to draft: it will be signed and sent again.
UPDATE reward_batches
SET status = 'draft', error = $2, next_attempt_at = now() + make_interval(secs => $3),
    raw_tx = NULL
WHERE id = $1;

-- name: rewards_error
-- Surface a batch's error on its rewards.
UPDATE rewards SET error = $2 WHERE batch_id = $1;

-- name: batch_note
-- Record an error or note on a batch without changing its status.
UPDATE reward_batches SET error = $2, next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1;

-- name: pusher_stats
-- Queue size and age of the oldest pending reward, for metrics.
SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS oldest
FROM rewards WHERE chain_id = $1 AND status = 'pending';

-- name: batch_counts
-- Batches by status, for metrics.
SELECT status, count(*) AS n FROM reward_batches WHERE chain_id = $1 GROUP BY status;

-- name: banks_with_pending
-- Banks that have rewards waiting (the signer must be a distributor on each).
SELECT DISTINCT bank FROM rewards WHERE chain_id = $1 AND status IN ('pending', 'pushed');

-- name: count_refusal
-- One more refused attempt of a batch (drives the backoff).
UPDATE reward_batches SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts;
