-- Semantic search: the blocks of a canvas nearest to a query embedding by cosine distance.
-- A canvas of up to search_exact_max_blocks (app.settings, 5000) embedded blocks is searched
-- exactly: its own rows, compared one by one (cheap at that size, and it never misses). A larger
-- canvas uses the partial HNSW index blocks_vector_hnsw_idx (`order by vector <=> q limit k`), with
-- the canvas filter applied during the scan and pgvector's iterative scan so it still fills its k
-- results. The index spans every canvas, so a canvas's few related blocks can sit among many
-- unrelated vectors: approximate search can miss them (measured: the true nearest block missed
-- now and then among 2,000 clustered vectors with 100 candidates, tests/integration/search.test.ts).

create or replace function api.search_blocks(p_canvas_id uuid, p_query extensions.vector, p_limit integer default 10)
returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
set hnsw.iterative_scan = 'relaxed_order'
-- large canvases: recall over speed, 100 candidates (pgvector's default is 40)
set hnsw.ef_search = 100
as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 10), 1), coalesce(internal.setting_int('search_max_results'), 50));
  v_items jsonb;
  v_exact boolean;
begin
  perform internal.require_canvas_reader(p_canvas_id);
  if p_query is null or extensions.vector_dims(p_query) <> 1536 then
    perform internal.raise_error('invalid_input', 'the query embedding must have 1536 dimensions', '{"field":"query"}');
  end if;
  -- a canvas of up to search_exact_max_blocks embedded blocks is scanned exactly (its own rows,
  -- by the canvas index: cheap, and never misses); a larger one goes through the HNSW index
  v_exact := (select count(*) from (select from app.blocks where canvas_id = p_canvas_id and vector is not null
              limit coalesce(internal.setting_int('search_exact_max_blocks'), 5000) + 1) c)
             <= coalesce(internal.setting_int('search_exact_max_blocks'), 5000);
  if v_exact then
    with nearest as materialized (
      select b.block_id, b.vector operator(extensions.<=>) p_query as distance
      from app.blocks b
      where b.vector is not null and b.canvas_id = p_canvas_id
      order by (b.vector operator(extensions.<=>) p_query) + 0  -- not the index's ordering: every row is compared
      limit v_limit
    )
    select coalesce(jsonb_agg(internal.block_json(b) || jsonb_build_object('distance', n.distance) order by n.distance), '[]')
    into v_items
    from nearest n join app.blocks b on b.block_id = n.block_id;
  else
    with nearest as materialized (
      select b.block_id, b.vector operator(extensions.<=>) p_query as distance
      from app.blocks b
      where b.vector is not null and b.canvas_id = p_canvas_id
      order by b.vector operator(extensions.<=>) p_query
      limit v_limit
    )
    select coalesce(jsonb_agg(internal.block_json(b) || jsonb_build_object('distance', n.distance) order by n.distance), '[]')
    into v_items
    from nearest n join app.blocks b on b.block_id = n.block_id;
  end if;
  return jsonb_build_object('items', v_items);
end $$;

comment on function api.search_blocks(uuid, extensions.vector, integer) is
  'The blocks of a canvas nearest to a query embedding (1536 dimensions) by cosine distance: {items[]}, each a block as api.list_blocks '
  'returns it plus distance (0 to 2, nearest first); limit 1 to search_max_results (app.settings, 50; default 10). Exact up to '
  'search_exact_max_blocks embedded blocks (5000), approximate (HNSW) beyond. Only embedded blocks (vector not null) are found. Errors: '
  'unauthorized; not_found (field canvas_id); forbidden (token scope); invalid_input (field query).';

revoke execute on function api.search_blocks(uuid, extensions.vector, integer) from public;
grant execute on function api.search_blocks(uuid, extensions.vector, integer) to authenticated, service_role;
