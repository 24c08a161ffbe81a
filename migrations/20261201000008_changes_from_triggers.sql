-- Invalidation derived from the data: whatever writes what a decision reads
-- (users' status, kind or user key; connection keys; links and their tags;
-- grants; accounts), Postgres itself records which users' decisions may
-- change, and sends the change notices of the transaction when it commits.
-- No write path, present or future, can forget to invalidate.
--
-- Statement-level triggers (one call per statement, whatever its size) add
-- the users a statement touched to `change_users`, keyed by the
-- transaction; the nil user stands for "everything" (an account's state).
-- A transaction that takes a revision, or touches a user, also inserts its
-- one row into `change_txs`, whose deferred constraint trigger runs once,
-- at commit: it reads the transaction's revision (set by the revision
-- counter's own trigger), sends `pg_notify('clef_changes', ...)` in the
-- format `store::Changes::parse` reads, and deletes the transaction's rows.
-- Unlogged: the rows live only as long as their transaction.

CREATE UNLOGGED TABLE change_txs (
    txid bigint PRIMARY KEY
);

CREATE UNLOGGED TABLE change_users (
    txid    bigint NOT NULL,
    user_id uuid   NOT NULL,
    PRIMARY KEY (txid, user_id)
);

-- Taking a revision arms the notice of the transaction: every revision is
-- notified, so that replicas advance to it even when nothing they cache
-- changed.
CREATE FUNCTION clef_revision_taken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('clef.revision', NEW.value::text, true);
    INSERT INTO change_txs VALUES (txid_current()) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER revision_taken AFTER UPDATE ON revision_counter
    FOR EACH ROW EXECUTE FUNCTION clef_revision_taken();

-- Records `users` as touched by the current transaction.
CREATE FUNCTION clef_touch(users uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(users) > 0 THEN
        INSERT INTO change_users
            SELECT DISTINCT txid_current(), u FROM unnest(users) u
            ON CONFLICT DO NOTHING;
        INSERT INTO change_txs VALUES (txid_current()) ON CONFLICT DO NOTHING;
    END IF;
END $$;

-- One function per table, since each reads its transition tables
-- (`old_rows`, `new_rows`) by the columns that matter to decisions.
CREATE FUNCTION clef_touch_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM clef_touch(ARRAY(SELECT id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM clef_touch(ARRAY(SELECT id FROM old_rows));
    ELSE
        PERFORM clef_touch(ARRAY(
            SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE (o.status, o.kind, o.user_key) IS DISTINCT FROM (n.status, n.kind, n.user_key)));
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION clef_touch_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM clef_touch(ARRAY(SELECT user_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM clef_touch(ARRAY(SELECT user_id FROM old_rows));
    ELSE
        -- `last_used_at` alone changes no decision (and is written outside
        -- any revision, in the background).
        PERFORM clef_touch(ARRAY(
            SELECT n.user_id FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE (o.user_id, o.secret_hash, o.expires_at, o.revoked_at)
                   IS DISTINCT FROM (n.user_id, n.secret_hash, n.expires_at, n.revoked_at)
            UNION SELECT o.user_id FROM new_rows n JOIN old_rows o ON o.id = n.id
             WHERE o.user_id <> n.user_id));
    END IF;
    RETURN NULL;
END $$;

-- Links and grants: any change of a row matters (tags, scope, expiry).
CREATE FUNCTION clef_touch_user_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM clef_touch(ARRAY(SELECT user_id FROM new_rows));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM clef_touch(ARRAY(SELECT user_id FROM old_rows));
    ELSE
        PERFORM clef_touch(ARRAY(SELECT user_id FROM new_rows UNION SELECT user_id FROM old_rows));
    END IF;
    RETURN NULL;
END $$;

-- An account's existence, code or state, and the rights catalog, are
-- cached apart from any user: their change drops everything.
CREATE FUNCTION clef_touch_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
                        WHERE (o.code, o.status) IS DISTINCT FROM (n.code, n.status)) THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM clef_touch(ARRAY['00000000-0000-0000-0000-000000000000'::uuid]);
    RETURN NULL;
END $$;

CREATE TRIGGER users_insert AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_users();
CREATE TRIGGER users_update AFTER UPDATE ON users REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_users();
CREATE TRIGGER users_delete AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_users();

CREATE TRIGGER keys_insert AFTER INSERT ON connection_keys REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_keys();
CREATE TRIGGER keys_update AFTER UPDATE ON connection_keys REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_keys();
CREATE TRIGGER keys_delete AFTER DELETE ON connection_keys REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_keys();

CREATE TRIGGER links_insert AFTER INSERT ON links REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();
CREATE TRIGGER links_update AFTER UPDATE ON links REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();
CREATE TRIGGER links_delete AFTER DELETE ON links REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();

CREATE TRIGGER grants_insert AFTER INSERT ON grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();
CREATE TRIGGER grants_update AFTER UPDATE ON grants REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();
CREATE TRIGGER grants_delete AFTER DELETE ON grants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();

CREATE TRIGGER accounts_insert AFTER INSERT ON accounts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_accounts();
CREATE TRIGGER accounts_update AFTER UPDATE ON accounts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_accounts();
CREATE TRIGGER accounts_delete AFTER DELETE ON accounts REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_accounts();

CREATE FUNCTION clef_touch_everything() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clef_touch(ARRAY['00000000-0000-0000-0000-000000000000'::uuid]);
    RETURN NULL;
END $$;

CREATE TRIGGER rights_change AFTER INSERT OR UPDATE OR DELETE ON rights
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_everything();

-- Users listed per notice: a payload is limited to 8000 bytes and a listed
-- user takes 37. Above 10,000 users a write drops everything instead.
CREATE FUNCTION clef_send_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    revision text := NULLIF(current_setting('clef.revision', true), '');
    touched  uuid[];
    chunks   int;
    payload  text;
BEGIN
    DELETE FROM change_txs WHERE txid = NEW.txid;
    WITH gone AS (DELETE FROM change_users WHERE txid = NEW.txid RETURNING user_id)
    SELECT array_agg(user_id ORDER BY user_id) INTO touched FROM gone;
    IF revision IS NULL THEN
        RAISE EXCEPTION 'a write changed access without taking a revision'
            USING ERRCODE = 'P0001';
    END IF;
    IF touched IS NULL THEN
        PERFORM pg_notify('clef_changes', revision);
    ELSIF '00000000-0000-0000-0000-000000000000'::uuid = ANY (touched)
          OR cardinality(touched) > 10000 THEN
        PERFORM pg_notify('clef_changes', revision || ' *');
    ELSE
        -- In order, one statement each: listeners advance their revision on
        -- the last notice only (the one without '+').
        chunks := (cardinality(touched) + 199) / 200;
        FOR i IN 1 .. chunks LOOP
            payload := revision || CASE WHEN i < chunks THEN '+' ELSE '' END || ' '
                || array_to_string(touched[(i - 1) * 200 + 1 : i * 200], ' ');
            PERFORM pg_notify('clef_changes', payload);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER send_changes AFTER INSERT ON change_txs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION clef_send_changes();

-- What `Tx::commit` tells this process's own engine before committing (the
-- users the transaction touched so far; the nil user for everything).
CREATE FUNCTION clef_touched() RETURNS uuid[] LANGUAGE sql STABLE AS $$
    SELECT COALESCE(array_agg(user_id), '{}') FROM change_users
     WHERE txid = txid_current_if_assigned()
$$;
