-- Grants by account in user order, covering what exports and listings read
-- (index-only scans): replaces grants_account (account_id, right_code),
-- which no query needed in that order.
CREATE INDEX grants_account_user ON grants (account_id, user_id, right_code) INCLUDE (scope, expires_at);
DROP INDEX grants_account;
