-- internal.cleanup drops the monthly audit partitions wholly past audit_retention_days by the month
-- their name says (sql/jobs/cleanup.sql, step 4). A partition named with a month that does not
-- exist (made by hand: system_audit_2026_13, system_audit_2026_00) made to_date fail ('date/time
-- field value out of range'), and with it every cleanup run, one transaction: nothing at all was
-- cleaned while it was there. Such names are left alone; the real ones are dropped as before.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(5);

create table app.system_audit_2026_13 partition of app.system_audit for values from ('2001-03-01') to ('2001-04-01');
create table app.system_audit_2026_00 partition of app.system_audit for values from ('2001-04-01') to ('2001-05-01');
create table app."system_audit_2001_01 old" partition of app.system_audit for values from ('2001-05-01') to ('2001-06-01');
create table app.system_audit_2001_01 partition of app.system_audit for values from ('2001-01-01') to ('2001-02-01');

select lives_ok($$create temp table run as select internal.cleanup(2) as res$$,
  'a partition of app.system_audit named with a month that does not exist fails no cleanup run');
select is((select (res -> 'audit_partitions_dropped')::text from run), '1', '... which drops the one past the retention with a real name');
select is(to_regclass('app.system_audit_2001_01'), null, '... that one');
select is((select count(*)::int from unnest(array['app.system_audit_2026_13', 'app.system_audit_2026_00', 'app."system_audit_2001_01 old"']) t
           where to_regclass(t) is not null), 3, '... and leaves the oddly named ones alone');
select is(array[internal.audit_partition_month('system_audit_2024_02'), internal.audit_partition_month('system_audit_2026_13'),
                internal.audit_partition_month('system_audit_0000_01'), internal.audit_partition_month('system_audit_2024_02_x')],
          array['2024-02-01'::date, null, null, null], 'internal.audit_partition_month reads real months only');

select * from finish();
rollback;
