-- Supabase-compatible `auth` schema for plain Postgres. Applied by `npm run db:migrate` only when
-- the database has no `auth` schema of its own (on Supabase the real one is used untouched).
-- It mirrors what Potentia relies on: the API roles, auth.users, and the claim helpers that read
-- the settings PostgREST (and our HTTP layer) set per request.

do $$
begin
  -- roles are cluster-wide: create only the missing ones
  if not exists (select from pg_roles where rolname = 'anon') then create role anon nologin noinherit; end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then create role authenticated nologin noinherit; end if;
  if not exists (select from pg_roles where rolname = 'service_role') then create role service_role nologin noinherit bypassrls; end if;
end $$;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text unique,
  raw_user_meta_data jsonb not null default '{}',
  created_at timestamptz not null default now()
);
-- GoTrue's columns that local email + password sign-in uses (sql/auth/password.sql), with GoTrue's
-- names and types. `add column if not exists`: dev databases made before them get them when this
-- file, changed, is re-run by the migrator.
alter table auth.users
  add column if not exists aud varchar(255) default 'authenticated',
  add column if not exists role varchar(255) default 'authenticated',
  add column if not exists encrypted_password varchar(255),
  add column if not exists email_confirmed_at timestamptz,
  add column if not exists last_sign_in_at timestamptz,
  add column if not exists raw_app_meta_data jsonb default '{}',
  add column if not exists updated_at timestamptz default now();
-- sign-in looks emails up case-insensitively, as GoTrue does
create index if not exists users_email_lower_idx on auth.users (lower(email));
grant select on auth.users to service_role;

-- The JWT claims of the current request, as PostgREST sets them.
create or replace function auth.jwt() returns jsonb
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

create or replace function auth.uid() returns uuid
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.email() returns text
language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

grant execute on function auth.jwt(), auth.uid(), auth.role(), auth.email() to anon, authenticated, service_role;
