-- name: take_pending_rewards
-- Queued rewards of a chain, locked for this pusher only (two pushers never share one).
SELECT id, bank, campaign_id, token, wallet, amount FROM rewards
WHERE chain_id = $1 AND status = 'pending' AND batch_id IS NULL AND bank = ANY($3::text[])
ORDER BY bank, campaign_id, token, id
LIMIT $2
FOR UPDATE SKIP LOCKED;

-- name: mark_unwatched
-- Queued rewards whose bank is not one this chain watches ($2) stay pending with an error
-- ($3); returns how many there are (the gauge).
WITH flagged AS (
    UPDATE rewards SET error = $3
    WHERE chain_id = $1 AND status = 'pending' AND batch_id IS NULL
      AND NOT (bank = ANY($2::text[])) AND error IS DISTINCT FROM $3
    RETURNING 1
)
SELECT count(*) FROM rewards
WHERE chain_id = $1 AND status = 'pending' AND batch_id IS NULL AND NOT (bank = ANY($2::text[]));

-- name: mark_bank_error
-- Queued rewards of banks ($2) the pusher skips for a reason ($3), e.g. a missing role.
UPDATE rewards SET error = $3
WHERE chain_id = $1 AND status = 'pending' AND batch_id IS NULL AND bank = ANY($2::text[])
  AND error IS DISTINCT FROM $3;

-- name: rewards_error_ids
-- Surface an error on given rewards.
UPDATE rewards SET error = $2 WHERE id = ANY($1::bigint[]);

-- name: insert_batch
-- A new draft batch (its nonce is derived from the id, set right after).
INSERT INTO reward_batches (chain_id, bank, campaign_id, token, deadline, status)
VALUES ($1, $2, $3, $4, $5, 'draft') RETURNING id;

-- name: set_batch_nonce
-- The batch's nonce (salt, id, content), what it pays (count, total: what the judge compares a
-- RewardsPushed with) and the block it was made at (where the judge starts looking).
UPDATE reward_batches
SET nonce = $2, reward_count = $3, total_amount = $4, created_block = $5
WHERE id = $1;

-- name: assign_rewards
-- Rewards join a batch; they are in flight from now on. Joined to the ids by the primary key
-- whatever the statistics say: with `id = ANY($2)` a queue just filled by a bulk enqueue (not
-- analyzed yet) was read whole through the status and batch indexes, 21-26 ms per batch
-- instead of 2 (bench/pusher.py --no-analyze).
UPDATE rewards r SET status = 'pushed', batch_id = $1, pushed_at = now(), error = NULL
FROM unnest($2::bigint[]) AS k(id)
WHERE r.id = k.id AND r.status = 'pending' AND r.batch_id IS NULL;

-- name: drafts_due
-- Draft batches ready to be signed, locked for this pusher.
SELECT id, bank, campaign_id, token, nonce, deadline FROM reward_batches
WHERE chain_id = $1 AND status = 'draft' AND (next_attempt_at IS NULL OR next_attempt_at <= now())
ORDER BY id FOR UPDATE SKIP LOCKED;

-- name: lease_draft
-- Our lease on a draft: a new token (only its holder may record a signature) and a time.
UPDATE reward_batches SET lease_token = $2, next_attempt_at = now() + make_interval(secs => $3)
WHERE id = $1;

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
    next_attempt_at = NULL, error = NULL, lease_token = NULL
WHERE id = $1 AND status = 'draft' AND lease_token = $10
RETURNING id;

-- name: record_replacement
-- The outbox for a replacement (same account nonce, higher fees): only while the batch still
-- carries the transaction it replaces ($8).
UPDATE reward_batches
SET raw_tx = $2, tx_hash = $3, sender = $4, sender_nonce = $5, max_fee = $6, priority_fee = $7,
    submitted_at = now(), attempts = attempts + 1
WHERE id = $1 AND status = 'pending' AND tx_hash = $8
RETURNING id;

-- name: unsign_batch
-- The node refused the batch's first transaction: it is in no pool, so its account nonce is
-- released; the batch is a draft again (same batch nonce), retried after a backoff.
UPDATE reward_batches
SET status = 'draft', raw_tx = NULL, tx_hash = NULL, sender = NULL, sender_nonce = NULL,
    submitted_at = NULL, broadcast_at = NULL, error = $3,
    next_attempt_at = now() + make_interval(secs => $4)
WHERE id = $1 AND status = 'pending' AND tx_hash = $2
RETURNING id;

-- name: open_sender_nonces
-- The sender's recorded, unsettled transactions at or above an account nonce ($3).
SELECT id, sender_nonce, raw_tx, tx_hash FROM reward_batches
WHERE chain_id = $1 AND sender = $2 AND status = 'pending' AND raw_tx IS NOT NULL
  AND sender_nonce >= $3
ORDER BY sender_nonce;

-- name: pending_batches
-- In-flight batches to broadcast again and watch.
SELECT id, bank, nonce, deadline, raw_tx, tx_hash, sender, sender_nonce, max_fee,
       priority_fee, call_data, gas_limit, submitted_at, broadcast_at, next_attempt_at, error
FROM reward_batches
WHERE chain_id = $1 AND status = 'pending' AND raw_tx IS NOT NULL
ORDER BY id;

-- name: mark_broadcast
-- Remember when a batch's transaction was last handed to the node.
UPDATE reward_batches SET broadcast_at = now() WHERE id = $1;

-- name: record_mined
-- A successful receipt carrying the batch's RewardsPushed: its block and gas (the batch stays
-- pending: the index or, once that block is final, the judge confirms it).
UPDATE reward_batches SET gas_used = $2, mined_block = $3
WHERE id = $1 AND status = 'pending' AND mined_block IS DISTINCT FROM $3::bigint
RETURNING id;

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

-- name: foreign_pushes
-- Indexed RewardsPushed that no batch of this database made (none with its nonce, or only a
-- row the reconciler recorded afterwards), unless an operator adopted it: if our sender sent
-- one, another database (or the original of a restored backup) pushes with our keys.
SELECT DISTINCT e.tx_hash FROM rewards_pushed e
WHERE e.chain_id = $1
  AND NOT EXISTS (SELECT 1 FROM reward_batches b
                  WHERE b.chain_id = e.chain_id AND b.bank = e.contract AND b.nonce = e.nonce
                    AND (b.evidence IS DISTINCT FROM 'reconciler'
                         OR b.error = 'adopted by operator'))
LIMIT 1000;

-- name: index_position
-- How far the index is (the pusher makes batches only when it is caught up).
SELECT block_number FROM checkpoints WHERE chain_id = $1;

-- name: mark_all_pending
-- Surface why nothing of a chain's queue is pushed now.
UPDATE rewards SET error = $2
WHERE chain_id = $1 AND status = 'pending' AND batch_id IS NULL AND error IS DISTINCT FROM $2;
