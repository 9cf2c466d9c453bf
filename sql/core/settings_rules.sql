-- What app.settings may hold for the keys the SQL reads as numbers (internal.setting_int and its
-- like: `(value #>> '{}')::integer`), checked when a row is written, so that an operator's
-- `update app.settings set value = … where key = …` that the readers could not use is refused at
-- once with invalid_input (PX400, DETAIL {"field": <key>}) naming the key, what it takes and what
-- was given; nothing is written.
--
-- Before, the write passed and the readers failed later, each call: a retention of '"7 days"' or
-- '3.5' (invalid input syntax for type integer), or of 3000000 days (timestamp out of range: the
-- cutoff now() - 3000000 days is before 4713 BC), made internal.cleanup fail every minute, and it
-- is one transaction, so nothing at all was cleaned any more (presence, the operation log, audit,
-- tokens, realtime.messages), with an error that named no setting; 'null' made a retention delete
-- nothing, silently. A retention below 1 day is refused too (realtime_messages_retention_days 0 was
-- taken as 1, oplog_retention_days 0 deleted the whole log that clients resume from).
--
-- Nor may such a key be removed (deleted, or renamed by an update of its key): its readers then
-- read null, and a retention of null deletes nothing, silently.
--
-- A key not listed here is not checked (allowed_file_types is an array; new integer settings are
-- added to the list below, their row inserted by a migration before the one that carries this file:
-- installing it refuses a listed key that is missing, below; a migration that retires one takes it
-- out of the list first).
-- The rule of a key read as a number: its range and unit, and the value the migration that added
-- it inserted (what internal.settings_held_problems proposes for a missing or unreadable value);
-- no row for any other key. The list of keys is internal.setting_rule(null)'s (the null key).
-- Its columns grew (shipped): dropped first, as create or replace cannot change them.
drop function if exists internal.setting_rule(text);
create function internal.setting_rule(p_key text, out key text, out min numeric, out max numeric, out unit text, out shipped numeric)
returns setof record language sql immutable set search_path = pg_catalog, pg_temp as $$
  select r.key, r.min, r.max, r.unit, r.shipped from (values
    -- read by internal.cleanup as now() - N days: at most 100 years, well inside timestamp's range
    ('realtime_messages_retention_days', 1::numeric, 36500::numeric, 'days', 3::numeric),
    ('oplog_retention_days', 1, 36500, 'days', 90),
    ('audit_retention_days', 1, 36500, 'days', 365),
    ('deleted_canvas_retention_days', 1, 36500, 'days', 30),
    ('failed_job_retention_days', 1, 36500, 'days', 7),
    ('presence_expiry_seconds', 1, 2147483647, 'seconds', 120),
    ('presence_write_interval_seconds', 0, 2147483647, 'seconds', 30),
    -- at least one: a user with no session allowed could never be tracked by a gateway
    ('presence_sessions_max', 1, 2147483647, null, 256),
    ('mutations_per_minute', 0, 2147483647, null, 100),
    ('max_batch_ops', 0, 2147483647, null, 100),
    ('max_content_bytes', 0, 2147483647, 'bytes', 65536),
    ('max_text_op_components', 0, 2147483647, null, 1000),
    ('auth_password_min_length', 0, 2147483647, 'characters', 6),
    ('auth_attempts_per_ip', 0, 2147483647, null, 30),
    ('auth_sign_in_attempts_per_email', 0, 2147483647, null, 10),
    ('auth_refreshes_per_ip', 0, 2147483647, null, 150),
    ('search_max_results', 0, 2147483647, null, 50),
    ('search_exact_max_blocks', 0, 2147483647, null, 5000),
    -- presigned URLs' lifetimes: S3's Signature V4 signs for a week at most (the SDK refuses more,
    -- and every upload or download failed), and a URL of 0 seconds expires as it is handed out
    ('file_download_url_seconds', 1, 604800, 'seconds', 300),
    ('file_upload_url_seconds', 1, 604800, 'seconds', 900),
    ('file_orphan_grace_minutes', 0, 2147483647, 'minutes', 1440),
    ('file_pending_expiry_minutes', 0, 2147483647, 'minutes', 60),
    ('max_file_bytes', 0, 9223372036854775807, 'bytes', 52428800)
  ) r(key, min, max, unit, shipped) where p_key is null or r.key = p_key
$$;

