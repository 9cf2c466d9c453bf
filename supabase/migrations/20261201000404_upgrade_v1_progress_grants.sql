-- app.upgrade_v1_progress (20261201000400) is the operator's, like every app table: service_role may
-- read and write it (as sql/security/public_execute.sql grants on the tables it finds), API roles not
grant all on table app.upgrade_v1_progress to service_role;
