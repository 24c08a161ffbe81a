-- Idempotent creates: a create carrying a request_id records here, in its
-- own transaction, who asked (the actor; the nil id for the command line),
-- a digest of the request, what it created and at which revision. Writers
-- are serialised by the revision counter, so a retry (even concurrent)
-- finds the first one's row: the same request gets the same answer, and a
-- different request with the same id is refused.
CREATE TABLE request_ids (
    actor_id   uuid        NOT NULL,
    request_id text        NOT NULL,
    method     text        NOT NULL,
    -- SHA-256 of the request (without its request_id). NULL for the ids
    -- recorded before digests were: such a retry gets the first answer.
    digest     bytea       CHECK (length(digest) = 32),
    result_id  uuid        NOT NULL,
    revision   bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor_id, request_id)
);

INSERT INTO request_ids (actor_id, request_id, method, result_id, revision, created_at)
SELECT DISTINCT ON (actor, o.request_id) actor, o.request_id, 'CreateOrganization', o.id, o.revision, o.created_at
  FROM organizations o
  LEFT JOIN LATERAL (SELECT COALESCE((SELECT e.actor_id FROM audit_events e WHERE e.revision = o.revision LIMIT 1),
                                     '00000000-0000-0000-0000-000000000000') AS actor) a ON true
 WHERE o.request_id IS NOT NULL
ON CONFLICT DO NOTHING;

INSERT INTO request_ids (actor_id, request_id, method, result_id, revision, created_at)
SELECT DISTINCT ON (actor, c.request_id) actor, c.request_id, 'CreateAccount', c.id, c.revision, c.created_at
  FROM accounts c
  LEFT JOIN LATERAL (SELECT COALESCE((SELECT e.actor_id FROM audit_events e WHERE e.revision = c.revision LIMIT 1),
                                     '00000000-0000-0000-0000-000000000000') AS actor) a ON true
 WHERE c.request_id IS NOT NULL
ON CONFLICT DO NOTHING;

ALTER TABLE organizations DROP COLUMN request_id;
ALTER TABLE accounts DROP COLUMN request_id;
