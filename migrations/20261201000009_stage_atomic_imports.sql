-- An atomic import is staged here as its file arrives, and applied in one
-- short transaction only after its last byte: no write transaction (and so
-- not the revision counter every writer needs) is held while waiting for a
-- client. Its line results are staged too until that transaction has ended,
-- so that a client slow to read them holds nothing either. Unlogged (an
-- interrupted atomic import leaves nothing to keep), and gone with the
-- import's report.
CREATE UNLOGGED TABLE import_staged_lines (
    report_id uuid   NOT NULL REFERENCES import_reports (id) ON DELETE CASCADE,
    line      bigint NOT NULL,
    -- The record's cells, a JSON array of strings.
    cells     bytea  NOT NULL,
    PRIMARY KEY (report_id, line)
);

CREATE UNLOGGED TABLE import_staged_results (
    report_id uuid   NOT NULL REFERENCES import_reports (id) ON DELETE CASCADE,
    seq       bigint NOT NULL,
    -- A batch's line results, JSON.
    data      bytea  NOT NULL,
    PRIMARY KEY (report_id, seq)
);
