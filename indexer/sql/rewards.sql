-- name: confirm_batches
-- Batches whose RewardsPushed(nonce) is indexed at least `confirmations` deep become confirmed,
-- whoever sent the transaction, when the event pays what the batch pays (campaign, token,
-- count, total; batches made before those were recorded match by nonce). $2 = highest block
-- that counts as confirmed.
WITH hit AS (
    SELECT DISTINCT ON (b.id) b.id, e.block_number, e.tx_hash
    FROM reward_batches b
    JOIN rewards_pushed e
      ON e.chain_id = b.chain_id AND e.contract = b.bank AND e.nonce = b.nonce
     AND e.campaign_id = b.campaign_id AND e.token = b.token
     AND (b.reward_count IS NULL OR (e.count = b.reward_count AND e.total_amount = b.total_amount))
    WHERE b.chain_id = $1 AND b.status IN ('draft', 'pending')
      AND e.block_number <= $2
    ORDER BY b.id, e.block_number
)
UPDATE reward_batches b
SET status = 'confirmed', block_number = hit.block_number, tx_hash = hit.tx_hash,
    confirmed_at = now(), error = NULL, evidence = 'index'
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
SET status = 'pending', block_number = NULL, confirmed_at = NULL, evidence = NULL
WHERE chain_id = $1 AND status IN ('confirmed', 'reconciled') AND block_number > $2
RETURNING id;

-- name: unconfirm_rewards
-- Rollback: the rewards of those batches are pushed (in flight) again.
UPDATE rewards SET status = 'pushed', confirmed_block = NULL, confirmed_at = NULL
WHERE batch_id = ANY($1::bigint[]) AND status = 'confirmed';
