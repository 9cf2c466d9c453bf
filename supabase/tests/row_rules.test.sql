-- Row rules of the tables every mutation writes (sql/core/row_rules.sql): app.blocks and
-- app.block_operations each have one CHECK constraint, which calls the table's PL/pgSQL rule
-- function, so a statement parses one small expression instead of a constraint per rule;
-- app.canvases has a trigger instead, run only when a statement writes title or settings (every
-- mutation updates its canvas's counters, and a CHECK is evaluated at every UPDATE), which fires
-- always, as a CHECK holds (session_replication_role = replica too). Proven here: each rule still refuses what it refused as a CHECK of its own, at its
-- boundaries, with SQLSTATE 23514 and the column named in the error's fields; every rule's
-- limit itself is accepted; service_role, which writes these tables directly, may run the
-- functions; and the functions stay PL/pgSQL (a SQL function would be inlined and parsed again
-- at every statement); they run with the writer's rights, so the writer's search path must
-- decide nothing in them: check_canvas_row pins it (a SET clause), the two CHECK functions name
-- every function, operator and collation with its schema instead (a SET clause cost each row a
-- GUC nest level), and a writer's own functions and operators before pg_catalog change nothing.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(47);

select tests.create_user('rr_owner');
create temp table ids (canvas_id uuid, block_id uuid);
grant all on ids to authenticated, service_role;
select tests.authenticate_as('rr_owner');
insert into ids (canvas_id) select (api.create_canvas((api.create_workspace('Rules') ->> 'workspace_id')::uuid, 'Rules') ->> 'canvas_id')::uuid;
update ids set block_id = (api.upsert_block_atomic(canvas_id, null, 'create', 'rr-1', null, '{"type":"text"}') #>> '{block,block_id}')::uuid;
select tests.clear_authentication();

-- runs a statement that should break a rule: '<sqlstate> <table>.<column> <constraint>', or 'accepted'
create function pg_temp.refusal(p_sql text) returns text language plpgsql as $$
declare v_state text; v_table text; v_column text; v_constraint text;
begin
  begin
    execute p_sql;
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_table = table_name, v_column = column_name,
                            v_constraint = constraint_name;
    return format('%s %s.%s %s', v_state, v_table, v_column, v_constraint);
  end;
  return 'accepted';
end $$;
-- a block row with one column changed (the others valid)
create function pg_temp.block_insert(p_type text default 'text', p_y_order text default 'k', p_version int default 1,
                                     p_content text default '{}') returns text language sql as $$
  select format('insert into app.blocks (canvas_id, type, y_order, version, content) values (%L, %L, %L, %s, %L)',
                (select canvas_id from ids), p_type, p_y_order, p_version, p_content)
$$;
create function pg_temp.op_insert(p_client_op_id text default 'rr-op', p_action text default 'update',
                                  p_status text default 'conflict', p_seqs text default 'null, null') returns text language sql as $$
  select format('insert into app.block_operations (client_op_id, canvas_id, action, status, server_seq, canvas_seq) values (%L, %L, %L, %L, %s)',
                p_client_op_id, (select canvas_id from ids), p_action, p_status, p_seqs)
$$;

-- ---------------------------------------------------------------- one constraint per table
select is((select array_agg(conname::text order by conname) from pg_constraint where contype = 'c' and conrelid = 'app.canvases'::regclass),
          null, 'app.canvases has no CHECK constraint (its rules are a trigger)');
select is((select format('%s %s', tgname, pg_get_triggerdef(oid)) from pg_trigger where tgrelid = 'app.canvases'::regclass and tgname = 'canvases_row_rules'),
          'canvases_row_rules CREATE TRIGGER canvases_row_rules BEFORE INSERT OR UPDATE OF title, settings ON app.canvases FOR EACH ROW EXECUTE FUNCTION internal.check_canvas_row()',
          'app.canvases runs its rules before an insert or an update that writes title or settings');
select is((select array_agg(conname::text order by conname) from pg_constraint where contype = 'c' and conrelid = 'app.blocks'::regclass),
          array['blocks_row_rules'], 'app.blocks has one CHECK constraint');
select is((select array_agg(conname::text order by conname) from pg_constraint where contype = 'c' and conrelid = 'app.block_operations'::regclass),
          array['block_operations_row_rules'], 'app.block_operations has one CHECK constraint');
select is((select array_agg(p.oid::regprocedure::text order by p.proname desc) from pg_proc p join pg_language l on l.oid = p.prolang
           where p.proname in ('check_canvas_row', 'check_block_row', 'check_block_operation_row') and l.lanname = 'plpgsql'
             and (p.provolatile = 'i' or p.prorettype = 'trigger'::regtype) and not p.prosecdef),
          array['internal.check_canvas_row()', 'internal.check_block_row(text,text,integer,jsonb)',
                'internal.check_block_operation_row(text,text,text,bigint,bigint)'],
          'the rule functions are PL/pgSQL (never inlined), immutable (or a trigger), with the writer''s rights');
select is((select p.proconfig from pg_proc p where p.oid = 'internal.check_canvas_row()'::regprocedure), array['search_path=pg_catalog, pg_temp'],
          'the canvases'' trigger function pins its search path');
select is((select array_agg(p.oid::regprocedure::text order by p.proname desc) from pg_proc p
           where p.oid in ('internal.check_block_row(text,text,integer,jsonb)'::regprocedure,
                           'internal.check_block_operation_row(text,text,text,bigint,bigint)'::regprocedure) and p.proconfig is null),
          array['internal.check_block_row(text,text,integer,jsonb)', 'internal.check_block_operation_row(text,text,text,bigint,bigint)'],
          'the two CHECK functions have no SET clause (their names carry their schema: below)');
select ok((select bool_and(convalidated) from pg_constraint where conname in ('blocks_row_rules', 'block_operations_row_rules')),
          'the two constraints are validated');

-- ---------------------------------------------------------------- app.canvases
select is(pg_temp.refusal(format('update app.canvases set title = %L where canvas_id = %L', '', (select canvas_id from ids))),
          '23514 canvases.title canvases_row_rules', 'an empty title is refused, naming the column');
select is(pg_temp.refusal(format('update app.canvases set title = %L where canvas_id = %L', repeat('t', 501), (select canvas_id from ids))),
          '23514 canvases.title canvases_row_rules', 'a title of 501 characters is refused');
select is(pg_temp.refusal(format('update app.canvases set title = %L where canvas_id = %L', repeat('é', 500), (select canvas_id from ids))),
          'accepted', '500 characters (not bytes) are a title');
select is(pg_temp.refusal(format('update app.canvases set settings = %L where canvas_id = %L', '[1]', (select canvas_id from ids))),
          '23514 canvases.settings canvases_row_rules', 'settings that are not an object are refused');
select throws_like(format('update app.canvases set settings = %L where canvas_id = %L', '"x"', (select canvas_id from ids)),
                   'app.canvases.settings must be a JSON object (it is string)', 'the message says the rule and what it got');
select is(pg_temp.refusal(format('insert into app.canvases (workspace_id, title) select workspace_id, %L from app.canvases where canvas_id = %L',
                                 '', (select canvas_id from ids))),
          '23514 canvases.title canvases_row_rules', 'an insert is checked too');
-- A CHECK holds whatever the role (a logical replication subscriber's apply worker runs as
-- replica; so does a session that sets it to load data with its triggers off); an ordinary
-- trigger fires only in origin. The canvas's rules stand for a CHECK and only read the row (no
-- side effect to repeat on a replica), so their trigger is ENABLE ALWAYS.
select is((select tgenabled::text from pg_trigger where tgrelid = 'app.canvases'::regclass and tgname = 'canvases_row_rules'), 'A',
          'canvases_row_rules is ENABLE ALWAYS');
set local session_replication_role = replica;
select is(pg_temp.refusal(format('update app.canvases set title = %L where canvas_id = %L', '', (select canvas_id from ids))),
          '23514 canvases.title canvases_row_rules', 'under session_replication_role = replica a canvas''s rules still hold');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => 'r0')), '23514 blocks.y_order blocks_row_rules',
          'as a block''s CHECK does');
