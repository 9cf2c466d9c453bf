-- app.settings (sql/core/settings_rules.sql): a key the SQL reads as a number refuses, when written,
-- a value its readers could not use, with invalid_input (PX400) naming the key, and keeps what it
-- held. Before, the write passed and internal.cleanup (one transaction) failed every run from then
-- on: nothing at all was cleaned.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(25);

-- each rule's shipped default (internal.setting_rule, which a refused or missing value is brought
-- back to at migration) is the value the migration that added the key inserted: the two copies
-- are kept in step here, before anything below writes a setting
select is_empty($$select r.key from internal.setting_rule(null) r left join app.settings s using (key)
                  where s.value is distinct from to_jsonb(r.shipped)$$,
  'every rule''s shipped default equals the value its migration inserted into app.settings');

-- key, value written, what the refusal says after "<key>: expected a whole number ", why
select throws_ok(format('update app.settings set value = %L where key = %L', value, key), 'PX400',
                 format('%s: expected a whole number %s (got %s)', key, range, value), why)
from (values
  ('realtime_messages_retention_days', '3000000', 'of days from 1 to 36500',
   'a retention whose cutoff is before timestamp''s range (cleanup failed on it: timestamp out of range) is refused, naming the key'),
  ('realtime_messages_retention_days', '"three"', 'of days from 1 to 36500', 'a retention that is not a number is refused, showing what was given'),
  ('realtime_messages_retention_days', '3.5', 'of days from 1 to 36500', 'a fraction is refused (setting_int''s ::integer cannot read it)'),
  ('realtime_messages_retention_days', '0', 'of days from 1 to 36500', 'a retention of 0 days is refused (it was taken as 1 without a word)'),
  ('oplog_retention_days', '-5', 'of days from 1 to 36500', 'a negative oplog retention is refused (it would delete the log clients resume from)'),
  ('audit_retention_days', 'null', 'of days from 1 to 36500', 'null is refused (a retention of null deleted nothing, silently)'),
  ('mutations_per_minute', '99999999999', 'from 0 to 2147483647', 'a limit beyond integer is refused (every mutation failed on its cast)'),
  -- S3 (Signature V4) presigns a URL for at most a week: beyond it every upload was answered
  -- 503 "file storage did not answer", which no retry cures
  ('file_upload_url_seconds', '604801', 'of seconds from 1 to 604800', 'a PUT URL lasting over a week is refused (S3 presigns for 7 days at most)'),
  ('file_download_url_seconds', '999999', 'of seconds from 1 to 604800', 'a GET URL lasting over a week is refused (S3 presigns for 7 days at most)'),
  ('file_upload_url_seconds', '0', 'of seconds from 1 to 604800', 'a URL lasting 0 seconds is refused (it expires as it is handed out)')
) t(key, value, range, why);
select throws_ok($$insert into app.settings (key, value, description) values ('failed_job_retention_days', '"7 days"', 'x')
                   on conflict (key) do update set value = excluded.value$$, 'PX400',
  'failed_job_retention_days: expected a whole number of days from 1 to 36500 (got "7 days")',
  'an upsert is checked too');
-- a JSON string of digits is what postgres.js and supabase-js write for a string parameter, and
-- what the readers read ((value #>> '{}')::integer): taken, as before the rules
select lives_ok($$update app.settings set value = '"30"' where key = 'mutations_per_minute'$$,
  'a whole number written as a JSON string of digits ("30") is taken: its readers read it');

select lives_ok($$update app.settings set value = '1e9' where key = 'presence_expiry_seconds'$$,
  'presence_expiry_seconds up to integer''s range is taken (1e9 seconds)');
-- the error's fields, as every other invalid_input
select is(tests.error_of($$update app.settings set value = '0' where key = 'presence_expiry_seconds'$$),
  '{"state": "PX400", "code": "invalid_input", "field": "presence_expiry_seconds"}'::jsonb,
  'the refusal''s DETAIL names the key as its field and its HINT is invalid_input');

-- nothing written: the refused values left the defaults (the updates above that passed are undone with the test)
select is((select value from app.settings where key = 'realtime_messages_retention_days'), '3'::jsonb,
  'realtime_messages_retention_days keeps its value after the refusals');

-- what the readers can use is taken, and cleanup runs with it
update app.settings set value = '36500' where key = 'realtime_messages_retention_days';
update app.settings set value = '1' where key = 'oplog_retention_days';
select is((select value from app.settings where key = 'realtime_messages_retention_days'), '36500'::jsonb,
  'the longest retention, 100 years, is taken');
select ok(internal.cleanup() ? 'realtime_messages_deleted', 'cleanup runs with the longest retention (its cutoff is in range)');

-- nor removed: a retention read as null deleted nothing, silently
select throws_ok($$delete from app.settings where key = 'oplog_retention_days'$$, 'PX400',
  'oplog_retention_days: the SQL reads this setting, so it cannot be removed (it would read null): update its value instead',
  'a setting the SQL reads cannot be deleted');
select throws_ok($$update app.settings set key = 'oplog_retention_days_old' where key = 'oplog_retention_days'$$, 'PX400',
  'oplog_retention_days: the SQL reads this setting, so it cannot be removed (it would read null): update its value instead',
  'nor renamed away');
select is((select count(*)::int from app.settings where key = 'oplog_retention_days'), 1, 'it is still there');
insert into app.settings (key, value, description) values ('potentia_test_free_key', '"anything"', 'a key no SQL reads');
select lives_ok($$delete from app.settings where key = 'potentia_test_free_key'$$, 'a key no SQL reads is inserted and deleted freely');

-- a key not read as a number is not checked
select lives_ok($$update app.settings set value = '["text/plain"]' where key = 'allowed_file_types'$$,
  'allowed_file_types (an array) is not held to the numbers'' rule');

-- as service_role, which is granted every write on app.settings (sql/auth/policies.sql) but no
-- EXECUTE on the rules' internal functions: the trigger's checks run as their owner, so a write
-- is taken or refused as for the owner, not failed with `permission denied for function setting_rule`
set local role service_role;
select lives_ok($$update app.settings set value = '45' where key = 'oplog_retention_days'$$,
  'service_role may write a setting in range');
select throws_ok($$update app.settings set value = '0' where key = 'oplog_retention_days'$$, 'PX400',
  'oplog_retention_days: expected a whole number of days from 1 to 36500 (got 0)',
  'and is refused one out of range with invalid_input, as the owner is');
reset role;

select * from finish();
rollback;
