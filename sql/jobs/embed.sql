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
-- (a queued job for the block is replaced: its payload, attempts back to 0, due now). A row whose
-- block has a job a worker runs (locked) stays for a later drain, once that job is done:
-- add_jobs gives a locked job with the key up for good (key cleared, attempts set to
-- max_attempts), so it read as failed (25/25), and one whose run then failed (a lost connection)
-- was left out of attempts until cleanup. The jobs are locked before they are looked at, so no
-- worker takes one between the look and add_jobs (get_job skips locked rows). SKIP LOCKED:
-- several workers drain safely. Returns the number of jobs added.
create or replace function internal.drain_embedding_outbox(
  p_debounce interval default '1 second', p_max_wait interval default '10 seconds', p_limit integer default 500
) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_due uuid[];
  v_running uuid[];
  v_specs graphile_worker.job_spec[];
begin
  select array_agg(block_id) into v_due from (
    select o.block_id from app.embedding_outbox o
    where (o.queued_at <= now() - p_debounce or o.first_queued_at <= now() - p_max_wait)
      and not exists (select from graphile_worker._private_jobs j
                      where j.key = 'embed_block:' || o.block_id and j.locked_at is not null)
    order by o.queued_at
    limit p_limit
    for update of o skip locked
  ) due;
  if v_due is null then
    return 0;
  end if;
  -- their jobs, locked until this commits, and read as they are now: one a worker took since the
  -- look above (its get_job committed meanwhile) is seen running here, and none is taken after
  select array_agg(substr(j.key, length('embed_block:') + 1)::uuid) into v_running from (
    select j.key, j.locked_at from graphile_worker._private_jobs j
    where j.key = any (array(select 'embed_block:' || b from unnest(v_due) b))
    order by j.id
    for update of j
  ) j where j.locked_at is not null;
  with drained as (
    delete from app.embedding_outbox o
    where o.block_id = any (v_due) and not (o.block_id = any (coalesce(v_running, '{}')))
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
