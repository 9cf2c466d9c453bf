-- The outbox drain and a running embed job for the same block. graphile_worker.add_jobs replaces
-- a queued job with the same key, but one a worker has locked (running) it gives up for good: its
-- key is cleared and its attempts set to max_attempts, so the row read as failed (25/25), and one
-- whose run then failed (a lost connection) stayed so, out of attempts, until cleanup. The drain
-- leaves the outbox row of a block whose job runs for a later drain, once that job is done.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(7);

create temp table spec (block_id uuid, canvas_id uuid) on commit drop;
insert into spec values (gen_random_uuid(), gen_random_uuid());

-- a job for the block, taken by a worker (what get_job does: attempts + 1, locked)
select graphile_worker.add_job('embed_block', json_build_object('block_id', block_id, 'canvas_id', canvas_id),
                               job_key := 'embed_block:' || block_id) from spec;
update graphile_worker._private_jobs set locked_by = 'pool-running', locked_at = now(), attempts = 1
where key = 'embed_block:' || (select block_id from spec);
-- an edit since, due
insert into app.embedding_outbox (block_id, canvas_id, first_queued_at, queued_at)
select block_id, canvas_id, now() - interval '1 minute', now() - interval '1 minute' from spec;

select is(internal.drain_embedding_outbox('1 second', '10 seconds', 500), 0,
  'a block whose embed job runs is not queued again while it runs');
select results_eq($$select attempts, max_attempts, key is not null, locked_by from graphile_worker._private_jobs
                    where payload ->> 'block_id' = (select block_id::text from spec)$$,
  $$values (1::smallint, 25::smallint, true, 'pool-running'::text)$$,
  '... and the running job keeps its key and its attempts (not 25/25: it does not read as failed)');
select is((select count(*)::int from app.embedding_outbox where block_id = (select block_id from spec)), 1,
  '... and the edit stays in the outbox');

-- the job's run fails (a lost connection): unlocked, to be retried
update graphile_worker._private_jobs set locked_by = null, locked_at = null, last_error = 'connection lost', run_at = now() + interval '1 minute'
where key = 'embed_block:' || (select block_id from spec);

select is(internal.drain_embedding_outbox('1 second', '10 seconds', 500), 1,
  'once the job does not run, the next drain queues the edit');
select results_eq($$select attempts, key is not null, last_error, run_at <= now() from graphile_worker._private_jobs
                    where payload ->> 'block_id' = (select block_id::text from spec)$$,
  $$values (0::smallint, true, null::text, true)$$,
  '... replacing the failed run by one job, due now, with its attempts back to 0');
select is((select count(*)::int from app.embedding_outbox where block_id = (select block_id from spec)), 0,
  '... and the outbox row is gone');


-- a block with no job at all is queued as before
insert into app.embedding_outbox (block_id, canvas_id, first_queued_at, queued_at)
values (gen_random_uuid(), gen_random_uuid(), now() - interval '1 minute', now() - interval '1 minute');
select is(internal.drain_embedding_outbox('1 second', '10 seconds', 500), 1, 'a block with no job is queued');

select * from finish();
rollback;
