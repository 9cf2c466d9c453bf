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
