-- Users' profiles and user keys, links to accounts (with tags), the rights
-- catalog, and grants.

ALTER TABLE users
    ADD COLUMN last_name     text,
    ADD COLUMN first_name    text,
    ADD COLUMN job_title     text,
    ADD COLUMN email         text,
    ADD COLUMN phone         text,
    ADD COLUMN address_lines text[] NOT NULL DEFAULT '{}',
    ADD COLUMN postal_code   text,
    ADD COLUMN city          text,
    ADD COLUMN country       text,
    ADD COLUMN civility      text,
    ADD COLUMN language      text NOT NULL DEFAULT 'fr',
    -- Advanced users only: 12 Crockford base32 characters, stored without
    -- separators, upper case.
    ADD COLUMN user_key      text UNIQUE,
    -- Standard users only: the account that created them (their one link).
    ADD COLUMN home_account_id    uuid REFERENCES accounts (id),
    ADD COLUMN default_account_id uuid REFERENCES accounts (id),
    ADD COLUMN search_text   text NOT NULL DEFAULT '';

ALTER TABLE users ADD CONSTRAINT users_advanced_have_key
    CHECK ((kind = 'advanced') = (user_key IS NOT NULL));
ALTER TABLE users ADD CONSTRAINT users_standard_have_home
    CHECK ((kind = 'standard') = (home_account_id IS NOT NULL));

-- Email is unique among users that are not archived.
CREATE UNIQUE INDEX users_email_live ON users (lower(email))
    WHERE email IS NOT NULL AND status <> 'archived';

-- The rights catalog is data: operators extend it with DefineRight.
CREATE TABLE rights (
    code       text        PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    category   text        NOT NULL,
    label_fr   text        NOT NULL,
    label_en   text        NOT NULL,
    kinds      text[]      NOT NULL CHECK (kinds <@ ARRAY['standard', 'advanced']::text[] AND cardinality(kinds) > 0),
    scoped     boolean     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revision   bigint      NOT NULL DEFAULT 0
);

INSERT INTO rights (code, category, label_fr, label_en, kinds, scoped) VALUES
 ('admin.users', 'administration', 'Administration des utilisateurs et délégation des droits', 'Manage users and delegate rights', '{standard,advanced}', false),
 ('shipping.ws', 'shipping', 'Web Service Affranchissement', 'Franking web service', '{standard,advanced}', false),
 ('shipping.ui', 'shipping', 'Interface d''affranchissement', 'Franking interface', '{standard,advanced}', false),
 ('delivery.pickup_point_ws', 'delivery', 'Web Service choix du point de livraison', 'Delivery point choice web service', '{standard,advanced}', false),
 ('tracking.ws', 'tracking', 'Web Service de suivi', 'Tracking web service', '{standard,advanced}', false),
 ('tracking.tool', 'tracking', 'Outil de suivi colis sans accès au Service Client', 'Parcel tracking tool without customer-service access', '{standard,advanced}', true),
 ('tracking.tool_cs', 'tracking', 'Outil de suivi colis avec accès au Service Client', 'Parcel tracking tool with customer-service access', '{standard,advanced}', true),
 ('billing.invoices', 'account', 'Consultation de mes factures', 'Invoices', '{standard}', false),
 ('billing.rates', 'account', 'Consultation de mes conditions tarifaires', 'Tariff conditions', '{standard}', false),
 ('supplies.order', 'shipping', 'Commande de consommables', 'Consumables ordering', '{standard}', false),
 ('pickup.manage', 'pickup', 'Gestion de la collecte des colis', 'Parcel pickup management', '{standard}', false);

-- A user's presence on an account. Standard users have exactly one, to their
-- home account; advanced users any number.
CREATE TABLE links (
    user_id    uuid        NOT NULL REFERENCES users (id),
    account_id uuid        NOT NULL REFERENCES accounts (id),
    tags       text[]      NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    revision   bigint      NOT NULL,
    PRIMARY KEY (user_id, account_id)
);
CREATE INDEX links_account ON links (account_id, user_id);

-- A right held by a user on an account. The foreign key to links makes
-- "holds a right only while linked" structural: unlinking drops the grants.
CREATE TABLE grants (
    user_id    uuid        NOT NULL,
    account_id uuid        NOT NULL,
    right_code text        NOT NULL REFERENCES rights (code),
    scope      text        CHECK (scope IN ('user_key', 'user_tag', 'consolidated')),
    granted_by uuid        REFERENCES users (id),
    granted_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revision   bigint      NOT NULL,
    PRIMARY KEY (user_id, account_id, right_code),
    FOREIGN KEY (user_id, account_id) REFERENCES links (user_id, account_id) ON DELETE CASCADE
);
CREATE INDEX grants_account ON grants (account_id, right_code);

-- A write may append several audit events (one per user of a mass change):
-- events are keyed by their own id and share their transaction's revision.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey;
ALTER TABLE audit_events ADD COLUMN id bigserial PRIMARY KEY;
CREATE INDEX audit_events_revision ON audit_events (revision);
