-- Semantic search compares a query only with blocks embedded by the query's model
-- (api.search_blocks, sql/jobs/search.sql). Vectors of two models are not comparable: a cosine
-- distance between them means nothing, and the answer would be a list in an order that means
-- nothing. Given p_model, the blocks another model embedded are left out, counted
-- (other_model_blocks) and named (other_models): items [] with a count is "wrong model", not
-- "no match". A model name that is blank or over 200 characters is invalid_input, field model.
-- What a search counts comes from blocks_embedded_model_idx, never from the canvas's rows: the
-- counts across several models, exact past search_exact_max_blocks, the exact/approximate switch
-- at the threshold, and which relations a search scans (last section).
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(32);

select tests.create_user('search_owner');
select tests.authenticate_as('search_owner');
create temp table ids as select (api.create_workspace('Search') ->> 'workspace_id')::uuid as workspace_id;
alter table ids add column canvas_id uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Two models') ->> 'canvas_id')::uuid;
select tests.clear_authentication();
grant select on ids to authenticated;

-- a unit-ish vector pointing along dimension k
create function pg_temp.along(k integer) returns extensions.vector language sql as $$
  select array_agg(case when d = k then 1 else 0.001 end order by d)::real[]::extensions.vector from generate_series(1, 1536) d
$$;
-- three blocks embedded by model-a (along 1, 2, 3), two by model-b (along 4, 5), one not embedded
insert into app.blocks (canvas_id, type, y_order, content, vector, embedding_model)
select (select canvas_id from ids), 'text', 'a' || k || 'z', jsonb_build_object('k', k), pg_temp.along(k),
       case when k <= 3 then 'model-a' else 'model-b' end
from generate_series(1, 5) k;
insert into app.blocks (canvas_id, type, y_order, content) select canvas_id, 'text', 'a9z', '{"k": 9}' from ids;

-- the answer of a search as the owner, and the k of its items in order
create function pg_temp.search(p_query extensions.vector, p_model text) returns jsonb language plpgsql as $$
declare r jsonb;
begin
  perform tests.authenticate_as('search_owner');
  r := api.search_blocks((select canvas_id from ids), p_query, 10, p_model);
  perform tests.clear_authentication();
  return r;
end $$;
create function pg_temp.ks(r jsonb) returns integer[] language sql as $$
  select coalesce(array_agg((i -> 'content' ->> 'k')::integer order by o), '{}') from jsonb_array_elements(r -> 'items') with ordinality x(i, o)
$$;

-- a query of model-a pointing at model-b's block along 4: that block is nearest by cosine
-- distance, and would come first if the models were mixed; only model-a's three are compared
create temp table a_query as select pg_temp.search(pg_temp.along(4), 'model-a') as r;
select is((select pg_temp.ks(r) from a_query) @> array[1, 2, 3] and cardinality((select pg_temp.ks(r) from a_query)) = 3, true,
          'a model-a query is compared with the three model-a blocks only');
select is((select pg_temp.ks(r) && array[4, 5] from a_query), false, 'never with the model-b blocks, though one is the nearest vector');
select is((select r -> 'model' from a_query), '"model-a"', 'the answer names the model searched');
select is((select r -> 'other_model_blocks' from a_query), '2', 'and counts the two embedded blocks another model embedded');
select is((select r -> 'other_models' from a_query), '["model-b"]', 'naming that model');

-- the same vector as a model-b query: model-b's blocks, the one along 4 first
create temp table b_query as select pg_temp.search(pg_temp.along(4), 'model-b') as r;
select is((select pg_temp.ks(r) from b_query), array[4, 5], 'a model-b query finds the model-b blocks, nearest first');
select is((select r -> 'other_model_blocks' from b_query), '3', 'with the three model-a blocks left out');

-- a model no block of the canvas has: nothing compared, everything counted as another model's
create temp table c_query as select pg_temp.search(pg_temp.along(1), 'model-c') as r;
select is((select r -> 'items' from c_query), '[]', 'a query of a model no block has: items []');
select is((select r -> 'other_model_blocks' from c_query), '5', 'every embedded block counted as left out (not the one without a vector)');
select is((select r -> 'other_models' from c_query), '["model-a", "model-b"]', 'the models that embedded them, by name');

-- an empty canvas of that model reads apart from a wrong model: no block embedded at all
update app.blocks set vector = null, embedding_model = null where canvas_id = (select canvas_id from ids) and embedding_model = 'model-b';
select is((select pg_temp.search(pg_temp.along(1), 'model-b') - 'items'), '{"model": "model-b", "other_model_blocks": 3, "other_models": ["model-a"]}'::jsonb,
          'after model-b''s vectors are gone, a model-b query still counts model-a''s three');
