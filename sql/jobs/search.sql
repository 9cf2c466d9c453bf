-- Semantic search: the blocks of a canvas nearest to a query embedding by cosine distance.
-- A canvas of up to search_exact_max_blocks (app.settings, 5000) embedded blocks is searched
-- exactly: its own rows, compared one by one (cheap at that size, and it never misses). A larger
-- canvas uses the partial HNSW index blocks_vector_hnsw_idx (`order by vector <=> q limit k`), with
-- the canvas filter applied during the scan and pgvector's iterative scan so it still fills its k
-- results. The index spans every canvas, so a canvas's few related blocks can sit among many
-- unrelated vectors: approximate search can miss them (measured: the true nearest block missed
-- now and then among 2,000 clustered vectors with 100 candidates, tests/integration/search.test.ts).
--
-- Vectors of different models are not comparable: a cosine distance between a query embedded by
-- one model and a block embedded by another is a number without meaning. Given the query's model
-- (p_model), only the canvas's blocks embedded by that model are compared (both paths, and the
-- exact/approximate switch counts only them); the answer names the model and counts the canvas's
-- embedded blocks left out because another model embedded them (other_model_blocks, with those
-- models' names), so "no match" (items [] and 0) reads apart from "wrong model" (items [] and
-- n > 0): the provider that embedded the query is not the worker's, or the worker is re-embedding
-- after a change of model. Without p_model (null, the three-argument call) every embedded block
-- is compared, as before: the caller vouches that the query is of the blocks' model.