set local session_replication_role = origin;
-- what the rules do not read is not checked: a mutation's counter update runs no rule (shown on a
-- title the trigger never saw), and any statement setting title or settings does
alter table app.canvases disable trigger canvases_row_rules;
update app.canvases set title = '' where canvas_id = (select canvas_id from ids);
alter table app.canvases enable always trigger canvases_row_rules;  -- as it was (above)
select is(pg_temp.refusal(format('update app.canvases set last_seq = last_seq + 1, last_canvas_seq = last_canvas_seq + 1 where canvas_id = %L', (select canvas_id from ids))),
          'accepted', 'an update of the sequence counters alone runs no rule');
select is(pg_temp.refusal(format('update app.canvases set settings = settings where canvas_id = %L', (select canvas_id from ids))),
          '23514 canvases.title canvases_row_rules', 'an update that sets settings checks the whole row again');
update app.canvases set title = 'Rules' where canvas_id = (select canvas_id from ids);

-- ---------------------------------------------------------------- app.blocks
select is(pg_temp.refusal(pg_temp.block_insert(p_type => 'Text')), '23514 blocks.type blocks_row_rules', 'an upper-case type is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_type => '1text')), '23514 blocks.type blocks_row_rules', 'a type starting with a digit is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_type => 'a' || repeat('b', 40))), '23514 blocks.type blocks_row_rules', 'a type of 41 characters is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_type => 'a' || repeat('_', 39), p_y_order => 'k1')), 'accepted', 'a type of 40 characters is a type');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => 'k0')), '23514 blocks.y_order blocks_row_rules', 'a key ending in 0 is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => '')), '23514 blocks.y_order blocks_row_rules', 'an empty key is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => 'k-')), '23514 blocks.y_order blocks_row_rules', 'a key outside base 62 is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => repeat('k', 11))), '23514 blocks.y_order blocks_row_rules', 'a key of 11 characters is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => 'ñ')), '23514 blocks.y_order blocks_row_rules', 'a letter outside A-Z a-z is refused, whatever the collation');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => repeat('k', 10))), 'accepted', 'a key of 10 characters is a key');
select is(pg_temp.refusal(pg_temp.block_insert(p_version => 0, p_y_order => 'k2')), '23514 blocks.version blocks_row_rules', 'version 0 is refused');
select is(pg_temp.refusal(pg_temp.block_insert(p_content => '[]', p_y_order => 'k3')), '23514 blocks.content blocks_row_rules', 'content that is not an object is refused');
select is(pg_temp.refusal(format('update app.blocks set y_order = %L where block_id = %L', 'V0', (select block_id from ids))),
          '23514 blocks.y_order blocks_row_rules', 'an update is held to the rules too');