select is((select pg_temp.search(pg_temp.along(1), 'model-a') - 'items'), '{"model": "model-a", "other_model_blocks": 0, "other_models": []}'::jsonb,
          'and a model-a query leaves nothing out');

-- without a model (the three-argument call, positional or named as PostgREST sends it): every
-- embedded block is compared, as before p_model
select tests.authenticate_as('search_owner');
select is(pg_temp.ks(api.search_blocks((select canvas_id from ids), pg_temp.along(2), 10)), array[2, 1, 3],
          'without a model every embedded block is compared');
select is(api.search_blocks(p_canvas_id => (select canvas_id from ids), p_query => pg_temp.along(2), p_limit => 1) - 'items',
          '{"model": null, "other_model_blocks": 0, "other_models": []}'::jsonb, 'called by name without p_model: model null, nothing left out');
select tests.clear_authentication();

-- the model is a name: blank or absurdly long is refused (to the owner)
select tests.authenticate_as('search_owner');
select is(tests.error_of(format('select api.search_blocks(%L, pg_temp.along(1), 10, %L)', (select canvas_id from ids), '')),
          '{"state": "PX400", "code": "invalid_input", "field": "model"}', 'an empty model: invalid_input, field model');
select is(tests.error_of(format('select api.search_blocks(%L, pg_temp.along(1), 10, %L)', (select canvas_id from ids), E' \t\n')),
          '{"state": "PX400", "code": "invalid_input", "field": "model"}', 'a blank model: invalid_input, field model');
select is(tests.error_of(format('select api.search_blocks(%L, pg_temp.along(1), 10, %L)', (select canvas_id from ids), repeat('m', 201))),
          '{"state": "PX400", "code": "invalid_input", "field": "model"}', 'a model of 201 characters: invalid_input, field model');
select is(pg_temp.search(pg_temp.along(1), repeat('m', 200)) -> 'other_model_blocks', '3', 'one of 200 characters is a name like any other');
-- the query is checked as before
select tests.authenticate_as('search_owner');
select is(tests.error_of(format('select api.search_blocks(%L, %L::extensions.vector, 10, %L)', (select canvas_id from ids), '[1,2,3]', 'model-a')),
          '{"state": "PX400", "code": "invalid_input", "field": "query"}', 'a query of 3 dimensions: invalid_input, field query');
select tests.clear_authentication();

-- ---------------------------------------------------------------- what the counts read
-- blocks_embedded_model_idx: the canvas's embedded blocks by model (migration
-- 20261205191100_blocks_embedded_model_index). The mutation RPC writes blocks without a vector,
-- and no column the index reads is one an edit changes: creating and editing blocks cost what they did
select is(pg_get_indexdef('app.blocks_embedded_model_idx'::regclass),
          'CREATE INDEX blocks_embedded_model_idx ON app.blocks USING btree (canvas_id, embedding_model) WHERE (vector IS NOT NULL)',
          'a canvas''s embedded blocks are indexed by model, and only they (vector not null)');
