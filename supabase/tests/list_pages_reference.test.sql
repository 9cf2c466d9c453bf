-- A4 api.list_my_canvases, W8 api.list_workspace_canvases (internal.canvases_page), A8
-- api.get_canvas_permissions, W1 api.list_my_workspaces, W4 api.list_workspace_members and W9
-- api.list_workspace_invites paged to the end against a reference written plainly here, on a
-- seeded random fixture: for several callers and page sizes 1, 2, 3 and 100, the concatenated pages
-- are exactly the rows the caller may see, in the list's order (sql/core/list_keys.sql), each once,
-- with the role of internal.canvas_role's rule (a canvas role replaces the workspace role on that
-- canvas, except that a workspace owner stays owner), no page longer than its limit.
-- The fixture of each of four seeds (deterministic ids and timestamps, setseed): 8 users, 4 workspaces where each user
-- is owner/admin/editor/viewer or not a member; 7 canvases each, some deleted, updated_at and
-- created_at on a few minutes only (ties, broken by id); canvas members who are and are not
-- members of the workspace, with higher and lower roles; a member removed from a workspace by W7
-- (their canvas roles there go with it) and one whose workspace row alone was deleted (their
-- canvas rows stay: a member of those canvases alone); 6 invites a workspace, made on 2 minutes only.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;

create temp table names (name text primary key, id uuid not null unique);
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from names where name = p_name $$;

-- The fixture of one seed.
create function pg_temp.build(p_seed double precision) returns void language plpgsql as $build$
declare
  v_base timestamptz := '2026-01-01 00:00:00+00';
  v_roles app.member_role[] := array['owner', 'admin', 'editor', 'viewer'];
  v_r double precision;
  v_removed uuid;
begin
  perform setseed(p_seed);
  insert into names select 'u' || i, md5('h208-u' || i)::uuid from generate_series(1, 8) i;
  insert into names select 'w' || i, md5('h208-w' || i)::uuid from generate_series(1, 4) i;
  insert into names select 'c' || i, md5('h208-c' || i)::uuid from generate_series(1, 28) i;
  insert into auth.users (id, email, email_confirmed_at) select id, name || '@test.local', now() from names where name like 'u%';
  insert into app.workspaces (workspace_id, name, created_by)
  select pg_temp.id('w' || i), 'W' || i, pg_temp.id('u' || i) from generate_series(1, 4) i;
  -- each user: the workspace's creator its owner; the others a random role or none (40%)
  for w in 1..4 loop
    for u in 1..8 loop
      v_r := random();
      if u = w or v_r < 0.6 then
        insert into app.workspace_members (workspace_id, user_id, role, created_at)
        values (pg_temp.id('w' || w), pg_temp.id('u' || u),
                case when u = w then 'owner' else v_roles[1 + floor(random() * 4)::int] end,
                v_base + floor(random() * 3) * interval '1 minute');
      end if;
    end loop;
  end loop;
  -- 7 canvases a workspace, updated on 4 minutes only, a fifth deleted
  insert into app.canvases (canvas_id, workspace_id, title, created_by, created_at, updated_at, deleted_at)
  select pg_temp.id('c' || i), pg_temp.id('w' || (1 + (i - 1) / 7)), 'C' || i, pg_temp.id('u' || (1 + (i - 1) / 7)),
         v_base + floor(random() * 2) * interval '1 minute', v_base + floor(random() * 4) * interval '1 minute',
         case when random() < 0.2 then v_base + interval '1 hour' end
  from generate_series(1, 28) i;
  -- canvas members: about a third of the pairs, any role but owner, added on 3 minutes only
  insert into app.canvas_members (canvas_id, user_id, role, created_at)
  select c.id, u.id, v_roles[2 + floor(random() * 3)::int], v_base + floor(random() * 3) * interval '1 minute'
  from names c, names u
  where c.name like 'c%' and u.name like 'u%' and random() < 0.35;
  -- invites: six a workspace, made on 2 minutes only (ties, broken by id)
  insert into app.workspace_invites (invite_id, workspace_id, email, role, invited_by, created_at)
  select md5('h213-i' || w || '-' || i)::uuid, pg_temp.id('w' || w), format('invitee%s-%s@test.local', w, i),
         v_roles[2 + floor(random() * 3)::int], pg_temp.id('u' || w), v_base + floor(random() * 2) * interval '1 minute'
  from generate_series(1, 4) w, generate_series(1, 6) i;

