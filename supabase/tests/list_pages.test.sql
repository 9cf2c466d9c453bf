-- The lists answered a page at a time as the canvas lists are (sql/core/list_keys.sql): W1
-- api.list_my_workspaces, W4 api.list_workspace_members, W9 api.list_workspace_invites, A8
-- api.get_canvas_permissions. Each: a page stops at limit and names the key of its last row as
-- next_cursor; the pages are the whole list in (joined or created, id) order, once each; the last
-- page's next_cursor is null (also when it is full); a cursor the list did not return is
-- invalid_input naming cursor; access is checked again on the page a cursor asks for; a change
-- while paging (a rename, a new role, a row added) skips and repeats nothing.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(48);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;

-- ---------------------------------------------------------------------------------------------
-- Fixture: workspace W of `owner` (joined now) with members m1..m6 who joined earlier, m3 and m4 at
-- the same time (their order is by user_id); canvas C of W, with m2 also a member of C and
-- outside1, outside2 members of C alone; six invites of W, two at the same time; `solo` a member
-- of five workspaces S1..S5, two joined at the same time.
-- ---------------------------------------------------------------------------------------------
do $$
declare v_w uuid; v_c uuid; i integer;
begin
  perform tests.create_user(n) from unnest(array['owner', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'outside1', 'outside2', 'solo']) n;
  insert into ids select n, tests.user_id(n) from unnest(array['owner', 'm1', 'm2', 'm3', 'm4', 'm5', 'm6', 'outside1', 'outside2', 'solo']) n;
  perform tests.authenticate_as('owner');
  v_w := api.create_workspace('W') ->> 'workspace_id';
  v_c := api.create_canvas(v_w, 'C') ->> 'canvas_id';
  perform tests.clear_authentication();
  insert into ids values ('w', v_w), ('c', v_c);
  -- the owner joined 10 minutes ago: a member who joins now comes after every one
  update app.workspace_members set created_at = now() - interval '10 minutes' where workspace_id = v_w;
  insert into app.workspace_members (workspace_id, user_id, role, created_at)
  select v_w, tests.user_id('m' || g), (array['viewer', 'editor', 'admin'])[1 + g % 3]::app.member_role,
         now() - interval '1 hour' + make_interval(mins => case when g = 4 then 3 else g end)
  from generate_series(1, 6) g;
  insert into app.canvas_members (canvas_id, user_id, role, created_at) values
    (v_c, tests.user_id('m2'), 'viewer', now() - interval '2 hours'),
    (v_c, tests.user_id('outside1'), 'editor', now() - interval '30 minutes'),
    (v_c, tests.user_id('outside2'), 'viewer', now() - interval '2 hours');
  insert into app.workspace_invites (workspace_id, email, role, invited_by, created_at)
  select v_w, 'invitee' || g || '@test.local', 'viewer', tests.user_id('owner'),
         now() - interval '1 hour' + make_interval(mins => case when g = 5 then 4 else g end)
  from generate_series(1, 6) g;
  for i in 1..5 loop
    insert into app.workspaces (name, created_by) values ('S' || i, tests.user_id('solo')) returning workspace_id into v_w;
    insert into ids values ('s' || i, v_w);
    insert into app.workspace_members (workspace_id, user_id, role, created_at)
    values (v_w, tests.user_id('solo'), 'owner', now() - interval '1 day' + make_interval(mins => case when i = 3 then 2 else i end));
  end loop;
end $$;

