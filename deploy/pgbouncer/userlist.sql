-- PgBouncer's auth file for deploy/pgbouncer/pgbouncer.production.ini: one line `"role" "secret"`
-- per role it admits, each secret the role's SCRAM-SHA-256 secret as Postgres stores it (PgBouncer
-- checks a client's SCRAM proof with it, and logs in to Postgres with that same proof). Run as a
-- superuser (pg_authid), output to the auth file (the command is in pgbouncer.production.ini, "Auth"):
--
--   runuser -u postgres -- psql -X -qAt -v ON_ERROR_STOP=1 -d postgres < userlist.sql > userlist.txt.new
--
-- The roles default to potentia_runtime, pgbouncer_admin and pgbouncer_stats; other names with
-- -v runtime=… -v admin=… -v stats=…. A role that is missing, or whose password is not a SCRAM
-- secret (unset, or md5 from before password_encryption = scram-sha-256: set it again with
-- \password), stops it with exit 3 and no line written.
\if :{?runtime} \else \set runtime potentia_runtime \endif
\if :{?admin} \else \set admin pgbouncer_admin \endif
\if :{?stats} \else \set stats pgbouncer_stats \endif

-- the roles without a SCRAM secret, for the check below (\gset: nothing printed)
select set_config('potentia.userlist_missing', coalesce(string_agg(r.name, ', ' order by r.name), ''), false) as missing
from unnest(array[:'runtime', :'admin', :'stats']) as r(name)
left join pg_authid a on a.rolname = r.name
where a.rolpassword is null or a.rolpassword not like 'SCRAM-SHA-256$%' \gset

do $check$
begin
  if current_setting('potentia.userlist_missing') <> '' then
    raise exception 'no SCRAM-SHA-256 password for %', current_setting('potentia.userlist_missing')
      using hint = 'as a superuser: set password_encryption = ''scram-sha-256'', then \password ROLE (or create the role: pgbouncer.production.ini, "Auth")';
  end if;
end
$check$;

select format('"%s" "%s"', replace(rolname, '"', '""'), rolpassword)
from pg_authid
where rolname in (:'runtime', :'admin', :'stats')
order by rolname;
