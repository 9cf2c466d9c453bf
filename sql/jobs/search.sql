-- Semantic search: the blocks of a canvas nearest to a query embedding by cosine distance.
-- The nearest-neighbour query is `where vector is not null order by vector <=> q limit k`, which
-- the partial HNSW index blocks_vector_hnsw_idx answers; the canvas filter is applied during
-- the scan, with pgvector's iterative scan so a filtered search still fills its k results.

create or replace function api.search_blocks(p_canvas_id uuid, p_query extensions.vector, p_limit integer default 10)
returns jsonb
language plpgsql stable security definer set search_path = ''
set hnsw.iterative_scan = 'relaxed_order'
-- recall over speed: a candidate list of 100 (pgvector's default is 40) so a handful of
-- related blocks among thousands of unrelated ones are still found
set hnsw.ef_search = 100
as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 10), 1), coalesce(internal.setting_int('search_max_results'), 50));
  v_items jsonb;
begin
  perform internal.require_canvas_reader(p_canvas_id);
  if p_query is null or extensions.vector_dims(p_query) <> 1536 then
    perform internal.raise_error('invalid_input', 'the query embedding must have 1536 dimensions', '{"field":"query"}');
  end if;
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
  return jsonb_build_object('items', v_items);
end $$;

revoke execute on function api.search_blocks(uuid, extensions.vector, integer) from public;
grant execute on function api.search_blocks(uuid, extensions.vector, integer) to authenticated, service_role;
