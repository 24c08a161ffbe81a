-- Teams: a tree per organization (seed 002: équipes and sous-équipes), whose
-- members are users linked to an account of that organization. The rules no
-- path may skip live here: a parent in the same organization (a composite
-- foreign key), no cycle (a trigger), no sibling of the same name, no
-- member who is not linked to the organization (a trigger on insert, and
-- his memberships go with his last link there), a team deleted only when
-- empty (foreign keys without cascade).

CREATE TABLE teams (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL REFERENCES organizations (id),
    parent_id       uuid,
    -- 1-100 characters, trimmed, without `/` or `;` (they separate paths and
    -- the teams of a CSV cell) or control characters. Collation "C" whatever
    -- the database's: `lower()` folds ASCII letters only, as clef does.
    name            text        COLLATE "C" NOT NULL CONSTRAINT team_name
                                CHECK (length(name) BETWEEN 1 AND 100 AND name = btrim(name)
                                       AND name !~ '[/;[:cntrl:]]'),
    created_at      timestamptz NOT NULL,
    revision        bigint      NOT NULL,
    UNIQUE (organization_id, id),
    CONSTRAINT team_parent FOREIGN KEY (organization_id, parent_id) REFERENCES teams (organization_id, id)
);
-- Sibling names are unique whatever the case of their ASCII letters: a path
-- names one team.
CREATE UNIQUE INDEX team_sibling_names
    ON teams (organization_id, COALESCE(parent_id, '00000000-0000-0000-0000-000000000000'::uuid), lower(name));
CREATE INDEX teams_parent ON teams (parent_id);

CREATE TABLE team_members (
    team_id  uuid        NOT NULL CONSTRAINT team_member_team REFERENCES teams (id),
    user_id  uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at timestamptz NOT NULL,
    revision bigint      NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id, team_id);

-- No cycle: a team never becomes its own ancestor; and no tree deeper than
-- 20 levels (a path names every team). Writes are serialized by the
-- revision counter, so two moves that are each fine cannot make a cycle
-- together.
CREATE FUNCTION clef_team_no_cycle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    depth int;
    height int;
