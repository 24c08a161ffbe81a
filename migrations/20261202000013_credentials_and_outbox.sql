-- Credentials (passwords, invitation and reset tokens), login throttling,
-- and the outbox of messages to users.

-- One row per user who has a password: an argon2id PHC string (its
-- parameters travel with it). Apart from `users`, so that nothing about a
-- password touches a row the decision triggers watch.
CREATE TABLE passwords (
    user_id     uuid        PRIMARY KEY REFERENCES users (id),
    hash        text        NOT NULL CHECK (hash LIKE '$argon2id$%'),
    -- Set by an admin or an import: the user must choose his own at next login.
    must_change boolean     NOT NULL,
    set_at      timestamptz NOT NULL DEFAULT now(),
    revision    bigint      NOT NULL
);

-- Consecutive password logins that did not succeed, per login as typed
-- (known or not: an unknown login is counted and locked like any other, so
-- that neither the time of an answer nor a lock tells whether it exists),
-- counted as each attempt starts (attempts in parallel cannot outrun the
-- lock) and forgotten when one succeeds; the lock follows from the count
-- and the last attempt (`domain::credential::locked_until`). Not a change
-- of the domain: written without a revision; rows idle for a day are
-- pruned.
CREATE TABLE login_failures (
    login           text        PRIMARY KEY,
    failures        integer     NOT NULL CHECK (failures > 0),
    last_failure_at timestamptz NOT NULL
);
CREATE INDEX login_failures_idle ON login_failures (last_failure_at);

-- Invitation and password-reset tokens: only their SHA-256. A token is
-- used once (`used_at`), or dies when a newer one of its kind is issued.
CREATE TABLE credential_tokens (
    hash       bytea       PRIMARY KEY CHECK (length(hash) = 32),
    user_id    uuid        NOT NULL REFERENCES users (id),
    purpose    text        NOT NULL CHECK (purpose IN ('invitation', 'password_reset')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX credential_tokens_user ON credential_tokens (user_id, purpose);

-- Messages to users, written in the transaction of the change they tell
-- about and delivered by a worker on every replica (`FOR UPDATE SKIP
-- LOCKED`). A message never holds a secret: an invitation's or a reset's
-- token is drawn by the worker as it sends the message, and only its hash
-- is kept (in `credential_tokens`, in the worker's transaction).
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('invitation', 'password_reset', 'rights_granted', 'account_created')),
    user_id         uuid        NOT NULL REFERENCES users (id),
    -- The account the message is about, when there is one.
    account_id      uuid        REFERENCES accounts (id),
    -- What the message tells besides the user's profile: who acted, which
    -- rights, until when a token is valid.
    params          jsonb       NOT NULL DEFAULT '{}',
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'sent', 'logged', 'parked', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Due from then; while a worker holds it, the end of its lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The worker that claimed it last: only it may send it or record what
    -- became of it, and only while its lease lasts.
    claimed_by      uuid,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    -- The transaction that wrote it: rights granted by one transaction to
    -- one user on one account make one message.
    txid            bigint      NOT NULL DEFAULT txid_current()
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_user ON outbox (user_id, kind) WHERE state = 'pending';
CREATE UNIQUE INDEX outbox_rights_once ON outbox (txid, user_id, account_id)
    WHERE kind = 'rights_granted';

-- "De nouveaux droits vous ont été attribués" (seed 004): whatever path
-- inserts grants (an RPC, a link, an import's COPY, a future role), the
-- rights new to an active user with an email are told to him, one message
-- per user, account and transaction. An invited user is told his rights by
-- the message that confirms his account instead.
CREATE FUNCTION clef_tell_rights_granted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (kind, user_id, account_id, params)
    SELECT 'rights_granted', n.user_id, n.account_id,
           jsonb_build_object('rights', jsonb_agg(DISTINCT n.right_code),
                              'granted_by', (array_agg(n.granted_by))[1])
      FROM new_rows n
      JOIN users u ON u.id = n.user_id
     WHERE u.status = 'active' AND u.email IS NOT NULL
     GROUP BY n.user_id, n.account_id
    ON CONFLICT (txid, user_id, account_id) WHERE kind = 'rights_granted'
    DO UPDATE SET params = jsonb_set(outbox.params, '{rights}',
        (SELECT jsonb_agg(DISTINCT r ORDER BY r)
           FROM jsonb_array_elements_text((outbox.params->'rights') || (EXCLUDED.params->'rights')) r));
    RETURN NULL;
END $$;

CREATE TRIGGER grants_tell AFTER INSERT ON grants REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_tell_rights_granted();

-- An invited user has no connection key: he gets his first one when he
-- completes his invitation. No path can issue one before.
CREATE FUNCTION clef_no_key_while_invited() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows n JOIN users u ON u.id = n.user_id
                WHERE u.status = 'invited') THEN
        RAISE EXCEPTION 'an invited user gets a connection key when he completes his invitation'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'keys_not_while_invited';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER keys_not_while_invited AFTER INSERT ON connection_keys REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION clef_no_key_while_invited();

-- Nor is a user who never completed his invitation (who never had a key)
-- made active by reactivating him, by any path (ReactivateUser, an
-- import's `actif`): he goes back to invited, his old invitations die, and
-- a new one is sent.
CREATE FUNCTION clef_reactivate_or_invite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM connection_keys k WHERE k.user_id = NEW.id) THEN
        NEW.status := 'invited';
        UPDATE credential_tokens SET used_at = now()
         WHERE user_id = NEW.id AND purpose = 'invitation' AND used_at IS NULL;
        UPDATE outbox SET state = 'cancelled', done_at = now()
         WHERE user_id = NEW.id AND kind = 'invitation' AND state = 'pending';
        INSERT INTO outbox (kind, user_id, account_id)
        VALUES ('invitation', NEW.id,
                (SELECT account_id FROM links WHERE user_id = NEW.id ORDER BY created_at LIMIT 1));
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER users_reactivated_or_invited BEFORE UPDATE OF status ON users FOR EACH ROW
    WHEN (NEW.status = 'active' AND OLD.status = 'deactivated')
    EXECUTE FUNCTION clef_reactivate_or_invite();

-- A user deactivated or archived, by any path, loses his live tokens
-- (invitation, reset) and their pending messages: reactivated, he asks
-- for new ones.
CREATE FUNCTION clef_tokens_die_with_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE credential_tokens SET used_at = now() WHERE user_id = NEW.id AND used_at IS NULL;
    UPDATE outbox SET state = 'cancelled', done_at = now()
     WHERE user_id = NEW.id AND kind IN ('invitation', 'password_reset') AND state = 'pending';
    RETURN NULL;
END $$;

CREATE TRIGGER users_tokens_die_with_access AFTER UPDATE OF status ON users FOR EACH ROW
    WHEN (NEW.status IN ('deactivated', 'archived') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION clef_tokens_die_with_access();
