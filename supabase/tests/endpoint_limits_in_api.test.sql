-- The endpoint limits hold for a caller of the api functions themselves (PostgREST, with api
-- exposed on Supabase): every api function that an HTTP endpoint with a limit calls counts that
-- endpoint's limit (app.endpoint_limits) first, once per call, strict. Not counted again:
--   - a call that api.hit_endpoint_limit counted first in the same transaction, for the same user
--     (the HTTP statement's FROM): one hit covers the next call, and only it;
--   - a call in a transaction of the Potentia server (potentia.endpoint_limits = 'server'), which
--     counts each endpoint where it answers it.
-- The mutation RPCs (H2) count the per-user mutation limit themselves (rate_limit.test.sql).
-- Each call here is made as PostgREST makes it: role authenticated, request.jwt.claims set,
-- nothing else (tests.authenticate_as_postgrest), one function a statement.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(40);

-- Each limited function, called by a user whose window of that endpoint is full, is refused
-- rate_limited before it looks at its arguments; a user of its own per function, so the refusal
-- can only come from that endpoint's count.
create temp table limited (n int, fn text, endpoint text, call text);
insert into limited values
  (1, 'update_presence', 'H3', $$select api.update_presence(gen_random_uuid(), null, false)$$),
  (2, 'get_canvas_snapshot', 'H4', $$select api.get_canvas_snapshot(gen_random_uuid())$$),
  (3, 'get_canvas_snapshot (a further page)', 'H7', $$select api.get_canvas_snapshot(gen_random_uuid(), null, '1.1.a')$$),
  (4, 'leave_canvas', 'H6', $$select api.leave_canvas(gen_random_uuid())$$),
  (5, 'get_canvas_changes_since', 'H7', $$select api.get_canvas_changes_since(gen_random_uuid(), 0, 500)$$),
  (6, 'list_blocks', 'A2', $$select api.list_blocks(gen_random_uuid(), null, 100)$$),
  (7, 'get_block', 'A3', $$select api.get_block(gen_random_uuid(), gen_random_uuid())$$),
  (8, 'list_my_canvases', 'A4', $$select api.list_my_canvases(null, 100)$$),
  (9, 'create_canvas', 'A5', $$select api.create_canvas(gen_random_uuid(), 'Untitled', '{}', null)$$),
  (10, 'update_canvas', 'A6', $$select api.update_canvas(gen_random_uuid(), 'New', null)$$),
  (11, 'delete_canvas', 'A7', $$select api.delete_canvas(gen_random_uuid())$$),
  (12, 'get_canvas_permissions', 'A8', $$select api.get_canvas_permissions(gen_random_uuid(), null, 100)$$),
  (13, 'get_canvas_flags', 'S2', $$select api.get_canvas_flags(gen_random_uuid())$$),
  (14, 'search_blocks', 'S2', $$select api.search_blocks(gen_random_uuid(), array_fill(0::real, array[1536])::extensions.vector, 10)$$),
  (15, 'list_my_workspaces', 'W1', $$select api.list_my_workspaces(null, 100)$$),
  (16, 'create_workspace', 'W2', $$select api.create_workspace('Full', null)$$),
  (17, 'rename_workspace', 'W3', $$select api.rename_workspace(gen_random_uuid(), 'New')$$),
  (18, 'list_workspace_members', 'W4', $$select api.list_workspace_members(gen_random_uuid(), null, 100)$$),
  (19, 'add_workspace_member', 'W5', $$select api.add_workspace_member(gen_random_uuid(), 'someone@test.local', 'viewer')$$),
  (20, 'update_workspace_member', 'W6', $$select api.update_workspace_member(gen_random_uuid(), gen_random_uuid(), 'viewer')$$),
  (21, 'remove_workspace_member', 'W7', $$select api.remove_workspace_member(gen_random_uuid(), gen_random_uuid())$$),
  (22, 'list_workspace_canvases', 'W8', $$select api.list_workspace_canvases(gen_random_uuid(), null, 100)$$),
  (23, 'list_workspace_invites', 'W9', $$select api.list_workspace_invites(gen_random_uuid(), null, 100)$$),
  (24, 'revoke_workspace_invite', 'W10', $$select api.revoke_workspace_invite(gen_random_uuid(), gen_random_uuid())$$),
  (25, 'create_file', 'F1', $$select api.create_file(gen_random_uuid(), 'a.txt', 'text/plain', 1, null)$$),
  (26, 'get_file', 'F3', $$select api.get_file(gen_random_uuid(), gen_random_uuid())$$);
select tests.create_user('el_full_' || n) from limited;
insert into app.rate_limits (user_id, bucket, window_start, hits)
select tests.user_id('el_full_' || l.n), 'endpoint:' || l.endpoint, internal.rate_window_start(e.window_seconds), e.max_hits
from limited l join app.endpoint_limits e using (endpoint);

-- p_call as p_user, as PostgREST calls it: 'ok', or the SQLSTATE it raised.
create function pg_temp.try_as_postgrest(p_user text, p_call text) returns text language plpgsql as $$
declare v_result jsonb;
begin
  perform tests.authenticate_as_postgrest(p_user);
  begin
    execute p_call into v_result;
    perform tests.clear_authentication();
    return 'ok';
  exception when others then
    perform tests.clear_authentication();
    return sqlstate;
  end;
end $$;
select is(pg_temp.try_as_postgrest('el_full_' || n, call), 'PX429', format('api.%s counts %s: refused rate_limited when its window is full', fn, endpoint))
from limited order by n;

-- Over the real limits, called in a row: the call after the limit is the one refused.
select tests.create_user(u) from unnest(array['el_ws', 'el_canvas', 'el_once', 'el_server']) u;
create temp table ids (name text primary key, id uuid);
grant all on ids to authenticated;
select is(array_agg(pg_temp.try_as_postgrest('el_ws', $$select api.create_workspace('W2 ' || clock_timestamp())$$) order by i),
          array['ok', 'ok', 'ok', 'ok', 'ok', 'PX429'],
          'W2 (5 per 60 s): five api.create_workspace calls in a row create, the sixth is refused rate_limited')
from generate_series(1, 6) i;
select is((select count(*) from app.workspaces where created_by = tests.user_id('el_ws')), 5::bigint, 'and the refused one created nothing');

select tests.authenticate_as_postgrest('el_canvas');
insert into ids select 'canvas ws', (api.create_workspace('Canvases') ->> 'workspace_id')::uuid;
select tests.clear_authentication();
select is(array_agg(pg_temp.try_as_postgrest('el_canvas', format($$select api.create_canvas(%L, 'A5')$$, (select id from ids where name = 'canvas ws'))) order by i),
          array['ok', 'PX429'], 'A5 (1 per 10 s): the second api.create_canvas in a row is refused rate_limited')
from generate_series(1, 2) i;
select is((select count(*) from app.canvases where workspace_id = (select id from ids where name = 'canvas ws')), 1::bigint,
          'and created nothing');
select tests.authenticate_as_postgrest('el_canvas');
insert into ids select 'canvas', (select canvas_id from app.canvases where workspace_id = (select id from ids where name = 'canvas ws'));
select tests.clear_authentication();
select is(array_agg(pg_temp.try_as_postgrest('el_canvas', format($$select api.get_canvas_snapshot(%L)$$, (select id from ids where name = 'canvas'))) order by i),
          array['ok', 'PX429'], 'H4 (1 per s): the second api.get_canvas_snapshot in a row is refused rate_limited')
from generate_series(1, 2) i;

-- Counted once: a call that api.hit_endpoint_limit counted first, in its transaction, for its
-- user (the HTTP statement: the hit as the FROM of the call), is not counted again.
create function pg_temp.hits(p_user text, p_bucket text) returns int language sql as $$
  select coalesce(sum(hits), 0)::int from app.rate_limits where user_id = tests.user_id(p_user) and bucket = p_bucket
$$;
select tests.authenticate_as_postgrest('el_once');
select api.create_workspace('Once 1') from api.hit_endpoint_limit('W2', false);
select tests.clear_authentication();
select is(pg_temp.hits('el_once', 'endpoint:W2'), 1, 'api.hit_endpoint_limit(W2) then api.create_workspace in its statement: one W2 hit');
select tests.authenticate_as_postgrest('el_once');
select api.hit_endpoint_limit('W2');
select api.create_workspace('Once 2');
select tests.clear_authentication();
select is(pg_temp.hits('el_once', 'endpoint:W2'), 2, 'and in a statement of its own before it: one W2 hit again');
select tests.authenticate_as_postgrest('el_once');
select api.create_workspace('Once 3');
select tests.clear_authentication();
select is(pg_temp.hits('el_once', 'endpoint:W2'), 3, 'the hit covers one call: the next api.create_workspace counts its own');
select tests.authenticate_as_postgrest('el_once');
select api.hit_endpoint_limit('W1');
select api.create_workspace('Once 4');
select tests.clear_authentication();
select is(array[pg_temp.hits('el_once', 'endpoint:W1'), pg_temp.hits('el_once', 'endpoint:W2')], array[1, 4],
          'a hit of another endpoint covers nothing here: W1 counted, and W2 by api.create_workspace');
select tests.authenticate_as_postgrest('el_canvas');
select api.hit_endpoint_limit('W1');
select tests.authenticate_as_postgrest('el_once');
select api.create_workspace('Once 5');
select tests.clear_authentication();
select is(pg_temp.hits('el_once', 'endpoint:W2'), 5, 'nor does another user''s hit of the same endpoint');
select tests.authenticate_as_postgrest('el_once');
select api.hit_endpoint_limit('W2', true);
select api.create_workspace('Once 6');
select tests.clear_authentication();
select is(array[pg_temp.hits('el_once', 'endpoint-dev:W2'), pg_temp.hits('el_once', 'endpoint:W2')], array[1, 5],
          'a relaxed hit (the development profile) covers the call too: counted in its own bucket only');
select is(pg_temp.try_as_postgrest('el_canvas', format($$select api.get_canvas_snapshot(%L) from api.hit_endpoint_limit('A1')$$, (select id from ids where name = 'canvas'))),
          'ok', 'api.get_canvas_snapshot is covered by a hit of any endpoint that answers with it (A1 here): not refused by the full H4 window');

-- A transaction of the Potentia server is counted by the server where it answers (src/db/request.ts):
-- the api functions count nothing there.
select tests.authenticate_as_postgrest('el_server');
select set_config('potentia.endpoint_limits', 'server', true);  -- as tests.authenticate_as does
select api.create_workspace('Server ' || i) from generate_series(1, 7) i;
select set_config('potentia.endpoint_limits', '', true);
select tests.clear_authentication();
select is(pg_temp.hits('el_server', 'endpoint:W2'), 0, 'seven api.create_workspace calls in a server transaction: not counted by the function');
select is((select count(*) from app.workspaces where created_by = tests.user_id('el_server')), 7::bigint, 'and all seven created');

select * from finish();
rollback;
