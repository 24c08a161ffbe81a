-- Why an import stopped before its end (client gone, file unreadable,
-- Postgres unreachable); NULL while it runs, when it finished, or when the
-- server itself was stopped.
ALTER TABLE import_reports ADD COLUMN stopped text;
