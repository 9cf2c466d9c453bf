-- Refresh-token reuse interval (H5). A client that sends the same refresh token twice within
-- REFRESH_TOKEN_REUSE_INTERVAL_SECONDS (a double submit, or a retry after a lost response) gets
-- the token its first request was given, not a family revocation. Tokens are stored hashed, so
-- that token is kept sealed: AES-256-GCM under a key derived from its parent's raw token, which
-- only the parent's holder has (functions/auth.ts seals and opens it; the database never can).
-- It is cleared once the token itself is rotated. Functions in sql/auth/refresh_tokens.sql.
alter table app.refresh_tokens add column sealed_token text;

comment on column app.refresh_tokens.sealed_token is
  'this token, sealed with a key derived from its parent''s raw token: handed back to a retry of the parent within the reuse interval; null once rotated';

-- a retry finds its parent's one child by parent_hash; rotation happens once per token, so one child each
create unique index refresh_tokens_parent_idx on app.refresh_tokens (parent_hash) where parent_hash is not null;