-- Every page of p_call (a format() with %L for the cursor and %s for the limit) as p_who:
-- [{ids: [the page's ids], next_cursor}], following next_cursor to the end (at most 20 pages).
create function pg_temp.pages(p_who text, p_call text, p_list text, p_id text, p_limit integer) returns jsonb language plpgsql as $$
declare v_page jsonb; v_cursor text; v_pages jsonb := '[]';
begin
  perform tests.authenticate_as(p_who);
  for i in 1..20 loop
    execute 'select ' || format(p_call, v_cursor, p_limit) into v_page;
    v_pages := v_pages || jsonb_build_array(jsonb_build_object(
      'ids', (select coalesce(jsonb_agg(e ->> p_id order by n), '[]') from jsonb_array_elements(v_page -> p_list) with ordinality x(e, n)),
      'next_cursor', v_page -> 'next_cursor'));
    v_cursor := v_page ->> 'next_cursor';
    exit when v_cursor is null;
  end loop;
  perform tests.clear_authentication();
  return v_pages;
end $$;

-- The ids of every page, in order.
create function pg_temp.all_ids(p_pages jsonb) returns jsonb language sql immutable as $$
  select coalesce(jsonb_agg(i order by p, n), '[]')
  from jsonb_array_elements(p_pages) with ordinality x(page, p), jsonb_array_elements_text(page -> 'ids') with ordinality y(i, n)
$$;

-- The outcome of one call as p_who: 'ok', or {error, field} of its refusal.
create function pg_temp.outcome(p_who text, p_sql text) returns jsonb language plpgsql as $$
declare v_state text; v_hint text; v_detail text; v_result jsonb := '"ok"';
begin
  perform tests.authenticate_as(p_who);
  begin
    execute 'select ' || p_sql;
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_hint = pg_exception_hint, v_detail = pg_exception_detail;
    perform tests.clear_authentication();
    v_result := case when v_state like 'PX%' then jsonb_build_object('error', v_hint) || coalesce(internal.try_jsonb(v_detail), '{}')
                     else to_jsonb(v_state) end;
  end;
  perform tests.clear_authentication();
  return v_result;
end $$;

-- The value of one call as p_who; the workspaces of a W1 page reduced to their ids.
create function pg_temp.value_as(p_who text, p_sql text) returns jsonb language plpgsql as $$
declare v_result jsonb;
begin
  perform tests.authenticate_as(p_who);
  execute 'select ' || p_sql into v_result;
  perform tests.clear_authentication();
  if v_result -> 'workspaces' is null then
    return v_result;
  end if;
  return jsonb_set(v_result, '{workspaces}', (select coalesce(jsonb_agg(jsonb_build_object('workspace_id', w -> 'workspace_id') order by n), '[]')
                                               from jsonb_array_elements(v_result -> 'workspaces') with ordinality x(w, n)));
end $$;

-- The expected orders, read from the tables
create temp view members_order as
  select m.user_id::text as id, internal.list_cursor(m.created_at, m.user_id) as cursor, row_number() over (order by m.created_at, m.user_id) as n
  from app.workspace_members m where m.workspace_id = pg_temp.id('w');
create temp view invites_order as
  select i.invite_id::text as id, internal.list_cursor(i.created_at, i.invite_id) as cursor, row_number() over (order by i.created_at, i.invite_id) as n
  from app.workspace_invites i where i.workspace_id = pg_temp.id('w');
create temp view workspaces_order as
  select m.workspace_id::text as id, internal.list_cursor(m.created_at, m.workspace_id) as cursor,
         row_number() over (order by m.created_at, m.workspace_id) as n
  from app.workspace_members m where m.user_id = pg_temp.id('solo');
create temp view users_order as
  select k.user_id::text as id, internal.list_cursor(k.t, k.user_id) as cursor, row_number() over (order by k.t, k.user_id) as n
  from (select m.user_id, m.created_at as t from app.workspace_members m where m.workspace_id = pg_temp.id('w')
        union all
        select cm.user_id, cm.created_at from app.canvas_members cm
        where cm.canvas_id = pg_temp.id('c') and cm.user_id not in (select user_id from app.workspace_members where workspace_id = pg_temp.id('w'))) k;
grant select on members_order, invites_order, workspaces_order, users_order to public;

select is((select count(*) from members_order), 7::bigint, 'fixture: W has 7 members');
select is((select count(*) from users_order), 9::bigint, 'fixture: C has 9 users, m2 counted once');

-- ---------------------------------------------------------------------------------------------
-- W4 api.list_workspace_members
-- ---------------------------------------------------------------------------------------------
create temp table got (name text primary key, pages jsonb);
insert into got values ('members', pg_temp.pages('m1', $$api.list_workspace_members(pg_temp.id('w'), %L, %s)$$, 'members', 'user_id', 3));
select is((select pages -> 0 -> 'ids' from got where name = 'members'), (select jsonb_agg(id order by n) from members_order where n <= 3),
          'W4: a page of limit 3 holds the first 3 members, by when they joined, ties by user_id');
select is((select pages -> 0 ->> 'next_cursor' from got where name = 'members'), (select cursor from members_order where n = 3),
          '... and its next_cursor is the key of its last one, <epoch microseconds>.<user_id>');
select is((select pg_temp.all_ids(pages) from got where name = 'members'), (select jsonb_agg(id order by n) from members_order),
          '... the pages hold every member once, in order');
select is((select jsonb_array_length(pages) from got where name = 'members'), 3, '... in 3 pages');
select is((select pages -> -1 -> 'next_cursor' from got where name = 'members'), 'null'::jsonb, '... the last page has next_cursor null');
select is(jsonb_array_length(pg_temp.pages('m1', $$api.list_workspace_members(pg_temp.id('w'), %L, %s)$$, 'members', 'user_id', 7)), 1,
          'a page that holds exactly the rest is the last: next_cursor null, no empty page after it');
select is(pg_temp.outcome('m1', format($$api.list_workspace_members(%L, %L)$$, pg_temp.id('w'), c)), '{"error": "invalid_input", "field": "cursor"}'::jsonb,
          format('W4: cursor %s is invalid_input naming cursor', c))
from unnest(array['x', '', '1.2', '1234567890123456789.00000000-0000-0000-0000-000000000000', '12.00000000-0000-0000-0000-00000000000G']) c;

-- a well-formed cursor of a time no row has (18 digits: past 2^53 microseconds of 1970) is a
-- position, not an error: after every row (an empty last page), or before every row
select is(pg_temp.value_as('m1', format($$api.list_workspace_members(%L, '999999999999999999.00000000-0000-0000-0000-000000000000')$$, pg_temp.id('w'))),
          '{"members": [], "next_cursor": null}'::jsonb, 'W4: a cursor far past every row: no member, next_cursor null');
select is(jsonb_array_length(pg_temp.value_as('m1', format($$api.list_workspace_members(%L, '-999999999999999999.00000000-0000-0000-0000-000000000000')$$,
                                                           pg_temp.id('w'))) -> 'members'), 7,
          '... and one far before every row: every member');

-- a change between pages: m5 (not read yet) is given another role, the workspace is renamed,
-- newcomer joins: the pages still hold every member once, the newcomer last
do $$
declare v_first jsonb; v_rest jsonb; v_cursor text;
begin
  perform tests.authenticate_as('m1');
  v_first := api.list_workspace_members(pg_temp.id('w'), null, 3);
  perform tests.clear_authentication();
  update app.workspace_members set role = 'owner' where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('m5');
  update app.workspaces set name = 'W renamed' where workspace_id = pg_temp.id('w');
  perform tests.create_user('newcomer');
  insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), tests.user_id('newcomer'), 'viewer');
  perform tests.authenticate_as('m1');
  v_cursor := v_first ->> 'next_cursor';
  v_rest := '[]';
  loop
    v_first := api.list_workspace_members(pg_temp.id('w'), v_cursor, 3);
    v_rest := v_rest || (v_first -> 'members');
    v_cursor := v_first ->> 'next_cursor';
    exit when v_cursor is null;
  end loop;
  perform tests.clear_authentication();
  insert into got values ('changed', v_rest);
end $$;
select is((select jsonb_agg(m ->> 'user_id') from got, jsonb_array_elements(pages) m where name = 'changed'),
          (select jsonb_agg(id order by n) from members_order where n > 3),
          'W4: a role changed and a member added between pages: the later pages hold the rest once each, the newcomer last');
select is((select m ->> 'role' from got, jsonb_array_elements(pages) m where name = 'changed' and m ->> 'user_id' = pg_temp.id('m5')::text), 'owner',
          '... with the role as of its page');

-- access is checked on every page: a member removed between pages is refused the next
select is((select pg_temp.outcome('m6', format($$api.list_workspace_members(%L, %L, 3)$$, pg_temp.id('w'), (select cursor from members_order where n = 3)))),
          '"ok"'::jsonb, 'W4: m6 reads a page after a cursor ...');
delete from app.workspace_members where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('m6');
select is((select pg_temp.outcome('m6', format($$api.list_workspace_members(%L, %L, 3)$$, pg_temp.id('w'), (select cursor from members_order where n = 3)))),
          '{"error": "not_found", "field": "workspace_id"}'::jsonb, '... and once removed is refused the same page: not_found');
insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), pg_temp.id('m6'), 'viewer');

