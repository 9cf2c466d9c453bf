-- Least privilege for functions: Postgres grants EXECUTE to PUBLIC on every new function, and
-- per-schema default privileges cannot take that back. Applied after every other source, this
-- revokes it in Potentia's schemas; each file grants what its callers need (authenticated,
-- service_role) explicitly, and those grants are untouched.
revoke execute on all functions in schema api from public;
revoke execute on all functions in schema internal from public;
