-- realtime.messages on plain Postgres (sql/realtime/retention.sql, step 10 of internal.cleanup):
-- every mutation writes a row there, so it is kept as Supabase Realtime keeps its own (daily
-- partitions up to today + 3; partitions whose whole day is older than the retention, 72 hours,
-- dropped). Rows that landed in the default partition are moved into the partition made for their
-- day, or deleted in batches of p_batch once past the retention. A day ahead is made in two runs,
-- one day a run, so that no scan of the default partition runs under the lock of an attach, and
-- partitions are dropped only in a run that took no lock on the default partition. On a realtime schema that is not
-- ours (Supabase's: no 'potentia compatibility schema' comment), nothing is done.
-- The retention here is 10 years and this file's old rows and partitions are dated around it: no
-- other row of the database is that old, so the counts are this file's alone.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(44);

select is((select value #>> '{}' from app.settings where key = 'realtime_messages_retention_days'), '3',
  'realtime_messages_retention_days is 3 by default: Supabase Realtime drops messages after 72 hours');
select ok(not has_function_privilege('authenticated', 'internal.maintain_realtime_messages(integer)', 'execute')
          and not has_function_privilege('service_role', 'internal.maintain_realtime_messages(integer)', 'execute'),
  'no API role may run the maintenance itself (cleanup runs it)');

update app.settings set value = '3650' where key = 'realtime_messages_retention_days';

create temp table spec_day as
  select d, 'messages_' || to_char(d, 'YYYY_MM_DD') as part, n
  from generate_series(1, 3) n, lateral (select current_date + n as d) x;
-- the cutoff: localtimestamp - 3650 days; its day, and the day before it
create temp table spec_cutoff as select (localtimestamp - interval '3650 days')::date as d;

-- the days ahead have no partition yet (a database whose partitions ran out)
do $$ declare p text; begin
  for p in select part from spec_day loop execute format('drop table if exists realtime.%I', p); end loop;
end $$;
-- a partition of a day long past the retention, with a row; one of the day before the cutoff (its
-- whole day past it) and one of the cutoff's day (not wholly past it)
create table realtime.messages_2001_01_15 partition of realtime.messages for values from ('2001-01-15') to ('2001-01-16');
do $$ declare d date; begin
  for d in select c.d - k from spec_cutoff c, generate_series(0, 1) k loop
    execute format('create table realtime.%I partition of realtime.messages for values from (%L) to (%L)',
                   'messages_' || to_char(d, 'YYYY_MM_DD'), d, d + 1);
  end loop;
end $$;

insert into realtime.messages (id, topic, extension, event, payload, private, inserted_at) values
  -- a row of the third day ahead: in the default partition, since that day has none
  ('00000000-0000-4000-8000-00000000f001', 'spec:retention', 'broadcast', 'future', '{}', true, current_date + 3 + time '01:00'),
  ('00000000-0000-4000-8000-00000000a001', 'spec:retention', 'broadcast', 'in-old-partition', '{}', true, '2001-01-15 12:00'),
  -- three rows past the retention in the default partition, and one an hour inside it
  ('00000000-0000-4000-8000-00000000d001', 'spec:retention', 'broadcast', 'old', '{}', true, '2001-02-01 00:00'),
  ('00000000-0000-4000-8000-00000000d002', 'spec:retention', 'broadcast', 'old', '{}', true, '2001-02-02 00:00'),
  ('00000000-0000-4000-8000-00000000d003', 'spec:retention', 'broadcast', 'old', '{}', true, '2001-02-03 00:00'),
  ('00000000-0000-4000-8000-00000000e001', 'spec:retention', 'broadcast', 'recent', '{}', true,
   localtimestamp - interval '3650 days' + interval '1 hour');
-- a default partition over 1 MB, as on a database whose partitions ran out: there a day is made in
-- two runs (below). Rows inside the retention, of a day with no partition: never moved nor deleted
insert into realtime.messages (topic, extension, event, payload, private, inserted_at)
  select 'spec:retention-filler', 'broadcast', 'filler', jsonb_build_object('pad', repeat('x', 100)), true,
         localtimestamp - interval '1000 days'
  from generate_series(1, 8000);
select cmp_ok(pg_relation_size('realtime.messages_default'), '>', 1048576::bigint, 'the default partition is over 1 MB');
-- the "recent" row is in the cutoff day's partition made above, or the next day's default: either way
-- it must stay. The others' places, before cleanup:
select is((select array_agg(distinct tableoid::regclass::text) from realtime.messages
           where id in ('00000000-0000-4000-8000-00000000f001', '00000000-0000-4000-8000-00000000d001',
                        '00000000-0000-4000-8000-00000000d002', '00000000-0000-4000-8000-00000000d003')),
  array['realtime.messages_default'], 'rows of days with no partition land in realtime.messages_default');

-- on a realtime schema that is not ours (Supabase's), cleanup leaves realtime.messages alone
comment on schema realtime is null;
create temp table on_supabase as select internal.cleanup(2) as res;
select is((select res -> 'realtime_messages_maintained' from on_supabase), 'false'::jsonb,
  'on Supabase''s own realtime schema cleanup does not maintain realtime.messages (its Realtime server does)');
select is((select count(*)::int from spec_day where to_regclass('realtime.' || part) is not null), 0,
  '... it makes no partition');
select isnt(to_regclass('realtime.messages_2001_01_15'), null, '... drops none');
select is((select count(*)::int from realtime.messages where topic = 'spec:retention'), 6, '... and deletes no row');
comment on schema realtime is 'potentia compatibility schema';

-- on ours (sql/compat/realtime.sql, as src/db/migrate.ts marks it)
create temp table first_run as select internal.cleanup(2) as res;
select is((select res -> 'realtime_messages_maintained' from first_run), 'true'::jsonb,
  'on the compat realtime schema cleanup maintains realtime.messages');
select is((select (res -> 'realtime_partitions_pending', res -> 'realtime_partitions_created')::text from first_run), '(3,0)',
  'a first run makes no partition: it marks the three days ahead (realtime_partitions_pending)');
select is((select array_agg(c.convalidated order by c.conname) from pg_constraint c
           where c.conrelid = 'realtime.messages_default'::regclass and c.conname like 'messages_%_elsewhere'),
  array[false, false, false],
  '... with a CHECK on the default partition excluding each day, NOT VALID: no scan, and no row of those days enters it from now');
select is((select tableoid::regclass::text from realtime.messages where id = '00000000-0000-4000-8000-00000000f001'),
  'realtime.messages_default', '... the row of a day ahead already there stays until its day is made');
select isnt(to_regclass('realtime.messages_2001_01_15'), null,
  '... and it drops no partition (a drop, on realtime.messages, waits for writers that may wait for the default partition)');
select is((select res -> 'realtime_messages_deleted' from first_run), '2'::jsonb,
  'rows of the default partition past the retention are deleted p_batch (here 2) a run');
select is((select count(*)::int from realtime.messages where event = 'old' and topic = 'spec:retention'), 1, '... the rest left to the next run');

create temp table runs as select 2 as k, internal.cleanup(2) as res;
insert into runs select 3, internal.cleanup(2);
insert into runs select 4, internal.cleanup(2);
select is((select array_agg((res ->> 'realtime_partitions_created')::int order by k) from runs), array[1, 1, 1],
  'the next runs make one day each: no validating scan runs under the lock of an attach');
select is((select array_agg(part order by n) from spec_day
           where (select i.inhparent from pg_inherits i where i.inhrelid = to_regclass('realtime.' || part)) = 'realtime.messages'::regclass),
  (select array_agg(part order by n) from spec_day),
  'cleanup makes the daily partitions of the next three days (Supabase: up to today + 3)');
select is((select pg_get_expr(c.relpartbound, c.oid) from pg_class c, spec_day s where s.n = 1 and c.oid = to_regclass('realtime.' || s.part)),
  (select format('FOR VALUES FROM (%L) TO (%L)', (d)::timestamp, (d + 1)::timestamp) from spec_day where n = 1),
  '... each holding its day');
select is((select count(*)::int from pg_constraint c
           where c.conrelid = 'realtime.messages_default'::regclass and c.conname like 'messages_%_elsewhere'), 0,
  '... and the default partition''s CHECKs are gone once the partitions'' bounds say it');
select is((select tableoid::regclass::text from realtime.messages where id = '00000000-0000-4000-8000-00000000f001'),
  (select 'realtime.' || part from spec_day where n = 3),
  'a row of a day ahead that was in the default partition is moved into the day''s new partition, not lost');
select is((select sum((res ->> 'realtime_messages_moved')::int)::int from runs), 1, '... and reported (realtime_messages_moved)');
select is((select sum((res ->> 'realtime_partitions_dropped')::int)::int from runs), 0, '... no partition dropped in a run that attached one');
select is((select (res ->> 'realtime_messages_deleted')::int from runs where k = 2), 1,
  'the next run deletes the rest of the old rows');
select is((select count(*)::int from realtime.messages where event = 'old' and topic = 'spec:retention'), 0, '... none of them is left');

create temp table last_run as select internal.cleanup(2) as res;
select is(to_regclass('realtime.messages_2001_01_15'), null,
  'a daily partition wholly older than realtime_messages_retention_days is dropped, with its rows, by a run that made none');
select is((select count(*)::int from spec_cutoff c where to_regclass('realtime.messages_' || to_char(c.d - 1, 'YYYY_MM_DD')) is null), 1,
  '... so is the one of the day before the cutoff''s (its end is the cutoff''s midnight)');
select is((select count(*)::int from spec_cutoff c where to_regclass('realtime.messages_' || to_char(c.d, 'YYYY_MM_DD')) is null), 0,
  '... not the one the cutoff falls in (Supabase: drops day < date(now - 72 hours))');
select is((select (res -> 'realtime_partitions_dropped', res -> 'realtime_partitions_created', res -> 'realtime_partitions_pending')::text from last_run),
  '(2,0,0)', '... reported (realtime_partitions_dropped); no partition left to make');
select is((select count(*)::int from realtime.messages where id = '00000000-0000-4000-8000-00000000e001'), 1,
  'a row inside the retention is kept');

-- a default partition of at most 1 MB (no row at all, as while cleanup runs): a day is made in the
-- run that marks it. Marked in one run and made in the next, a day whose next run never came (the
-- worker stopped in between) refused every row of its own, and with it every mutation of that day
truncate realtime.messages_default;
do $$ begin execute format('drop table realtime.%I', (select part from spec_day where n = 3)); end $$;
create temp table small_run as select internal.cleanup(2) as res;
select is((select (res -> 'realtime_partitions_pending', res -> 'realtime_partitions_created')::text from small_run), '(1,1)',
  'on a small default partition one run marks the day and makes it');
select is((select count(*)::int from pg_constraint c
           where c.conrelid = 'realtime.messages_default'::regclass and c.conname like 'messages_%_elsewhere'), 0,
  '... leaving no day marked without its partition');
select lives_ok(format($$insert into realtime.messages (topic, extension, event, payload, inserted_at)
                       values ('spec:retention', 'broadcast', 'day-3', '{}', %L)$$, (select d from spec_day where n = 3) + time '12:00'),
  '... so a row of that day has a place');

-- a day marked and not made whose day has begun (cleanup stopped between the two runs until then):
-- its rows are refused until a run makes its partition, which the next run does first
do $$ begin execute format('drop table realtime.%I', 'messages_' || to_char(current_date, 'YYYY_MM_DD')); end $$;
do $$ begin execute format('alter table realtime.messages_default add constraint %I check (not (inserted_at >= %L and inserted_at < %L)) not valid',
                           'messages_' || to_char(current_date, 'YYYY_MM_DD') || '_elsewhere', current_date::timestamp, (current_date + 1)::timestamp); end $$;
select throws_ok($$insert into realtime.messages (topic, extension, event, payload) values ('spec:retention', 'broadcast', 'today', '{}')$$,
  '23514', null, 'a row of a begun day marked and not made is refused (as every mutation of that day was)');
create temp table today_run as select internal.cleanup(2) as res;
select is((select (res -> 'realtime_partitions_created')::text from today_run), '1', 'the next run makes that day''s partition');
select lives_ok($$insert into realtime.messages (topic, extension, event, payload) values ('spec:retention', 'broadcast', 'today', '{}')$$,
  '... and its rows have a place again');

-- a table of realtime.messages named with a date that does not exist, made by hand (attached, or a
-- mark of the default partition so named): to_date refused its name ('date/time field value out of
-- range'), which failed every cleanup run, one transaction: nothing at all was cleaned. Such names
-- are left alone, and the days with real names are kept as before in the same run
create table realtime.messages_2026_02_30 partition of realtime.messages for values from ('2001-03-01') to ('2001-03-02');
create table realtime.messages_2026_13_01 partition of realtime.messages for values from ('2001-03-02') to ('2001-03-03');
create table realtime."messages_2026_02_31 copy" partition of realtime.messages for values from ('2001-03-03') to ('2001-03-04');
create table realtime.messages_2001_03_05 partition of realtime.messages for values from ('2001-03-05') to ('2001-03-06');
create table realtime.messages_2026_04_31 (like realtime.messages);
alter table realtime.messages_default add constraint messages_2026_02_30_elsewhere check (true) not valid;
alter table realtime.messages_default add constraint messages_2026_00_01_elsewhere check (true) not valid;
select lives_ok($$create temp table odd_run as select internal.cleanup(2) as res$$,
  'partitions and marks named with an impossible date (2026_02_30, 2026_13_01) fail no cleanup run');
select is((select (res -> 'realtime_partitions_dropped')::text from odd_run), '1', '... which drops the day past the retention with a real name');
select is(to_regclass('realtime.messages_2001_03_05'), null, '... that one');
select is((select count(*)::int from unnest(array['realtime.messages_2026_02_30', 'realtime.messages_2026_13_01',
                                                  'realtime."messages_2026_02_31 copy"', 'realtime.messages_2026_04_31']) t
           where to_regclass(t) is not null), 4,
  '... and leaves the oddly named tables alone, attached or not');
select is((select count(*)::int from pg_constraint where conrelid = 'realtime.messages_default'::regclass
           and conname in ('messages_2026_02_30_elsewhere', 'messages_2026_00_01_elsewhere')), 2, '... and the oddly named marks');
select is(internal.realtime_partition_day('messages_2024_02_29'), '2024-02-29'::date, 'a leap day is a day');

-- a partition made by hand under another name that takes days ahead (a week's, say): the attach of
-- such a day's own partition overlapped it (42P17), which failed every cleanup run. Those days are
-- neither marked nor made; their rows go to it
do $$ begin execute format('drop table if exists realtime.%I', (select part from spec_day where n = 3)); end $$;
do $$ begin execute format('create table realtime.messages_by_hand partition of realtime.messages for values from (%L) to (%L)',
                           (select d from spec_day where n = 3)::timestamp, ((select d from spec_day where n = 3) + 2)::timestamp); end $$;
select lives_ok($$create temp table covered_runs as select internal.cleanup(2) as res union all select internal.cleanup(2)$$,
  'a day ahead taken by a partition made by hand under another name fails no cleanup run (two runs: mark, then make)');
select is((select count(*)::int from pg_constraint c where c.conrelid = 'realtime.messages_default'::regclass
           and c.conname = (select part from spec_day where n = 3) || '_elsewhere'), 0, '... the day is not marked');
select is(to_regclass('realtime.' || (select part from spec_day where n = 3)), null, '... nor made: its rows go to the partition made by hand');

select * from finish();
rollback;
