-- name: confirm_batches
-- Batches whose RewardsPushed(nonce) is indexed at least `confirmations` deep become confirmed,
-- whoever sent the transaction. $2 = highest block that counts as confirmed.
WITH hit AS (
    SELECT DISTINCT ON (b.id) b.id, e.block_number, e.tx_hash
    FROM reward_batches b
    JOIN rewards_pushed e
      ON e.chain_id = b.chain_id AND e.contract = b.bank AND e.nonce = b.nonce
    WHERE b.chain_id = $1 AND b.status IN ('draft', 'pending', 'failed')
      AND e.block_number <= $2
    ORDER BY b.id, e.block_number
)
UPDATE reward_batches b
SET status = 'confirmed', block_number = hit.block_number, tx_hash = hit.tx_hash,
    confirmed_at = now(), error = NULL
FROM hit WHERE b.id = hit.id
RETURNING b.id, b.block_number;

-- name: confirm_rewards
-- The rewards of newly confirmed batches.
UPDATE rewards r
SET status = 'confirmed', confirmed_block = b.block_number, confirmed_at = now(), error = NULL
FROM reward_batches b
WHERE r.batch_id = b.id AND b.id = ANY($1::bigint[]) AND r.status <> 'confirmed';

-- name: unconfirm_batches
-- Rollback: a confirmed batch whose event is above the common ancestor is pending again.
UPDATE reward_batches
SET status = 'pending', block_number = NULL, confirmed_at = NULL
WHERE chain_id = $1 AND status IN ('confirmed', 'reconciled') AND block_number > $2
RETURNING id;

-- name: unconfirm_rewards
-- Rollback: the rewards of those batches are pushed (in flight) again.
UPDATE rewards SET status = 'pushed', confirmed_block = NULL, confirmed_at = NULL
WHERE batch_id = ANY($1::bigint[]) AND status = 'confirmed';

-- name: finalized_time
-- Timestamp of the newest stored block at or below the finalized height (a lower bound of
-- the finalized block's own timestamp, so deadline decisions stay on the safe side).
SELECT timestamp FROM blocks WHERE chain_id = $1 AND number <= $2 ORDER BY number DESC LIMIT 1;

-- name: expire_batches
-- Batches whose deadline is below a finalized block's time and whose RewardsPushed(nonce) is
-- not indexed anywhere can never land: they fail. $2 = that time, $3 = the finalized height.
UPDATE reward_batches b
SET status = 'failed', error = 'deadline ' || b.deadline || ' passed at finalized block ' || $3::bigint
WHERE b.chain_id = $1 AND b.status IN ('draft', 'pending') AND b.deadline < $2
  AND NOT EXISTS (SELECT 1 FROM rewards_pushed e WHERE e.chain_id = b.chain_id
                  AND e.contract = b.bank AND e.nonce = b.nonce)
RETURNING b.id;

-- name: requeue_rewards
-- The rewards of failed batches go back to the queue, to be batched under a new nonce.
UPDATE rewards SET status = 'pending', batch_id = NULL, pushed_at = NULL,
       error = 'requeued: batch ' || batch_id || ' expired'
WHERE batch_id = ANY($1::bigint[]) AND status IN ('pushed', 'pending');