-- ---------------------------------------------------------------- app.block_operations
select is(pg_temp.refusal(pg_temp.op_insert(p_client_op_id => '')), '23514 block_operations.client_op_id block_operations_row_rules', 'an empty client_op_id is refused');
select is(pg_temp.refusal(pg_temp.op_insert(p_client_op_id => repeat('c', 129))), '23514 block_operations.client_op_id block_operations_row_rules', 'a client_op_id of 129 characters is refused');
select is(pg_temp.refusal(pg_temp.op_insert(p_client_op_id => repeat('c', 128))), 'accepted', '128 characters are a client_op_id');
select is(pg_temp.refusal(pg_temp.op_insert(p_action => 'upsert')), '23514 block_operations.action block_operations_row_rules', 'an unknown action is refused');
select is(pg_temp.refusal(pg_temp.op_insert(p_status => 'done')), '23514 block_operations.status block_operations_row_rules', 'an unknown status is refused');
select is(pg_temp.refusal(pg_temp.op_insert(p_status => 'success', p_seqs => 'null, 1')), '23514 block_operations.server_seq block_operations_row_rules',
          'an applied operation without its server_seq is refused');
select is(pg_temp.refusal(pg_temp.op_insert(p_status => 'success', p_seqs => 'nextval(''app.seq_block_events''), null')),
          '23514 block_operations.canvas_seq block_operations_row_rules', 'an applied operation without its canvas_seq is refused');
select is(pg_temp.refusal(pg_temp.op_insert(p_status => 'failed', p_seqs => 'null, 7')), '23514 block_operations.canvas_seq block_operations_row_rules',
          'a rejected operation with a canvas_seq is refused');

-- ---------------------------------------------------------------- a writer's search path decides nothing
-- a schema of the writer's, before pg_catalog in its path, with a char_length, a jsonb_typeof and
-- the operators !~ and < of its own that would let every row through (creating a schema and an
-- operator resets the session's cached plans, so the functions' expressions are parsed again
-- under this path: named without their schema, these would be the ones found)
create schema rr_shadow;
create function rr_shadow.char_length(text) returns integer language sql immutable as 'select 5';
create function rr_shadow.jsonb_typeof(jsonb) returns text language sql immutable as $$ select 'object' $$;
create function rr_shadow.never(text, text) returns boolean language sql immutable as 'select false';
create operator rr_shadow.!~ (leftarg = text, rightarg = text, function = rr_shadow.never);
create function rr_shadow.never(integer, integer) returns boolean language sql immutable as 'select false';
create operator rr_shadow.< (leftarg = integer, rightarg = integer, function = rr_shadow.never);
set local search_path = rr_shadow, pg_catalog, extensions, public;
select is(pg_temp.refusal(pg_temp.op_insert(p_client_op_id => repeat('c', 129))), '23514 block_operations.client_op_id block_operations_row_rules',
          'a writer''s own char_length before pg_catalog in its path is not the rule''s');
select is(pg_temp.refusal(pg_temp.block_insert(p_content => '[]', p_y_order => 'k4')), '23514 blocks.content blocks_row_rules',
          'nor its own jsonb_typeof');
select is(pg_temp.refusal(pg_temp.block_insert(p_type => 'Text', p_y_order => 'k5')), '23514 blocks.type blocks_row_rules',
          'nor its own !~');
select is(pg_temp.refusal(pg_temp.block_insert(p_version => 0, p_y_order => 'k6')), '23514 blocks.version blocks_row_rules',
          'nor its own <');
set local search_path = extensions, public;

-- ---------------------------------------------------------------- who may write directly
set local role service_role;
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => 'm')), 'accepted', 'service_role writes a valid block directly (it may run the rule)');
select is(pg_temp.refusal(pg_temp.block_insert(p_y_order => 'm0')), '23514 blocks.y_order blocks_row_rules', 'and is held to the rules');
select is(pg_temp.refusal(format('update app.canvases set title = %L where canvas_id = %L', '', (select canvas_id from ids))),
          '23514 canvases.title canvases_row_rules', 'a canvas''s rules hold for service_role too');
reset role;

select * from finish();
rollback;