-- ---------------------------------------------------------------------------------------------
-- W9 api.list_workspace_invites (owners and admins)
-- ---------------------------------------------------------------------------------------------
insert into got values ('invites', pg_temp.pages('owner', $$api.list_workspace_invites(pg_temp.id('w'), %L, %s)$$, 'invites', 'invite_id', 4));
select is((select pages -> 0 -> 'ids' from got where name = 'invites'), (select jsonb_agg(id order by n) from invites_order where n <= 4),
          'W9: a page of limit 4 holds the 4 oldest invites, ties by invite_id');
select is((select pages -> 0 ->> 'next_cursor' from got where name = 'invites'), (select cursor from invites_order where n = 4),
          '... its next_cursor is the key of its last one');
select is((select pg_temp.all_ids(pages) from got where name = 'invites'), (select jsonb_agg(id order by n) from invites_order),
          '... the pages hold every invite once, in order');
select is((select pages -> -1 -> 'next_cursor' from got where name = 'invites'), 'null'::jsonb, '... the last page has next_cursor null');
select is(pg_temp.outcome('owner', format($$api.list_workspace_invites(%L, %L)$$, pg_temp.id('w'), '99.not-a-uuid')),
          '{"error": "invalid_input", "field": "cursor"}'::jsonb, 'W9: a forged cursor is invalid_input naming cursor');
