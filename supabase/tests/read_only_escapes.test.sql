-- A write refused as read-only (SQLSTATE 25006: a failover's demoted primary, a hot standby, a
-- provider's read-only mode, default_transaction_read_only) escapes every handler of ours that
-- catches `others` where a write can reach: the mutation RPCs' handlers answered it as a
-- rejection row (internal.error_object's `unavailable`) and realtime.send as a warning, so the
-- driver never saw it and never replaced the read-only connection (sql/rpc/errors.sql, "Handlers
-- and read-only refusals"). Each path runs in a read-only subtransaction here (rolled back: the
-- test's transaction is read-write again after it); the error that escaped it must be 25006,
-- raised from the handler, not after the refusal was turned into a rejection.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(10);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;

-- p_sql run read-only (transaction_read_only on in a subtransaction, always rolled back): the
-- SQLSTATE and context of the error that escaped it, or state 'none'
create function pg_temp.read_only_error(p_sql text) returns jsonb language plpgsql as $$
declare
  v_state text;
  v_context text;
begin
  begin
    set local transaction_read_only = on;
    execute p_sql;
    raise exception 'no error' using errcode = 'PXT00';  -- rolls the subtransaction back
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_context = pg_exception_context;
  end;
  return jsonb_build_object('state', case when v_state = 'PXT00' then 'none' else v_state end, 'context', coalesce(v_context, ''));
end $$;
grant execute on function pg_temp.read_only_error(text) to public;

do $$
declare v_ws uuid;
begin
  perform tests.create_user('owner');
  perform tests.authenticate_as('owner');
  v_ws := api.create_workspace('Read-only') ->> 'workspace_id';
  insert into ids values ('c', (api.create_canvas(v_ws, 'C') ->> 'canvas_id')::uuid);
  perform tests.clear_authentication();
end $$;

-- ---------------------------------------------------------------------------------------------
-- api.upsert_block_atomic: its first attempt's handler
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
create temp table answers (path text primary key, answer jsonb);
grant all on answers to public;
insert into answers select 'single', pg_temp.read_only_error(format(
  $q$select api.upsert_block_atomic(%L, null, 'create', 'ro-single', null, '{"type":"text"}')$q$, pg_temp.id('c')));
-- its second attempt's (the first failed a cast: an X-Forwarded-For that is no address)
select set_config('request.headers', '{"x-forwarded-for":"not an address"}', true);
insert into answers select 'second attempt', pg_temp.read_only_error(format(
  $q$select api.upsert_block_atomic(%L, null, 'create', 'ro-second', null, '{"type":"text"}')$q$, pg_temp.id('c')));
select set_config('request.headers', '', true);
-- api.upsert_blocks_atomic's handler
insert into answers select 'batch', pg_temp.read_only_error(format(
  $q$select api.upsert_blocks_atomic(%L, '[{"action":"create","client_op_id":"ro-batch","patch":{"type":"text"}}]')$q$, pg_temp.id('c')));
select tests.clear_authentication();
-- realtime.send's (its callers are database functions: service_role, or the owner here)
insert into answers select 'send', pg_temp.read_only_error($q$select realtime.send('{"x":1}', 'e', 'room', true)$q$);

select is(answer ->> 'state', '25006', format('%s: a write refused as read-only escapes the mutation RPC (25006), not answered as a row', path))
from answers where path in ('single', 'second attempt', 'batch') order by path;
-- re-raised by the handler: the refusal was never turned into a rejection (counted, logged:
-- whose own writes would be refused again, which was how it escaped before, by accident)
select unalike(answer ->> 'context', '%rejected%', format('%s: it escapes from the handler, before any rejection is counted or logged', path))
from answers where path in ('single', 'second attempt', 'batch') order by path;
select is(answer ->> 'state', '25006', 'realtime.send: a write refused as read-only escapes (25006), not a warning')
from answers where path = 'send';

-- nothing was written, and the same calls read-write are answered as before
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('c')), 0::bigint,
          'nothing of the refused calls was logged');
select tests.authenticate_as('owner');
select is(api.upsert_block_atomic(pg_temp.id('c'), null, 'create', 'rw-single', null, '{"type":"text"}') ->> 'status', 'success',
          'read-write, the same mutation applies');
select tests.clear_authentication();

-- the rule, everywhere: no function of ours catches `others` (or class 25, invalid_transaction_state)
-- without re-raising read_only_sql_transaction first, but these, which no write can reach
select is(array(
  select n.nspname || '.' || p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
  where p.prosrc ~* 'when\s+(\w+\s+or\s+)*(others|invalid_transaction_state)\M'
    and p.prosrc !~* 'when\s+read_only_sql_transaction\s+then\s+raise\s*;'
    and n.nspname not in ('tests', 'extensions', 'pg_catalog', 'information_schema') and n.nspname not like 'pg_temp%'
    and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  order by 1),
  array['internal.client_address_key'],
  'every handler catching others re-raises read_only_sql_transaction, but internal.client_address_key (an inet cast, immutable: no write)');

select * from finish();
rollback;
