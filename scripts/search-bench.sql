-- What a search costs on a canvas of 50,000 embedded blocks of two models (docs/embeddings.md,
-- What a search costs):
--   createdb search_bench && npm run db:migrate -- --database-url postgres://…/search_bench
--   psql -X -f scripts/search-bench.sql postgres://…/search_bench
-- The first run loads the canvas (about 1.5 min: the HNSW index is dropped for the load and built
-- again after, as docs/upgrade-v1.md does it): 45,000 blocks of model-big and 5,000 of
-- model-small, clustered vectors (one of 50 directions plus noise), 2,000 blocks without a vector,
-- and 20 other canvases with 62,000 blocks, 2,000 of them embedded (triggers off for the load,
-- as the database's owner). Every run then times 50 calls of api.search_blocks per model in one
-- session (after five, plpgsql plans the statements generically, as on a pooled connection) and
-- prints ms per search with the answer's counts:
--   model-big     approximate (HNSW), 5,000 blocks of another model to count
--   model-small   exact, 5,000 blocks compared, 45,000 of another model to count
--   model-none    a model no block has: 50,000 blocks counted, items []
--   (null)        without a model: approximate, nothing counted
-- A scratch database: it stays loaded for the next run.
\set ON_ERROR_STOP on
\set QUIET on
select exists (select from app.canvases where canvas_id = '00000000-0000-0000-0000-0000000000c1') as loaded \gset
\if :loaded
\else
\echo loading 50,000 embedded blocks (about 1.5 min) …
set session_replication_role = replica;
set maintenance_work_mem = '1GB';
insert into auth.users (id, email) values ('00000000-0000-0000-0000-0000000000b1', 'search-bench@example.com');
insert into app.workspaces (workspace_id, name, created_by)
  values ('00000000-0000-0000-0000-0000000000a1', 'search bench', '00000000-0000-0000-0000-0000000000b1');
insert into app.workspace_members (workspace_id, user_id, role)
  values ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-0000000000b1', 'owner');
insert into app.canvases (canvas_id, workspace_id, title)
  values ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000a1', 'large');
insert into app.canvases (canvas_id, workspace_id, title)
  select ('00000000-0000-0000-0000-0000000001' || lpad(g::text, 2, '0'))::uuid, '00000000-0000-0000-0000-0000000000a1', 'small ' || g
  from generate_series(1, 20) g;
drop index app.blocks_vector_hnsw_idx;
insert into app.blocks (canvas_id, type, content, y_order, vector, embedding_model, embedded_hash, embedded_at)
  select '00000000-0000-0000-0000-0000000000c1', 'text', jsonb_build_object('text', 'block ' || i), 'b' || lpad(i::text, 6, '0') || 'z',
         (select array_agg(case when d % 50 = i % 50 then 1 else 0 end + (random() - 0.5) * 0.05 + i * 0)::extensions.vector
          from generate_series(1, 1536) d),
         case when i % 10 = 0 then 'model-small' else 'model-big' end, 'h', now()
  from generate_series(1, 50000) i;
insert into app.blocks (canvas_id, type, content, y_order)
  select '00000000-0000-0000-0000-0000000000c1', 'text', jsonb_build_object('text', 'plain ' || i), 'c' || lpad(i::text, 6, '0') || 'z'
  from generate_series(1, 2000) i;
insert into app.blocks (canvas_id, type, content, y_order)
  select ('00000000-0000-0000-0000-0000000001' || lpad((1 + i % 20)::text, 2, '0'))::uuid, 'text', jsonb_build_object('text', 'other ' || i),
         'd' || lpad(i::text, 6, '0') || 'z'
  from generate_series(1, 60000) i;
insert into app.blocks (canvas_id, type, content, y_order, vector, embedding_model, embedded_hash, embedded_at)
  select ('00000000-0000-0000-0000-0000000001' || lpad((1 + i % 20)::text, 2, '0'))::uuid, 'text', jsonb_build_object('text', 'small ' || i),
         'e' || lpad(i::text, 6, '0') || 'z',
         (select array_agg(case when d % 50 = i % 50 then 1 else 0 end + (random() - 0.5) * 0.05 + i * 0)::extensions.vector
          from generate_series(1, 1536) d),
         'model-big', 'h', now()
  from generate_series(1, 2000) i;
reset session_replication_role;
create index blocks_vector_hnsw_idx on app.blocks using hnsw (vector extensions.vector_cosine_ops)
  with (m = 16, ef_construction = 128) where vector is not null;
vacuum analyze app.blocks;
\endif
set jit = off;
select (select array_agg(case when d % 50 = 7 then 1 else 0 end + (random() - 0.5) * 0.05)::extensions.vector
        from generate_series(1, 1536) d)::text as query \gset
set bench.query = :'query';
create temp table timed (model text, items integer, ms numeric, answer jsonb);
grant insert on timed to authenticated;
set role authenticated;
set request.jwt.claims = '{"sub": "00000000-0000-0000-0000-0000000000b1", "role": "authenticated"}';
do $$
declare
  v_model text; v_started timestamptz; v_answer jsonb; v_calls integer := 50;
  v_query extensions.vector := current_setting('bench.query')::extensions.vector;
begin
  foreach v_model in array array['model-big', 'model-small', 'model-none', null] loop
    v_answer := api.search_blocks('00000000-0000-0000-0000-0000000000c1', v_query, 10, v_model);  -- warm
    v_started := clock_timestamp();
    for i in 1..v_calls loop
      v_answer := api.search_blocks('00000000-0000-0000-0000-0000000000c1', v_query, 10, v_model);
    end loop;
    insert into timed values (coalesce(v_model, '(null)'), jsonb_array_length(v_answer -> 'items'),
                              round(extract(epoch from clock_timestamp() - v_started) * 1000 / v_calls, 2), v_answer - 'items');
  end loop;
end $$;
reset role;
select model, items, ms as "ms/search", answer from timed;
