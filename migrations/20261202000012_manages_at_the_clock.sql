-- `clef_manages` compares an admin's grant expiry with the time the caller
-- passes (the store's clock, as every other access rule does), not with
-- Postgres' own `now()`, so that who manages whom is decided on one clock.
CREATE FUNCTION clef_manages(actor uuid, target uuid, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM links l
          JOIN grants g ON g.account_id = l.account_id AND g.user_id = actor
                       AND g.right_code = 'admin.users'
                       AND (g.expires_at IS NULL OR g.expires_at > at)
         WHERE l.user_id = target)
$$;

DROP FUNCTION clef_manages(uuid, uuid);
