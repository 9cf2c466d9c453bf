-- How long internal.cleanup keeps realtime.messages on plain Postgres (sql/realtime/retention.sql):
-- a daily partition is dropped once its whole day is this many days old, as Supabase Realtime
-- drops its own after 72 hours (supabase/realtime, lib/realtime/messages.ex, delete_old_messages).
-- What reads the table needs far less: the gateways' bus reads back about 10 minutes after a
-- reconnect (src/realtime/bus.ts), broadcast replay reaches as far as this keeps
-- (src/realtime/replay.ts); below 1 it counts as 1.
insert into app.settings (key, value, description) values
  ('realtime_messages_retention_days', '3', 'realtime.messages of the compat realtime schema (plain Postgres): a daily partition is dropped by cleanup once its whole day is this many days old (Supabase Realtime: 72 hours); at least 1, as the gateways read back ~10 minutes after a reconnect and broadcast replay reaches this far. Unused on Supabase, whose Realtime server keeps the table')
on conflict (key) do nothing;
