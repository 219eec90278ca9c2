-- rewardsync schema. Idempotent DDL only (CREATE ... IF NOT EXISTS, additive ALTERs), applied by
-- `indexer migrate` under an advisory lock. Addresses and hashes are lowercase 0x hex TEXT;
-- amounts are NUMERIC(78,0). Every event table is keyed by its chain position
-- (chain_id, block_number, log_index); that primary key also serves rollbacks by block number.

CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS checkpoints (
    chain_id        BIGINT PRIMARY KEY,
    block_number    BIGINT NOT NULL CHECK (block_number >= -1),
    block_hash      TEXT CHECK (block_hash IS NULL OR block_hash ~ '^0x[0-9a-f]{64}$'),
    finalized_block BIGINT,
    halted_reason   TEXT,
    start_block     BIGINT NOT NULL DEFAULT 0,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS blocks (
    chain_id    BIGINT NOT NULL,
    number      BIGINT NOT NULL,
    hash        TEXT NOT NULL CHECK (hash ~ '^0x[0-9a-f]{64}$'),
    parent_hash TEXT NOT NULL CHECK (parent_hash ~ '^0x[0-9a-f]{64}$'),
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
    product_id   TEXT NOT NULL CHECK (product_id ~ '^0x[0-9a-f]{64}$'),
    bank         TEXT NOT NULL CHECK (bank ~ '^0x[0-9a-f]{40}$'),
    owner        TEXT NOT NULL CHECK (owner ~ '^0x[0-9a-f]{40}$'),
    PRIMARY KEY (chain_id, block_number, log_index),
    UNIQUE (chain_id, bank)
);

CREATE TABLE IF NOT EXISTS reward_added (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token   TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    wallet  TEXT NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    emitter TEXT NOT NULL CHECK (emitter ~ '^0x[0-9a-f]{40}$'),
    amount  NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS reward_claimed (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token  TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    wallet TEXT NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    amount NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS pusher_changes (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    pusher     TEXT NOT NULL CHECK (pusher ~ '^0x[0-9a-f]{40}$'),
    authorized BOOLEAN NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS funds_deposited (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token     TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    depositor TEXT NOT NULL CHECK (depositor ~ '^0x[0-9a-f]{40}$'),
    amount    NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS funds_withdrawn (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    token     TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    recipient TEXT NOT NULL CHECK (recipient ~ '^0x[0-9a-f]{40}$'),
    amount    NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS campaign_budgets (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    campaign_id TEXT NOT NULL CHECK (campaign_id ~ '^0x[0-9a-f]{64}$'),
    token       TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    budget      NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS campaign_deactivations (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    campaign_id TEXT NOT NULL CHECK (campaign_id ~ '^0x[0-9a-f]{64}$'),
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS rewards_pushed (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    campaign_id  TEXT NOT NULL CHECK (campaign_id ~ '^0x[0-9a-f]{64}$'),
    token        TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    nonce        TEXT NOT NULL CHECK (nonce ~ '^0x[0-9a-f]{64}$'),
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
    creator             TEXT NOT NULL CHECK (creator ~ '^0x[0-9a-f]{40}$'),
    contribution_amount NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS chama_members (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id NUMERIC(78, 0) NOT NULL,
    member   TEXT NOT NULL CHECK (member ~ '^0x[0-9a-f]{40}$'),
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS contributions (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id    NUMERIC(78, 0) NOT NULL,
    contributor TEXT NOT NULL CHECK (contributor ~ '^0x[0-9a-f]{40}$'),
    amount      NUMERIC(78, 0) NOT NULL,
    "timestamp" NUMERIC(78, 0) NOT NULL,
    PRIMARY KEY (chain_id, block_number, log_index)
);

CREATE TABLE IF NOT EXISTS payouts (
    chain_id BIGINT NOT NULL, block_number BIGINT NOT NULL, block_hash TEXT NOT NULL,
    block_time TIMESTAMPTZ, tx_hash TEXT NOT NULL, log_index BIGINT NOT NULL, contract TEXT NOT NULL,
    chama_id     NUMERIC(78, 0) NOT NULL,
    recipient    TEXT NOT NULL CHECK (recipient ~ '^0x[0-9a-f]{40}$'),
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
    token    TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    wallet   TEXT NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
    -- Sums, unbounded: a hostile watched contract may emit amounts whose sum exceeds uint256.
    added    NUMERIC NOT NULL DEFAULT 0 CHECK (added >= 0),
    claimed  NUMERIC NOT NULL DEFAULT 0 CHECK (claimed >= 0),
    pending  NUMERIC GENERATED ALWAYS AS (added - claimed) STORED,
    PRIMARY KEY (chain_id, contract, token, wallet)
);
CREATE INDEX IF NOT EXISTS reward_balances_wallet ON reward_balances (wallet);

-- The rewards queue: inserted by the backend, advanced by the daemon.
CREATE TABLE IF NOT EXISTS reward_batches (
    id           BIGSERIAL PRIMARY KEY,
    chain_id     BIGINT NOT NULL,
    bank         TEXT NOT NULL CHECK (bank ~ '^0x[0-9a-f]{40}$'),
    campaign_id  TEXT NOT NULL CHECK (campaign_id ~ '^0x[0-9a-f]{64}$'),
    token        TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    nonce        TEXT UNIQUE CHECK (nonce IS NULL OR nonce ~ '^0x[0-9a-f]{64}$'),
    deadline     BIGINT,
    status       TEXT NOT NULL DEFAULT 'draft'
                 CHECK (status IN ('draft', 'pending', 'confirmed', 'failed', 'reconciled')),
    tx_hash      TEXT CHECK (tx_hash IS NULL OR tx_hash ~ '^0x[0-9a-f]{64}$'),
    raw_tx       TEXT,
    call_data    TEXT,
    gas_limit    BIGINT,
    sender       TEXT CHECK (sender IS NULL OR sender ~ '^0x[0-9a-f]{40}$'),
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
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS reward_batches_open ON reward_batches (chain_id, status)
    WHERE status IN ('draft', 'pending');

CREATE TABLE IF NOT EXISTS rewards (
    id              BIGSERIAL PRIMARY KEY,
    chain_id        BIGINT NOT NULL,
    bank            TEXT NOT NULL CHECK (bank ~ '^0x[0-9a-f]{40}$'),
    campaign_id     TEXT NOT NULL CHECK (campaign_id ~ '^0x[0-9a-f]{64}$'),
    token           TEXT NOT NULL CHECK (token ~ '^0x[0-9a-f]{40}$'),
    wallet          TEXT NOT NULL CHECK (wallet ~ '^0x[0-9a-f]{40}$'),
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
CREATE INDEX IF NOT EXISTS rewards_batch ON rewards (batch_id);

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
