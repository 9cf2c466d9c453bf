-- A measurement prototype, not product code (docs/performance.md, "The canvas's turn at the end of
-- the transaction", 2026-12-07): the usual content edit with the canvas row taken at the END of a
-- lane's transaction instead of at each mutation's write, to measure what share of a mutation must
-- run in the canvas's turn. bench.deferred_edit does what could run in parallel across backends
-- (the caller's context and authorization and the rate-limit slot as bench.rpc_ladder's top rung
-- does them, the block UPDATE, the audit row) and stashes the applied op in a transaction-local
-- setting; bench.number_pending(canvas) then takes the canvas row, numbers the stashed ops in order
-- (server_seq, canvas_seq) and writes what must be in commit order: the operation rows and the
-- realtime.messages rows. It keeps none of the RPC's other guarantees (the idempotent retry is
-- checked only at the numbering, outside any exception block; no merge; no refusal as an answer).
-- Loaded into their bench databases by scripts/bench-mutate.ts and scripts/bench-compare.ts;
-- driven by deferred-turn-grouped.sql and deferred-turn-edits.sql, against
-- mutation-ladder-grouped.sql (the same work with the canvas row taken at each mutation, as now).
create or replace function bench.deferred_edit(p_canvas_id uuid, p_block_id uuid, p_user_id uuid, p_version integer, p_op text,
                                               p_text text)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '3s' as $$
declare
  v_claims jsonb; v_headers jsonb; v_ctx jsonb; v_role app.member_role; v_limit integer; v_max_setting jsonb; v_slot integer;
  v_version integer; v_block jsonb;
begin
  v_claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  v_headers := nullif(current_setting('request.headers', true), '')::jsonb;
  v_ctx := internal.context_of(v_claims, v_headers, (v_claims ->> 'sub')::uuid,
                               coalesce(trim(split_part(v_headers ->> 'x-forwarded-for', ',', 1))::inet,
                                        trim(v_headers ->> 'x-real-ip')::inet, inet_client_addr()));
  v_role := (select r.role from internal.canvas_roles(p_canvas_id, p_user_id) r);
  if v_role is null or not internal.can_write_role(v_role) then
    raise exception 'no role';
  end if;
  select max((value #>> '{}')::integer) filter (where key = 'mutations_per_minute'), (array_agg(value) filter (where key = 'max_content_bytes'))[1]
    into v_limit, v_max_setting
  from app.settings where key in ('mutations_per_minute', 'max_content_bytes');
  v_slot := internal.take_limit_slot(p_user_id, 'mutations', v_limit, 60);
  update app.blocks set content = jsonb_build_object('text', p_text), version = version + 1, updated_at = now(), updated_by = p_user_id
  where block_id = p_block_id and version = p_version
  returning version, jsonb_build_object('block_id', block_id, 'canvas_id', canvas_id, 'parent_id', parent_id, 'type', type, 'content', content,
                                        'y_order', y_order, 'version', version, 'created_at', created_at, 'created_by', created_by,
                                        'updated_at', updated_at, 'updated_by', updated_by)
  into v_version, v_block;
  if v_version is null then
    raise exception 'block % is no longer at version %', p_block_id, p_version;
  end if;
  insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq, status, response_time_ms, affected_rows)
  values (p_user_id, 'block.update', 'block', p_block_id, jsonb_build_object('canvas_id', p_canvas_id), p_op, null, 'success', 0, 1);
  perform set_config('bench.pending', (coalesce(nullif(current_setting('bench.pending', true), ''), '[]')::jsonb
    || jsonb_build_array(jsonb_build_object('op', p_op, 'user', p_user_id, 'block_id', p_block_id, 'base', p_version, 'version', v_version, 'block', v_block)))
    ::text, true);
  return jsonb_build_object('status', 'pending', 'block_id', p_block_id, 'version', v_version);
end $$;

create or replace function bench.number_pending(p_canvas_id uuid)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '3s' as $$
declare
  v_pending jsonb := current_setting('bench.pending')::jsonb;
  v_first bigint;
  v_seq bigint;
  v_canvas_seq bigint;
  v_p jsonb;
  v_result jsonb;
  v_results jsonb := '[]';
begin
  update app.canvases set last_canvas_seq = last_canvas_seq + jsonb_array_length(v_pending) where canvas_id = p_canvas_id
  returning last_canvas_seq - jsonb_array_length(v_pending) into v_first;
  v_canvas_seq := v_first;
  for v_p in select value from jsonb_array_elements(v_pending) loop
    v_seq := nextval('app.seq_block_events');
    v_canvas_seq := v_canvas_seq + 1;
    v_result := jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', v_p ->> 'op',
                                   'block_id', v_p -> 'block_id', 'version', v_p -> 'version', 'block', v_p -> 'block');
    insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                      base_version, new_version, patch, block, result, started_at, duration_ms)
    values (v_seq, v_canvas_seq, v_p ->> 'op', (v_p ->> 'user')::uuid, p_canvas_id, (v_p ->> 'block_id')::uuid, 'update', 'success',
            (v_p ->> 'base')::int, (v_p ->> 'version')::int, jsonb_build_object('content', v_p #> '{block,content}'), v_p -> 'block',
            v_result, now(), 0);
    insert into realtime.messages (payload, event, topic, private, extension)
    values (jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'action', 'update',
                               'block_id', v_p -> 'block_id', 'version', v_p -> 'version', 'block', v_p -> 'block',
                               'client_op_id', v_p ->> 'op', 'actor_id', v_p ->> 'user'),
            'block_op', 'canvas:' || p_canvas_id, true, 'broadcast');
    v_results := v_results || v_result;
  end loop;
  update app.canvases set last_seq = v_seq where canvas_id = p_canvas_id;
  perform set_config('bench.pending', '', true);
  return v_results;
end $$;
grant usage on schema bench to authenticated;
grant execute on function bench.deferred_edit(uuid, uuid, uuid, integer, text, text), bench.number_pending(uuid) to authenticated;