-- m2 is an admin (the fixture's roles); demoted between pages, the next is refused
select is(pg_temp.outcome('m2', format($$api.list_workspace_invites(%L, %L, 4)$$, pg_temp.id('w'), (select cursor from invites_order where n = 4))),
          '"ok"'::jsonb, 'W9: an admin reads a page after a cursor ...');
update app.workspace_members set role = 'editor' where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('m2');
select is(pg_temp.outcome('m2', format($$api.list_workspace_invites(%L, %L, 4)$$, pg_temp.id('w'), (select cursor from invites_order where n = 4))),
          '{"error": "forbidden"}'::jsonb, '... and once made an editor is refused it: forbidden');

-- ---------------------------------------------------------------------------------------------
-- W1 api.list_my_workspaces
-- ---------------------------------------------------------------------------------------------
insert into got values ('workspaces', pg_temp.pages('solo', $$api.list_my_workspaces(%L, %s)$$, 'workspaces', 'workspace_id', 2));
select is((select pages -> 0 -> 'ids' from got where name = 'workspaces'), (select jsonb_agg(id order by n) from workspaces_order where n <= 2),
          'W1: a page of limit 2 holds the 2 workspaces joined first, ties by workspace_id');
select is((select pages -> 0 ->> 'next_cursor' from got where name = 'workspaces'), (select cursor from workspaces_order where n = 2),
          '... its next_cursor is the key of its last one');
select is((select pg_temp.all_ids(pages) from got where name = 'workspaces'), (select jsonb_agg(id order by n) from workspaces_order),
          '... the pages hold every workspace once, in order, in 3 pages');
select is((select pages -> -1 -> 'next_cursor' from got where name = 'workspaces'), 'null'::jsonb, '... the last page has next_cursor null');
select is(pg_temp.outcome('solo', $$api.list_my_workspaces('-1234567890123456789.00000000-0000-0000-0000-000000000000')$$),
          '{"error": "invalid_input", "field": "cursor"}'::jsonb, 'W1: a 19-digit cursor is invalid_input naming cursor');
-- a workspace left between pages is not on the next; a canvas-scoped token is refused every page
create temp table workspaces_before as select * from workspaces_order;
grant select on workspaces_before to public;
delete from app.workspace_members where user_id = pg_temp.id('solo') and workspace_id = (select id::uuid from workspaces_before where n = 4);
select is(pg_temp.value_as('solo', format($$api.list_my_workspaces(%L, 2)$$, (select cursor from workspaces_before where n = 2))) -> 'workspaces',
          (select jsonb_agg(jsonb_build_object('workspace_id', id)) from workspaces_before where n in (3, 5)),
          'W1: the page after a cursor lists no workspace the user left meanwhile, and goes on past it');
select tests.authenticate_as('solo', jsonb_build_object('scope', format('canvas:%s:read', gen_random_uuid())));
select throws_ok(format($$select api.list_my_workspaces(%L, 2)$$, (select cursor from workspaces_before where n = 2)), 'PX403', null,
                 'W1: a token scoped to some canvases is refused every page: forbidden');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- A8 api.get_canvas_permissions
-- ---------------------------------------------------------------------------------------------
insert into got values ('users', pg_temp.pages('outside2', $$api.get_canvas_permissions(pg_temp.id('c'), %L, %s)$$, 'users', 'user_id', 4));
select is((select pages -> 0 -> 'ids' from got where name = 'users'), (select jsonb_agg(id order by n) from users_order where n <= 4),
          'A8: a page of limit 4 holds the first 4 users: workspace members by when they joined, members of the canvas alone by when added');
select is((select pages -> 0 ->> 'next_cursor' from got where name = 'users'), (select cursor from users_order where n = 4),
          '... its next_cursor is the key of its last one');
select is((select pg_temp.all_ids(pages) from got where name = 'users'), (select jsonb_agg(id order by n) from users_order),
          '... the pages hold every user once (m2, a member of both, once), in order');
select is((select pages -> -1 -> 'next_cursor' from got where name = 'users'), 'null'::jsonb, '... the last page has next_cursor null');
select is(pg_temp.outcome('outside2', format($$api.get_canvas_permissions(%L, %L)$$, pg_temp.id('c'), 'ABC')),
          '{"error": "invalid_input", "field": "cursor"}'::jsonb, 'A8: a forged cursor is invalid_input naming cursor');
delete from app.canvas_members where canvas_id = pg_temp.id('c') and user_id = pg_temp.id('outside2');
select is(pg_temp.outcome('outside2', format($$api.get_canvas_permissions(%L, %L, 4)$$, pg_temp.id('c'), (select cursor from users_order where n = 4))),
          '{"error": "not_found", "field": "canvas_id"}'::jsonb, 'A8: a member of the canvas removed between pages is refused the next: not_found');

-- A8 on a canvas whose members are also the workspace's (a canvas role raising a workspace role):
-- their canvas rows are not the list's (their workspace membership is), and a page must not read
-- every one of them to find the members of the canvas alone: each page reads at most 2 * limit + 1
-- of the canvas's member rows, however many there are (until 2026-12-07 every page read all of
-- those after the cursor, and with a generic plan compared each with every workspace member: 25 s
-- a page at 30,000).
do $$
declare v_x uuid := gen_random_uuid(); v_d uuid;
begin
  insert into ids values ('x', v_x);
  insert into app.workspaces (workspace_id, name, created_by) values (v_x, 'X', tests.user_id('owner'));
  insert into auth.users (id, email) select gen_random_uuid(), 'shadow' || g || '@test.local' from generate_series(1, 2000) g;
  insert into app.workspace_members (workspace_id, user_id, role, created_at)
  select v_x, u.id, 'viewer'::app.member_role, now() - interval '1 hour' from auth.users u where u.email like 'shadow%@test.local'
  union all select v_x, tests.user_id('owner'), 'owner', now() - interval '2 hours';
  perform tests.authenticate_as('owner');
  v_d := api.create_canvas(v_x, 'D') ->> 'canvas_id';
  perform tests.clear_authentication();
  insert into ids values ('d', v_d);
  -- every workspace member but the owner also a member of D (enough rows that the planner reads them by
  -- index, as it does at any size once the table is analyzed), added before they joined X; outside1
  -- a member of D alone, added last
  insert into app.canvas_members (canvas_id, user_id, role, created_at)
  select v_d, u.id, 'editor'::app.member_role, now() - interval '3 hours' from auth.users u where u.email like 'shadow%@test.local'
  union all select v_d, tests.user_id('outside1'), 'viewer', now() - interval '1 minute';
