-- The last sign of life of an import (its start, then each batch): an
-- import that has neither finished nor stopped and showed one within the
-- last 150 seconds is running, and the account takes no other import until
-- it ends (its client has 120 seconds to send more). A server that crashed
-- mid-import frees the account once that delay has passed.
ALTER TABLE import_reports ADD COLUMN active_at timestamptz NOT NULL DEFAULT now();
