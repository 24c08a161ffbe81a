-- A user's creation event is stored flat, `{field: value}`, a field the
-- user was created without as JSON null, instead of
-- `{field: {"after": value}}`: one `jsonb_build_object` per event instead of
-- nineteen, the import's costliest trigger per line (bench/README.md,
-- 2026-12-04). Events read the same (`Event::changes_from_json` takes a value
-- that is not an object as a creation's "after", a null as no change); the
-- events already stored keep their form. The update and delete branches are
-- unchanged.

CREATE OR REPLACE FUNCTION clef_audit_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'user_created',
               'user', n.id::text, n.home_account_id,
               -- Flat: each field's value as it was created, JSON null
               -- for an absent one (read back as no change).
               jsonb_build_object(
                   'status', n.status,
                   'kind', n.kind,
                   'login', n.login,
                   'display_name', n.display_name,
                   'civility', n.civility,
                   'first_name', n.first_name,
                   'last_name', n.last_name,
                   'job_title', n.job_title,
                   'email', n.email,
                   'phone', n.phone,
                   'address_lines', n.address_lines,
                   'postal_code', n.postal_code,
                   'city', n.city,
                   'country', n.country,
                   'language', n.language,
                   'user_key', n.user_key,
                   'home_account_id', n.home_account_id,
                   'default_account_id', n.default_account_id
               ), ctx.cause
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
