-- The per-IP limit of the local /auth/v1 refresh grant (internal.hit_refresh_limit,
-- sql/auth/password.sql): GoTrue's RATE_LIMIT_TOKEN_REFRESH, 150 per 5 minutes by default
-- (supabase/auth internal/conf/configuration.go). Its row first: the generated migration that
-- follows carries sql/core/settings_rules.sql, which refuses a listed key that is missing.
insert into app.settings (key, value, description) values
  ('auth_refreshes_per_ip', '150',
   'refresh-token grants (POST /auth/v1/token?grant_type=refresh_token) one client IP may send per 5 minutes (429 over_request_rate_limit beyond; GoTrue''s RATE_LIMIT_TOKEN_REFRESH)')
on conflict (key) do nothing;
