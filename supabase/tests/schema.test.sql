-- Schema: the tables, keys, constraints, sequence, vector index and audit partitioning that the
-- mutation rules rely on, read from the catalogs (pg_class, pg_constraint, pg_index ...).
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(39);

-- Every table of the data model exists
select has_table('app', t, format('table app.%s exists', t))
from unnest(array['settings', 'workspaces', 'workspace_members', 'canvases', 'canvas_members', 'blocks',
                  'block_operations', 'system_audit', 'presence', 'rate_limits', 'rate_limit_slots']) t;

-- blocks: foreign keys as the seed asks, but safe
select ok(exists (
  select from pg_constraint
  where conrelid = 'app.blocks'::regclass and contype = 'f' and confrelid = 'app.canvases'::regclass
    and conkey = array[(select attnum from pg_attribute where attrelid = 'app.blocks'::regclass and attname = 'canvas_id')]
    and confdeltype = 'c'),
  'blocks.canvas_id references canvases ON DELETE CASCADE');
select ok(exists (
  select from pg_constraint
  where conrelid = 'app.blocks'::regclass and contype = 'f' and confrelid = 'app.blocks'::regclass
    and conkey = array(select attnum from pg_attribute where attrelid = 'app.blocks'::regclass
                       and attname in ('canvas_id', 'parent_id') order by attname = 'parent_id')
    and confkey = array(select attnum from pg_attribute where attrelid = 'app.blocks'::regclass
                        and attname in ('canvas_id', 'block_id') order by attname = 'block_id')
    and confdeltype = 'c'),
  'blocks (canvas_id, parent_id) references blocks (canvas_id, block_id) ON DELETE CASCADE: a parent is on the same canvas');
select is((select count(*) from pg_constraint where conrelid = 'app.block_operations'::regclass and contype = 'f'
           and confrelid = 'app.blocks'::regclass), 0::bigint,
          'block_operations has no foreign key to blocks (the replay log outlives deleted blocks; seed defect)');
select ok(exists (select from pg_constraint where conrelid = 'app.block_operations'::regclass and contype = 'f'
                  and confrelid = 'app.canvases'::regclass),
          'block_operations still belongs to a canvas');

-- y_order: UNIQUE per canvas, checked at the end of the operation (deferrable)
select ok(exists (
  select from pg_constraint
  where conrelid = 'app.blocks'::regclass and conname = 'blocks_canvas_y_order_key' and contype = 'u'
    and condeferrable and condeferred
    and conkey = array(select attnum from pg_attribute where attrelid = 'app.blocks'::regclass
                       and attname in ('canvas_id', 'y_order') order by attname = 'y_order')),
  'UNIQUE (canvas_id, y_order) is DEFERRABLE INITIALLY DEFERRED');

select tests.create_user('schema_owner');
select tests.authenticate_as('schema_owner');
create temp table ids as
select (api.create_workspace('Schema') ->> 'workspace_id')::uuid as workspace_id;
alter table ids add column canvas_id uuid, add column other_canvas_id uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Schema') ->> 'canvas_id')::uuid,
               other_canvas_id = (api.create_canvas(workspace_id, 'Other') ->> 'canvas_id')::uuid;
select tests.clear_authentication();

insert into app.blocks (block_id, canvas_id, type, y_order)
values ('00000000-0000-4000-8000-0000000000a1', (select canvas_id from ids), 'text', 'M');
select lives_ok(
  format($$insert into app.blocks (canvas_id, type, y_order) values (%L, 'text', 'M')$$, (select canvas_id from ids)),
  'while deferred, a duplicate y_order may exist inside the transaction (moves swap keys)');
select throws_ok('set constraints app.blocks_canvas_y_order_key immediate', '23505', null,
                 'but it is rejected (23505) when the constraint is checked');
delete from app.blocks where canvas_id = (select canvas_id from ids) and block_id <> '00000000-0000-4000-8000-0000000000a1';
set constraints app.blocks_canvas_y_order_key immediate;
select throws_ok(
  format($$insert into app.blocks (canvas_id, type, y_order) values (%L, 'text', 'M')$$, (select canvas_id from ids)),
  '23505', null, 'a duplicate y_order on one canvas is an error (23505)');
select lives_ok(
  format($$insert into app.blocks (canvas_id, type, y_order) values (%L, 'text', 'M')$$, (select other_canvas_id from ids)),
  'the same y_order on another canvas is fine');
