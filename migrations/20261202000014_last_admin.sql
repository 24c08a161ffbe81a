-- The last active holder of admin.users on an account cannot lose it, by
-- any path (revoke, set, unlink, deactivate, archive, revoke everywhere, an
-- import's "non" or sync), unless an operator (or the command line) does
-- it; a grant's expiry is exempt (nothing is written when it passes).
--
-- Statement triggers record the accounts whose admin may have gone (an
-- admin.users grant of an active user deleted, an admin made inactive); a
-- deferred constraint trigger checks each at commit, once the transaction's
-- writes are all done (SetRights deletes and re-inserts), against the
-- transaction's actor and time (`clef.actor`, `clef.now`, set by every
-- write).

CREATE UNLOGGED TABLE last_admin_checks (
    txid       bigint NOT NULL,
    account_id uuid   NOT NULL,
    PRIMARY KEY (txid, account_id)
);

CREATE FUNCTION clef_admin_may_be_gone_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), o.account_id
      FROM old_rows o JOIN users u ON u.id = o.user_id
     WHERE o.right_code = 'admin.users' AND u.status = 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER grants_admin_may_be_gone AFTER DELETE ON grants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_admin_may_be_gone_grants();

CREATE FUNCTION clef_admin_may_be_gone_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), g.account_id
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      JOIN grants g ON g.user_id = n.id AND g.right_code = 'admin.users'
     WHERE o.status = 'active' AND n.status <> 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER users_admin_may_be_gone AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_admin_may_be_gone_users();

CREATE FUNCTION clef_check_last_admin() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor text := current_setting('clef.actor', true);
    -- The store's clock, as every access rule's (`Store::write` sets it).
    at    timestamptz := COALESCE(NULLIF(current_setting('clef.now', true), '')::timestamptz, now());
    code  text;
BEGIN
    DELETE FROM last_admin_checks WHERE txid = NEW.txid AND account_id = NEW.account_id;
    IF actor IS NULL OR actor = ''
       OR EXISTS (SELECT 1 FROM users WHERE id = actor::uuid AND kind = 'operator') THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM grants g JOIN users u ON u.id = g.user_id
                    WHERE g.account_id = NEW.account_id AND g.right_code = 'admin.users'
                      AND u.status = 'active'
                      AND (g.expires_at IS NULL OR g.expires_at > at)) THEN
        SELECT a.code INTO code FROM accounts a WHERE a.id = NEW.account_id;
        RAISE EXCEPTION 'account %: its last active admin cannot lose admin.users; give it to someone else first, or ask an operator', code
            USING ERRCODE = 'check_violation', CONSTRAINT = 'last_admin';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER last_admin AFTER INSERT ON last_admin_checks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION clef_check_last_admin();
