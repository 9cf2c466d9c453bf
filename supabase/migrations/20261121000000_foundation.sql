-- Foundation: extensions and Potentia's three schemas.
--   app       tables; never exposed to API roles directly (reads go through RLS-checked RPCs)
--   api       functions clients may call (EXECUTE granted to `authenticated`)
--   internal  helpers, triggers and worker-only functions
create schema if not exists extensions;
create extension if not exists vector with schema extensions;

create schema if not exists app;
create schema if not exists api;
create schema if not exists internal;

revoke all on schema app, api, internal from public;
grant usage on schema api to anon, authenticated, service_role;
grant usage on schema app, internal to service_role;
grant usage on schema extensions to anon, authenticated, service_role;

-- Functions are not executable by PUBLIC unless a grant says so (least privilege by default).
alter default privileges in schema api revoke execute on functions from public;
alter default privileges in schema internal revoke execute on functions from public;
