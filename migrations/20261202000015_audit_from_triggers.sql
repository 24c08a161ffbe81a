-- The audit trail derived from the data: whatever writes organizations,
-- accounts, the rights catalog, users, links, grants, connection keys,
-- passwords, invitations or reset requests, Postgres itself appends the
-- structured events of the change, in the same transaction, under its
-- revision, actor and time (`clef.revision`, `clef.actor`, `clef.now`, set
-- by every write). No write path, present or future, can forget one; a
-- write that would change audited data without a revision fails.
--
-- An event: revision, time, actor, action (one of `audit_events_action`),
-- target (type and id), account (when the change is about one), and what
-- changed as `{field: {"before": ..., "after": ...}}` (never a secret: no
-- key, hash or token). Grants are summed up per user, account and
-- transaction at commit (rights before -> after), however many statements
-- changed them; the other tables give one event per changed row.

ALTER TABLE audit_events
    ADD COLUMN target_type text,
    ADD COLUMN target_id   text,
    ADD COLUMN account_id  uuid,
    ADD COLUMN changes     jsonb NOT NULL DEFAULT '{}',
    -- What the change was part of (an import), when the writer says so.
    ADD COLUMN cause       text,
    ALTER COLUMN summary DROP NOT NULL;

-- Events written before this migration keep their text summary.
UPDATE audit_events SET
    target_type = CASE split_part(target, '/', 1)
                      WHEN 'account' THEN 'account'
                      WHEN 'organization' THEN 'organization'
                      WHEN 'right' THEN 'right'
                      ELSE 'user' END,
    target_id = CASE split_part(target, '/', 1)
                    WHEN 'account' THEN COALESCE((SELECT a.id::text FROM accounts a
                                                   WHERE a.code = split_part(target, '/', 2)),
                                                 split_part(target, '/', 2))
                    ELSE split_part(target, '/', 2) END,
    action = CASE
        WHEN action = 'organization.create' THEN 'organization_created'
        WHEN action = 'account.create' THEN 'account_created'
        WHEN action = 'account.update' THEN 'account_updated'
        WHEN action = 'right.define' THEN 'right_defined'
        WHEN action LIKE 'grant.%' THEN 'grants_changed'
        WHEN action IN ('user.create', 'operator.create', 'service.create', 'import.create') THEN 'user_created'
        WHEN action IN ('user.reactivate', 'user.deactivate', 'user.archive', 'user.invite',
                        'user.complete_invitation', 'import.deactivate') THEN 'user_status_changed'
        WHEN action = 'user.resend_invitation' THEN 'invitation_issued'
        WHEN action IN ('user.change_password', 'user.reset_password', 'user.set_password') THEN 'password_set'
        WHEN action = 'user.request_password_reset' THEN 'password_reset_requested'
        WHEN action = 'user.unlock_password' THEN 'password_lock_cleared'
        WHEN action = 'link.create' THEN 'link_created'
        WHEN action = 'link.tags' THEN 'link_updated'
        WHEN action = 'link.delete' THEN 'link_deleted'
        WHEN action = 'key.regenerate' THEN 'key_issued'
        WHEN action = 'key.revoke' THEN 'key_revoked'
        ELSE 'user_updated' END;

ALTER TABLE audit_events
    DROP COLUMN target,
    ALTER COLUMN target_type SET NOT NULL,
    ALTER COLUMN target_id SET NOT NULL,
    ADD CONSTRAINT audit_events_target_type CHECK (target_type IN ('organization', 'account', 'right', 'user')),
    ADD CONSTRAINT audit_events_action CHECK (action IN (
        'organization_created', 'organization_updated',
        'account_created', 'account_updated',
        'right_defined', 'right_updated',
        'user_created', 'user_updated', 'user_status_changed', 'user_deleted',
        'link_created', 'link_updated', 'link_deleted',
        'grants_changed',
        'key_issued', 'key_revoked', 'key_expiry_changed', 'key_deleted',
        'password_set', 'password_removed', 'password_lock_cleared',
        'invitation_issued', 'password_reset_requested'));

-- Read in revision order, then by event within a revision; filtered by
-- account or by target.
DROP INDEX audit_events_revision;
CREATE INDEX audit_events_order ON audit_events (revision, id);
CREATE INDEX audit_events_account ON audit_events (account_id, revision, id) WHERE account_id IS NOT NULL;
CREATE INDEX audit_events_target ON audit_events (target_id, revision, id);