-- The approximate path of api.search_blocks (below): the p_limit blocks of the canvas (of
-- p_model, when given) nearest to p_query, through blocks_vector_hnsw_idx, nearest first. A
-- function of its own for its SET clause: api.search_blocks takes this path from its exact count
-- of the model's blocks on the canvas, but the planner estimates that count from table-wide
-- statistics, taking canvas and model as independent, so a model rare in the table looks rare on
-- every canvas and the planner sorted the canvas's rows instead (tried: 2,000 blocks of a model on
-- one canvas among 68,000 blocks, most not embedded). With sorting off, the index, the one plan
-- that gives the order without a sort, is taken; the GUCs come back when the function returns.
-- ROWS 10: it returns p_limit rows (10 by default, search_max_results at most); with the 1,000 the
-- planner assumes of a set-returning function, the caller's join back to app.blocks read the whole
-- table for a hash join where the table was small (tried: 3,010 rows, supabase/tests/search.test.sql)
create or replace function internal.search_nearest_by_index(p_canvas_id uuid, p_query extensions.vector, p_model text, p_limit integer)
returns table (block_id uuid, distance double precision)
language plpgsql stable rows 10 set search_path = pg_catalog, pg_temp
set enable_sort = off
set hnsw.iterative_scan = 'relaxed_order'
-- large canvases: recall over speed, 100 candidates (pgvector's default is 40)
set hnsw.ef_search = 100
as $$
begin
  return query
    select b.block_id, b.vector operator(extensions.<=>) p_query
    from app.blocks b
    where b.vector is not null and b.canvas_id = p_canvas_id and (p_model is null or b.embedding_model = p_model)
    order by b.vector operator(extensions.<=>) p_query
    limit p_limit;
end $$;
comment on function internal.search_nearest_by_index(uuid, extensions.vector, text, integer) is
  'api.search_blocks''s approximate path: the p_limit blocks of canvas p_canvas_id (of embedding model p_model; any when null) '
  'nearest to p_query by cosine distance, through the HNSW index (sorting off, so the planner cannot sort the canvas''s rows '
  'instead on a misestimate), nearest first: (block_id, distance). No access check: its caller''s.';

-- the three-argument signature before p_model: replaced by the one below (a call with three
-- arguments, positional or named, reaches it through p_model's default)
drop function if exists api.search_blocks(uuid, extensions.vector, integer);

create or replace function api.search_blocks(p_canvas_id uuid, p_query extensions.vector, p_limit integer default 10,
                                             p_model text default null)
returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
  v_limit integer;
  v_exact_max bigint;  -- + 1 below: up to 2^31 - 1
  v_items jsonb;
  v_same bigint;
  v_other bigint := 0;
  v_other_models text[] := '{}';
begin
  perform internal.count_endpoint_call('S2');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_limit := least(greatest(coalesce(p_limit, 10), 1), coalesce(internal.setting_int('search_max_results'), 50));
  v_exact_max := coalesce(internal.setting_int('search_exact_max_blocks'), 5000);
  perform internal.require_canvas_reader(p_canvas_id);
  if p_query is null or extensions.vector_dims(p_query) <> 1536 then
    perform internal.raise_error('invalid_input', 'the query embedding must have 1536 dimensions', '{"field":"query"}');
  end if;
  -- the zero vector has no direction: its cosine distance to every block is NaN (answered as the
  -- string "NaN", in no order)
  if extensions.vector_norm(p_query) = 0 then
    perform internal.raise_error('invalid_input', 'the query embedding is all zeros: it has no direction to compare by '
      || '(embed a text with something to search for)', '{"field":"query"}');
  end if;
  if p_model is not null and (p_model !~ '[^[:space:]]' or char_length(p_model) > 200) then
    perform internal.raise_error('invalid_input', 'the model must be the name of the embedding model that embedded the query '
      || '(1 to 200 characters, not blank)', '{"field":"model"}');
  end if;
  -- The counts read blocks_embedded_model_idx ((canvas_id, embedding_model) where vector is not
  -- null) by index-only scans, never the canvas's rows: read in one pass, those cost 25-30 ms a
  -- search on a canvas of 50,000 embedded blocks (docs/embeddings.md). The query's model's blocks
  -- are counted up to search_exact_max_blocks + 1, as the switch below only asks whether the canvas
  -- is over it: a larger canvas costs what one at the threshold does
  if p_model is null then
    select count(*) into v_same
    from (select from app.blocks b where b.canvas_id = p_canvas_id and b.vector is not null limit v_exact_max + 1) s;
  else
    select count(*) into v_same
    from (select from app.blocks b where b.canvas_id = p_canvas_id and b.vector is not null and b.embedding_model = p_model
          limit v_exact_max + 1) s;
    -- the other models by name, from one to the next in the index (a loose index scan: a probe a
    -- model, however many blocks it has), each one's blocks then counted in its own range: nothing
    -- to count while one model embedded the canvas; while another has too (a change of model, a
    -- provider that is not the worker's) the cost grows with that model's blocks, exactly counted
    with recursive models (model) as (
      (select b.embedding_model from app.blocks b
       where b.canvas_id = p_canvas_id and b.vector is not null and b.embedding_model is not null
       order by b.embedding_model limit 1)
      union all
      select (select b.embedding_model from app.blocks b
              where b.canvas_id = p_canvas_id and b.vector is not null and b.embedding_model > m.model
              order by b.embedding_model limit 1)
      from models m where m.model is not null
    )
    select coalesce(sum(c.n), 0), coalesce(array_agg(m.model order by m.model), '{}')
    into v_other, v_other_models
    from models m
    cross join lateral (select count(*) as n from app.blocks b
                        where b.canvas_id = p_canvas_id and b.vector is not null and b.embedding_model = m.model) c
    where m.model is not null and m.model <> p_model;
    -- a vector without a model's name (internal.store_embedding always names it; a row written by
    -- hand may not) is another model's too, counted and not named
    v_other := v_other + (select count(*) from app.blocks b
                          where b.canvas_id = p_canvas_id and b.vector is not null and b.embedding_model is null);
  end if;
  -- a canvas of up to search_exact_max_blocks blocks of the model is scanned exactly (its own rows,
  -- those of the model, by blocks_embedded_model_idx: cheap, and never misses); a larger one goes
  -- through the HNSW index
  if v_same = 0 then
    v_items := '[]';
  elsif v_same <= v_exact_max then
    with nearest as materialized (
      select b.block_id, b.vector operator(extensions.<=>) p_query as distance
      from app.blocks b
      where b.vector is not null and b.canvas_id = p_canvas_id and (p_model is null or b.embedding_model = p_model)
      order by (b.vector operator(extensions.<=>) p_query) + 0  -- not the index's ordering: every row is compared
      limit v_limit
    )
    select coalesce(jsonb_agg(internal.block_json(b) || jsonb_build_object('distance', n.distance) order by n.distance), '[]')
    into v_items
    from nearest n join app.blocks b on b.block_id = n.block_id
    -- a block stored as the zero vector (a text embedded before local-hash-v1 read texts without
    -- words, or a vector written by hand) has no distance: NaN, which sorts after every number, so
    -- leaving it out after the limit leaves the nearest blocks that have one
    where n.distance <> 'NaN'::double precision;
  else
    -- through the HNSW index, the model filter applied during the scan as the canvas's is
    -- (iterative scan): internal.search_nearest_by_index says why it is a function of its own
    with nearest as materialized (
      select x.block_id, x.distance from internal.search_nearest_by_index(p_canvas_id, p_query, p_model, v_limit) x
    )
    select coalesce(jsonb_agg(internal.block_json(b) || jsonb_build_object('distance', n.distance) order by n.distance), '[]')
    into v_items
    from nearest n join app.blocks b on b.block_id = n.block_id
    -- a block stored as the zero vector (a text embedded before local-hash-v1 read texts without
    -- words, or a vector written by hand) has no distance: NaN, which sorts after every number, so
    -- leaving it out after the limit leaves the nearest blocks that have one
    where n.distance <> 'NaN'::double precision;
  end if;
  return jsonb_build_object('items', v_items, 'model', p_model, 'other_model_blocks', v_other, 'other_models', to_jsonb(v_other_models));
end $$;

comment on function api.search_blocks(uuid, extensions.vector, integer, text) is
  'The blocks of a canvas nearest to a query embedding (1536 dimensions) by cosine distance: {items[], model, other_model_blocks, '
  'other_models[]}; items each a block as api.list_blocks returns it plus distance (0 to 2, nearest first); limit 1 to '
  'search_max_results (app.settings, 50; default 10). p_model is the embedding model that embedded the query: only blocks embedded '
  'by it (app.blocks.embedding_model) are compared; other_model_blocks counts the canvas''s embedded blocks left out because '
  'another model embedded them, other_models names those models (items [] with other_model_blocks > 0: the query''s model is not '
  'the worker''s). model is p_model as given; without it (null) every embedded block is compared, other_model_blocks 0. Exact up to '
  'search_exact_max_blocks embedded blocks of the model (5000), approximate (HNSW) beyond. Only embedded blocks (vector not null) '
  'are found (and never one stored as the zero vector, which has no distance). Errors: unauthorized; not_found (field canvas_id); '
  'forbidden (token scope); invalid_input (field query: not 1536 dimensions, or all zeros; field model: blank or over 200 characters).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint S2 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

revoke execute on function api.search_blocks(uuid, extensions.vector, integer, text) from public;
grant execute on function api.search_blocks(uuid, extensions.vector, integer, text) to authenticated, service_role;