-- Removed from a workspace: by W7 (their canvas roles there go too), and by deleting the workspace
-- row alone (their canvas rows stay).
  create temp table removed as
  select (select m.user_id from app.workspace_members m where m.workspace_id = pg_temp.id('w1') and m.role <> 'owner'
            and exists (select from app.canvas_members cm join app.canvases c using (canvas_id)
                        where c.workspace_id = m.workspace_id and cm.user_id = m.user_id)
          order by m.user_id limit 1) as by_api,
         (select m.user_id from app.workspace_members m where m.workspace_id = pg_temp.id('w2') and m.role <> 'owner'
            and exists (select from app.canvas_members cm join app.canvases c using (canvas_id)
                        where c.workspace_id = m.workspace_id and c.deleted_at is null and cm.user_id = m.user_id)
          order by m.user_id limit 1) as by_row;
  v_removed := (select by_api from removed);
  perform tests.authenticate_as('u1');
  perform api.remove_workspace_member(md5('h208-w1')::uuid, v_removed);
  perform tests.clear_authentication();
  delete from app.workspace_members where workspace_id = pg_temp.id('w2') and user_id = (select by_row from removed);
end $build$;

-- The reference: a user's role on a live canvas, or none; the rule of internal.canvas_role
-- written out.
create function pg_temp.ref_role(p_canvas uuid, p_user uuid) returns text language sql stable as $$
  select case when wm.role = 'owner' then 'owner' else coalesce(cm.role, wm.role)::text end
  from app.canvases c
  left join app.workspace_members wm on wm.workspace_id = c.workspace_id and wm.user_id = p_user
  left join app.canvas_members cm on cm.canvas_id = c.canvas_id and cm.user_id = p_user
  where c.canvas_id = p_canvas and c.deleted_at is null and (wm.user_id is not null or cm.user_id is not null)
$$;

-- A4 and W8: [[canvas_id, role]] of the live canvases p_user has a role on (of p_workspace, or
-- all), the token's scope (an array of canvas ids, or null for none) allowing, newest change first,
-- then by id.
create function pg_temp.ref_canvases(p_user uuid, p_workspace uuid, p_scope uuid[]) returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(jsonb_build_array(c.canvas_id, pg_temp.ref_role(c.canvas_id, p_user)) order by c.updated_at desc, c.canvas_id), '[]')
  from app.canvases c
  where c.deleted_at is null and pg_temp.ref_role(c.canvas_id, p_user) is not null
    and (p_workspace is null or c.workspace_id = p_workspace)
    and (p_scope is null or c.canvas_id = any (p_scope))
$$;

-- A8: [[user_id, role]] of the workspace's members (by when they joined it) and the canvas's
-- members who are not members of the workspace (by when they were added to the canvas), merged by
-- that time, then by user id.
create function pg_temp.ref_permissions(p_canvas uuid) returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(jsonb_build_array(k.user_id, pg_temp.ref_role(p_canvas, k.user_id)) order by k.joined, k.user_id), '[]')
  from (select wm.user_id, wm.created_at as joined
        from app.workspace_members wm join app.canvases c on c.workspace_id = wm.workspace_id
        where c.canvas_id = p_canvas
        union all
        select cm.user_id, cm.created_at
        from app.canvas_members cm join app.canvases c on c.canvas_id = cm.canvas_id
        where cm.canvas_id = p_canvas
          and not exists (select from app.workspace_members wm where wm.workspace_id = c.workspace_id and wm.user_id = cm.user_id)) k
$$;

-- W1: [[workspace_id, role]] of p_user's workspaces, by when they joined, then by id.
create function pg_temp.ref_workspaces(p_user uuid) returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(jsonb_build_array(m.workspace_id, m.role) order by m.created_at, m.workspace_id), '[]')
  from app.workspace_members m where m.user_id = p_user
$$;

-- W4: [[user_id, role]] of a workspace's members, by when they joined, then by id.
create function pg_temp.ref_members(p_workspace uuid) returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(jsonb_build_array(m.user_id, m.role) order by m.created_at, m.user_id), '[]')
  from app.workspace_members m where m.workspace_id = p_workspace
$$;

-- W9: [[invite_id, role]] of a workspace's invites, oldest first, then by id.
create function pg_temp.ref_invites(p_workspace uuid) returns jsonb language sql stable as $$
  select coalesce(jsonb_agg(jsonb_build_array(i.invite_id, i.role) order by i.created_at, i.invite_id), '[]')
  from app.workspace_invites i where i.workspace_id = p_workspace
$$;

