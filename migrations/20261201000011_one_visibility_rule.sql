-- The one rule of who manages whom, for every lookup that takes an actor:
-- `actor` manages `target` when he holds a live `admin.users` on an
-- account `target` is linked to. (Operators manage everyone; the callers
-- say so.) Lookups by email or login answer only the users it allows.
CREATE FUNCTION clef_manages(actor uuid, target uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM links l
          JOIN grants g ON g.account_id = l.account_id AND g.user_id = actor
                       AND g.right_code = 'admin.users'
                       AND (g.expires_at IS NULL OR g.expires_at > now())
         WHERE l.user_id = target)
$$;
