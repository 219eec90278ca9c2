-- name: judge_candidates
-- Open batches the chain judge may settle at final block ($3, time $2): deadline passed, a
-- successful receipt at or below it, or a push refused because the nonce is used.
SELECT b.id, b.bank, b.campaign_id, b.token, b.nonce, b.deadline, b.status, b.created_block,
       s.n, s.total
FROM reward_batches b
CROSS JOIN LATERAL (
    SELECT count(*) AS n, sum(r.amount) AS total FROM rewards r WHERE r.batch_id = b.id
) s
WHERE b.chain_id = $1 AND b.status IN ('draft', 'pending') AND b.nonce IS NOT NULL
  AND (b.deadline < $2 OR b.mined_block <= $3 OR b.error LIKE 'NonceAlreadyUsed%')
ORDER BY b.id
LIMIT $4;

-- name: judge_batches
-- Given batches, as the judge reads them (the reconciler's requests).
SELECT b.id, b.bank, b.campaign_id, b.token, b.nonce, b.deadline, b.status, b.created_block,
       coalesce(b.reward_count, s.n) AS n, coalesce(b.total_amount, s.total) AS total
FROM reward_batches b
CROSS JOIN LATERAL (
    SELECT count(*) AS n, sum(r.amount) AS total FROM rewards r WHERE r.batch_id = b.id
) s
WHERE b.id = ANY($1::bigint[]) AND b.nonce IS NOT NULL
ORDER BY b.id;

-- name: judge_fail
-- The bank says the nonce can never be used (or was used by another batch): failed.
UPDATE reward_batches
SET status = 'failed', error = $2, block_number = NULL, confirmed_at = NULL, raw_tx = NULL,
    lease_token = NULL
WHERE id = $1 AND status IN ('draft', 'pending', 'confirmed', 'reconciled')
RETURNING id, bank, nonce;

-- name: judge_requeue
-- The rewards of a batch the judge failed go back to the queue (a new batch, a new nonce).
UPDATE rewards SET status = 'pending', batch_id = NULL, pushed_at = NULL,
       confirmed_block = NULL, confirmed_at = NULL,
       error = 'requeued: batch ' || batch_id || ' expired'
WHERE batch_id = $1 AND status <> 'failed';

-- name: judge_confirm
-- The bank's own RewardsPushed (block $2, tx $3) is this batch's payment, final: confirmed.
UPDATE reward_batches
SET status = CASE WHEN status = 'reconciled' THEN 'reconciled' ELSE 'confirmed' END,
    block_number = $2, tx_hash = $3, confirmed_at = coalesce(confirmed_at, now()),
    evidence = 'chain', error = NULL, lease_token = NULL
WHERE id = $1 AND status IN ('draft', 'pending', 'confirmed', 'reconciled')
RETURNING id;

-- name: judge_indexed
-- Whether our tables hold the batch's RewardsPushed.
SELECT EXISTS (SELECT 1 FROM rewards_pushed
               WHERE chain_id = $1 AND contract = $2 AND nonce = $3);

-- name: judge_discrepancy
-- A discrepancy found by the judge: one open row per (chain, kind, subject); with a
-- resolution ($7) it is recorded closed (the judge acted already).
INSERT INTO discrepancies (chain_id, kind, subject, expected, actual, at_block, resolved_at,
                           resolution)
SELECT $1, $2, $3, $4, $5, $6, CASE WHEN $7::text IS NULL THEN NULL ELSE now() END, $7::text
WHERE $7::text IS NOT NULL
   OR NOT EXISTS (SELECT 1 FROM discrepancies
                  WHERE chain_id = $1 AND kind = $2 AND subject = $3 AND resolved_at IS NULL);
