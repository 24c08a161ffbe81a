-- Roles: named bundles of rights (with scopes), defined by operators, held
-- by users on accounts as live references. A user's rights on an account are
-- his direct grants plus the rights of the roles he holds there:
-- `held_rights` is that union, and every rule that asks "does this user hold
-- that right here" reads it (decisions, the actor's authority, who manages
-- whom, the last admin).

CREATE TABLE roles (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    code       text        COLLATE "C" NOT NULL UNIQUE
                           CHECK (code ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND length(code) <= 64),
    label_fr   text        NOT NULL,
    label_en   text        NOT NULL,
    kinds      text[]      NOT NULL CHECK (kinds <@ ARRAY['standard', 'advanced']::text[] AND cardinality(kinds) > 0),
    -- The definition: `[{"right": code, "scope": scope|null}]`, by right
    -- code. `role_rights` is derived from it by trigger.
    rights     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    revision   bigint      NOT NULL
);

-- The rights of each role, one row per right, kept equal to `roles.rights`
-- by `clef_expand_role` (never written otherwise); the foreign key keeps a
-- role's rights in the catalog.
CREATE TABLE role_rights (
    role_id    uuid NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    role_code  text NOT NULL,
    right_code text NOT NULL REFERENCES rights (code),
    scope      text CHECK (scope IN ('user_key', 'user_tag', 'consolidated')),
    PRIMARY KEY (role_id, right_code)
);
CREATE INDEX role_rights_admin ON role_rights (right_code, role_id);

-- A role held by a user on an account. Like a grant, it lives only while
-- the link does.
CREATE TABLE role_grants (
    user_id    uuid        NOT NULL,
    account_id uuid        NOT NULL,
    role_id    uuid        NOT NULL REFERENCES roles (id),
    granted_by uuid        REFERENCES users (id),
    granted_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revision   bigint      NOT NULL,
    PRIMARY KEY (user_id, account_id, role_id),
    FOREIGN KEY (user_id, account_id) REFERENCES links (user_id, account_id) ON DELETE CASCADE
);
CREATE INDEX role_grants_account ON role_grants (account_id, user_id);
CREATE INDEX role_grants_role ON role_grants (role_id, user_id);

-- Every right a user holds on an account, directly or through a role
-- (`role_code` says which; NULL for a direct grant). Expiries are compared
-- by the reader, with its clock.
CREATE VIEW held_rights AS
    SELECT g.user_id, g.account_id, g.right_code, g.scope, g.expires_at, NULL::text AS role_code
      FROM grants g
    UNION ALL
    SELECT rg.user_id, rg.account_id, rr.right_code, rr.scope, rg.expires_at, rr.role_code
      FROM role_grants rg JOIN role_rights rr ON rr.role_id = rg.role_id;

-- Writes `role_rights` from a role's definition; refuses a definition whose
-- kinds leave out a current holder; the holders' decisions change (every
-- holder is touched, or everything when they are many).
CREATE FUNCTION clef_expand_role() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    holders bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.rights = NEW.rights AND OLD.kinds = NEW.kinds THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM role_grants rg JOIN users u ON u.id = rg.user_id
                WHERE rg.role_id = NEW.id AND u.kind <> ALL (NEW.kinds)) THEN
        RAISE EXCEPTION 'role %: some of its holders are of a kind it would no longer allow; revoke it from them first', NEW.code
            USING ERRCODE = 'check_violation', CONSTRAINT = 'role_kinds';
    END IF;
    DELETE FROM role_rights WHERE role_id = NEW.id;
    INSERT INTO role_rights (role_id, role_code, right_code, scope)
    SELECT NEW.id, NEW.code, r."right", r.scope
      FROM jsonb_to_recordset(NEW.rights) AS r("right" text, scope text);
    IF TG_OP = 'UPDATE' THEN
        SELECT count(DISTINCT user_id) INTO holders FROM role_grants WHERE role_id = NEW.id;
        IF holders > 10000 THEN
            PERFORM clef_touch(ARRAY['00000000-0000-0000-0000-000000000000'::uuid]);
        ELSE
            PERFORM clef_touch(ARRAY(SELECT DISTINCT user_id FROM role_grants WHERE role_id = NEW.id));
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER roles_expand AFTER INSERT OR UPDATE ON roles
    FOR EACH ROW EXECUTE FUNCTION clef_expand_role();