end $$;
analyze app.canvas_members, app.workspace_members;  -- the planner reads them by index as it does at that size
create function pg_temp.member_rows_read(p_call text) returns bigint language plpgsql as $$
declare v_before bigint := pg_stat_get_xact_tuples_returned('app.canvas_members'::regclass)
                           + pg_stat_get_xact_tuples_returned('app.canvas_members_joined_idx'::regclass);
begin
  perform tests.authenticate_as('owner');
  execute 'select ' || p_call;
  perform tests.clear_authentication();
  return pg_stat_get_xact_tuples_returned('app.canvas_members'::regclass)
         + pg_stat_get_xact_tuples_returned('app.canvas_members_joined_idx'::regclass) - v_before;
end $$;
select cmp_ok(pg_temp.member_rows_read(format($$api.get_canvas_permissions(%L, null, 2)$$, pg_temp.id('d'))), '<=', 5::bigint,
              'A8: a page of 2 reads at most 5 of the canvas''s member rows, 2,000 of them members of the workspace too');
select is(pg_temp.pages('owner', $$api.get_canvas_permissions(pg_temp.id('d'), %L, %s)$$, 'users', 'user_id', 500) -> -1 -> 'next_cursor', 'null'::jsonb,
          '... pages of 500 reach the end (a page may hold fewer than limit: the rows it skipped count)');