-- Every page of one list as p_user (with p_claims), to the end: [[id, role]] concatenated; a page
-- longer than p_limit, more than 500 pages, or (A8) a caller's role that is not theirs adds an entry
-- saying so.
create function pg_temp.paged(p_user uuid, p_kind text, p_arg uuid, p_limit integer, p_claims jsonb) returns jsonb language plpgsql as $$
declare v_page jsonb; v_cursor text; v_rows jsonb := '[]'; v_list text; v_id text; v_pages integer := 0;
  v_role text := case when p_kind = 'A8' then pg_temp.ref_role(p_arg, p_user) end;
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims', (jsonb_build_object('sub', p_user, 'role', 'authenticated') || p_claims)::text, true);
  -- as the server's transactions (tests.authenticate_as): every page counted by its handler, not here
  perform set_config('potentia.endpoint_limits', 'server', true);
  loop
    v_pages := v_pages + 1;
    if v_pages > 500 then
      v_rows := v_rows || jsonb_build_array('more than 500 pages');
      exit;
    end if;
    case p_kind
      when 'A4' then v_page := api.list_my_canvases(v_cursor, p_limit); v_list := 'canvases'; v_id := 'canvas_id';
      when 'W8' then v_page := api.list_workspace_canvases(p_arg, v_cursor, p_limit); v_list := 'canvases'; v_id := 'canvas_id';
      when 'W1' then v_page := api.list_my_workspaces(v_cursor, p_limit); v_list := 'workspaces'; v_id := 'workspace_id';
      when 'W4' then v_page := api.list_workspace_members(p_arg, v_cursor, p_limit); v_list := 'members'; v_id := 'user_id';
      when 'W9' then v_page := api.list_workspace_invites(p_arg, v_cursor, p_limit); v_list := 'invites'; v_id := 'invite_id';
      else v_page := api.get_canvas_permissions(p_arg, v_cursor, p_limit); v_list := 'users'; v_id := 'user_id';
    end case;
    if p_kind = 'A8' and v_page ->> 'role' is distinct from v_role then
      v_rows := v_rows || jsonb_build_array(format('the caller''s role %s', v_page ->> 'role'));
    end if;
    if jsonb_array_length(v_page -> v_list) > p_limit then
      v_rows := v_rows || jsonb_build_array(format('a page of %s rows', jsonb_array_length(v_page -> v_list)));
    end if;
    v_rows := v_rows || coalesce((select jsonb_agg(jsonb_build_array(e -> v_id, e -> 'role') order by n)
                                  from jsonb_array_elements(v_page -> v_list) with ordinality x(e, n)), '[]');
    v_cursor := v_page ->> 'next_cursor';
    exit when v_cursor is null;
  end loop;
  perform tests.clear_authentication();
  return v_rows;
end $$;

-- The cases: A4 of every user (and of u1 with a token scoped to three canvases), W8 of every
-- member of each workspace, A8 of every live canvas as every user with a role on it, W1 of every
-- user, W4 of each workspace as each member, W9 of each workspace as each owner and admin; each at
-- page sizes 1, 2, 3 and 100.
create temp table seed (seed double precision);
create temp view cases as
  select format('seed %s: A4 of %s, limit %s', (select seed from seed), u.name, l) as what, u.id as who, 'A4' as kind, null::uuid as arg, l as lim,
         '{}'::jsonb as claims, pg_temp.ref_canvases(u.id, null, null) as want
  from names u, unnest(array[1, 2, 3, 100]) l where u.name like 'u%'
  union all
  select format('seed %s: A4 of u1 with a token scoped to c1, c9, c10, limit %s', (select seed from seed), l), pg_temp.id('u1'), 'A4', null, l,
         jsonb_build_object('scope', jsonb_build_array(format('canvas:%s:read', pg_temp.id('c1')), format('canvas:%s:write', pg_temp.id('c9')),
                                                       format('canvas:%s:read', pg_temp.id('c10')))),
         pg_temp.ref_canvases(pg_temp.id('u1'), null, array[pg_temp.id('c1'), pg_temp.id('c9'), pg_temp.id('c10')])
  from unnest(array[1, 2, 3, 100]) l
  union all
  select format('seed %s: W8 of %s as %s, limit %s', (select seed from seed), w.name, u.name, l), u.id, 'W8', w.id, l, '{}', pg_temp.ref_canvases(u.id, w.id, null)
  from names w join app.workspace_members m on m.workspace_id = w.id join names u on u.id = m.user_id, unnest(array[1, 2, 3, 100]) l
  union all
  select format('seed %s: A8 of %s as %s, limit %s', (select seed from seed), c.name, u.name, l), u.id, 'A8', c.id, l, '{}', pg_temp.ref_permissions(c.id)
  from names c, names u, unnest(array[1, 2, 3, 100]) l
  where c.name like 'c%' and u.name like 'u%' and pg_temp.ref_role(c.id, u.id) is not null
  union all
  select format('seed %s: W1 of %s, limit %s', (select seed from seed), u.name, l), u.id, 'W1', null, l, '{}', pg_temp.ref_workspaces(u.id)
  from names u, unnest(array[1, 2, 3, 100]) l where u.name like 'u%'
  union all
  select format('seed %s: W4 of %s as %s, limit %s', (select seed from seed), w.name, u.name, l), u.id, 'W4', w.id, l, '{}', pg_temp.ref_members(w.id)
  from names w join app.workspace_members m on m.workspace_id = w.id join names u on u.id = m.user_id, unnest(array[1, 2, 3, 100]) l
  union all
  select format('seed %s: W9 of %s as %s, limit %s', (select seed from seed), w.name, u.name, l), u.id, 'W9', w.id, l, '{}', pg_temp.ref_invites(w.id)
  from names w join app.workspace_members m on m.workspace_id = w.id and m.role in ('owner', 'admin') join names u on u.id = m.user_id,
       unnest(array[1, 2, 3, 100]) l;


