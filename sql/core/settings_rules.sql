-- What app.settings may hold for the keys the SQL reads as numbers (internal.setting_int and its
-- like: `(value #>> '{}')::integer`), checked when a row is written, so that an operator's
-- `update app.settings set value = … where key = …` that the readers could not use is refused at
-- once with invalid_input (PX400, DETAIL {"field": <key>}) naming the key, what it takes and what
-- was given; nothing is written.
--
-- Before, the write passed and the readers failed later, each call: a retention of '"7"' or
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
-- added to the list below; a migration that retires one takes it out of the list first).
-- The rule of a key read as a number: its range and unit; no row for any other key.
create or replace function internal.setting_rule(p_key text, out min numeric, out max numeric, out unit text)
returns setof record language sql immutable set search_path = pg_catalog, pg_temp as $$
  select r.min, r.max, r.unit from (values
    -- read by internal.cleanup as now() - N days: at most 100 years, well inside timestamp's range
    ('realtime_messages_retention_days', 1::numeric, 36500::numeric, 'days'),
    ('oplog_retention_days', 1, 36500, 'days'),
    ('audit_retention_days', 1, 36500, 'days'),
    ('deleted_canvas_retention_days', 1, 36500, 'days'),
    ('failed_job_retention_days', 1, 36500, 'days'),
    ('presence_expiry_seconds', 1, 2147483647, 'seconds'),
    ('presence_write_interval_seconds', 0, 2147483647, 'seconds'),
    ('mutations_per_minute', 0, 2147483647, null),
    ('max_batch_ops', 0, 2147483647, null),
    ('max_content_bytes', 0, 2147483647, 'bytes'),
    ('max_text_op_components', 0, 2147483647, null),
    ('auth_password_min_length', 0, 2147483647, 'characters'),
    ('auth_attempts_per_ip', 0, 2147483647, null),
    ('auth_sign_in_attempts_per_email', 0, 2147483647, null),
    ('search_max_results', 0, 2147483647, null),
    ('search_exact_max_blocks', 0, 2147483647, null),
    ('file_download_url_seconds', 0, 2147483647, 'seconds'),
    ('file_upload_url_seconds', 0, 2147483647, 'seconds'),
    ('file_orphan_grace_minutes', 0, 2147483647, 'minutes'),
    ('file_pending_expiry_minutes', 0, 2147483647, 'minutes'),
    ('max_file_bytes', 0, 9223372036854775807, 'bytes')
  ) r(key, min, max, unit) where r.key = p_key
$$;

create or replace function internal.check_setting() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  v_rule record;
  v_text text;
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
  v_text := new.value #>> '{}';
  -- a JSON number written in plain digits: what `::integer` / `::bigint` reads (3.0 and 3.5 it refuses)
  if jsonb_typeof(new.value) is distinct from 'number' or v_text !~ '^-?[0-9]{1,19}$'
     or v_text::numeric not between v_rule.min and v_rule.max then
    perform internal.raise_error('invalid_input',
      format('%s: expected a whole number%s from %s to %s (got %s)', new.key,
             coalesce(' of ' || v_rule.unit, ''), v_rule.min, v_rule.max, left(new.value::text, 40)),
      jsonb_build_object('field', new.key));
  end if;
  return new;
end $$;

comment on function internal.check_setting() is
  'Trigger of app.settings: a key read as a number (retentions, limits) must hold a whole JSON number in its range and cannot be removed; anything else is refused with invalid_input naming the key (sql/core/settings_rules.sql).';

drop trigger if exists settings_values on app.settings;
create trigger settings_values before insert or update or delete on app.settings
  for each row execute function internal.check_setting();