-- Events of revisions up to `pruned_through` are gone (retention).
CREATE TABLE audit_horizon (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pruned_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO audit_horizon DEFAULT VALUES;

-- The write's revision; a change of audited data without one is refused.
CREATE FUNCTION clef_audit_revision() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
DECLARE
    revision text := NULLIF(current_setting('clef.revision', true), '');
BEGIN
    IF revision IS NULL THEN
        RAISE EXCEPTION 'a write changed audited data without taking a revision'
            USING ERRCODE = 'P0001';
    END IF;
    RETURN revision::bigint;
END $$;

CREATE FUNCTION clef_audit_actor() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('clef.actor', true), '')::uuid
$$;

CREATE FUNCTION clef_audit_now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT COALESCE(NULLIF(current_setting('clef.now', true), '')::timestamptz, now())
$$;

CREATE FUNCTION clef_audit_cause() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('clef.cause', true), '')
$$;

-- What every event of a statement shares, read once per statement (the
-- revision is NULL outside a write: `clef_audit_revision` then refuses, as
-- soon as an event is to be written).
CREATE TYPE clef_audit_context AS (revision bigint, at timestamptz, actor uuid, cause text);

CREATE FUNCTION clef_audit_context() RETURNS clef_audit_context LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('clef.revision', true), '')::bigint,
           clef_audit_now(), clef_audit_actor(), clef_audit_cause()
$$;

