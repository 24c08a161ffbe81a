-- A new account changes no subject's entitlements (nothing links to it yet),
-- so its insert no longer drops every cache of every replica (a storm of
-- cold loads under load): it drops the cached account states only, where
-- its code may be cached as unknown. It is said by the max uuid among the
-- touched users (`Changes::accounts`). A change of code or state, and a
-- deletion, still drop everything: entitlements name accounts by code.
CREATE OR REPLACE FUNCTION clef_touch_accounts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM clef_touch(ARRAY['ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid]);
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT 1 FROM new_rows n JOIN old_rows o ON o.id = n.id
                        WHERE (o.code, o.status) IS DISTINCT FROM (n.code, n.status)) THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM clef_touch(ARRAY['00000000-0000-0000-0000-000000000000'::uuid]);
    RETURN NULL;
END $$;