-- The fixture holds what the lists must get right.
create function pg_temp.checks() returns setof text language plpgsql as $$
begin
  return next ok(exists (select from app.canvas_members cm join app.canvases c using (canvas_id) where c.deleted_at is null
                    and not exists (select from app.workspace_members m where m.workspace_id = c.workspace_id and m.user_id = cm.user_id)),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a member of a live canvas alone');
  return next ok(exists (select from app.canvas_members cm join app.canvases c using (canvas_id)
                    join app.workspace_members m on m.workspace_id = c.workspace_id and m.user_id = cm.user_id
                    where c.deleted_at is null and m.role <> 'owner' and cm.role < m.role),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a canvas role above the workspace role');
  return next ok(exists (select from app.canvas_members cm join app.canvases c using (canvas_id)
                    join app.workspace_members m on m.workspace_id = c.workspace_id and m.user_id = cm.user_id
                    where c.deleted_at is null and cm.role > m.role),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a canvas role below the workspace role (an owner''s among them or not)');
  return next ok(exists (select from app.canvas_members cm join app.canvases c using (canvas_id) where c.deleted_at is not null),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a deleted canvas with members');
  return next ok(exists (select from app.canvases a join app.canvases b on b.workspace_id = a.workspace_id and b.updated_at = a.updated_at
                    and b.canvas_id > a.canvas_id where a.deleted_at is null and b.deleted_at is null),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: two live canvases of a workspace changed at the same time');
  return next ok(exists (select from app.workspace_members a join app.workspace_members b on b.workspace_id = a.workspace_id
                    and b.created_at = a.created_at and b.user_id > a.user_id),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: two members of a workspace who joined at the same time');
  return next ok(exists (select from app.workspace_members a join app.workspace_members b on b.user_id = a.user_id
                    and b.created_at = a.created_at and b.workspace_id > a.workspace_id),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a user who joined two workspaces at the same time');
  return next ok(exists (select from app.workspace_invites a join app.workspace_invites b on b.workspace_id = a.workspace_id
                    and b.created_at = a.created_at and b.invite_id > a.invite_id),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: two invites of a workspace made at the same time');
  return next ok(exists (select from app.canvas_members cm join app.canvases c using (canvas_id)
                    join app.workspace_members m on m.workspace_id = c.workspace_id
                    where cm.created_at = m.created_at and c.deleted_at is null
                      and not exists (select from app.workspace_members x where x.workspace_id = c.workspace_id and x.user_id = cm.user_id)),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a canvas''s own member added when a workspace member joined');
  return next ok(not exists (select from app.workspace_members m, removed r where m.workspace_id = pg_temp.id('w1') and m.user_id = r.by_api)
            and not exists (select from app.canvas_members cm join app.canvases c using (canvas_id), removed r
                            where c.workspace_id = pg_temp.id('w1') and cm.user_id = r.by_api),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a member removed from W1 by W7, with their canvas roles there');
  return next ok(exists (select from app.canvas_members cm join app.canvases c using (canvas_id), removed r
                    where c.workspace_id = pg_temp.id('w2') and c.deleted_at is null and cm.user_id = r.by_row),
            (select 'seed ' || seed || ': ' from seed) || 'fixture: a member removed from W2 whose canvas rows there stay');
end $$;

-- Each seed's fixture, checked and paged, then rolled back.
create function pg_temp.run(p_seed double precision) returns setof text language plpgsql as $$
begin
  -- the previous seed's fixture goes (its users' memberships and its workspaces' canvases with them)
  delete from app.workspaces where workspace_id in (select id from names);
  delete from auth.users where id in (select id from names);
  delete from names;
  delete from seed;
  drop table if exists removed;
  insert into seed values (p_seed);
  perform pg_temp.build(p_seed);
  return query select pg_temp.checks();
  return query select is(pg_temp.paged(who, kind, arg, lim, claims), want, what) from cases order by kind, what;
end $$;

select * from no_plan();
select pg_temp.run(s) from unnest(array[0.208, 0.1, 0.6, 0.9]) s;

select * from finish();
rollback;
