-- Core schema: the revision counter, organizations, accounts, principals
-- (users, operators, service principals), their connection keys, and the
-- audit log.

-- One row. Every write transaction takes the next value, which serialises
-- writers on this row: revisions are therefore handed out in commit order, so
-- "a replica has seen revision N" implies it has seen every change <= N.
CREATE TABLE revision_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    value     bigint  NOT NULL
);
INSERT INTO revision_counter (singleton, value) VALUES (true, 0);

CREATE TABLE organizations (
    id           uuid        PRIMARY KEY,
    display_name text        NOT NULL,
    request_id   text        UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    revision     bigint      NOT NULL
);

CREATE TABLE accounts (
    id              uuid        PRIMARY KEY,
    -- Text on purpose: leading zeros are significant ("007" <> "7").
    code            text        NOT NULL UNIQUE COLLATE "C"
                                CHECK (code ~ '^[A-Za-z0-9._-]{1,32}$'),
    organization_id uuid        NOT NULL REFERENCES organizations (id),
    display_name    text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('active', 'closed')),
    request_id      text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    revision        bigint      NOT NULL
);
CREATE INDEX accounts_organization_code ON accounts (organization_id, code);

-- Every principal that can hold a connection key. `kind` separates the
-- people of the domain (standard, advanced) from the service's own
-- principals (operator, service).
CREATE TABLE users (
    id           uuid        PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('standard', 'advanced', 'operator', 'service')),
    status       text        NOT NULL CHECK (status IN ('invited', 'active', 'deactivated', 'archived')),
    -- Never changes once set.
    login        text        UNIQUE,
    display_name text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    revision     bigint      NOT NULL
);

CREATE TABLE connection_keys (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id),
    -- SHA-256 of the whole key. The secret itself is never stored.
    secret_hash  bytea       NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    -- The first characters of the key, to recognise it in listings.
    display_prefix text      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX connection_keys_user ON connection_keys (user_id);

CREATE TABLE audit_events (
    revision    bigint      PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- NULL for changes made from the command line (`clef operator create`).
    actor_id    uuid        REFERENCES users (id),
    action      text        NOT NULL,
    target      text        NOT NULL,
    summary     text        NOT NULL
);
