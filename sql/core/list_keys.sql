-- The paged lists and the keys they are read in.
--
-- Every list the API answers a page at a time (A4 and W8, internal.canvases_page; W1
-- api.list_my_workspaces; W4 api.list_workspace_members; W9 api.list_workspace_invites; A8
-- api.get_canvas_permissions) takes the same `cursor` and `limit` and answers the same
-- `next_cursor`:
--   - limit: 1 to 500, default 100 (internal.list_limit clamps what SQL callers send; HTTP refuses
--     others); a page of canvases also stops at about 4 MB, the others' rows are under 2 KB each;
--   - cursor: `<time in epoch microseconds>.<id>`, the key of the last row of the previous page
--     (internal.list_cursor), null for the first page; anything else, a 19-digit time included,
--     is invalid_input naming `cursor` (internal.list_start);
--   - next_cursor: null on the last page.
-- A page is the rows after the cursor's key in the list's order, read from an index in that order
-- (below), so a page reads at most limit + 1 rows however long the list is (A8: 2 * limit + 1, and
-- may hold fewer than limit: api.get_canvas_permissions). Each call checks the caller's access
-- again: a cursor grants nothing.
--
-- The keys are when the row was made and its id, which no update changes: a workspace renamed or a
-- member given another role while a client pages stays where it was, so it is neither skipped nor
-- sent twice; a row made meanwhile comes after every row there was (on the last page), and one
-- removed meanwhile is not sent if its page was not read yet. A4 and W8 are by last change
-- (updated_at), which moves: a canvas changed while a client pages comes again at the front.

-- A4, W8 and the others: the page size a caller asked for, clamped to 1..500 (default 100).
create or replace function internal.list_limit(p_limit integer) returns integer
language sql immutable as $$
  select least(greatest(coalesce(p_limit, 100), 1), 500)
$$;

-- The cursor after a row whose key is (p_time, p_id): `<p_time in epoch microseconds>.<p_id>`.
-- STABLE, as extract from a timestamptz is: declared IMMUTABLE, the planner would not inline it.
create or replace function internal.list_cursor(p_time timestamptz, p_id uuid) returns text
language sql stable as $$
  select (extract(epoch from p_time) * 1000000)::bigint::text || '.' || p_id::text
$$;

-- Where a page starts: the key a cursor of internal.list_cursor names, or for the first page (a
-- null cursor) a key before every row of the list's order: (-infinity, the nil uuid), or
-- (infinity, the nil uuid) for a list newest first (p_newest_first, A4 and W8: updated_at desc,
-- then canvas_id). Any other text is invalid_input naming cursor. The time has at most 18 digits,
-- which every bigint has and the cast cannot overflow; one past 2^53 microseconds of 1970 (year
-- 2255, or 1685 before it), which no row has and the interval arithmetic would round, is read as
-- infinity (-infinity): after (before) every row, as the number compares.
drop function if exists internal.read_list_cursor(text);  -- until 2026-12-07: this without the first page's key
create or replace function internal.list_start(p_cursor text, p_newest_first boolean default false, out o_time timestamptz, out o_id uuid)
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare v_micros bigint;
begin
  if p_cursor is null then
    o_time := case when p_newest_first then 'infinity'::timestamptz else '-infinity'::timestamptz end;
    o_id := '00000000-0000-0000-0000-000000000000';
    return;
  end if;
  if p_cursor !~ '^-?[0-9]{1,18}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    perform internal.raise_error('invalid_input', 'cursor is not one this endpoint returned', '{"field":"cursor"}');
  end if;
  v_micros := split_part(p_cursor, '.', 1)::bigint;
  o_time := case when abs(v_micros) < 9007199254740992 then timestamptz 'epoch' + v_micros * interval '1 microsecond'
                 when v_micros < 0 then '-infinity'::timestamptz else 'infinity'::timestamptz end;
  o_id := split_part(p_cursor, '.', 2)::uuid;
end $$;

-- The orders, one index each. On a large existing table each build holds off the table's writes
-- (memberships, invites) while it reads it: create it by hand first with CREATE INDEX
-- CONCURRENTLY and the same name, and this migration then skips it.
-- W4 and A8: a workspace's members by when they joined.
create index if not exists workspace_members_joined_idx on app.workspace_members (workspace_id, created_at, user_id);
-- W1: a user's workspaces by when they joined; it also serves what workspace_members_user_idx
-- (user_id) did (the user's memberships, the cascade of a user's deletion), so that one goes.
create index if not exists workspace_members_user_joined_idx on app.workspace_members (user_id, created_at, workspace_id);
drop index if exists app.workspace_members_user_idx;
-- W9: a workspace's invites, oldest first.
create index if not exists workspace_invites_workspace_created_idx on app.workspace_invites (workspace_id, created_at, invite_id);
-- A4 and W8: a workspace's live canvases by last change, newest first (internal.canvases_page); it
-- also serves what canvases_workspace_idx (workspace_id) did, so that one goes. Mutations do not
-- change updated_at (a rename, new settings or a deletion does), so their updates stay HOT.
create index if not exists canvases_workspace_updated_idx on app.canvases (workspace_id, updated_at desc, canvas_id) where deleted_at is null;
drop index if exists app.canvases_workspace_idx;
-- A8: a canvas's own members (without a workspace membership) by when they were added; rows of
-- before this column have the time it was added.
alter table app.canvas_members add column if not exists created_at timestamptz not null default now();
create index if not exists canvas_members_joined_idx on app.canvas_members (canvas_id, created_at, user_id);

comment on function internal.list_limit(integer) is
  'The page size of a paged list (A4, W8, W1, W4, W9, A8): p_limit clamped to 1..500, 100 when null.';
comment on function internal.list_cursor(timestamptz, uuid) is
  'The cursor of a paged list after the row with key (p_time, p_id): <p_time in epoch microseconds>.<p_id>.';
comment on function internal.list_start(text, boolean) is
  'The key (o_time, o_id) a page of a paged list starts after: the one a cursor of internal.list_cursor names; for null, a key before '
  'every row ((-infinity, nil uuid), or (infinity, nil uuid) when p_newest_first); invalid_input (field cursor) for any other text.';
