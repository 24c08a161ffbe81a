-- The report of the latest import into each account: kept 7 days, replaced
-- by the account's next import. Written outside the import's transactions,
-- so that dry runs and rolled-back atomic imports have one too.
CREATE TABLE import_reports (
    id          uuid        PRIMARY KEY,
    account_id  uuid        NOT NULL UNIQUE REFERENCES accounts (id),
    actor_id    uuid        REFERENCES users (id),
    started_at  timestamptz NOT NULL DEFAULT now(),
    sync        boolean     NOT NULL,
    dry_run     boolean     NOT NULL,
    atomic      boolean     NOT NULL,
    force       boolean     NOT NULL,
    -- Set when the import ends with a summary; NULL while it runs, or when
    -- it was interrupted.
    finished_at timestamptz,
    lines       bigint,
    counts      jsonb,
    committed   boolean,
    revision    bigint
);
CREATE INDEX import_reports_started ON import_reports (started_at);

-- The report's CSV, one chunk per batch of lines, in order.
CREATE TABLE import_report_chunks (
    report_id uuid   NOT NULL REFERENCES import_reports (id) ON DELETE CASCADE,
    seq       bigint NOT NULL,
    data      bytea  NOT NULL,
    PRIMARY KEY (report_id, seq)
);