set constraints app.blocks_canvas_y_order_key deferred;

-- server_seq comes from one sequence
select has_sequence('app', 'seq_block_events', 'sequence app.seq_block_events exists');

-- embeddings: vector(1536) with a partial HNSW index
select col_type_is('app', 'blocks', 'vector', 'vector(1536)', 'blocks.vector is vector(1536)');
select has_index('app', 'blocks', 'blocks_vector_hnsw_idx', 'blocks has the HNSW vector index');
select is((select am.amname::text from pg_class c join pg_am am on am.oid = c.relam
           where c.oid = 'app.blocks_vector_hnsw_idx'::regclass), 'hnsw', 'the vector index is HNSW');
select is(pg_get_expr(i.indpred, i.indrelid), '(vector IS NOT NULL)', 'the vector index is partial: WHERE vector IS NOT NULL')
from pg_index i where i.indexrelid = 'app.blocks_vector_hnsw_idx'::regclass;
select is((select reloptions from pg_class where oid = 'app.blocks_vector_hnsw_idx'::regclass),
          array['m=16', 'ef_construction=128'], 'the vector index is built with m=16, ef_construction=128');

-- system audit: partitioned by month, a default partition catches every gap
select is((select partstrat::text from pg_partitioned_table where partrelid = 'app.system_audit'::regclass), 'r',
          'system_audit is partitioned by range');
select is((select array_agg(attname::text) from pg_partitioned_table p, unnest(p.partattrs) k
           join pg_attribute a on a.attrelid = 'app.system_audit'::regclass and a.attnum = k
           where p.partrelid = 'app.system_audit'::regclass), array['created_at'], 'on created_at');
select is((select partdefid::regclass::text from pg_partitioned_table where partrelid = 'app.system_audit'::regclass),
          'app.system_audit_default', 'system_audit has a default partition');

-- a row for a month with no partition yet lands in the default partition ...
create temp table far as select (date_trunc('month', now()) + interval '7 months' + interval '3 days') as at;
insert into app.system_audit (created_at, action, status, details)
values ((select at from far), 'schema.test', 'success', '{"probe":"far"}'),
       ((select at from far) + interval '10 months', 'schema.test', 'success', '{"probe":"farther"}');
select is((select tableoid::regclass::text from app.system_audit where details ->> 'probe' = 'far'), 'app.system_audit_default',
          'a row for a month without a partition lands in the default partition (no row is lost)');
create temp table audit_count as select count(*) as n from app.system_audit;
-- ... and creating partitions ahead moves it into its month
select cmp_ok(internal.create_audit_partitions(7), '>=', 1, 'create_audit_partitions creates the missing future partitions');
select isnt(to_regclass('app.system_audit_' || to_char((select at from far), 'YYYY_MM')), null,
            'the partition for 7 months ahead exists');
select is((select tableoid::regclass::text from app.system_audit where details ->> 'probe' = 'far'),
          'app.system_audit_' || to_char((select at from far), 'YYYY_MM'),
          'the row that waited in the default partition was moved into its month');
select is((select tableoid::regclass::text from app.system_audit where details ->> 'probe' = 'farther'),
          'app.system_audit_default', 'a row beyond the new partitions stays in the default partition');
select is((select count(*) from app.system_audit), (select n from audit_count), 'no audit row was lost');
select is(internal.create_audit_partitions(7), 0, 'creating partitions again is a no-op');

-- the operation log outlives the blocks it describes
select tests.authenticate_as('schema_owner');
create temp table made as
select (api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'schema-op-1', null, '{"type":"text"}') ->> 'block_id')::uuid as block_id;
select api.upsert_block_atomic((select canvas_id from ids), (select block_id from made), 'delete', 'schema-op-2', 1, '{}');
select tests.clear_authentication();
select is((select count(*) from app.blocks where block_id = (select block_id from made)), 0::bigint, 'the block was deleted');
select is((select array_agg(action order by server_seq) from app.block_operations where block_id = (select block_id from made)),
          array['create', 'delete'], 'its create and delete operations are still in the log');

-- RLS on every table of schema app, partitions included
select is((select array_agg(c.relname::text order by c.relname) from pg_class c
           where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p') and not c.relrowsecurity),
          null, 'every app table (and audit partition) has row level security enabled');

select * from finish();
rollback;
