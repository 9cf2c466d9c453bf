-- Keeping keys short. When a key passes 8 characters the trigger asks for a rebalance
-- (NOTIFY rebalance_needed + a Graphile Worker job deduplicated by a per-canvas job key); the
-- job calls internal.rebalance_canvas, which rewrites the canvas's keys evenly.

-- Asks for a rebalance of the canvas (NOTIFY rebalance_needed + the deduplicated job), from the
-- trigger below and from internal.place_block (an end full of blocks on a canvas too big to
-- rebalance inside a request).
create or replace function internal.request_rebalance(p_canvas_id uuid) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform pg_notify('rebalance_needed', p_canvas_id::text);
  perform graphile_worker.add_job('rebalance_canvas', json_build_object('canvas_id', p_canvas_id),
                                  job_key => 'rebalance_canvas:' || p_canvas_id,
                                  run_at => now() + interval '2 seconds',
                                  job_key_mode => 'preserve_run_at');
end $$;

comment on function internal.request_rebalance(uuid) is
  'Asks for a rebalance of the canvas: NOTIFY rebalance_needed and the rebalance_canvas job, deduplicated by its job key rebalance_canvas:<id>, run 2 s later.';

-- Whether request_rebalance's job for the canvas is queued or running (its job key). PL/pgSQL:
-- an SQL function around EXISTS is not inlined (a sublink), and is then planned at every call.
drop function if exists internal.rebalance_pending(uuid);
create function internal.rebalance_pending(p_canvas_id uuid) returns boolean
language plpgsql stable as $$
begin
  return exists (select from graphile_worker._private_jobs j where j.key = 'rebalance_canvas:' || p_canvas_id);
end $$;

-- After a create or move that ran out of time (57014, the request's statement_timeout): on a
-- canvas whose end is full, that may have been place_block's inline rebalance, which rolled back
-- with the mutation, as it then did for every later append: on a machine slow enough for one
-- rebalance to outlast the timeout, the canvas took no append any more (every one answered 504).
-- The job is asked for instead, and place_block bisects toward the end while it is pending, so the
-- client's retry succeeds. An end counts as full as in place_block (internal.end_is_full); a
-- timeout for another reason on such a canvas only brings its rebalance forward.
create or replace function internal.rebalance_after_timeout(p_canvas_id uuid) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if internal.end_is_full(p_canvas_id, null, true) or internal.end_is_full(p_canvas_id, null, false) then
    perform internal.request_rebalance(p_canvas_id);
  end if;
end $$;
comment on function internal.rebalance_after_timeout(uuid) is
  'Called by the mutation RPCs after a create or move that timed out (57014): asks for the canvas''s rebalance job when an end of its key space is full, so that place_block bisects instead of rebalancing inline until the job has run.';

create or replace function internal.check_lexorank_length() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.request_rebalance(new.canvas_id);
  return null;
end $$;

drop trigger if exists check_lexorank_length on app.blocks;
create trigger check_lexorank_length
  after insert or update of y_order on app.blocks
  for each row when (length(new.y_order) > 8)
  execute function internal.check_lexorank_length();

-- Rewrites every key of a canvas with room at both ends (internal.respread_canvas: the middle
-- quarter of the key space at the shortest length that fits), in order, under the canvas lock:
-- versions bump, each moved block is logged as a `move` and broadcast. Returns the number of
-- blocks whose key changed.
create or replace function internal.rebalance_canvas(p_canvas_id uuid) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '5s' as $$
declare
  v_moved integer;
begin
  perform from app.canvases where canvas_id = p_canvas_id for no key update;
  if not found then return 0; end if;
  v_moved := (internal.respread_canvas(p_canvas_id, null, 'job')).o_moved;
  set constraints app.blocks_canvas_y_order_key immediate;
  set constraints app.blocks_canvas_y_order_key deferred;
  return v_moved;
end $$;