-- The default roles (seed 002), mapped onto the default catalog. Written at
-- revision 0, as the catalog was, before the audit triggers exist.
INSERT INTO roles (code, label_fr, label_en, kinds, rights, revision) VALUES
 ('administration', 'Administration', 'Administration', '{standard,advanced}',
  '[{"right": "admin.users", "scope": null}]', 0),
 ('accounting', 'Comptabilité', 'Accounting', '{standard}',
  '[{"right": "billing.invoices", "scope": null}, {"right": "billing.rates", "scope": null},
    {"right": "supplies.order", "scope": null}]', 0),
 ('fleet', 'Gestion de la flotte', 'Fleet management', '{standard,advanced}',
  '[{"right": "delivery.pickup_point_ws", "scope": null}, {"right": "shipping.ui", "scope": null},
    {"right": "shipping.ws", "scope": null}, {"right": "tracking.tool", "scope": "consolidated"}]', 0),
 ('it', 'Informatique', 'IT', '{standard,advanced}',
  '[{"right": "delivery.pickup_point_ws", "scope": null}, {"right": "shipping.ws", "scope": null},
    {"right": "tracking.tool_cs", "scope": "consolidated"}, {"right": "tracking.ws", "scope": null}]', 0);

-- Only users of the role's kinds may hold it, on every path.
CREATE FUNCTION clef_role_grant_kinds() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT r.code, u.kind INTO bad
      FROM new_rows n JOIN users u ON u.id = n.user_id JOIN roles r ON r.id = n.role_id
     WHERE u.kind <> ALL (r.kinds) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role % cannot be held by % users', bad.code, bad.kind
            USING ERRCODE = 'check_violation', CONSTRAINT = 'role_kinds';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER role_grants_kinds AFTER INSERT ON role_grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_role_grant_kinds();

-- "De nouveaux droits vous ont été attribués" (seed 004) for a role too:
-- the rights of a role newly held by an active user with an email, in the
-- same message as the transaction's direct grants on that account.
CREATE FUNCTION clef_tell_role_granted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (kind, user_id, account_id, params)
    SELECT 'rights_granted', n.user_id, n.account_id,
           jsonb_build_object('rights', jsonb_agg(DISTINCT rr.right_code),
                              'granted_by', (array_agg(n.granted_by))[1])
      FROM new_rows n
      JOIN users u ON u.id = n.user_id
      JOIN role_rights rr ON rr.role_id = n.role_id
     WHERE u.status = 'active' AND u.email IS NOT NULL
     GROUP BY n.user_id, n.account_id
    ON CONFLICT (txid, user_id, account_id) WHERE kind = 'rights_granted'
    DO UPDATE SET params = jsonb_set(outbox.params, '{rights}',
        (SELECT jsonb_agg(DISTINCT r ORDER BY r)
           FROM jsonb_array_elements_text((outbox.params->'rights') || (EXCLUDED.params->'rights')) r));
    RETURN NULL;
END $$;

CREATE TRIGGER role_grants_tell AFTER INSERT ON role_grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_tell_role_granted();

-- Decisions: a role granted, revoked or re-dated changes its holder's.
CREATE TRIGGER role_grants_insert AFTER INSERT ON role_grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();
CREATE TRIGGER role_grants_update AFTER UPDATE ON role_grants REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();
CREATE TRIGGER role_grants_delete AFTER DELETE ON role_grants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_touch_user_rows();

-- Who manages whom, through roles too.
CREATE OR REPLACE FUNCTION clef_manages(actor uuid, target uuid, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM links l
          JOIN held_rights g ON g.account_id = l.account_id AND g.user_id = actor
                            AND g.right_code = 'admin.users'
                            AND (g.expires_at IS NULL OR g.expires_at > at)
         WHERE l.user_id = target)
$$;

-- The last admin, through roles too: a revoked role that gave admin.users
-- (by RevokeRole, an unlink's cascade, an import) may leave an account
-- without one.
CREATE FUNCTION clef_admin_may_be_gone_roles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), o.account_id
      FROM old_rows o JOIN users u ON u.id = o.user_id
      JOIN role_rights rr ON rr.role_id = o.role_id AND rr.right_code = 'admin.users'
     WHERE u.status = 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER role_grants_admin_may_be_gone AFTER DELETE ON role_grants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_admin_may_be_gone_roles();

