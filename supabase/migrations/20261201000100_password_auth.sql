-- Local email + password sign-in (the GoTrue endpoints `npm start` serves at /auth/v1; functions in
-- sql/auth/password.sql). pgcrypto hashes passwords with bcrypt (crypt + gen_salt('bf')), as GoTrue
-- stores them in auth.users.encrypted_password; on Supabase it is already in `extensions`.
create extension if not exists pgcrypto with schema extensions;

-- Sign-in attempt limits, fixed 5-minute windows in app.rate_limits (internal.hit_window_limit).
-- The per-IP default is the Supabase CLI's `auth.rate_limit.sign_in_sign_ups` (30 per 5 minutes).
insert into app.settings (key, value, description) values
  ('auth_sign_in_attempts_per_email', '10',
   'password sign-ins one email address may attempt per 5 minutes, right or wrong (429 over_request_rate_limit beyond)'),
  ('auth_attempts_per_ip', '30',
   'password sign-ins and sign-ups one client IP may attempt per 5 minutes (429 over_request_rate_limit beyond)'),
  ('auth_password_min_length', '6', 'shortest password accepted at sign-up and password change, in characters (GoTrue''s default)')
on conflict do nothing;
