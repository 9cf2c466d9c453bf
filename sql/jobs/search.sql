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
create or replace function internal.search_nearest_by_index(p_canvas_id uuid, p_query extensions.vector, p_model text, p_limit integer)
returns table (block_id uuid, distance double precision)
language plpgsql stable set search_path = pg_catalog, pg_temp
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
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 10), 1), coalesce(internal.setting_int('search_max_results'), 50));
  v_items jsonb;
  v_exact boolean;
  v_same bigint;
  v_other bigint;
  v_other_models text[];
begin
  perform internal.require_canvas_reader(p_canvas_id);
  if p_query is null or extensions.vector_dims(p_query) <> 1536 then
    perform internal.raise_error('invalid_input', 'the query embedding must have 1536 dimensions', '{"field":"query"}');
  end if;
  if p_model is not null and (p_model !~ '[^[:space:]]' or char_length(p_model) > 200) then
    perform internal.raise_error('invalid_input', 'the model must be the name of the embedding model that embedded the query '
      || '(1 to 200 characters, not blank)', '{"field":"model"}');
  end if;
  -- one pass over the canvas's embedded blocks (by the canvas index): how many the query's model
  -- embedded (the exact/approximate switch counts only those) and how many another one did
  select count(*) filter (where p_model is null or b.embedding_model = p_model),
         count(*) filter (where p_model is not null and b.embedding_model is distinct from p_model),
         coalesce(array_agg(distinct b.embedding_model order by b.embedding_model)
                    filter (where p_model is not null and b.embedding_model is distinct from p_model and b.embedding_model is not null), '{}')
  into v_same, v_other, v_other_models
  from app.blocks b
  where b.canvas_id = p_canvas_id and b.vector is not null;
  -- a canvas of up to search_exact_max_blocks blocks of the model is scanned exactly (its own rows,
  -- by the canvas index: cheap, and never misses); a larger one goes through the HNSW index
  v_exact := v_same <= coalesce(internal.setting_int('search_exact_max_blocks'), 5000);
  if v_same = 0 then
    v_items := '[]';
  elsif v_exact then
    with nearest as materialized (
      select b.block_id, b.vector operator(extensions.<=>) p_query as distance
      from app.blocks b
      where b.vector is not null and b.canvas_id = p_canvas_id and (p_model is null or b.embedding_model = p_model)
      order by (b.vector operator(extensions.<=>) p_query) + 0  -- not the index's ordering: every row is compared
      limit v_limit
    )
    select coalesce(jsonb_agg(internal.block_json(b) || jsonb_build_object('distance', n.distance) order by n.distance), '[]')
    into v_items
    from nearest n join app.blocks b on b.block_id = n.block_id;
  else
    -- through the HNSW index, the model filter applied during the scan as the canvas's is
    -- (iterative scan): internal.search_nearest_by_index says why it is a function of its own
    with nearest as materialized (
      select x.block_id, x.distance from internal.search_nearest_by_index(p_canvas_id, p_query, p_model, v_limit) x
    )
    select coalesce(jsonb_agg(internal.block_json(b) || jsonb_build_object('distance', n.distance) order by n.distance), '[]')
    into v_items
    from nearest n join app.blocks b on b.block_id = n.block_id;
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
  'are found. Errors: unauthorized; not_found (field canvas_id); forbidden (token scope); invalid_input (field query: not 1536 '
  'dimensions; field model: blank or over 200 characters).';

revoke execute on function api.search_blocks(uuid, extensions.vector, integer, text) from public;
grant execute on function api.search_blocks(uuid, extensions.vector, integer, text) to authenticated, service_role;
