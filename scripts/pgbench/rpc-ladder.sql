-- bench.rpc_ladder: where api.upsert_block_atomic's cost over its own writes goes, one guarantee
-- at a time. The writes of one applied content update (the same statements as
-- mutation-writes.sql), inside one SECURITY DEFINER function called the way the RPC is called
-- (role and claims set, then the call: mutation-ladder.sql), plus, by flag:
--   p_auth   the caller's context and authorization, as the RPC does them: the claims and headers
--            cast from their settings and internal.context_of with the client's address cast
--            plainly (the RPC's first attempt; a setting or an address that fails its cast sends
--            it to internal.request_context, never here), the
--            role from internal.canvas_roles (inlined), internal.can_write_role,
--            internal.scope_allows
--   p_limit  the per-user mutation limit, as the RPC does it: the settings read and the hit
--            (internal.take_limit_slot, assigned) before the canvas lock
-- (The RPC reads the role and both settings in one statement; here each rung has its own.)
-- What the RPC adds beyond both rungs: the patch's validation, the merge preparation (a stale
-- base_version), the exception block that makes a refusal an answer, the idempotent retry, the
-- result. scripts/bench-mutate.ts creates it in its bench database and runs each rung next to
-- mutation-writes.sql and mutation-rpc.sql in the same rounds (docs/performance.md).
create or replace function bench.rpc_ladder(p_canvas_id uuid, p_block_id uuid, p_user_id uuid, p_version integer, p_op text,
                                            p_text text, p_auth boolean, p_limit boolean)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '3s' as $$
declare
  v_claims jsonb;
  v_headers jsonb;
  v_ctx jsonb;
  v_role app.member_role;
  v_limit integer;
  v_max_setting jsonb;  -- read as the RPC reads it, with the limit
  v_slot integer;
  v_seq bigint;
  v_canvas_seq bigint;
  v_version integer;
  v_block jsonb;
begin
  if p_auth then
    v_claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
    v_headers := nullif(current_setting('request.headers', true), '')::jsonb;
    v_ctx := internal.context_of(v_claims, v_headers, (v_claims ->> 'sub')::uuid,
                                 coalesce(trim(split_part(v_headers ->> 'x-forwarded-for', ',', 1))::inet,
                                          trim(v_headers ->> 'x-real-ip')::inet, inet_client_addr()));
    if (v_ctx ->> 'user_id')::uuid is distinct from p_user_id then
      raise exception 'bench.rpc_ladder: the claims name another user';
    end if;
    v_role := (select r.role from internal.canvas_roles(p_canvas_id, p_user_id) r);
    if v_role is null or not internal.can_write_role(v_role) then
      raise exception 'bench.rpc_ladder: % may not write canvas %', p_user_id, p_canvas_id;
    end if;
    if jsonb_typeof(v_ctx -> 'scope') <> 'null' then  -- (as apply_block_op: only a scoped token reaches scope_allows)
      if not internal.scope_allows(v_ctx -> 'scope', p_canvas_id, true) then
        raise exception 'bench.rpc_ladder: this token''s scope does not include canvas %', p_canvas_id;
      end if;
    end if;
  end if;
  if p_limit then
    select max((value #>> '{}')::integer) filter (where key = 'mutations_per_minute'), (array_agg(value) filter (where key = 'max_content_bytes'))[1]
      into v_limit, v_max_setting
    from app.settings where key in ('mutations_per_minute', 'max_content_bytes');
    v_slot := internal.take_limit_slot(p_user_id, 'mutations', v_limit, 60);
  end if;
  perform from app.canvases where canvas_id = p_canvas_id for no key update;
  update app.blocks set content = jsonb_build_object('text', p_text), version = version + 1, updated_at = now(), updated_by = p_user_id
  where block_id = p_block_id and version = p_version
  returning version, jsonb_build_object('block_id', block_id, 'canvas_id', canvas_id, 'parent_id', parent_id, 'type', type, 'content', content,
                                        'y_order', y_order, 'version', version, 'created_at', created_at, 'created_by', created_by,
                                        'updated_at', updated_at, 'updated_by', updated_by)
  into v_version, v_block;
  if v_version is null then
    -- each client edits its own blocks from the version it just read, so this never happens in
    -- bench:mutate; were it to, a rung that skipped its writes would look fast: fail instead
    raise exception 'bench.rpc_ladder: block % is no longer at version %', p_block_id, p_version;
  end if;
  update app.canvases set last_seq = nextval('app.seq_block_events'), last_canvas_seq = last_canvas_seq + 1 where canvas_id = p_canvas_id
  returning last_seq, last_canvas_seq into v_seq, v_canvas_seq;
  insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                    base_version, new_version, patch, block, result, started_at, duration_ms)
  values (v_seq, v_canvas_seq, p_op, p_user_id, p_canvas_id, p_block_id, 'update', 'success', p_version, v_version,
          jsonb_build_object('content', v_block -> 'content'), v_block,
          jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_op,
                             'block_id', p_block_id, 'version', v_version, 'block', v_block),
          now(), 0);
  insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq, status, response_time_ms, affected_rows)
  values (p_user_id, 'block.update', 'block', p_block_id, jsonb_build_object('canvas_id', p_canvas_id), p_op, v_seq, 'success', 0, 1);
  insert into realtime.messages (payload, event, topic, private, extension)
  values (jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'action', 'update', 'block_id', p_block_id,
                             'version', v_version, 'block', v_block, 'client_op_id', p_op, 'actor_id', p_user_id),
          'block_op', 'canvas:' || p_canvas_id, true, 'broadcast');
  return jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_op,
                            'block_id', p_block_id, 'version', v_version, 'block', v_block);
end $$;

grant usage on schema bench to authenticated;
grant execute on function bench.rpc_ladder(uuid, uuid, uuid, integer, text, text, boolean, boolean) to authenticated;
