-- rewardsync schema. Idempotent DDL only (CREATE ... IF NOT EXISTS, additive ALTERs), applied by
-- `indexer migrate` under an advisory lock. Addresses and hashes are lowercase 0x hex TEXT;
-- amounts are NUMERIC(78,0). Every event table is keyed by its chain position
-- (chain_id, block_number, log_index); that primary key also serves rollbacks by block number.
--
-- Hex CHECKs are written `octet_length(x) = 42 AND rtrim(x, '0123456789abcdef') = '0x'` (66 for
-- 32-byte hashes), not `x ~ '^0x[0-9a-f]{40}$'`: both accept exactly the same strings (rtrim strips
-- the trailing lowercase hex digits and stops at the 'x', so what is left must be exactly '0x'),
-- but a regex costs ~5 us per value in COPY (~3 s of server CPU per 200k reward_added rows).
--
-- They guard the tables other writers touch (the backend's `rewards` queue, `reward_batches`)
-- and the one-row `checkpoints`. The bulk tables only the daemon writes, from logs its decoder
-- turned into lowercase 0x hex by construction (`blocks`, the event tables, `reward_balances`),
-- carry none: even the rtrim form cost PostgreSQL 0.8 s of the 2.3 s a 200k-event backfill
-- spent (three per reward_added row), to re-check what cannot be otherwise.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Facts about this database itself. `nonce_salt` (32 random bytes, hex, written once by migrate)
-- enters every batch nonce, so a second database (staging) or a reset sequence never derives a
-- nonce that another database's batch already used on chain.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS checkpoints (
    chain_id        BIGINT PRIMARY KEY,
    block_number    BIGINT NOT NULL CHECK (block_number >= -1),
    block_hash      TEXT CHECK (block_hash IS NULL OR (octet_length(block_hash) = 66 AND rtrim(block_hash, '0123456789abcdef') = '0x')),
    finalized_block BIGINT,
    halted_reason   TEXT,
    start_block     BIGINT NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS blocks (
    chain_id    BIGINT NOT NULL,
    number      BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    parent_hash TEXT NOT NULL,
    timestamp   BIGINT NOT NULL,
    PRIMARY KEY (chain_id, number)
);

CREATE TABLE IF NOT EXISTS reorgs (
    id              BIGSERIAL PRIMARY KEY,
    chain_id        BIGINT NOT NULL,
    detected_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    depth           INTEGER NOT NULL,
    common_ancestor BIGINT NOT NULL,
    old_hash        TEXT,
    new_hash        TEXT,
    kind            TEXT NOT NULL DEFAULT 'reorg' CHECK (kind IN ('reorg', 'rewind'))
);

CREATE TABLE IF NOT EXISTS quarantine (
    chain_id     BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    block_time   TIMESTAMPTZ,
    tx_hash      TEXT NOT NULL,
    log_index    BIGINT NOT NULL,
    contract     TEXT NOT NULL,
    topics       TEXT[] NOT NULL,
    data         TEXT NOT NULL,
    reason       TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

-- Decodable logs of watched contracts that have no table of their own (e.g. RoleGranted), so
-- that every log of a watched address lands in exactly one table.
CREATE TABLE IF NOT EXISTS other_events (
    chain_id     BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    block_time   TIMESTAMPTZ,
    tx_hash      TEXT NOT NULL,
    log_index    BIGINT NOT NULL,
    contract     TEXT NOT NULL,
    event        TEXT NOT NULL,
    args         JSONB NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS product_banks (
    chain_id     BIGINT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    block_time   TIMESTAMPTZ,
    tx_hash      TEXT NOT NULL,
    log_index    BIGINT NOT NULL,
    contract     TEXT NOT NULL,
    product_id   TEXT NOT NULL,
    bank         TEXT NOT NULL,
    owner        TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index),
    UNIQUE (chain_id, bank)
);

CREATE TABLE IF NOT EXISTS reward_added (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token   TEXT NOT NULL,
    wallet  TEXT NOT NULL,
    emitter TEXT NOT NULL,
    amount  NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS reward_claimed (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token  TEXT NOT NULL,
    wallet TEXT NOT NULL,
    amount NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS pusher_changes (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    pusher     TEXT NOT NULL,
    authorized BOOLEAN NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS funds_deposited (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token     TEXT NOT NULL,
    depositor TEXT NOT NULL,
    amount    NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS funds_withdrawn (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token     TEXT NOT NULL,
    recipient TEXT NOT NULL,
    amount    NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS campaign_budgets (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    token       TEXT NOT NULL,
    budget      NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS campaign_deactivations (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS rewards_pushed (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    campaign_id  TEXT NOT NULL,
    token        TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    total_amount NUMERIC(78, 0) NOT NULL,
    count        NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);
CREATE INDEX IF NOT EXISTS rewards_pushed_nonce ON rewards_pushed (chain_id, contract, nonce);

CREATE TABLE IF NOT EXISTS chamas (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id            NUMERIC(78, 0) NOT NULL,
    name                TEXT NOT NULL,
    creator             TEXT NOT NULL,
    contribution_amount NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS chama_members (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id NUMERIC(78, 0) NOT NULL,
    member   TEXT NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS contributions (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id    NUMERIC(78, 0) NOT NULL,
    contributor TEXT NOT NULL,
    amount      NUMERIC(78, 0) NOT NULL,
    "timestamp" NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS payouts (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id     NUMERIC(78, 0) NOT NULL,
    recipient    TEXT NOT NULL,
    amount       NUMERIC(78, 0) NOT NULL,
    cycle_number NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS chama_completions (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

-- Derived: kept in the same transaction as reward_added/reward_claimed and right after a rollback.
CREATE TABLE IF NOT EXISTS reward_balances (
    chain_id BIGINT NOT NULL,
    contract TEXT NOT NULL,
    token    TEXT NOT NULL,
    wallet   TEXT NOT NULL,
    -- Sums, unbounded: a hostile watched contract may emit amounts whose sum exceeds uint256.
    added    NUMERIC NOT NULL DEFAULT 0 CHECK (added >= 0),
    claimed  NUMERIC NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    pending  NUMERIC GENERATED ALWAYS AS (added - claimed) STORED,
    -- Wallet first: the key also serves "every balance of this wallet" (the API's lookups),
    -- so no second index has to be kept in step with each of a backfill's inserts (one new
    -- wallet per event spent a fifth of its balance upsert time in that index).
    PRIMARY KEY (wallet, chain_id, contract, token)
);
-- Every batch updates the balances of the wallets it pays; half-empty pages keep those updates
-- HOT (new version on the same page, no index entry, dead versions pruned without VACUUM).
-- Full pages made a 200k-event backfill's balances table 21 MB for 5,000 rows and each upsert
-- walk every dead version: 3.0 s of the backfill's database time, 1.8 s with this.
ALTER TABLE reward_balances SET (fillfactor = 50);
-- Upgrade of databases made with the key (chain_id, contract, token, wallet) and a separate
-- wallet index: the key becomes wallet-first, the index goes. Once done, nothing matches.
DO $$
BEGIN
    IF (SELECT a.attname FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'reward_balances'::regclass AND i.indisprimary) <> 'wallet' THEN
        ALTER TABLE reward_balances DROP CONSTRAINT reward_balances_pkey,
            ADD PRIMARY KEY (wallet, chain_id, contract, token);
    END IF;
END
$$;
DROP INDEX IF EXISTS reward_balances_wallet;

-- The rewards queue: inserted by the backend, advanced by the daemon.
CREATE TABLE IF NOT EXISTS reward_batches (
    id           BIGSERIAL PRIMARY KEY,
    chain_id     BIGINT NOT NULL,
    bank         TEXT NOT NULL CHECK (octet_length(bank) = 42 AND rtrim(bank, '0123456789abcdef') = '0x'),
    campaign_id  TEXT NOT NULL CHECK (octet_length(campaign_id) = 66 AND rtrim(campaign_id, '0123456789abcdef') = '0x'),
    token        TEXT NOT NULL CHECK (octet_length(token) = 42 AND rtrim(token, '0123456789abcdef') = '0x'),
    nonce        TEXT UNIQUE CHECK (nonce IS NULL OR (octet_length(nonce) = 66 AND rtrim(nonce, '0123456789abcdef') = '0x')),
    deadline     BIGINT,
    status       TEXT NOT NULL DEFAULT 'draft'
                 CHECK (status IN ('draft', 'pending', 'confirmed', 'failed', 'reconciled')),
    tx_hash      TEXT CHECK (tx_hash IS NULL OR (octet_length(tx_hash) = 66 AND rtrim(tx_hash, '0123456789abcdef') = '0x')),
    raw_tx       TEXT,
    call_data    TEXT,
    gas_limit    BIGINT,
    sender       TEXT CHECK (sender IS NULL OR (octet_length(sender) = 42 AND rtrim(sender, '0123456789abcdef') = '0x')),
    sender_nonce BIGINT,
    max_fee      NUMERIC(78, 0),
    priority_fee NUMERIC(78, 0),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,
    broadcast_at TIMESTAMPTZ,
    submitted_at TIMESTAMPTZ,
    confirmed_at TIMESTAMPTZ,
    block_number BIGINT,
    gas_used     BIGINT,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_block BIGINT,
    reward_count INTEGER,
    total_amount NUMERIC(78, 0),
    mined_block  BIGINT,
    evidence     TEXT CHECK (evidence IS NULL OR evidence IN ('index', 'chain', 'reconciler')),
    lease_token  BIGINT
);
-- Columns added after the first release (schema version 2): what the chain judge compares a
-- RewardsPushed with (count, total), where it starts looking for it (created_block), the block
-- of a successful receipt (mined_block), where a confirmation came from (evidence), and the
-- draft's lease (a compare-and-set so two pushers never both sign one draft).
ALTER TABLE reward_batches
    ADD COLUMN IF NOT EXISTS created_block BIGINT,
    ADD COLUMN IF NOT EXISTS reward_count INTEGER,
    ADD COLUMN IF NOT EXISTS total_amount NUMERIC(78, 0),
    ADD COLUMN IF NOT EXISTS mined_block BIGINT,
    ADD COLUMN IF NOT EXISTS evidence TEXT
        CHECK (evidence IS NULL OR evidence IN ('index', 'chain', 'reconciler')),
    ADD COLUMN IF NOT EXISTS lease_token BIGINT;

CREATE INDEX IF NOT EXISTS reward_batches_open ON reward_batches (chain_id, status)
    WHERE status IN ('draft', 'pending');

CREATE TABLE IF NOT EXISTS rewards (
    id              BIGSERIAL PRIMARY KEY,
    chain_id        BIGINT NOT NULL,
    bank            TEXT NOT NULL CHECK (octet_length(bank) = 42 AND rtrim(bank, '0123456789abcdef') = '0x'),
    campaign_id     TEXT NOT NULL CHECK (octet_length(campaign_id) = 66 AND rtrim(campaign_id, '0123456789abcdef') = '0x'),
    token           TEXT NOT NULL CHECK (octet_length(token) = 42 AND rtrim(token, '0123456789abcdef') = '0x'),
    wallet          TEXT NOT NULL CHECK (octet_length(wallet) = 42 AND rtrim(wallet, '0123456789abcdef') = '0x'),
    amount          NUMERIC(78, 0) NOT NULL CHECK (amount > 0),
    external_key    TEXT NOT NULL UNIQUE,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'pushed', 'confirmed', 'failed')),
    batch_id        BIGINT REFERENCES reward_batches (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    pushed_at       TIMESTAMPTZ,
    confirmed_at    TIMESTAMPTZ,
    confirmed_block BIGINT,
    error           TEXT
);
CREATE INDEX IF NOT EXISTS rewards_status ON rewards (status, chain_id, bank, campaign_id, token);
-- An amount the contract cannot carry (uint256) is refused here, not by the pusher's encoder.
DO $amount$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'rewards_amount_uint256') THEN
        ALTER TABLE rewards ADD CONSTRAINT rewards_amount_uint256 CHECK (
            amount < 115792089237316195423570985008687907853269984665640564039457584007913129639936);
    END IF;
END
$amount$;
-- Once a reward is in a batch its payee and amount are what was signed: they never change (the
-- chain judge compares a RewardsPushed's count and total with the batch's rewards).
CREATE OR REPLACE FUNCTION rewards_batched_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.batch_id IS NOT NULL AND (NEW.wallet, NEW.amount, NEW.bank, NEW.campaign_id, NEW.token,
            NEW.chain_id) IS DISTINCT FROM (OLD.wallet, OLD.amount, OLD.bank, OLD.campaign_id,
            OLD.token, OLD.chain_id) THEN
        RAISE EXCEPTION 'reward % is in batch %: its wallet, amount, bank, campaign and token are signed and cannot change',
            OLD.id, OLD.batch_id;
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS rewards_batched_immutable ON rewards;
CREATE TRIGGER rewards_batched_immutable BEFORE UPDATE ON rewards
    FOR EACH ROW EXECUTE FUNCTION rewards_batched_immutable();
-- Batches made before version 2: their count and total from their rewards (once).
UPDATE reward_batches b SET reward_count = s.n, total_amount = s.total
FROM (SELECT batch_id, count(*) AS n, sum(amount) AS total FROM rewards
      WHERE batch_id IS NOT NULL GROUP BY batch_id) s
WHERE b.id = s.batch_id AND b.reward_count IS NULL AND b.status IN ('draft', 'pending', 'confirmed');
CREATE INDEX IF NOT EXISTS rewards_batch ON rewards (batch_id);
-- A wallet's rewards (rewardsync_api.wallet_overview, the HTTP API): one index lookup, not a
-- scan of the queue.
CREATE INDEX IF NOT EXISTS rewards_wallet ON rewards (wallet);
-- The reconciler's look for confirmed rewards astray (rc_confirmed_rewards_astray): the batches
-- not confirmed, and the confirmed rewards without a batch, each a small part of its table.
CREATE INDEX IF NOT EXISTS reward_batches_unconfirmed ON reward_batches (chain_id, id)
    WHERE status NOT IN ('confirmed', 'reconciled');
-- A rollback finds the batches confirmed above the common ancestor (unconfirm_batches) by block.
CREATE INDEX IF NOT EXISTS reward_batches_block ON reward_batches (chain_id, block_number)
    WHERE block_number IS NOT NULL;
CREATE INDEX IF NOT EXISTS rewards_confirmed_unbatched ON rewards (chain_id, id)
    WHERE status = 'confirmed' AND batch_id IS NULL;

CREATE TABLE IF NOT EXISTS discrepancies (
    id          BIGSERIAL PRIMARY KEY,
    chain_id    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    expected    TEXT,
    actual      TEXT,
    at_block    BIGINT,
    detected_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ,
    resolution  TEXT
);
CREATE INDEX IF NOT EXISTS discrepancies_open ON discrepancies (chain_id) WHERE resolved_at IS NULL;

-- Where the incremental reconciler is (indexer.reconcile, above `reconcile_max_views`
-- balances): the reward events up to `touched_block` were checked, and the rotating sample
-- goes on after the balance key (wallet, contract, token); an empty wallet starts a cycle.
CREATE TABLE IF NOT EXISTS reconcile_cursor (
    chain_id      BIGINT PRIMARY KEY,
    touched_block BIGINT NOT NULL,
    wallet        TEXT NOT NULL DEFAULT '',
    contract      TEXT NOT NULL DEFAULT '',
    token         TEXT NOT NULL DEFAULT '',
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One-query read for apps: a wallet's rewards per (chain, MultiTokenPushPull, token), as
-- indexed up to the checkpoint: pending (claimable now), claimed and total (ever credited).
CREATE OR REPLACE FUNCTION wallet_balances(wallet text)
RETURNS TABLE (chain_id bigint, contract text, token text, pending numeric, claimed numeric,
               total numeric)
LANGUAGE sql STABLE AS $$
    SELECT b.chain_id, b.contract, b.token, b.pending, b.claimed, b.added
    FROM reward_balances b
    WHERE b.wallet = lower(wallet_balances.wallet)
    ORDER BY b.chain_id, b.contract, b.token
$$;

-- Upgrade of databases migrated before the rtrim form: each single-column hex CHECK still in the
-- regex form, as pg_get_constraintdef prints it (`CHECK ((x ~ '^0x[0-9a-f]{40}$'::text))`, or
-- `CHECK (((x IS NULL) OR (x ~ ...)))`), is replaced by the rtrim form under the same name, with
-- one ALTER TABLE per table (one scan validates all of its new constraints). Once done, nothing
-- matches: re-running changes nothing.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT con.conrelid::regclass AS tbl,
               string_agg(format('DROP CONSTRAINT %1$I, ADD CONSTRAINT %1$I CHECK (%2$s)',
                                 con.conname, form.new_check), ', ') AS actions
        FROM pg_constraint con
        JOIN pg_class tab ON tab.oid = con.conrelid
        JOIN pg_attribute col ON col.attrelid = con.conrelid AND col.attnum = con.conkey[1]
        CROSS JOIN (VALUES (40), (64)) AS hex(digits)
        CROSS JOIN LATERAL (
            SELECT format('(%I ~ %L::text)', col.attname, '^0x[0-9a-f]{' || hex.digits || '}$')
                       AS regex_test,
                   format('octet_length(%1$I) = %2$s AND rtrim(%1$I, %3$L) = %4$L',
                          col.attname, hex.digits + 2, '0123456789abcdef', '0x') AS rtrim_test
        ) AS test
        CROSS JOIN LATERAL (VALUES
            (format('CHECK (%s)', test.regex_test), test.rtrim_test),
            (format('CHECK (((%I IS NULL) OR %s))', col.attname, test.regex_test),
             format('%I IS NULL OR (%s)', col.attname, test.rtrim_test))
        ) AS form(old_def, new_check)
        WHERE con.contype = 'c'
          AND tab.relnamespace = 'public'::regnamespace
          AND tab.relname = ANY (ARRAY['checkpoints', 'reward_batches', 'rewards'])
          AND pg_get_constraintdef(con.oid) = form.old_def
        GROUP BY con.conrelid
    LOOP
        EXECUTE format('ALTER TABLE %s %s', t.tbl, t.actions);
    END LOOP;
END
$$;

-- Upgrade of databases made with hex CHECKs on the daemon's bulk tables (see the top of this
-- file): each one still there, in the regex or the rtrim form, is dropped, with one ALTER TABLE
-- per table. Other CHECKs (amounts, statuses) stay. Once done, nothing matches.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT con.conrelid::regclass AS tbl,
               string_agg(format('DROP CONSTRAINT %I', con.conname), ', ') AS actions
        FROM pg_constraint con
        JOIN pg_class tab ON tab.oid = con.conrelid
        WHERE con.contype = 'c'
          AND tab.relnamespace = 'public'::regnamespace
          AND tab.relname = ANY (ARRAY[
              'blocks', 'product_banks', 'reward_added', 'reward_claimed', 'pusher_changes',
              'funds_deposited', 'funds_withdrawn', 'campaign_budgets', 'campaign_deactivations',
              'rewards_pushed', 'chamas', 'chama_members', 'contributions', 'payouts',
              'reward_balances'])
          AND (pg_get_constraintdef(con.oid) LIKE '%''0123456789abcdef''%'
               OR pg_get_constraintdef(con.oid) LIKE '%''^0x[0-9a-f]{%')
        GROUP BY con.conrelid
    LOOP
        EXECUTE format('ALTER TABLE %s %s', t.tbl, t.actions);
    END LOOP;
END
$$;

-- ------------------------------------------------------------------------------------------
-- rewardsync_api: the backend's stable interface (schema version 3). Functions and views here
-- keep their names, arguments and columns while the internal tables change. They run with the
-- rights of their owner (the role that migrates: SECURITY DEFINER, a fixed search_path), so
-- the roles `indexer migrate --roles` creates need no right on the internal tables.
-- ------------------------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS rewardsync_api;

-- Queue one reward. Hex arguments may be lowercase or mixed case (they are stored lowercase;
-- PostgreSQL has no keccak, so an EIP-55 checksum is not verified here). Idempotent on
-- external_key: the same key with the same values returns the existing row; the same key with
-- other values is an error. One clear error (SQLSTATE 22023) per bad argument.
CREATE OR REPLACE FUNCTION rewardsync_api.enqueue_reward(
    chain_id bigint, bank text, campaign_id text, token text, wallet text, amount numeric,
    external_key text)
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    v_bank text := lower(enqueue_reward.bank);
    v_campaign text := lower(enqueue_reward.campaign_id);
    v_token text := lower(enqueue_reward.token);
    v_wallet text := lower(enqueue_reward.wallet);
    found_row public.rewards%ROWTYPE;
BEGIN
    IF enqueue_reward.chain_id IS NULL OR enqueue_reward.chain_id <= 0 THEN
        RAISE EXCEPTION 'chain_id must be a positive integer' USING ERRCODE = '22023';
    END IF;
    IF v_bank IS NULL OR v_bank !~ '^0x[0-9a-f]{40}$' THEN
        RAISE EXCEPTION 'bank is not a 20-byte 0x address: %', enqueue_reward.bank USING ERRCODE = '22023';
    END IF;
    IF v_campaign IS NULL OR v_campaign !~ '^0x[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'campaign_id is not a 32-byte 0x value: %', enqueue_reward.campaign_id USING ERRCODE = '22023';
    END IF;
    IF v_token IS NULL OR v_token !~ '^0x[0-9a-f]{40}$' THEN
        RAISE EXCEPTION 'token is not a 20-byte 0x address: %', enqueue_reward.token USING ERRCODE = '22023';
    END IF;
    IF v_wallet IS NULL OR v_wallet !~ '^0x[0-9a-f]{40}$' THEN
        RAISE EXCEPTION 'wallet is not a 20-byte 0x address: %', enqueue_reward.wallet USING ERRCODE = '22023';
    END IF;
    IF enqueue_reward.amount IS NULL OR enqueue_reward.amount <= 0
       OR enqueue_reward.amount >= 2::numeric ^ 256 OR enqueue_reward.amount <> trunc(enqueue_reward.amount) THEN
        RAISE EXCEPTION 'amount must be an integer in 1 .. 2^256-1: %', enqueue_reward.amount USING ERRCODE = '22023';
    END IF;
    IF enqueue_reward.external_key IS NULL OR length(enqueue_reward.external_key) = 0 THEN
        RAISE EXCEPTION 'external_key must not be empty' USING ERRCODE = '22023';
    END IF;
    INSERT INTO public.rewards AS r (chain_id, bank, campaign_id, token, wallet, amount, external_key)
    VALUES (enqueue_reward.chain_id, v_bank, v_campaign, v_token, v_wallet, enqueue_reward.amount,
            enqueue_reward.external_key)
    ON CONFLICT ON CONSTRAINT rewards_external_key_key DO NOTHING
    RETURNING r.id, r.status INTO id, status;
    IF id IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT * INTO found_row FROM public.rewards r WHERE r.external_key = enqueue_reward.external_key;
    IF (found_row.chain_id, found_row.bank, found_row.campaign_id, found_row.token, found_row.wallet,
        found_row.amount)
       IS DISTINCT FROM
       (enqueue_reward.chain_id, v_bank, v_campaign, v_token, v_wallet, enqueue_reward.amount) THEN
        RAISE EXCEPTION 'external_key % is already queued with other values (reward %)',
            enqueue_reward.external_key, found_row.id USING ERRCODE = '23505';
    END IF;
    id := found_row.id;
    status := found_row.status;
    RETURN NEXT;
END
$fn$;

-- One reward by its idempotency key: where it is, in which batch, confirmed where, or why not.
CREATE OR REPLACE FUNCTION rewardsync_api.reward_status(external_key text)
RETURNS TABLE (id bigint, chain_id bigint, bank text, wallet text, amount numeric, status text,
               batch_id bigint, batch_status text, tx_hash text, confirmed_block bigint,
               error text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    SELECT r.id, r.chain_id, r.bank, r.wallet, r.amount, r.status, r.batch_id, b.status,
           b.tx_hash, r.confirmed_block, coalesce(r.error, b.error)
    FROM public.rewards r LEFT JOIN public.reward_batches b ON b.id = r.batch_id
    WHERE r.external_key = reward_status.external_key
$fn$;

-- A wallet's money per (chain, token): claimable on chain now (as indexed), claimed, in flight
-- (pushed, not confirmed), queued, and failed rewards with the last reason.
CREATE OR REPLACE FUNCTION rewardsync_api.wallet_overview(wallet text)
RETURNS TABLE (chain_id bigint, token text, claimable numeric, claimed numeric,
               in_flight numeric, queued numeric, failed numeric, last_error text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    WITH w AS (SELECT lower(wallet_overview.wallet) AS wallet),
    onchain AS (
        SELECT b.chain_id, b.token, sum(b.pending) AS claimable, sum(b.claimed) AS claimed
        FROM public.reward_balances b, w WHERE b.wallet = w.wallet GROUP BY 1, 2
    ),
    queue AS (
        -- in flight: pushed, and its batch's RewardsPushed not indexed yet (once it is, the
        -- amount is in reward_balances: claimable, not counted twice)
        SELECT r.chain_id, r.token,
               sum(r.amount) FILTER (
                   WHERE r.status = 'pushed' AND NOT EXISTS (
                       SELECT 1 FROM public.reward_batches b
                       JOIN public.rewards_pushed e
                         ON e.chain_id = b.chain_id AND e.contract = b.bank AND e.nonce = b.nonce
                       WHERE b.id = r.batch_id)
               ) AS in_flight,
               sum(r.amount) FILTER (WHERE r.status = 'pending') AS queued,
               sum(r.amount) FILTER (WHERE r.status = 'failed') AS failed,
               (array_agg(r.error ORDER BY r.id DESC) FILTER (WHERE r.error IS NOT NULL))[1] AS last_error
        FROM public.rewards r, w WHERE r.wallet = w.wallet GROUP BY 1, 2
    )
    SELECT coalesce(o.chain_id, q.chain_id), coalesce(o.token, q.token),
           coalesce(o.claimable, 0), coalesce(o.claimed, 0), coalesce(q.in_flight, 0),
           coalesce(q.queued, 0), coalesce(q.failed, 0), q.last_error
    FROM onchain o FULL JOIN queue q ON q.chain_id = o.chain_id AND q.token = o.token
    ORDER BY 1, 2
$fn$;

-- Per chain: what is indexed, what is final, whether it is halted and why, the last reorg.
CREATE OR REPLACE VIEW rewardsync_api.sync_status AS
    SELECT c.chain_id, c.block_number AS checkpoint, c.finalized_block, c.halted_reason,
           c.updated_at, r.depth AS last_reorg_depth, r.detected_at AS last_reorg_at,
           (SELECT count(*) FROM public.discrepancies d
            WHERE d.chain_id = c.chain_id AND d.resolved_at IS NULL) AS open_discrepancies
    FROM public.checkpoints c
    LEFT JOIN LATERAL (
        SELECT depth, detected_at FROM public.reorgs x WHERE x.chain_id = c.chain_id
        ORDER BY x.id DESC LIMIT 1
    ) r ON true;

-- Campaign budgets as the chain and the queue see them: the last allocation (it overwrites the
-- remaining budget), what was pushed since (remaining = allocation - pushed since, NULL when
-- uncapped), pushed in all, queued and in flight in our queue, and whether it was deactivated.
CREATE OR REPLACE VIEW rewardsync_api.campaign_budgets AS
    WITH last_alloc AS (
        SELECT DISTINCT ON (chain_id, contract, campaign_id, token)
               chain_id, contract AS bank, campaign_id, token, budget, block_number, log_index
        FROM public.campaign_budgets
        ORDER BY chain_id, contract, campaign_id, token, block_number DESC, log_index DESC
    )
    SELECT a.chain_id, a.bank, a.campaign_id, a.token,
           a.budget = 2::numeric ^ 256 - 1 AS uncapped,
           CASE WHEN a.budget = 2::numeric ^ 256 - 1 THEN NULL
                ELSE a.budget - coalesce((
                    SELECT sum(p.total_amount) FROM public.rewards_pushed p
                    WHERE p.chain_id = a.chain_id AND p.contract = a.bank
                      AND p.campaign_id = a.campaign_id AND p.token = a.token
                      AND (p.block_number, p.log_index) > (a.block_number, a.log_index)), 0)
           END AS remaining,
           coalesce((SELECT sum(p.total_amount) FROM public.rewards_pushed p
                     WHERE p.chain_id = a.chain_id AND p.contract = a.bank
                       AND p.campaign_id = a.campaign_id AND p.token = a.token), 0) AS pushed,
           coalesce((SELECT sum(r.amount) FROM public.rewards r
                     WHERE r.chain_id = a.chain_id AND r.bank = a.bank AND r.status = 'pending'
                       AND r.campaign_id = a.campaign_id AND r.token = a.token), 0) AS queued,
           coalesce((SELECT sum(r.amount) FROM public.rewards r
                     WHERE r.chain_id = a.chain_id AND r.bank = a.bank AND r.status = 'pushed'
                       AND r.campaign_id = a.campaign_id AND r.token = a.token), 0) AS in_flight,
           EXISTS (SELECT 1 FROM public.campaign_deactivations d
                   WHERE d.chain_id = a.chain_id AND d.contract = a.bank
                     AND d.campaign_id = a.campaign_id) AS deactivated
    FROM last_alloc a;

-- Savings circles: per chama its members, contributions, payouts (the current round is the
-- next one) and whether it completed; per member what they put in and received.
CREATE OR REPLACE VIEW rewardsync_api.chama_stats AS
    SELECT c.chain_id, c.contract, c.chama_id, c.name, c.creator, c.contribution_amount,
           (SELECT count(*) FROM public.chama_members m
            WHERE m.chain_id = c.chain_id AND m.contract = c.contract AND m.chama_id = c.chama_id)
               AS members,
           coalesce((SELECT sum(x.amount) FROM public.contributions x
                     WHERE x.chain_id = c.chain_id AND x.contract = c.contract
                       AND x.chama_id = c.chama_id), 0) AS contributed,
           coalesce((SELECT sum(p.amount) FROM public.payouts p
                     WHERE p.chain_id = c.chain_id AND p.contract = c.contract
                       AND p.chama_id = c.chama_id), 0) AS paid_out,
           (SELECT count(*) FROM public.payouts p
            WHERE p.chain_id = c.chain_id AND p.contract = c.contract AND p.chama_id = c.chama_id)
               + 1 AS current_round,
           EXISTS (SELECT 1 FROM public.chama_completions z
                   WHERE z.chain_id = c.chain_id AND z.contract = c.contract
                     AND z.chama_id = c.chama_id) AS completed
    FROM public.chamas c;

CREATE OR REPLACE VIEW rewardsync_api.chama_member_stats AS
    SELECT m.chain_id, m.contract, m.chama_id, m.member,
           coalesce((SELECT sum(x.amount) FROM public.contributions x
                     WHERE x.chain_id = m.chain_id AND x.contract = m.contract
                       AND x.chama_id = m.chama_id AND x.contributor = m.member), 0)
               AS contributed,
           coalesce((SELECT sum(p.amount) FROM public.payouts p
                     WHERE p.chain_id = m.chain_id AND p.contract = m.contract
                       AND p.chama_id = m.chama_id AND p.recipient = m.member), 0) AS received
    FROM public.chama_members m;
