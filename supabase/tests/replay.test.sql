-- Replay and snapshots: api.get_canvas_changes returns the applied operations after a seq, in
-- seq order, paged with has_more and a watermark that is always a safe place to resume from;
-- api.get_canvas_snapshot returns the blocks in rank order with the seq they are consistent with.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(28);

select tests.create_user(u) from unnest(array['replay_owner', 'replay_viewer', 'replay_stranger']) u;
create temp table ids (workspace_id uuid, canvas_id uuid, other_canvas_id uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
select tests.authenticate_as('replay_owner');
insert into ids (workspace_id) select (api.create_workspace('Replay') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Replayed') ->> 'canvas_id')::uuid,
               other_canvas_id = (api.create_canvas(workspace_id, 'Elsewhere') ->> 'canvas_id')::uuid;
select api.set_workspace_member((select workspace_id from ids), tests.user_id('replay_viewer'), 'viewer');

-- history: three creates (C placed first by rank), an edit, a conflict, a failure, a delete,
-- and noise on another canvas
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a1', 'create', 'rp-a', null, '{"type":"text","y_order":"m"}');
select api.upsert_block_atomic((select other_canvas_id from ids), null, 'create', 'rp-other', null, '{"type":"text"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000b1', 'create', 'rp-b', null, '{"type":"text","y_order":"t"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000c1', 'create', 'rp-c', null, '{"type":"text","y_order":"c"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a1', 'update', 'rp-a-2', 1, '{"content":{"v":2}}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a1', 'update', 'rp-a-stale', 1, '{"content":{"v":3}}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a1', 'update', 'rp-a-bad', 2, '{"y_order":"!"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000b1', 'delete', 'rp-b-del', 1, '{}');
select tests.clear_authentication();

create temp table applied as
select array_agg(server_seq order by server_seq) as seqs, array_agg(client_op_id order by server_seq) as ops
from app.block_operations where canvas_id = (select canvas_id from ids) and status = 'success';
grant select on applied to authenticated;
select is((select ops from applied), array['rp-a', 'rp-b', 'rp-c', 'rp-a-2', 'rp-b-del'], 'five operations were applied on the canvas');

select tests.authenticate_as('replay_viewer');
insert into r select 'all', api.get_canvas_changes((select canvas_id from ids), 0, 100);
insert into r select 'since', api.get_canvas_changes((select canvas_id from ids), (select seqs[2] from applied), 100);
insert into r select 'page1', api.get_canvas_changes((select canvas_id from ids), 0, 2);
insert into r select 'page2', api.get_canvas_changes((select canvas_id from ids), (select (res ->> 'watermark')::bigint from r where name = 'page1'), 2);
insert into r select 'page3', api.get_canvas_changes((select canvas_id from ids), (select (res ->> 'watermark')::bigint from r where name = 'page2'), 2);
insert into r select 'snapshot', api.get_canvas_snapshot((select canvas_id from ids));
select tests.clear_authentication();

-- changes
select is((select array(select (c ->> 'server_seq')::bigint from jsonb_array_elements(res -> 'changes') c) from r where name = 'all'),
          (select seqs from applied), 'from 0: every applied operation of the canvas, in server_seq order (a viewer may replay)');
select is((select array(select c ->> 'client_op_id' from jsonb_array_elements(res -> 'changes') c) from r where name = 'all'),
          (select ops from applied), 'conflicts, failures and other canvases'' operations are not in it');
select is((select (res -> 'has_more')::boolean from r where name = 'all'), false, 'has_more is false when everything fit');
select is((select (res ->> 'watermark')::bigint from r where name = 'all'),
          (select last_seq from app.canvases where canvas_id = (select canvas_id from ids)), 'the watermark is the canvas''s last applied seq');
select is((select (res ->> 'watermark')::bigint from r where name = 'all'), (select seqs[5] from applied), 'which is the newest change');
select is((select array(select c ->> 'client_op_id' from jsonb_array_elements(res -> 'changes') c) from r where name = 'since'),
          array['rp-c', 'rp-a-2', 'rp-b-del'], 'since a seq: only the operations after it');
select is((select c from r, jsonb_array_elements(res -> 'changes') c where name = 'all' and c ->> 'client_op_id' = 'rp-a-2') - 'created_at',
          jsonb_build_object('server_seq', (select seqs[4] from applied), 'canvas_seq', 4, 'action', 'update', 'block_id', '00000000-0000-4000-8000-0000000000a1',
                             'version', 2, 'client_op_id', 'rp-a-2', 'actor_id', tests.user_id('replay_owner'), 'patch', '{"content":{"v":2}}'::jsonb,
                             'deleted_ids', null,
                             'block', (select block from app.block_operations where client_op_id = 'rp-a-2')),
          'a change carries seq, canvas_seq, action, block id, version, author, patch and the block after it');
select is((select c -> 'deleted_ids' from r, jsonb_array_elements(res -> 'changes') c where name = 'all' and c ->> 'client_op_id' = 'rp-b-del'),
          '["00000000-0000-4000-8000-0000000000b1"]', 'a delete replays with its deleted ids, after the block is gone');

-- paging: limit, has_more, and a watermark that never skips
select is((select jsonb_array_length(res -> 'changes') || ' ' || (res ->> 'has_more') from r where name = 'page1'), '2 true',
          'limit 2: two changes and has_more');
select is((select (res ->> 'watermark')::bigint from r where name = 'page1'), (select seqs[2] from applied),
          'while there is more, the watermark is the last change returned (resuming from it skips nothing)');
select is((select array_agg(c ->> 'client_op_id' order by p.name, n) from r p, jsonb_array_elements(p.res -> 'changes') with ordinality t(c, n)
           where p.name in ('page1', 'page2', 'page3')), (select ops from applied),
          'following the watermark page by page replays every operation exactly once');
select is((select (res ->> 'has_more') || ' ' || (res ->> 'watermark') from r where name = 'page3'), 'false ' || (select seqs[5] from applied),
          'the last page says has_more false at the canvas watermark');

-- snapshot
select is((select array(select b ->> 'y_order' from jsonb_array_elements(res -> 'blocks') b) from r where name = 'snapshot'),
          array['c', 'm'], 'the snapshot lists the live blocks in y_order');
select is((select res -> 'blocks' -> 1 from r where name = 'snapshot'),
          (select internal.block_json(b) from app.blocks b where block_id = '00000000-0000-4000-8000-0000000000a1'), 'each as stored');
select is((select (res ->> 'watermark')::bigint from r where name = 'snapshot'), (select seqs[5] from applied),
          'its watermark is the last applied seq on the canvas');
select is((select res #>> '{canvas,canvas_id}' || ' ' || (res #>> '{canvas,role}') from r where name = 'snapshot'),
          (select canvas_id from ids) || ' viewer', 'it carries the canvas and the caller''s role');

-- only members may read
select tests.authenticate_as('replay_stranger');
select throws_ok(format('select api.get_canvas_changes(%L, 0, 10)', (select canvas_id from ids)), 'PX404',
                 'canvas not found, or you are not a member of it', 'a non-member cannot replay changes (PX404)');
select throws_ok(format('select api.get_canvas_snapshot(%L)', (select canvas_id from ids)), 'PX404',
                 'canvas not found, or you are not a member of it', 'nor read a snapshot (PX404)');
select tests.authenticate_as('replay_owner', jsonb_build_object('scope', format('canvas:%s:read', (select other_canvas_id from ids))));
select throws_ok(format('select api.get_canvas_changes(%L, 0, 10)', (select canvas_id from ids)), 'PX403', null,
                 'a token scoped to another canvas cannot replay this one (PX403)');
select tests.clear_authentication();
select throws_ok(format('select api.get_canvas_changes(%L, 0, 10)', (select canvas_id from ids)), 'PX401', null,
                 'without a user: PX401');

-- a deleted user's token (valid until it expires) is unauthorized, as everywhere (require_user),
-- not not_found (its memberships went with it)
select tests.authenticate_as('replay_owner');
select api.set_workspace_member((select workspace_id from ids), tests.create_user('replay_ghost'), 'viewer');
select tests.clear_authentication();
select tests.authenticate_as_deleted('replay_ghost');
select throws_ok(format('select api.get_canvas_changes(%L, 0, 10)', (select canvas_id from ids)), 'PX401',
                 'the user this token was issued to no longer exists', 'a deleted user''s token cannot replay changes (PX401)');
select throws_ok(format('select api.get_canvas_changes_since(%L, 0, 10)', (select canvas_id from ids)), 'PX401',
                 'the user this token was issued to no longer exists', 'nor by canvas_seq (PX401)');
select throws_ok(format('select api.get_canvas_snapshot(%L)', (select canvas_id from ids)), 'PX401',
                 'the user this token was issued to no longer exists', 'nor read a snapshot (PX401)');
select tests.clear_authentication();

-- a snapshot cursor is the caller's to write: one naming a canvas_watermark far back (0) made
-- every page collect every operation logged since (the blocks changed after it), a scan of the
-- whole retained log a request. A page now asks the log about its own blocks only (the
-- operation that made each one's version). 20,000 updates of block C logged (as a busy canvas's
-- log holds them), then the tuples the page read from the log, counted by this transaction's
-- statistics.
set local session_replication_role = replica;  -- the log rows alone, without their triggers
with c as (select canvas_id, last_canvas_seq from app.canvases where canvas_id = (select canvas_id from ids))
insert into app.block_operations (server_seq, client_op_id, actor_id, canvas_id, block_id, action, status, base_version, new_version, patch, block, canvas_seq)
select nextval('app.seq_block_events'), 'rp-bulk-' || g, tests.user_id('replay_owner'), c.canvas_id, '00000000-0000-4000-8000-0000000000c1',
       'update', 'success', g, g + 1, '{}', '{}', c.last_canvas_seq + g
from c, generate_series(1, 20000) g;
update app.blocks set version = 20001 where block_id = '00000000-0000-4000-8000-0000000000c1';
update app.canvases set last_canvas_seq = last_canvas_seq + 20000, last_seq = currval('app.seq_block_events')
where canvas_id = (select canvas_id from ids);
set local session_replication_role = origin;
create temp table log_reads (n bigint);
grant all on log_reads to authenticated;
create function pg_temp.log_tuples_read() returns bigint language sql as $$
  select sum(pg_stat_get_xact_tuples_returned(c.oid))::bigint from pg_class c
  where c.oid = 'app.block_operations'::regclass
     or c.oid in (select indexrelid from pg_index where indrelid = 'app.block_operations'::regclass) $$;
insert into log_reads select pg_temp.log_tuples_read();
select tests.authenticate_as('replay_viewer');
insert into r select 'forged', api.get_canvas_snapshot((select canvas_id from ids), null, '0.0.0');
select tests.clear_authentication();
select cmp_ok(pg_temp.log_tuples_read() - (select n from log_reads), '<', 1000::bigint,
              'a page with a cursor from long ago reads the log for its blocks only, not the 20,000 operations since');
select is((select res -> 'blocks' from r where name = 'forged'), '[]'::jsonb,
          '... and leaves out, as before, every block changed after the cursor''s watermark');

-- every page checks access, not only the first: a member removed between pages is refused the
-- next one, and a cursor does not stand in for membership
select tests.authenticate_as('replay_viewer');
select lives_ok(format('select api.get_canvas_snapshot(%L, null, %L)', (select canvas_id from ids),
                       (select format('%s.%s.0', res ->> 'canvas_watermark', res ->> 'watermark') from r where name = 'forged')),
                'a page with a cursor, read while a member');
select tests.authenticate_as('replay_owner');
select api.remove_workspace_member((select workspace_id from ids), tests.user_id('replay_viewer'));
select tests.authenticate_as('replay_viewer');
select throws_ok(format('select api.get_canvas_snapshot(%L, null, %L)', (select canvas_id from ids),
                        (select format('%s.%s.0', res ->> 'canvas_watermark', res ->> 'watermark') from r where name = 'forged')),
                 'PX404', 'canvas not found, or you are not a member of it', 'the next page, once removed from the workspace: not_found');
select tests.clear_authentication();

select * from finish();
rollback;
