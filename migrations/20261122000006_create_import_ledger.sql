-- What an import has met so far, kept here rather than in the server's
-- memory so that memory stays bounded whatever the file's size: the
-- identities of its lines (for `duplicate_in_file`) and the users the file
-- named (kept by a sync). Written outside the import's transactions (a
-- line's identity counts whatever becomes of the line), deleted when the
-- import ends, or with its report when the server stopped mid-import.
-- Unlogged: worthless after a crash, and cheaper to write.
CREATE UNLOGGED TABLE import_seen (
    report_id uuid   NOT NULL,
    identity  bigint NOT NULL,
    PRIMARY KEY (report_id, identity)
);

CREATE UNLOGGED TABLE import_named (
    report_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    PRIMARY KEY (report_id, user_id)
);
