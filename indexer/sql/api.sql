-- The HTTP API's reads (indexer/apidata.py). They go through the rewardsync_api schema where it
-- has the answer, so that the HTTP API and the SQL API never disagree.

-- name: api_wallet_overview
SELECT chain_id, token, claimable, claimed, in_flight, queued, failed, last_error
FROM rewardsync_api.wallet_overview($1);

-- name: api_enqueue
SELECT id, status FROM rewardsync_api.enqueue_reward($1, $2, $3, $4, $5, $6, $7);

-- name: api_reward_status
SELECT s.*, r.campaign_id, r.token, r.external_key
FROM rewardsync_api.reward_status($1) s JOIN rewards r ON r.id = s.id;

-- name: api_wallet_history
-- A wallet's reward events, newest first, before the cursor (block, log index, chain):
-- RewardAdded and RewardClaimed, and per batch the RewardsPushed that paid its queued rewards.
-- $1 wallet, $2..$4 cursor (NULL: the newest), $5 chain filter (NULL: all), $6 limit.
WITH items AS (
    SELECT 'added' AS kind, chain_id, block_number, log_index, tx_hash, block_time, contract,
           token, amount, NULL::bigint AS batch_id, NULL::text[] AS external_keys
    FROM reward_added WHERE wallet = $1
    UNION ALL
    SELECT 'claimed', chain_id, block_number, log_index, tx_hash, block_time, contract, token,
           amount, NULL, NULL
    FROM reward_claimed WHERE wallet = $1
    UNION ALL
    SELECT 'pushed', p.chain_id, p.block_number, p.log_index, p.tx_hash, p.block_time,
           p.contract, p.token, sum(r.amount), b.id, array_agg(r.external_key ORDER BY r.id)
    FROM rewards r
    JOIN reward_batches b ON b.id = r.batch_id
    JOIN rewards_pushed p ON p.chain_id = b.chain_id AND p.contract = b.bank AND p.nonce = b.nonce
    WHERE r.wallet = $1
    GROUP BY p.chain_id, p.block_number, p.log_index, p.tx_hash, p.block_time, p.contract,
             p.token, b.id
)
SELECT * FROM items
WHERE ($2::bigint IS NULL OR (block_number, log_index, chain_id) < ($2, $3::bigint, $4::bigint))
  AND ($5::bigint IS NULL OR chain_id = $5)
ORDER BY block_number DESC, log_index DESC, chain_id DESC
LIMIT $6;

-- name: api_wallet_items_after
-- The same items of one chain after (block $3, log index $4), oldest first: what a live
-- stream has not sent yet (a range scan of the primary keys from a recent block on).
WITH items AS (
    SELECT 'added' AS kind, chain_id, block_number, log_index, tx_hash, block_time, contract,
           token, amount, NULL::bigint AS batch_id, NULL::text[] AS external_keys
    FROM reward_added WHERE wallet = $1 AND chain_id = $2 AND block_number >= $3
    UNION ALL
    SELECT 'claimed', chain_id, block_number, log_index, tx_hash, block_time, contract, token,
           amount, NULL, NULL
    FROM reward_claimed WHERE wallet = $1 AND chain_id = $2 AND block_number >= $3
    UNION ALL
    SELECT 'pushed', p.chain_id, p.block_number, p.log_index, p.tx_hash, p.block_time,
           p.contract, p.token, sum(r.amount), b.id, array_agg(r.external_key ORDER BY r.id)
    FROM rewards_pushed p
    JOIN reward_batches b ON b.chain_id = p.chain_id AND b.bank = p.contract AND b.nonce = p.nonce
    JOIN rewards r ON r.batch_id = b.id AND r.wallet = $1
    WHERE p.chain_id = $2 AND p.block_number >= $3
    GROUP BY p.chain_id, p.block_number, p.log_index, p.tx_hash, p.block_time, p.contract,
             p.token, b.id
)
SELECT * FROM items WHERE (block_number, log_index) > ($3, $4::bigint)
ORDER BY block_number, log_index
LIMIT $5;

-- name: api_campaigns
-- Campaign budgets, optionally of one chain, bank and campaign id.
SELECT * FROM rewardsync_api.campaign_budgets
WHERE ($1::bigint IS NULL OR chain_id = $1) AND ($2::text IS NULL OR bank = $2)
  AND ($3::text IS NULL OR campaign_id = $3)
ORDER BY chain_id, bank, campaign_id, token
LIMIT 1000;

-- name: api_chamas
-- The chamas with one id (one per chain and ChamaSavings contract).
SELECT * FROM rewardsync_api.chama_stats
WHERE chama_id = $1 AND ($2::bigint IS NULL OR chain_id = $2)
ORDER BY chain_id, contract;

-- name: api_chama_members
SELECT * FROM rewardsync_api.chama_member_stats
WHERE chama_id = $1 AND ($2::bigint IS NULL OR chain_id = $2)
ORDER BY chain_id, contract, member;

-- name: api_sync_status
SELECT * FROM rewardsync_api.sync_status ORDER BY chain_id;

-- name: api_recent_reorgs
SELECT id, chain_id, detected_at, depth, common_ancestor, kind FROM reorgs
ORDER BY id DESC LIMIT $1;

-- name: api_reorgs_since
-- Per chain, the lowest common ancestor of the rollbacks after reorg id $1 (a resumed stream).
SELECT chain_id, min(common_ancestor) AS common_ancestor, max(id) AS last_id
FROM reorgs WHERE id > $1 GROUP BY chain_id ORDER BY chain_id;

-- name: api_last_reorg_id
SELECT coalesce(max(id), 0) FROM reorgs;

-- name: api_open_discrepancies
SELECT id, chain_id, kind, subject, expected, actual, at_block, detected_at FROM discrepancies
WHERE resolved_at IS NULL ORDER BY detected_at DESC LIMIT $1;

-- name: api_recent_batches
SELECT id, chain_id, bank, status, reward_count, total_amount, tx_hash, block_number,
       created_at, error
FROM reward_batches ORDER BY id DESC LIMIT $1;

-- name: api_checkpoints
SELECT chain_id, block_number FROM checkpoints ORDER BY chain_id;