-- Whether a value reads as a whole number from p_min to p_max the way its readers read it:
-- `(value #>> '{}')::integer` (or ::bigint), which takes a JSON number in plain digits and a JSON
-- string of them alike ('30' and '"30"': postgres.js and supabase-js send a string parameter as
-- the latter), spaces around and a sign included; 3.5, 'null' and '"seven"' it refuses (jsonb keeps 3.0 as written,
-- refused too; it stores 1e3 as 1000, taken).
-- No SET clause, so that it is inlined (it names only pg_catalog's operators and types).
create or replace function internal.setting_value_usable(p_value jsonb, p_min numeric, p_max numeric)
returns boolean language sql immutable as $$
  select case when jsonb_typeof(p_value) in ('number', 'string') and (p_value #>> '{}') ~ '^\s*[-+]?[0-9]{1,19}\s*$'
              then (p_value #>> '{}')::numeric between p_min and p_max  -- in a case: cast only digits
              else false end
$$;

-- security definer: a trigger's function needs no EXECUTE of the writer, but what it calls does,
-- and the roles granted writes on app.settings (service_role: sql/auth/policies.sql) have none on
-- these internal functions: their every write failed with `permission denied for function setting_rule`
create or replace function internal.check_setting() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_rule record;
begin
  -- removed: deleted, or its key renamed
  if tg_op = 'DELETE' or (tg_op = 'UPDATE' and new.key is distinct from old.key) then
    if exists (select from internal.setting_rule(old.key)) then
      perform internal.raise_error('invalid_input',
        format('%s: the SQL reads this setting, so it cannot be removed (it would read null): update its value instead', old.key),
        jsonb_build_object('field', old.key));
    end if;
    if tg_op = 'DELETE' then
      return old;
    end if;
  end if;
  select * into v_rule from internal.setting_rule(new.key);
  if not found then
    return new;
  end if;
  if not internal.setting_value_usable(new.value, v_rule.min, v_rule.max) then
    perform internal.raise_error('invalid_input',
      format('%s: expected a whole number%s from %s to %s (got %s)', new.key,
             coalesce(' of ' || v_rule.unit, ''), v_rule.min, v_rule.max, left(new.value::text, 40)),
      jsonb_build_object('field', new.key));
  end if;
  return new;
end $$;

comment on function internal.check_setting() is
  'Trigger of app.settings: a key read as a number (retentions, limits) must hold a whole number in its range (a JSON number or a string of digits, as its readers read it) and cannot be removed; anything else is refused with invalid_input naming the key (sql/core/settings_rules.sql).';

drop trigger if exists settings_values on app.settings;
create trigger settings_values before insert or update or delete on app.settings
  for each row execute function internal.check_setting();

-- What app.settings holds when these rules are installed is checked too: the trigger sees only
-- writes from now on, and a database upgraded with a value its readers cannot use already in it
-- ('"7 days"', 3000000 days, null: written before the trigger, or past it with session_replication_role
-- = replica or a data-only restore), or with a listed key missing, went on failing internal.cleanup
-- every minute (or deleting nothing, silently). The migration that installs this file is refused
-- instead, naming each such key, what it takes, what it holds and the statement that fixes it
-- (the value it held brought into range, or the shipped default where it held no number); nothing
-- is reset without the operator's word. A default is inserted once, by the migration that added
-- its key (insert … on conflict do nothing), and no later migration inserts it again: a key
-- deleted since stays missing, so it is refused here too, with the insert to run.
-- One line a key: '<key>: takes …; holds …; fix: <statement>'.
create or replace function internal.settings_held_problems() returns setof text
language sql stable set search_path = pg_catalog, pg_temp as $$
  select format('%s: takes a whole number%s from %s to %s; holds %s; fix: %s', r.key,
                coalesce(' of ' || r.unit, ''), r.min, r.max,
                case when s.key is null then 'nothing (no row)' else left(s.value::text, 40) end,
                case when s.key is null
                  then format('insert into app.settings (key, value, description) values (%L, %L, %L);', r.key, fix.value,
                              format('a whole number%s from %s to %s', coalesce(' of ' || r.unit, ''), r.min, r.max))
                  else format('update app.settings set value = %L where key = %L;', fix.value, r.key) end)
  from internal.setting_rule(null) r
  left join app.settings s on s.key = r.key
  -- what the held value says as a number, if anything: '"7.0"' is 7, 3000000 is itself
  cross join lateral (select case when s.value #>> '{}' ~ '^\s*[-+]?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]{1,4})?\s*$'
                                  then (s.value #>> '{}')::numeric end as n) held
  cross join lateral (select (case when held.n is null then r.shipped
                                   else greatest(r.min, least(r.max, round(held.n))) end)::text as value) fix
  -- what the trigger refuses (internal.check_setting)
  where s.key is null or not internal.setting_value_usable(s.value, r.min, r.max)
  order by r.key
$$;
comment on function internal.settings_held_problems() is
  'The keys of app.settings read as numbers whose held value their readers cannot use, or that are missing: one line each naming the key, what it takes, what it holds and the statement that fixes it. Installing sql/core/settings_rules.sql (every migration that carries it) is refused while there is any.';

do $$
declare
  v_problems text[] := array(select internal.settings_held_problems());
begin
  if cardinality(v_problems) > 0 then
    raise exception using errcode = 'check_violation',
      message = format(E'app.settings holds %s value(s) the SQL cannot use (internal.cleanup fails every run, or a limit reads null):\n  %s\nrun the statement(s) above (or set another value in the range), then migrate again',
                       cardinality(v_problems), array_to_string(v_problems, E'\n  ')),
      hint = 'sql/core/settings_rules.sql: the rules of app.settings are checked against what it holds when they are installed';
  end if;
end
$$;