-- `{field: {"before": b, "after": a}}` for the `fields` whose values differ
-- between `b` and `a` (JSON null and absence alike).
CREATE FUNCTION clef_audit_diff(b jsonb, a jsonb, fields text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(jsonb_object_agg(f, jsonb_build_object('before', NULLIF(b -> f, 'null'::jsonb),
                                                           'after', NULLIF(a -> f, 'null'::jsonb))), '{}')
      FROM unnest(fields) f
     WHERE NULLIF(b -> f, 'null'::jsonb) IS DISTINCT FROM NULLIF(a -> f, 'null'::jsonb)
$$;

-- Timestamps in events: UTC, RFC 3339, whatever the session's time zone.
-- Declared STABLE as `to_char` is, so that Postgres inlines it (and
-- `clef_audit_grant`) instead of running a function per row.
CREATE FUNCTION clef_audit_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- One right held, as events show it.
CREATE FUNCTION clef_audit_grant(code text, scope text, expires_at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('right', code, 'scope', scope,
                                                'expires', clef_audit_time(expires_at)))
$$;

-- Organizations ------------------------------------------------------------

CREATE FUNCTION clef_audit_organizations() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'organization_created',
               'organization', n.id::text, NULL,
               clef_audit_diff('{}', to_jsonb(n), ARRAY['display_name']), ctx.cause
          FROM new_rows n;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'organization_updated',
               'organization', d.id::text, NULL, d.changes, ctx.cause
          FROM (SELECT n.id, clef_audit_diff(to_jsonb(o), to_jsonb(n), ARRAY['display_name']) AS changes
                  FROM new_rows n JOIN old_rows o ON o.id = n.id) d
         WHERE d.changes <> '{}';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER organizations_audit_insert AFTER INSERT ON organizations REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_organizations();
CREATE TRIGGER organizations_audit_update AFTER UPDATE ON organizations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_organizations();

-- Accounts -----------------------------------------------------------------

CREATE FUNCTION clef_audit_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
    fields text[] := ARRAY['code', 'display_name', 'status', 'organization_id'];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'account_created',
               'account', n.id::text, n.id, clef_audit_diff('{}', to_jsonb(n), fields), ctx.cause
          FROM new_rows n;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'account_updated',
               'account', d.id::text, d.id, d.changes, ctx.cause
          FROM (SELECT n.id, clef_audit_diff(to_jsonb(o), to_jsonb(n), fields) AS changes
                  FROM new_rows n JOIN old_rows o ON o.id = n.id) d
         WHERE d.changes <> '{}';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER accounts_audit_insert AFTER INSERT ON accounts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_accounts();
CREATE TRIGGER accounts_audit_update AFTER UPDATE ON accounts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_accounts();

-- The rights catalog -------------------------------------------------------

CREATE FUNCTION clef_audit_rights() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
    fields text[] := ARRAY['code', 'category', 'label_fr', 'label_en', 'kinds', 'scoped'];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'right_defined',
               'right', n.code, NULL, clef_audit_diff('{}', to_jsonb(n), fields), ctx.cause
          FROM new_rows n;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'right_updated',
               'right', d.code, NULL, d.changes, ctx.cause
          FROM (SELECT n.code, clef_audit_diff(to_jsonb(o), to_jsonb(n), fields) AS changes
                  FROM new_rows n JOIN old_rows o ON o.code = n.code) d
         WHERE d.changes <> '{}';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER rights_audit_insert AFTER INSERT ON rights REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_rights();
CREATE TRIGGER rights_audit_update AFTER UPDATE ON rights
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_rights();

-- Users: creation, status, profile -----------------------------------------
-- A standard user's events name his home account; an advanced user's are
-- about him wherever he is linked.

CREATE FUNCTION clef_audit_user_fields() RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['kind', 'login', 'display_name', 'civility', 'first_name', 'last_name',
                 'job_title', 'email', 'phone', 'address_lines', 'postal_code', 'city',
                 'country', 'language', 'user_key', 'home_account_id', 'default_account_id']
$$;

CREATE FUNCTION clef_audit_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'user_created',
               'user', n.id::text, n.home_account_id,
               -- Built directly (the diff of each field is the statement's
               -- main cost in an import); absent fields come out empty.
               jsonb_strip_nulls(jsonb_build_object(
                   'status', jsonb_build_object('after', n.status),
                   'kind', jsonb_build_object('after', n.kind),
                   'login', jsonb_build_object('after', n.login),
                   'display_name', jsonb_build_object('after', n.display_name),
                   'civility', jsonb_build_object('after', n.civility),
                   'first_name', jsonb_build_object('after', n.first_name),
                   'last_name', jsonb_build_object('after', n.last_name),
                   'job_title', jsonb_build_object('after', n.job_title),
                   'email', jsonb_build_object('after', n.email),
                   'phone', jsonb_build_object('after', n.phone),
                   'address_lines', jsonb_build_object('after', n.address_lines),
                   'postal_code', jsonb_build_object('after', n.postal_code),
                   'city', jsonb_build_object('after', n.city),
                   'country', jsonb_build_object('after', n.country),
                   'language', jsonb_build_object('after', n.language),
                   'user_key', jsonb_build_object('after', n.user_key),
                   'home_account_id', jsonb_build_object('after', n.home_account_id),
                   'default_account_id', jsonb_build_object('after', n.default_account_id))), ctx.cause
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'user_status_changed',
               'user', n.id::text, n.home_account_id,
               clef_audit_diff(to_jsonb(o), to_jsonb(n), ARRAY['status']), ctx.cause
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE o.status IS DISTINCT FROM n.status;
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'user_updated',
               'user', d.id::text, d.home_account_id, d.changes, ctx.cause
          FROM (SELECT n.id, n.home_account_id,
                       clef_audit_diff(to_jsonb(o), to_jsonb(n), clef_audit_user_fields()) AS changes
                  FROM new_rows n JOIN old_rows o ON o.id = n.id) d
         WHERE d.changes <> '{}';
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'user_deleted',
               'user', o.id::text, o.home_account_id,
               clef_audit_diff(to_jsonb(o), '{}', ARRAY['status', 'login']), ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_audit_insert AFTER INSERT ON users REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_users();
CREATE TRIGGER users_audit_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_users();
CREATE TRIGGER users_audit_delete AFTER DELETE ON users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_users();

-- Links and their tags -----------------------------------------------------

CREATE FUNCTION clef_audit_links() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'link_created',
               'user', n.user_id::text, n.account_id,
               jsonb_build_object('tags', jsonb_build_object('before', NULL, 'after', to_jsonb(n.tags))),
               ctx.cause
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'link_updated',
               'user', n.user_id::text, n.account_id,
               clef_audit_diff(to_jsonb(o), to_jsonb(n), ARRAY['tags']), ctx.cause
          FROM new_rows n JOIN old_rows o ON (o.user_id, o.account_id) = (n.user_id, n.account_id)
         WHERE o.tags IS DISTINCT FROM n.tags;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'link_deleted',
               'user', o.user_id::text, o.account_id,
               jsonb_build_object('tags', jsonb_build_object('before', to_jsonb(o.tags), 'after', NULL)),
               ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER links_audit_insert AFTER INSERT ON links REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_links();
CREATE TRIGGER links_audit_update AFTER UPDATE ON links
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_links();
CREATE TRIGGER links_audit_delete AFTER DELETE ON links REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_links();

-- Grants: the rights a user held on an account when the transaction first
-- touched them are kept here; at commit, one event per user and account
-- says what they were and what they are (`clef_audit_flush`).

CREATE UNLOGGED TABLE audit_grants_pending (
    txid       bigint NOT NULL,
    user_id    uuid   NOT NULL,
    account_id uuid   NOT NULL,
    before     jsonb  NOT NULL,
    PRIMARY KEY (txid, user_id, account_id)
);

-- Each touched (user, account) is looked up by its key, in a subquery of
-- its own (never a join the planner could turn into a scan of every grant).
-- Before the transaction, a (user, account)'s rights are its rows that the
-- transaction has not written (every grant write stamps the transaction's
-- revision), plus the rows the statement removed or rewrote (`old_rows`:
-- at a first touch, they are as the transaction found them). One rule for
-- inserts, updates, deletes, and an upsert that does both (whose UPDATE
-- trigger fires before its INSERT one).
CREATE FUNCTION clef_audit_grants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rev bigint := clef_audit_revision();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_grants_pending (txid, user_id, account_id, before)
        SELECT txid_current(), t.user_id, t.account_id,
               (SELECT COALESCE(jsonb_agg(x), '[]')
                  FROM (SELECT clef_audit_grant(g.right_code, g.scope, g.expires_at) AS x
                          FROM grants g
                         WHERE g.user_id = t.user_id AND g.account_id = t.account_id
                           AND g.revision <> rev
                         ORDER BY g.right_code) s)
          FROM (SELECT DISTINCT user_id, account_id FROM new_rows) t
        ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO audit_grants_pending (txid, user_id, account_id, before)
        SELECT txid_current(), o.user_id, o.account_id,
               (SELECT COALESCE(jsonb_agg(x ORDER BY x ->> 'right'), '[]')
                  FROM (SELECT clef_audit_grant(g.right_code, g.scope, g.expires_at) AS x
                          FROM grants g
                         WHERE g.user_id = o.user_id AND g.account_id = o.account_id
                           AND g.revision <> rev
                        UNION ALL SELECT jsonb_array_elements(o.rows)) s)
          FROM (SELECT user_id, account_id,
                       jsonb_agg(clef_audit_grant(right_code, scope, expires_at)) AS rows
                  FROM old_rows GROUP BY user_id, account_id) o
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER grants_audit_insert AFTER INSERT ON grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_grants();
CREATE TRIGGER grants_audit_update AFTER UPDATE ON grants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_grants();
CREATE TRIGGER grants_audit_delete AFTER DELETE ON grants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_grants();

-- At commit (called by `clef_send_changes`, which runs once per write):
-- the grants events of the transaction, where the rights did change.
CREATE FUNCTION clef_audit_flush() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    WITH pending AS (
        DELETE FROM audit_grants_pending WHERE txid = txid_current()
        RETURNING user_id, account_id, before),
    now_held AS MATERIALIZED (
        SELECT p.user_id, p.account_id, p.before,
               (SELECT COALESCE(jsonb_agg(x), '[]')
                  FROM (SELECT clef_audit_grant(g.right_code, g.scope, g.expires_at) AS x
                          FROM grants g
                         WHERE g.user_id = p.user_id AND g.account_id = p.account_id
                         ORDER BY g.right_code) s) AS after
          FROM pending p)
    INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
    SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'grants_changed',
           'user', h.user_id::text, h.account_id,
           jsonb_build_object('rights', jsonb_build_object('before', h.before, 'after', h.after)),
           ctx.cause
      FROM now_held h
     WHERE h.before <> h.after
     ORDER BY h.account_id, h.user_id;
END $$;

CREATE OR REPLACE FUNCTION clef_send_changes() RETURNS trigger LANGUAGE plpgsql AS $$
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
    PERFORM clef_audit_flush();
    IF touched IS NULL THEN
        PERFORM pg_notify('clef_changes', revision);
    ELSIF '00000000-0000-0000-0000-000000000000'::uuid = ANY (touched)
          OR cardinality(touched) > 10000 THEN
        PERFORM pg_notify('clef_changes', revision || ' *');
    ELSE
        chunks := (cardinality(touched) + 199) / 200;
        FOR i IN 1 .. chunks LOOP
            payload := revision || CASE WHEN i < chunks THEN '+' ELSE '' END || ' '
                || array_to_string(touched[(i - 1) * 200 + 1 : i * 200], ' ');
            PERFORM pg_notify('clef_changes', payload);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

-- Connection keys (never the secret: its first characters only). The time
-- a key was last used is not a change.

CREATE FUNCTION clef_audit_keys() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'key_issued',
               'user', n.user_id::text, NULL,
               jsonb_strip_nulls(jsonb_build_object(
                   'key', jsonb_build_object('after', n.display_prefix),
                   'expires', jsonb_build_object('after', clef_audit_time(n.expires_at)))),
               ctx.cause
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor,
               -- Revoked: it stops now. Its end moved: it stops later (the
               -- overlap of a regeneration's previous keys).
               CASE WHEN n.revoked_at IS NOT NULL AND n.revoked_at <= ctx.at THEN 'key_revoked'
                    ELSE 'key_expiry_changed' END,
               'user', n.user_id::text, NULL,
               jsonb_build_object('key', jsonb_build_object('before', o.display_prefix, 'after', n.display_prefix))
               || clef_audit_diff(jsonb_build_object('revoked', clef_audit_time(o.revoked_at),
                                                     'expires', clef_audit_time(o.expires_at)),
                                  jsonb_build_object('revoked', clef_audit_time(n.revoked_at),
                                                     'expires', clef_audit_time(n.expires_at)),
                                  ARRAY['revoked', 'expires']),
               ctx.cause
          FROM new_rows n JOIN old_rows o ON o.id = n.id
         WHERE (o.revoked_at, o.expires_at) IS DISTINCT FROM (n.revoked_at, n.expires_at);
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'key_deleted',
               'user', o.user_id::text, NULL,
               jsonb_build_object('key', jsonb_build_object('before', o.display_prefix, 'after', NULL)),
               ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER keys_audit_insert AFTER INSERT ON connection_keys REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_keys();
CREATE TRIGGER keys_audit_update AFTER UPDATE ON connection_keys
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_keys();
CREATE TRIGGER keys_audit_delete AFTER DELETE ON connection_keys REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_keys();

-- Passwords (never the hash). A rehash at login keeps the row's revision:
-- the same password at today's cost is not a change.

CREATE FUNCTION clef_audit_passwords() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'password_set',
               'user', n.user_id::text, NULL,
               jsonb_build_object('must_change', jsonb_build_object('before', NULL, 'after', n.must_change)),
               ctx.cause
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'password_set',
               'user', n.user_id::text, NULL,
               jsonb_build_object('must_change', jsonb_build_object('before', o.must_change, 'after', n.must_change)),
               ctx.cause
          FROM new_rows n JOIN old_rows o ON o.user_id = n.user_id
         WHERE o.revision IS DISTINCT FROM n.revision;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'password_removed',
               'user', o.user_id::text, NULL, '{}', ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER passwords_audit_insert AFTER INSERT ON passwords REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_passwords();
CREATE TRIGGER passwords_audit_update AFTER UPDATE ON passwords
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_passwords();
CREATE TRIGGER passwords_audit_delete AFTER DELETE ON passwords REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_passwords();

-- Invitations and reset requests: a token handed to the caller, or a
-- message queued (whose token the outbox worker draws as it sends: that
-- drawing, marked `clef.drawing`, is delivery, not a change). One event per
-- user and purpose in a transaction.

CREATE FUNCTION clef_audit_credential(users uuid[], accounts uuid[], purposes text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
    SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor,
           CASE c.purpose WHEN 'invitation' THEN 'invitation_issued' ELSE 'password_reset_requested' END,
           'user', c.user_id::text, c.account_id, '{}', ctx.cause
      FROM (SELECT DISTINCT ON (u, p) u AS user_id, a AS account_id, p AS purpose
              FROM unnest(users, accounts, purposes) AS x(u, a, p)) c
     WHERE NOT EXISTS (
         SELECT 1 FROM audit_events e
          WHERE e.target_id = c.user_id::text
            AND e.revision = COALESCE(ctx.revision, clef_audit_revision())
            AND e.action = CASE c.purpose WHEN 'invitation' THEN 'invitation_issued'
                                          ELSE 'password_reset_requested' END);
END $$;

CREATE FUNCTION clef_audit_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NULLIF(current_setting('clef.revision', true), '') IS NULL
       AND current_setting('clef.drawing', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM clef_audit_credential(ARRAY(SELECT user_id FROM new_rows ORDER BY user_id),
                                  ARRAY(SELECT NULL::uuid FROM new_rows ORDER BY user_id),
                                  ARRAY(SELECT purpose FROM new_rows ORDER BY user_id));
    RETURN NULL;
END $$;

CREATE TRIGGER tokens_audit_insert AFTER INSERT ON credential_tokens REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_tokens();

CREATE FUNCTION clef_audit_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM clef_audit_credential(
        ARRAY(SELECT user_id FROM new_rows WHERE kind IN ('invitation', 'password_reset') ORDER BY id),
        ARRAY(SELECT account_id FROM new_rows WHERE kind IN ('invitation', 'password_reset') ORDER BY id),
        ARRAY(SELECT kind FROM new_rows WHERE kind IN ('invitation', 'password_reset') ORDER BY id));
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_audit_insert AFTER INSERT ON outbox REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_messages();