CREATE OR REPLACE FUNCTION clef_admin_may_be_gone_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), g.account_id
      FROM new_rows n JOIN old_rows o ON o.id = n.id
      JOIN held_rights g ON g.user_id = n.id AND g.right_code = 'admin.users'
     WHERE o.status = 'active' AND n.status <> 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION clef_check_last_admin() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF NOT EXISTS (SELECT 1 FROM held_rights g JOIN users u ON u.id = g.user_id
                    WHERE g.account_id = NEW.account_id AND g.right_code = 'admin.users'
                      AND u.status = 'active'
                      AND (g.expires_at IS NULL OR g.expires_at > at)) THEN
        SELECT a.code INTO code FROM accounts a WHERE a.id = NEW.account_id;
        RAISE EXCEPTION 'account %: its last active admin cannot lose admin.users; give it to someone else first, or ask an operator', code
            USING ERRCODE = 'check_violation', CONSTRAINT = 'last_admin';
    END IF;
    RETURN NULL;
END $$;

-- The audit trail: role definitions and role grants -----------------------

ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_target_type,
    DROP CONSTRAINT audit_events_action,
    ADD CONSTRAINT audit_events_target_type CHECK (target_type IN ('organization', 'account', 'right', 'user', 'role')),
    ADD CONSTRAINT audit_events_action CHECK (action IN (
        'organization_created', 'organization_updated',
        'account_created', 'account_updated',
        'right_defined', 'right_updated',
        'user_created', 'user_updated', 'user_status_changed', 'user_deleted',
        'link_created', 'link_updated', 'link_deleted',
        'grants_changed',
        'key_issued', 'key_revoked', 'key_expiry_changed', 'key_deleted',
        'password_set', 'password_removed', 'password_lock_cleared',
        'invitation_issued', 'password_reset_requested',
        'role_defined', 'role_updated', 'role_granted', 'role_grant_updated', 'role_revoked'));

CREATE FUNCTION clef_audit_roles() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
    fields text[] := ARRAY['code', 'label_fr', 'label_en', 'kinds', 'rights'];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'role_defined',
               'role', n.code, NULL, clef_audit_diff('{}', to_jsonb(n), fields), ctx.cause
          FROM new_rows n;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'role_updated',
               'role', d.code, NULL, d.changes, ctx.cause
          FROM (SELECT n.code, clef_audit_diff(to_jsonb(o), to_jsonb(n), fields) AS changes
                  FROM new_rows n JOIN old_rows o ON o.id = n.id) d
         WHERE d.changes <> '{}';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER roles_audit_insert AFTER INSERT ON roles REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_roles();
CREATE TRIGGER roles_audit_update AFTER UPDATE ON roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_roles();

-- A role grant as events show it: the role's code and its expiry.
CREATE FUNCTION clef_audit_role_grant(role uuid, expires_at timestamptz) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('role', (SELECT code FROM roles WHERE id = role),
                                                'expires', clef_audit_time(expires_at)))
$$;

CREATE FUNCTION clef_audit_role_grants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
    fields text[] := ARRAY['role', 'expires'];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'role_granted',
               'user', n.user_id::text, n.account_id,
               clef_audit_diff('{}', clef_audit_role_grant(n.role_id, n.expires_at), fields), ctx.cause
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'role_grant_updated',
               'user', n.user_id::text, n.account_id,
               clef_audit_diff(clef_audit_role_grant(o.role_id, o.expires_at),
                               clef_audit_role_grant(n.role_id, n.expires_at), fields)
               || jsonb_build_object('role', jsonb_build_object('before', r.code, 'after', r.code)),
               ctx.cause
          FROM new_rows n JOIN old_rows o USING (user_id, account_id, role_id) JOIN roles r ON r.id = n.role_id
         WHERE o.expires_at IS DISTINCT FROM n.expires_at;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'role_revoked',
               'user', o.user_id::text, o.account_id,
               clef_audit_diff(clef_audit_role_grant(o.role_id, o.expires_at), '{}', fields), ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER role_grants_audit_insert AFTER INSERT ON role_grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_role_grants();
CREATE TRIGGER role_grants_audit_update AFTER UPDATE ON role_grants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_role_grants();
CREATE TRIGGER role_grants_audit_delete AFTER DELETE ON role_grants REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_role_grants();

