-- +goose Up
-- One user everywhere (issue 18): identities linked by the user, a users
-- API for the business backend (metadata, external ids, lookups by phone),
-- imports from LeanCloud, and erasure of a user's personal data.

-- Users: the backend's own metadata (a small JSON object), and erasure.
-- An erased user keeps its row (orders and refunds still name it) with
-- every personal field cleared; deleted_by names the API key that erased it.
-- phone_lookup is the phone number as lookups compare it: the national
-- number for mainland China (+86), else "+" country code and number.
ALTER TABLE users
    ADD COLUMN metadata     jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN deleted_at   timestamptz,
    ADD COLUMN deleted_by   text,
    ADD COLUMN phone_lookup text GENERATED ALWAYS AS (
        CASE
            WHEN pure_phone_number IS NULL OR pure_phone_number = '' THEN NULLIF(phone_number, '')
            WHEN phone_country_code IS NULL OR phone_country_code IN ('', '86') THEN pure_phone_number
            ELSE '+' || phone_country_code || pure_phone_number
        END) STORED;
CREATE INDEX users_phone_lookup_idx ON users (phone_lookup, id) WHERE phone_lookup IS NOT NULL;

-- Identities get a public id (idn_…, the {identity_id} of DELETE
-- /v1/me/identities/{identity_id}) and say how they came: a login, a link
-- by the logged-in user, or an import. An imported identity has not logged
-- in through minigate yet: last_login_at is NULL until it does.
ALTER TABLE identities
    ADD COLUMN public_id text,
    ADD COLUMN source    text NOT NULL DEFAULT 'login' CHECK (source IN ('login', 'link', 'import'));
ALTER TABLE identities ALTER COLUMN last_login_at DROP NOT NULL;

-- Existing identities get ids of the same shape internal/ids makes: "idn_"
-- and 26 Crockford base32 digits of a 48-bit millisecond time (their
-- creation) and 80 random bits.
-- +goose StatementBegin
CREATE FUNCTION minigate_tmp_public_id(prefix text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    rnd bytea := gen_random_bytes(10);
    v numeric := floor(extract(epoch FROM at) * 1000)::numeric;
    out text := '';
BEGIN
    FOR i IN 0..9 LOOP
        v := v * 256 + get_byte(rnd, i);
    END LOOP;
    FOR i IN 1..26 LOOP
        out := substr(alphabet, (v % 32)::int + 1, 1) || out;
        v := floor(v / 32);
    END LOOP;
    RETURN prefix || '_' || out;
END $$;
-- +goose StatementEnd
UPDATE identities SET public_id = minigate_tmp_public_id('idn', created_at);
DROP FUNCTION minigate_tmp_public_id(text, timestamptz);
ALTER TABLE identities ALTER COLUMN public_id SET NOT NULL;
ALTER TABLE identities ADD CONSTRAINT identities_public_id_key UNIQUE (public_id);

-- Ids a user has in other systems (LeanCloud objectId: source "leancloud"):
-- one per source and user, each naming one user. Imports find a user again
-- by it, so re-running an import changes nothing.
CREATE TABLE user_external_ids (
    source      text NOT NULL,
    external_id text NOT NULL,
    user_id     text NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (source, external_id),
    CONSTRAINT user_external_ids_user_source_key UNIQUE (user_id, source)
);

-- A unionid known for a user without an identity that carries it (LeanCloud's
-- _weixin_unionid): logins with prefer_unionid in the scope join this user,
-- like they join the user of an identity with the unionid.
CREATE TABLE user_unionids (
    union_scope text NOT NULL,
    unionid     text NOT NULL,
    user_id     text NOT NULL REFERENCES users (id),
    source      text NOT NULL CHECK (source IN ('import')),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (union_scope, unionid)
);
CREATE INDEX user_unionids_user_id_idx ON user_unionids (user_id);

-- External ids of erased users, as keyed hashes (HMAC-SHA256 under a key
-- derived from secret_key): an import finds that a line is an erased user
-- and skips it instead of bringing the person back.
CREATE TABLE erased_external_ids (
    source           text NOT NULL,
    external_id_hash bytea NOT NULL,
    erased_at        timestamptz NOT NULL,
    PRIMARY KEY (source, external_id_hash)
);

-- +goose Down
DROP TABLE erased_external_ids;
DROP TABLE user_unionids;
DROP TABLE user_external_ids;
ALTER TABLE identities DROP CONSTRAINT identities_public_id_key;
UPDATE identities SET last_login_at = created_at WHERE last_login_at IS NULL;
ALTER TABLE identities ALTER COLUMN last_login_at SET NOT NULL;
ALTER TABLE identities DROP COLUMN source, DROP COLUMN public_id;
DROP INDEX users_phone_lookup_idx;
ALTER TABLE users DROP COLUMN phone_lookup, DROP COLUMN deleted_by, DROP COLUMN deleted_at, DROP COLUMN metadata;
