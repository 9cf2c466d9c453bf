-- embed_block: content changes are queued in app.embedding_outbox by a trigger (an upsert keyed
-- by block: a burst of edits is one row, and the write path never calls pg_notify, whose
-- cluster-wide lock at commit would throttle mutations). The worker drains due rows in batches
-- into one graphile_worker.add_jobs call; the task stores a vector only for the content hash it
-- embedded, so an edit landing mid-job is never overwritten by a stale vector.

-- Runs as the writer, with no SET clause: every mutation of content calls it, and a SECURITY
-- DEFINER function with a pinned search path costs each call a GUC nest level (the path set and
-- restored, every setting looked at again at its end): docs/performance.md, "RPC instructions
-- (2026-12-07, h204)". Its writers may write the outbox: the mutation RPCs and the other SECURITY
-- DEFINER functions (their owner), service_role and the owner (authenticated only reads
-- app.blocks). Every name carries its schema, so the writer's search path decides nothing.
create or replace function internal.queue_embedding() returns trigger
language plpgsql as $$
begin
  insert into app.embedding_outbox (block_id, canvas_id) values (new.block_id, new.canvas_id)
  on conflict (block_id) do update set queued_at = pg_catalog.now();
  return null;
end $$;

drop trigger if exists queue_embedding_insert on app.blocks;
create trigger queue_embedding_insert
  after insert on app.blocks
  for each row execute function internal.queue_embedding();

drop trigger if exists queue_embedding_update on app.blocks;
create trigger queue_embedding_update
  after update of content on app.blocks
  for each row when (old.content_hash is distinct from new.content_hash)
  execute function internal.queue_embedding();

-- Moves due outbox rows (last edit at least p_debounce ago, or first queued at least p_max_wait
-- ago) into Graphile Worker: one add_jobs call (one NOTIFY) per batch, job key embed_block:<id>
-- (a queued job for the block is replaced, a running one is left to finish and a new job
-- follows). SKIP LOCKED: several workers drain safely. Returns the number of jobs added.
create or replace function internal.drain_embedding_outbox(
  p_debounce interval default '1 second', p_max_wait interval default '10 seconds', p_limit integer default 500
) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_specs graphile_worker.job_spec[];
begin
  with due as (
    select block_id from app.embedding_outbox
    where queued_at <= now() - p_debounce or first_queued_at <= now() - p_max_wait
    order by queued_at
    limit p_limit
    for update skip locked
  ), drained as (
    delete from app.embedding_outbox o using due where o.block_id = due.block_id
    returning o.block_id, o.canvas_id
  )
  select array_agg(row('embed_block', json_build_object('block_id', block_id, 'canvas_id', canvas_id),
                       null, null, null, 'embed_block:' || block_id, null, null)::graphile_worker.job_spec)
  into v_specs from drained;
  if v_specs is null then
    return 0;
  end if;
  perform graphile_worker.add_jobs(v_specs);
  return cardinality(v_specs);
end $$;

-- Stores an embedding only if the block's content still hashes to what was embedded; returns
-- whether it did. A null vector records "nothing to embed" (empty text) for that hash.
create or replace function internal.store_embedding(p_block_id uuid, p_hash text, p_vector extensions.vector, p_model text)
returns boolean
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  update app.blocks
  set vector = p_vector, embedding_model = p_model, embedded_hash = p_hash, embedded_at = now()
  where block_id = p_block_id and content_hash = p_hash;
  return found;
end $$;

revoke execute on function internal.queue_embedding(), internal.drain_embedding_outbox(interval, interval, integer),
  internal.store_embedding(uuid, text, extensions.vector, text) from public;
grant execute on function internal.drain_embedding_outbox(interval, interval, integer),
  internal.store_embedding(uuid, text, extensions.vector, text) to service_role;
