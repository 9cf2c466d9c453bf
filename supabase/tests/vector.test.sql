-- Vector search: nearest-neighbour queries over block embeddings use the partial HNSW index
-- blocks_vector_hnsw_idx (WHERE vector IS NOT NULL), so blocks without an embedding cost nothing.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(6);

select tests.create_user('vector_owner');
select tests.authenticate_as('vector_owner');
create temp table ids as select (api.create_workspace('Vectors') ->> 'workspace_id')::uuid as workspace_id;
alter table ids add column canvas_id uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Embedded') ->> 'canvas_id')::uuid;
select tests.clear_authentication();

-- 2000 embedded blocks with random unit-ish vectors, and 500 not yet embedded
insert into app.blocks (canvas_id, type, y_order, content, vector)
select (select canvas_id from ids), 'text', 'a' || lpad(i::text, 5, '0') || 'z', jsonb_build_object('n', i),
       (select array_agg(random() - 0.5)::real[]::extensions.vector from generate_series(1, 1536) where i > 0)
from generate_series(1, 2000) i;
insert into app.blocks (canvas_id, type, y_order, content)
select (select canvas_id from ids), 'text', 'b' || lpad(i::text, 5, '0') || 'z', jsonb_build_object('n', -i)
from generate_series(1, 500) i;
analyze app.blocks;
-- On a test table this small pgvector's cost estimate depends on the index's size, which grows
-- with every rolled-back run of this file; discourage sequential scans so the plan is the same
-- on a fresh and on a reused test database. The assertions still hold only if the planner can
-- answer the query from the partial index (without the filter it cannot, see below).
set local enable_seqscan = off;
select is((select count(*) from app.blocks where canvas_id = (select canvas_id from ids) and vector is not null), 2000::bigint,
          '2000 blocks have an embedding');

-- the EXPLAIN text of a query, one string
-- query vector: the embedding of block n = 777
create temp table probe as select vector as q, block_id from app.blocks where content ->> 'n' = '777';

select matches(
  tests.plan_of(format('select block_id from app.blocks where vector is not null order by vector <=> %L::extensions.vector limit 10',
                         (select q from probe))),
  'Index Scan using blocks_vector_hnsw_idx',
  'k-NN by cosine distance (order by vector <=> $q limit 10, vector is not null) uses the HNSW index');
-- Scoped to one canvas, the planner may also read the canvas's rows through the canvas index and
-- sort them: on a populated database of many small canvases it rightly does (api.search_blocks is
-- exact there anyway, see search.test.sql). What must hold is that the HNSW index can serve the
-- canvas-scoped order by itself, so rule out the sort and look.
set local enable_sort = off;
select matches(
  tests.plan_of(format('select block_id from app.blocks where canvas_id = %L and vector is not null order by vector <=> %L::extensions.vector limit 10',
                         (select canvas_id from ids), (select q from probe))),
  'blocks_vector_hnsw_idx', 'so can the search scoped to one canvas, without a sort');
reset enable_sort;
select doesnt_match(
  tests.plan_of(format('select block_id from app.blocks order by vector <=> %L::extensions.vector limit 10', (select q from probe))),
  'blocks_vector_hnsw_idx', 'the index is partial: a query without "vector is not null" cannot use it');

-- and the index answers correctly. Invisible entries (other transactions' rolled-back rows) use
-- up HNSW candidates; pgvector's iterative scan keeps going until the limit is met, as
-- api.search_blocks does.
set local hnsw.iterative_scan = strict_order;
create temp table nearest as
select block_id, row_number() over () as rank from (
  select block_id from app.blocks where vector is not null order by vector <=> (select q from probe) limit 10) s;
select is((select count(*) from nearest), 10::bigint, 'the search returns 10 neighbours');
select is((select block_id from nearest where rank = 1), (select block_id from probe), 'the nearest neighbour of a stored vector is its own block');

select * from finish();
rollback;
