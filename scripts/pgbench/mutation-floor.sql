-- The floor under api.upsert_block_atomic: what the RPC must guarantee besides its writes, as plain
-- SQL, no PL/pgSQL. Not a script of its own: bench:mutate puts these statements into
-- mutation-writes.sql right after its BEGIN (as `sed '/^begin;$/r scripts/pgbench/mutation-floor.sql'
-- scripts/pgbench/mutation-writes.sql` does), so the floor is those writes, in the same pipeline,
-- plus:
--   the caller from the claims (set as the RPC's script sets them), their role on the canvas
--   (workspace or canvas membership, as internal.canvas_role) and the token's scope, in one
--   statement that fails (division by zero) unless they may write;
--   the per-user rate limit as internal.take_limit_slot takes it on its fast path, the same
--   statement: a slot of the minute (app.rate_limit_slots, bucket 'floor'), the one above the
--   highest read by the window's key (internal.rate_limit_window_key written out), with its advisory lock, in one statement that fails unless it took it. No bound (the
--   bench's limit is 10^9) and none of take_limit_slot's slower paths (the slots above, then the
--   gaps below), which are taken only when another transaction holds or committed that slot: each
--   client's own user never meets that here. (Until 2026-12-03 this statement tried up to 64 slots
--   above the highest through a generate_series, materialized at each call: about 100 K
--   instructions more than the RPC's own statement, so the floor sat above what the RPC pays.)
-- Exactly-once (the unique idempotency index), commit order (the canvas lock), the audit row and
-- the broadcast are in the writes already. So this is about what any implementation of the RPC
-- inside Postgres must cost at least; the RPC's distance from it is its own (docs/performance.md).
-- As the writes, it runs as the connecting role (no SET ROLE). chr(58) is ':' (pgbench reads
-- ':write' in a literal as a variable).
select set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true);
select 1 / (case when x.role in ('owner', 'admin', 'editor')
                  and (x.scope is null or x.scope ?| array['canvas' || chr(58) || :canvas_id::text || chr(58) || 'write', 'canvas' || chr(58) || '*' || chr(58) || 'write']) then 1 else 0 end)
from (select case when wm.role = 'owner' then wm.role else coalesce(cm.role, wm.role) end as role, j.claims -> 'scope' as scope
      from (select current_setting('request.jwt.claims')::jsonb as claims) j
      join app.canvases c on c.canvas_id = :canvas_id::uuid and c.deleted_at is null
      left join app.workspace_members wm on wm.workspace_id = c.workspace_id and wm.user_id = (j.claims ->> 'sub')::uuid
      left join app.canvas_members cm on cm.canvas_id = c.canvas_id and cm.user_id = (j.claims ->> 'sub')::uuid) x;

with w as (select start, uuid_hash_extended(:user_id::uuid, hashtextextended('floor', interval_hash_extended(start - timestamptz 'epoch', 0))) as key
           from (select to_timestamp(floor(extract(epoch from now()) / 60) * 60) as start offset 0) n),
     s as (insert into app.rate_limit_slots (window_key, slot, user_id, window_start, bucket)
           select w.key, t.slot, :user_id::uuid, w.start, 'floor'
           from w, lateral (select coalesce((select r.slot from app.rate_limit_slots r where r.window_key = w.key
                                              order by r.slot desc limit 1), 0) + 1 as slot offset 0) t
           where pg_try_advisory_xact_lock(w.key # t.slot)
           on conflict do nothing returning 1)
select 1 / count(*) from s;