-- What PostgreSQL asks of a HOT update is that no column an index reads changed (whether the
-- page has room is up to the page: a count of HOT updates here failed in the whole suite, where
-- the earlier files' rows filled it): an edit through the RPC leaves the three untouched
create temp table edit_before as
  select block_id, canvas_id, embedding_model, vector from app.blocks where canvas_id = (select canvas_id from ids) and content ->> 'k' = '1';
grant select on edit_before to authenticated;
select tests.authenticate_as('search_owner');
create temp table edit_result as
  select api.upsert_block_atomic(canvas_id, block_id, 'update', 'search-edit', 1, '{"content": {"k": 1, "edited": true}}') as r from edit_before;
select tests.clear_authentication();
select is((select (e.r ->> 'status') || ', ' || (b.content ->> 'edited') || ', '
                  || ((b.canvas_id, b.embedding_model, b.vector) is not distinct from (o.canvas_id, o.embedding_model, o.vector))
           from edit_result e, edit_before o join app.blocks b using (block_id)),
          'success, true, true', 'an edit of an embedded block through the RPC changes none of the columns the index reads (it can stay HOT)');

-- more models on the canvas: two blocks of model-c, one of model-0, and a vector without a
-- model's name (written by hand: internal.store_embedding always names it); model-a keeps its three
insert into app.blocks (canvas_id, type, y_order, content, vector, embedding_model)
select (select canvas_id from ids), 'text', 'a' || k || 'y', jsonb_build_object('k', k), pg_temp.along(k), m
from (values (6, 'model-c'), (7, 'model-c'), (8, 'model-0'), (10, null)) v(k, m);
select is((select pg_temp.search(pg_temp.along(1), 'model-a') - 'items'),
          '{"model": "model-a", "other_model_blocks": 4, "other_models": ["model-0", "model-c"]}'::jsonb,
          'every other model''s blocks are counted and each model named once, in order; the unnamed vector counted, not named');
select is((select pg_temp.search(pg_temp.along(1), 'model-z') - 'items'),
          '{"model": "model-z", "other_model_blocks": 7, "other_models": ["model-0", "model-a", "model-c"]}'::jsonb,
          'a model no block has: all seven counted, the three models named');

-- the query's model's blocks are counted only up to search_exact_max_blocks + 1 (the switch needs
-- no more); the other models' are counted exactly, whatever the threshold
update app.settings set value = '1' where key = 'search_exact_max_blocks';
select is((select pg_temp.search(pg_temp.along(1), 'model-a') - 'items'),
          '{"model": "model-a", "other_model_blocks": 4, "other_models": ["model-0", "model-c"]}'::jsonb,
          'with search_exact_max_blocks 1 the other models'' blocks are still counted exactly');
select is((select pg_temp.search(pg_temp.along(1), 'model-z') -> 'other_model_blocks'), '7', 'all seven, past the threshold');

-- the switch: a canvas of exactly search_exact_max_blocks blocks of the model is searched exactly
-- (blocks_vector_hnsw_idx not scanned), one more goes through the HNSW index; the same items either way
create function pg_temp.hnsw_scans() returns bigint language sql as $$ select pg_stat_get_xact_numscans('app.blocks_vector_hnsw_idx'::regclass) $$;
update app.settings set value = '3' where key = 'search_exact_max_blocks';
create temp table scans as select pg_temp.hnsw_scans() as n;
-- (along 1 and along 3 are equally far from along 2: their order is not asked)
create function pg_temp.found(r jsonb) returns text language sql as $$
  select (pg_temp.ks(r))[1] || ' then ' || (select array_agg(k order by k) from unnest((pg_temp.ks(r))[2:]) k)::text
$$;
select is(pg_temp.found(pg_temp.search(pg_temp.along(2), 'model-a')), '2 then {1,3}', 'model-a''s three blocks, nearest first, at a threshold of 3');
select is(pg_temp.hnsw_scans() - (select n from scans), 0::bigint, 'searched exactly: the HNSW index not scanned');
update app.settings set value = '2' where key = 'search_exact_max_blocks';
update scans set n = pg_temp.hnsw_scans();
select is(pg_temp.found(pg_temp.search(pg_temp.along(2), 'model-a')), '2 then {1,3}', 'the same three at a threshold of 2');
select is(pg_temp.hnsw_scans() - (select n from scans), 1::bigint, 'through the HNSW index: three blocks of the model are over 2');

-- what a search scans: with 3,000 blocks without a vector on the canvas (a canvas most of whose
-- blocks are not embedded yet), the counts read blocks_embedded_model_idx and nothing reads the
-- table whole or the canvas's rows by the canvas index (where the counts read every row before)
insert into app.blocks (canvas_id, type, y_order, content)
select (select canvas_id from ids), 'text', 'b' || lpad(g::text, 5, '0') || 'z', jsonb_build_object('n', g) from generate_series(1, 3000) g;
analyze app.blocks;
create temp table reads_before as
  select pg_stat_get_xact_numscans('app.blocks'::regclass) as seq, pg_stat_get_xact_numscans('app.blocks_canvas_id_block_id_key'::regclass) as by_canvas,
         pg_stat_get_xact_numscans('app.blocks_embedded_model_idx'::regclass) as by_model;
select is((select pg_temp.search(pg_temp.along(2), 'model-a') - 'items'),
          '{"model": "model-a", "other_model_blocks": 4, "other_models": ["model-0", "model-c"]}'::jsonb, 'the same answer among 3,000 unembedded blocks');
select is((select array[pg_stat_get_xact_numscans('app.blocks'::regclass) - seq,
                        pg_stat_get_xact_numscans('app.blocks_canvas_id_block_id_key'::regclass) - by_canvas] from reads_before),
          array[0, 0]::bigint[], 'a search scans app.blocks neither whole nor by canvas');
select cmp_ok((select pg_stat_get_xact_numscans('app.blocks_embedded_model_idx'::regclass) - by_model from reads_before), '>=', 4::bigint,
              'it counts through blocks_embedded_model_idx (the model''s blocks, the next model name, each other model''s blocks)');
update app.settings set value = '5000' where key = 'search_exact_max_blocks';

select * from finish();
rollback;
