-- Least privilege for functions: Postgres grants EXECUTE to PUBLIC on every new function, and
-- per-schema default privileges cannot take that back. Applied after every other source, this
-- revokes it in Potentia's schemas; each file grants what its callers need (authenticated,
-- service_role) explicitly, and those grants are untouched.
-- db:migration: always — every generated migration carries this file after the sources it
-- carries, since a new function in any of them needs it (src/db/generate-migration.ts).
revoke execute on all functions in schema api from public;
revoke execute on all functions in schema internal from public;
