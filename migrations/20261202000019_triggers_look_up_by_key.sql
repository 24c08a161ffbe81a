-- Statement triggers look up the users, links and rights of the rows a
-- statement wrote one by one, by key, in a subquery of their own: never a
-- join the planner may turn into a scan of the whole table. A join of a
-- statement's 500 rows with `users` was hashed over every user while the
-- table was small enough for a scan to look cheaper; every batch of an
-- import then scanned every user (quadratic: a 200,000-line import spent
-- most of its Postgres time there). The rules are unchanged.

-- "De nouveaux droits vous ont été attribués": direct grants.
CREATE OR REPLACE FUNCTION clef_tell_rights_granted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (kind, user_id, account_id, params)
    SELECT 'rights_granted', n.user_id, n.account_id,
           jsonb_build_object('rights', jsonb_agg(DISTINCT n.right_code),
                              'granted_by', (array_agg(n.granted_by))[1])
      FROM new_rows n
     WHERE (SELECT u.status = 'active' AND u.email IS NOT NULL FROM users u WHERE u.id = n.user_id)
     GROUP BY n.user_id, n.account_id
    ON CONFLICT (txid, user_id, account_id) WHERE kind = 'rights_granted'
    DO UPDATE SET params = jsonb_set(outbox.params, '{rights}',
        (SELECT jsonb_agg(DISTINCT r ORDER BY r)
           FROM jsonb_array_elements_text((outbox.params->'rights') || (EXCLUDED.params->'rights')) r));
    RETURN NULL;
END $$;

-- The same for a role's rights.
CREATE OR REPLACE FUNCTION clef_tell_role_granted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (kind, user_id, account_id, params)
    SELECT 'rights_granted', n.user_id, n.account_id,
           jsonb_build_object('rights', jsonb_agg(DISTINCT rr.right_code),
                              'granted_by', (array_agg(n.granted_by))[1])
      FROM new_rows n
      JOIN role_rights rr ON rr.role_id = n.role_id
     WHERE (SELECT u.status = 'active' AND u.email IS NOT NULL FROM users u WHERE u.id = n.user_id)
     GROUP BY n.user_id, n.account_id
    ON CONFLICT (txid, user_id, account_id) WHERE kind = 'rights_granted'
    DO UPDATE SET params = jsonb_set(outbox.params, '{rights}',
        (SELECT jsonb_agg(DISTINCT r ORDER BY r)
           FROM jsonb_array_elements_text((outbox.params->'rights') || (EXCLUDED.params->'rights')) r));
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION clef_no_key_while_invited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n
                WHERE (SELECT u.status FROM users u WHERE u.id = n.user_id) = 'invited') THEN
        RAISE EXCEPTION 'an invited user gets a connection key when he completes his invitation'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'keys_not_while_invited';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION clef_role_grant_kinds() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT r.code, k.kind INTO bad
      FROM new_rows n
      JOIN roles r ON r.id = n.role_id
     CROSS JOIN LATERAL (SELECT (SELECT u.kind FROM users u WHERE u.id = n.user_id) AS kind) k
     WHERE k.kind <> ALL (r.kinds) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role % cannot be held by % users', bad.code, bad.kind
            USING ERRCODE = 'check_violation', CONSTRAINT = 'role_kinds';
    END IF;
    RETURN NULL;
END $$;

-- The last admin's guard: what may have left an account without one.
CREATE OR REPLACE FUNCTION clef_admin_may_be_gone_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), o.account_id
      FROM old_rows o
     WHERE o.right_code = 'admin.users'
       AND (SELECT u.status FROM users u WHERE u.id = o.user_id) = 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION clef_admin_may_be_gone_roles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), o.account_id
      FROM old_rows o
      JOIN role_rights rr ON rr.role_id = o.role_id AND rr.right_code = 'admin.users'
     WHERE (SELECT u.status FROM users u WHERE u.id = o.user_id) = 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION clef_admin_may_be_gone_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO last_admin_checks
    SELECT DISTINCT txid_current(), unnest(ARRAY(
               SELECT g.account_id FROM held_rights g
                WHERE g.user_id = n.id AND g.right_code = 'admin.users'))
      FROM new_rows n JOIN old_rows o ON o.id = n.id
     WHERE o.status = 'active' AND n.status <> 'active'
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

-- Teams: a member is linked to an account of the team's organization.
CREATE OR REPLACE FUNCTION clef_team_members_linked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    SELECT n.user_id INTO missing
      FROM new_rows n JOIN teams t ON t.id = n.team_id
     WHERE NOT (SELECT EXISTS (SELECT 1 FROM links l JOIN accounts a ON a.id = l.account_id
                                WHERE l.user_id = n.user_id AND a.organization_id = t.organization_id))
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'user % is not linked to an account of the team''s organization', missing
            USING ERRCODE = 'check_violation', CONSTRAINT = 'team_member_linked';
    END IF;
    RETURN NULL;
END $$;

-- A user unlinked from the last account of an organization leaves its teams.
CREATE OR REPLACE FUNCTION clef_team_members_unlinked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM team_members m
     USING teams t,
           (SELECT DISTINCT o.user_id,
                   (SELECT a.organization_id FROM accounts a WHERE a.id = o.account_id) AS organization_id
              FROM old_rows o) g
     WHERE m.team_id = t.id AND m.user_id = g.user_id AND t.organization_id = g.organization_id
       AND NOT (SELECT EXISTS (SELECT 1 FROM links l JOIN accounts a ON a.id = l.account_id
                                WHERE l.user_id = g.user_id AND a.organization_id = g.organization_id));
    RETURN NULL;
END $$;

-- An invitation or reset request is one event per user, purpose and
-- transaction, whichever of its rows (the message, the token) comes first.
-- Only a transaction that already wrote such events looks for them
-- (`clef.credential_events` holds the revision that did, transaction-local):
-- an import's first statement of each batch probes nothing.
CREATE OR REPLACE FUNCTION clef_audit_credential(users uuid[], accounts uuid[], purposes text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
    rev bigint;
    seen boolean;
BEGIN
    IF cardinality(users) = 0 THEN
        RETURN;
    END IF;
    rev := COALESCE(ctx.revision, clef_audit_revision());
    seen := current_setting('clef.credential_events', true) = rev::text;
    IF NOT seen THEN
        PERFORM set_config('clef.credential_events', rev::text, true);
    END IF;
    INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
    SELECT rev, ctx.at, ctx.actor,
           CASE c.purpose WHEN 'invitation' THEN 'invitation_issued' ELSE 'password_reset_requested' END,
           'user', c.user_id::text, c.account_id, '{}', ctx.cause
      FROM (SELECT DISTINCT ON (u, p) u AS user_id, a AS account_id, p AS purpose
              FROM unnest(users, accounts, purposes) AS x(u, a, p)) c
     WHERE NOT seen
        OR NOT EXISTS (
             SELECT 1 FROM audit_events e
              WHERE e.target_id = c.user_id::text
                AND e.revision = rev
                AND e.action = CASE c.purpose WHEN 'invitation' THEN 'invitation_issued'
                                              ELSE 'password_reset_requested' END);
END $$;