BEGIN
    IF NEW.parent_id IS NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND EXISTS (
        WITH RECURSIVE up (id, parent_id) AS (
            SELECT id, parent_id FROM teams WHERE id = NEW.parent_id
            UNION
            SELECT t.id, t.parent_id FROM teams t JOIN up ON t.id = up.parent_id
        )
        SELECT 1 FROM up WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'team % cannot be moved under one of its own sub-teams', NEW.name
            USING ERRCODE = 'check_violation', CONSTRAINT = 'team_cycle';
    END IF;
    WITH RECURSIVE up (id, parent_id, n) AS (
        SELECT id, parent_id, 1 FROM teams WHERE id = NEW.parent_id
        UNION ALL
        SELECT t.id, t.parent_id, up.n + 1 FROM teams t JOIN up ON t.id = up.parent_id WHERE up.n < 100
    )
    SELECT max(n) INTO depth FROM up;
    height := 1;
    IF TG_OP = 'UPDATE' THEN
        WITH RECURSIVE down (id, n) AS (
            SELECT NEW.id, 1
            UNION ALL
            SELECT t.id, down.n + 1 FROM teams t JOIN down ON t.parent_id = down.id WHERE down.n < 100
        )
        SELECT max(n) INTO height FROM down;
    END IF;
    IF depth + height > 20 THEN
        RAISE EXCEPTION 'team % would be deeper than 20 levels', NEW.name
            USING ERRCODE = 'check_violation', CONSTRAINT = 'team_cycle';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER teams_no_cycle BEFORE INSERT OR UPDATE OF parent_id ON teams
    FOR EACH ROW EXECUTE FUNCTION clef_team_no_cycle();

-- A member is linked to an account of the team's organization.
CREATE FUNCTION clef_team_members_linked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing uuid;
BEGIN
    SELECT n.user_id INTO missing
      FROM new_rows n JOIN teams t ON t.id = n.team_id
     WHERE NOT EXISTS (SELECT 1 FROM links l JOIN accounts a ON a.id = l.account_id
                        WHERE l.user_id = n.user_id AND a.organization_id = t.organization_id)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'user % is not linked to an account of the team''s organization', missing
            USING ERRCODE = 'check_violation', CONSTRAINT = 'team_member_linked';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER team_members_linked AFTER INSERT ON team_members REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_team_members_linked();

-- A user unlinked from the last account of an organization leaves its
-- teams, whatever path unlinked him.
CREATE FUNCTION clef_team_members_unlinked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM team_members m
     USING teams t, (SELECT DISTINCT o.user_id, a.organization_id
                       FROM old_rows o JOIN accounts a ON a.id = o.account_id) g
     WHERE m.team_id = t.id AND m.user_id = g.user_id AND t.organization_id = g.organization_id
       AND NOT EXISTS (SELECT 1 FROM links l JOIN accounts a ON a.id = l.account_id
                        WHERE l.user_id = g.user_id AND a.organization_id = g.organization_id);
    RETURN NULL;
END $$;
CREATE TRIGGER links_leave_teams AFTER DELETE ON links REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_team_members_unlinked();

-- A team's path from its root, `Nord/Atelier 7`.
CREATE FUNCTION clef_team_path(team uuid) RETURNS text LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up (id, parent_id, name, depth) AS (
        SELECT id, parent_id, name, 0 FROM teams WHERE id = team
        UNION ALL
        SELECT t.id, t.parent_id, t.name, up.depth + 1 FROM teams t JOIN up ON t.id = up.parent_id
    )
    SELECT string_agg(name, '/' ORDER BY depth DESC) FROM up
$$;

-- The audit trail -----------------------------------------------------------

ALTER TABLE audit_events
    DROP CONSTRAINT audit_events_target_type,
    DROP CONSTRAINT audit_events_action,
    ADD CONSTRAINT audit_events_target_type CHECK (target_type IN ('organization', 'account', 'right', 'user', 'role', 'team')),
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
        'role_defined', 'role_updated', 'role_granted', 'role_grant_updated', 'role_revoked',
        'team_created', 'team_updated', 'team_deleted', 'team_member_added', 'team_member_removed'));

CREATE FUNCTION clef_audit_teams() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
    fields text[] := ARRAY['name', 'parent_id', 'organization_id'];
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'team_created',
               'team', n.id::text, NULL, clef_audit_diff('{}', to_jsonb(n), fields), ctx.cause
          FROM new_rows n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'team_updated',
               'team', c.id::text, NULL, c.changes, ctx.cause
          FROM (SELECT n.id, clef_audit_diff(to_jsonb(o), to_jsonb(n), fields) AS changes
                  FROM new_rows n JOIN old_rows o USING (id)) c
         WHERE c.changes <> '{}';
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'team_deleted',
               'team', o.id::text, NULL, clef_audit_diff(to_jsonb(o), '{}', fields), ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER teams_audit_insert AFTER INSERT ON teams REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_teams();
CREATE TRIGGER teams_audit_update AFTER UPDATE ON teams
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_teams();
CREATE TRIGGER teams_audit_delete AFTER DELETE ON teams REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_teams();

-- A membership is an event about the user (target), saying which team.
CREATE FUNCTION clef_audit_team_members() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ctx clef_audit_context := clef_audit_context();
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'team_member_added',
               'user', n.user_id::text, NULL,
               jsonb_build_object('team', jsonb_build_object('after', n.team_id::text)), ctx.cause
          FROM new_rows n;
    ELSE
        INSERT INTO audit_events (revision, occurred_at, actor_id, action, target_type, target_id, account_id, changes, cause)
        SELECT COALESCE(ctx.revision, clef_audit_revision()), ctx.at, ctx.actor, 'team_member_removed',
               'user', o.user_id::text, NULL,
               jsonb_build_object('team', jsonb_build_object('before', o.team_id::text)), ctx.cause
          FROM old_rows o;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER team_members_audit_insert AFTER INSERT ON team_members REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_team_members();
CREATE TRIGGER team_members_audit_delete AFTER DELETE ON team_members REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_audit_team_members();
