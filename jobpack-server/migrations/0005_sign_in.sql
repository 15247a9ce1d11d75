-- Passwords (argon2id PHC strings; NULL: the user signs in with tokens or certificates only) and
-- the keys that sign the JWTs of POST /api/v1/auth/token (the newest signs; every key listed
-- verifies, so a rotation does not end the sessions signed just before it... until they expire).
ALTER TABLE users ADD COLUMN password_hash TEXT;
CREATE TABLE IF NOT EXISTS jwt_keys (
    id          TEXT PRIMARY KEY,
    secret_hex  TEXT NOT NULL,
    created_at  REAL NOT NULL
);
