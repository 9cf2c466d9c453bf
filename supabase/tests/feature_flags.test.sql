-- Canary flags per canvas (sql/flags/flags.sql): a stable hash bucket per (flag, canvas), so about
-- N % of canvases are in at N %, a canvas stays in as the percentage grows, two flags pick
-- different canvases; deny lists win over allow lists, which win over the percentage; members read
-- a canvas's flags (also in A1's snapshot), only service_role changes them, and every change is audited.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(15);

create temp table canvases as select gen_random_uuid() as canvas_id from generate_series(1, 10000);
create temp table flag_at (pct numeric, canvas_id uuid);
create temp table ids (workspace_id uuid, canvas_id uuid, other_canvas uuid);
grant all on canvases, flag_at, ids to authenticated, service_role;

-- ---------------------------------------------------------------- the bucket
select ok((select bool_and(internal.flag_bucket('x', canvas_id) >= 0 and internal.flag_bucket('x', canvas_id) < 100) from canvases),
          'every bucket is in [0, 100)');
select is(internal.flag_bucket('new-editor', '00000000-0000-4000-8000-000000000001'),
          internal.flag_bucket('new-editor', '00000000-0000-4000-8000-000000000001'), 'the bucket of a canvas is stable');
select ok((select count(*) from canvases where internal.flag_bucket('new-editor', canvas_id) < 1) between 70 and 130,
          'at 1 %, about 1 % of 10,000 canvases are in (70..130)');
select ok((select count(*) from canvases where internal.flag_bucket('new-editor', canvas_id) < 50) between 4800 and 5200,
          'at 50 %, about half (4,800..5,200)');
select ok((select count(*) from canvases where internal.flag_bucket('new-editor', canvas_id) < 1
           and internal.flag_bucket('other-flag', canvas_id) < 1) < 10,
          'two flags at 1 % pick different canvases (few in both)');

-- ---------------------------------------------------------------- setting flags
select tests.create_user('flag_owner');
select tests.authenticate_as('flag_owner');
insert into ids (workspace_id) select (api.create_workspace('Flags') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'A') ->> 'canvas_id')::uuid,
               other_canvas = (api.create_canvas(workspace_id, 'B') ->> 'canvas_id')::uuid;
select throws_ok($$select api.set_feature_flag('new-editor', 100)$$, 'PX403', null, 'a user (even a workspace owner) cannot change flags');
select tests.authenticate_as('flag_owner', '{"role":"service_role"}');
select set_config('role', 'service_role', true);
select lives_ok($$select api.set_feature_flag('new-editor', 1, 'the new block editor')$$, 'service_role creates a flag');
select throws_ok($$select api.set_feature_flag('new-editor', 101)$$, 'PX400', null, 'rollout_percent above 100 is invalid_input');

-- monotonic rollout: the set of canvases in at 1 % is inside the set at 5 %, inside the set at 20 %
select tests.clear_authentication();
insert into flag_at select 1, canvas_id from canvases c, app.feature_flags f where f.name = 'new-editor' and internal.flag_enabled(f, c.canvas_id, null);
update app.feature_flags set rollout_percent = 5 where name = 'new-editor';  -- (as set_feature_flag does, without the audit)
insert into flag_at select 5, canvas_id from canvases c, app.feature_flags f where f.name = 'new-editor' and internal.flag_enabled(f, c.canvas_id, null);
update app.feature_flags set rollout_percent = 20 where name = 'new-editor';
insert into flag_at select 20, canvas_id from canvases c, app.feature_flags f where f.name = 'new-editor' and internal.flag_enabled(f, c.canvas_id, null);
select is((select count(*) from flag_at a where pct = 1 and not exists (select from flag_at b where b.pct = 5 and b.canvas_id = a.canvas_id))
          + (select count(*) from flag_at a where pct = 5 and not exists (select from flag_at b where b.pct = 20 and b.canvas_id = a.canvas_id)),
          0::bigint, 'raising the percentage only adds canvases: every canvas in at 1 % is in at 5 %, every one at 5 % at 20 %');
select ok((select count(*) from flag_at where pct = 1) < (select count(*) from flag_at where pct = 20), 'and adds some');

-- lists: deny wins over allow, allow over the percentage
select tests.authenticate_as('flag_owner', '{"role":"service_role"}');
select set_config('role', 'service_role', true);
select api.set_feature_flag('new-editor', 5);
select api.set_feature_flag('new-editor', 0, null, array[(select canvas_id from ids)], null, array[(select workspace_id from ids)],
                            array[]::uuid[]);
select api.set_feature_flag('beta-search', 100, 'semantic search beta', null, array[(select other_canvas from ids)]);
select tests.clear_authentication();
select tests.authenticate_as('flag_owner');
select is(api.get_canvas_flags((select canvas_id from ids)), '{"beta-search": true, "new-editor": true}',
          'a member reads its canvas''s flags: allowed by canvas (0 %), on at 100 %');
select is(api.get_canvas_flags((select other_canvas from ids)), '{"beta-search": false, "new-editor": true}',
          'a denied canvas is off even at 100 %; the allowed workspace turns new-editor on for its other canvas');
select is(api.get_canvas_snapshot((select canvas_id from ids)) -> 'flags', api.get_canvas_flags((select canvas_id from ids)),
          'A1 (the canvas snapshot) carries the canvas''s flags');
select tests.create_user('flag_stranger');
select tests.authenticate_as('flag_stranger');
select throws_ok($$select api.get_canvas_flags((select canvas_id from ids))$$, 'PX404', null, 'a non-member learns nothing');
select tests.clear_authentication();
select is((select count(*) from app.system_audit where action = 'feature_flag.set' and entity_id = 'new-editor'), 3::bigint,
          'every change of a flag through api.set_feature_flag is audited (3 for new-editor)');

select * from finish();
rollback;