select is((select count(distinct u) from jsonb_array_elements(pg_temp.pages('owner', $$api.get_canvas_permissions(pg_temp.id('d'), %L, %s)$$, 'users', 'user_id', 500)) p,
                  jsonb_array_elements_text(p -> 'ids') u),
          2002::bigint, '... each user once: the owner, the 2,000 members of both, outside1');

-- A4 and W8 read a page from an index in their order too: a page of a workspace of 2,000 canvases
-- reads a few canvas rows, not 2,000, and A4 of a user with one canvas reads a few, not every canvas
-- of the database (until 2026-12-07 every page read every canvas there, computing a role for each:
-- 30,000 canvases, 270,000 buffers and 300 to 420 ms a page).
insert into app.canvases (workspace_id, title, created_by, updated_at)
select pg_temp.id('x'), 'many ' || g, tests.user_id('owner'), now() - make_interval(secs => g) from generate_series(1, 2000) g;
analyze app.canvases;
create function pg_temp.canvas_rows_read(p_who text, p_call text) returns bigint language plpgsql as $$
declare v_before bigint := pg_stat_get_xact_tuples_returned('app.canvases'::regclass) + pg_stat_get_xact_tuples_fetched('app.canvases'::regclass);
begin
  perform tests.authenticate_as(p_who);
  execute 'select ' || p_call;
  perform tests.clear_authentication();
  return pg_stat_get_xact_tuples_returned('app.canvases'::regclass) + pg_stat_get_xact_tuples_fetched('app.canvases'::regclass) - v_before;
end $$;
select cmp_ok(pg_temp.canvas_rows_read('owner', format($$api.list_workspace_canvases(%L, null, 2)$$, pg_temp.id('x'))), '<=', 10::bigint,
              'W8: a page of 2 of a workspace of 2,000 canvases reads at most 10 canvas rows');
select cmp_ok(pg_temp.canvas_rows_read('owner', format($$api.list_workspace_canvases(%L, %L, 2)$$, pg_temp.id('x'),
                (select api.list_workspace_canvases(pg_temp.id('x'), null, 1000) ->> 'next_cursor' from tests.authenticate_as('owner')))), '<=', 10::bigint,
              '... so does a page after 1,000 of them');
select cmp_ok(pg_temp.canvas_rows_read('outside2', $$api.list_my_canvases(null, 2)$$), '<=', 10::bigint,
              'A4: a page of a user with two canvases (members of them alone) reads at most 10 canvas rows, 2,000 others in the database');
select is(jsonb_array_length(pg_temp.pages('owner', $$api.list_workspace_canvases(pg_temp.id('x'), %L, %s)$$, 'canvases', 'canvas_id', 500)), 5,
          'W8: 2,001 canvases in pages of 500: 5 pages');
select is((select count(distinct i) from jsonb_array_elements_text(pg_temp.all_ids(pg_temp.pages('owner', $$api.list_my_canvases(%L, %s)$$, 'canvases', 'canvas_id', 500))) i),
          (select count(*) from app.canvases c where c.deleted_at is null and internal.canvas_role(c.canvas_id, tests.user_id('owner')) is not null),
          'A4: every canvas of the owner once (C, D and the 2,000)');

-- A cursor of another list is a position in this one: W's members after it, never X's.
select is((select count(*) from jsonb_array_elements(pg_temp.value_as('m1', format($$api.list_workspace_members(%L, %L, 500)$$, pg_temp.id('w'),
             (select api.list_workspace_members(pg_temp.id('x'), null, 1) ->> 'next_cursor' from tests.authenticate_as('owner'))))
             -> 'members') m where (m ->> 'user_id')::uuid not in (select user_id from app.workspace_members where workspace_id = pg_temp.id('w'))),
          0::bigint, 'W4: a cursor of another workspace''s list pages this one: none of the other''s members');

select * from finish();
rollback;
