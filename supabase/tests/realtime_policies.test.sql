-- Realtime authorization, the Supabase way: a private channel `canvas:{id}` is authorized by
-- probing realtime.messages under RLS with `realtime.topic` set to the channel's topic.
-- select = may join (receive), insert = may send. Members pass; everyone else sees nothing and
-- sends nothing; only canvas topics exist.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(32);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;
create function pg_temp.topic(p_name text) returns text language sql stable as $$ select 'canvas:' || pg_temp.id(p_name) $$;
-- a probe row the way a client sends one: on the topic being authorized
create function pg_temp.send_sql(p_topic text, p_extension text default 'broadcast') returns text language sql immutable as $$
  select format($q$insert into realtime.messages (topic, extension, event, payload, private)
                   values (%L, %L, 'cursor', '{"x":1}', true)$q$, p_topic, p_extension)
$$;

-- Fixture: canvas C (owner + viewer), canvas D of an outsider; one block mutation on each
do $$
declare v_ws uuid; v_c uuid; v_d uuid; v_e uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'viewer', 'outsider']) n;
  perform tests.authenticate_as('owner');
  v_ws := api.create_workspace('Realtime') ->> 'workspace_id';
  perform api.set_workspace_member(v_ws, tests.user_id('viewer'), 'viewer');
  v_c := api.create_canvas(v_ws, 'C') ->> 'canvas_id';
  v_e := api.create_canvas(v_ws, 'E (to be deleted)') ->> 'canvas_id';
  perform api.upsert_block_atomic(v_c, null, 'create', 'rt-c', null, '{"type":"text","content":{"secret":"c"}}');
  perform api.upsert_block_atomic(v_e, null, 'create', 'rt-e', null, '{"type":"text"}');
  perform tests.authenticate_as('outsider');
  v_d := api.create_canvas((api.create_workspace('Elsewhere') ->> 'workspace_id')::uuid, 'D') ->> 'canvas_id';
  perform api.upsert_block_atomic(v_d, null, 'create', 'rt-d', null, '{"type":"text"}');
  perform tests.clear_authentication();
  insert into ids values ('c', v_c), ('d', v_d), ('e', v_e);
end $$;

select is((select count(*) from realtime.messages where topic = pg_temp.topic('c') and event = 'block_op'), 1::bigint,
          'the mutation on C wrote one block_op message to topic canvas:C');

-- ---------------------------------------------------------------------------------------------
-- Join (select): members of the canvas, on that canvas's topic only
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select is((select count(*) from realtime.messages), 0::bigint, 'without realtime.topic a member sees no message');
select set_config('realtime.topic', pg_temp.topic('c'), true);
select is((select count(*) from realtime.messages where event = 'block_op'), 1::bigint,
          'a member (viewer) with realtime.topic = canvas:C sees the block_op message');
select is((select string_agg(payload #>> '{block,content,secret}', ',') from realtime.messages where event = 'block_op'), 'c',
          '... with its payload');

select tests.authenticate_as('outsider');
select set_config('realtime.topic', pg_temp.topic('c'), true);
select is((select count(*) from realtime.messages), 0::bigint, 'a non-member with realtime.topic = canvas:C sees zero rows');
select set_config('realtime.topic', pg_temp.topic('d'), true);
select is((select count(*) from realtime.messages where topic = pg_temp.topic('d')), 1::bigint,
          'the outsider joining their own canvas D sees its message');
select is((select count(*) from realtime.messages where topic <> pg_temp.topic('d')), 0::bigint,
          '... and no message of any other topic (membership of one canvas exposes no other)');

select tests.authenticate_as('viewer', jsonb_build_object('scope', format('canvas:%s:read', pg_temp.id('d'))));
select set_config('realtime.topic', pg_temp.topic('c'), true);
select is((select count(*) from realtime.messages), 0::bigint, 'a member whose token is scoped to another canvas sees nothing');

select tests.authenticate_as('viewer', jsonb_build_object('scope', format('canvas:%s:read', pg_temp.id('c'))));
select set_config('realtime.topic', pg_temp.topic('c'), true);
select is((select count(*) from realtime.messages where event = 'block_op'), 1::bigint, 'a token scoped to canvas:C:read may join C');

select set_config('role', 'authenticated', true), set_config('request.jwt.claims', '', true);
select set_config('realtime.topic', pg_temp.topic('c'), true);
select is((select count(*) from realtime.messages), 0::bigint, 'the authenticated role without claims sees nothing');

select tests.clear_authentication();
select set_config('role', 'anon', true);
select throws_ok('select count(*) from realtime.messages', '42501', null, 'anon may not read realtime.messages at all');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Send (insert): members may broadcast cursors and presence on the canvas's topic
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select set_config('realtime.topic', pg_temp.topic('c'), true);
select lives_ok(pg_temp.send_sql(pg_temp.topic('c')), 'a member (even a viewer) may broadcast on canvas:C');
select lives_ok(pg_temp.send_sql(pg_temp.topic('c'), 'presence'), '... and send presence');
select throws_ok(pg_temp.send_sql(pg_temp.topic('c'), 'postgres_changes'), '42501', null,
                 '... but no other extension (block changes only come from the database)');
select throws_ok(pg_temp.send_sql(pg_temp.topic('d')), '42501', null,
                 'a member of C authorized for canvas:C may not write a message to canvas:D');
select set_config('realtime.topic', '', true);
select throws_ok(pg_temp.send_sql(pg_temp.topic('c')), '42501', null, 'without realtime.topic nothing may be sent');

select tests.authenticate_as('outsider');
select set_config('realtime.topic', pg_temp.topic('c'), true);
select throws_ok(pg_temp.send_sql(pg_temp.topic('c')), '42501', null, 'a non-member may not broadcast on canvas:C');
select throws_ok(pg_temp.send_sql(pg_temp.topic('c'), 'presence'), '42501', null, '... nor send presence there');
select set_config('realtime.topic', pg_temp.topic('d'), true);
select throws_ok(pg_temp.send_sql(pg_temp.topic('c')), '42501', null,
                 '... nor slip a message to canvas:C while authorized for their own canvas D');
select lives_ok(pg_temp.send_sql(pg_temp.topic('d')), 'the outsider may broadcast on their own canvas D');

-- ---------------------------------------------------------------------------------------------
-- Only canvas topics exist, and only live canvases
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
select set_config('realtime.topic', 'room:lobby', true);
select throws_ok(pg_temp.send_sql('room:lobby'), '42501', null, 'a topic that is not a canvas topic is denied (send)');
select is((select count(*) from realtime.messages), 0::bigint, '... and shows nothing (join)');
select set_config('realtime.topic', 'canvas:not-a-uuid', true);
select throws_ok(pg_temp.send_sql('canvas:not-a-uuid'), '42501', null, 'a canvas topic without a valid id is denied');
-- a topic is matched by its exact string everywhere (the gateway's rooms, access_changed on
-- canvas:{id}): another spelling of C's id would be a room that is never re-checked
select set_config('realtime.topic', 'canvas:' || upper(pg_temp.id('c')::text), true);
select is((select count(*) from realtime.messages), 0::bigint, 'canvas:C with its id in upper case is no canvas topic (join)');
select throws_ok(pg_temp.send_sql(current_setting('realtime.topic')), '42501', null, '... nor may a member send on it');
select set_config('realtime.topic', 'canvas:' || replace(pg_temp.id('c')::text, '-', '') || '----', true);
select is((select count(*) from realtime.messages), 0::bigint, 'nor is canvas:C with the dashes of its id moved (join)');
select set_config('realtime.topic', pg_temp.topic('c'), true);
select lives_ok(pg_temp.send_sql(pg_temp.topic('c')), 'the canonical spelling (lower case, 8-4-4-4-12) is C''s topic');
select set_config('realtime.topic', 'canvas:' || gen_random_uuid(), true);
select throws_ok(pg_temp.send_sql(current_setting('realtime.topic')), '42501', null, 'a topic of no canvas is denied');

-- a member writes only what a probe writes: not inserted_at (the partition; retention) nor id
select set_config('realtime.topic', pg_temp.topic('c'), true);
select throws_ok(format($q$insert into realtime.messages (topic, extension, event, payload, private, inserted_at)
                           values (%L, 'broadcast', 'cursor', '{}', true, now() + interval '100 years')$q$, pg_temp.topic('c')),
                 '42501', 'permission denied for table messages', 'a member cannot date a message (inserted_at picks its partition and its retention)');
select throws_ok(format($q$insert into realtime.messages (id, topic, extension, event, payload, private)
                           values (gen_random_uuid(), %L, 'broadcast', 'cursor', '{}', true)$q$, pg_temp.topic('c')),
                 '42501', 'permission denied for table messages', '... nor choose its id');

select set_config('realtime.topic', pg_temp.topic('e'), true);
select lives_ok(format('select api.delete_canvas(%L)', pg_temp.id('e')), 'the owner deletes canvas E');
select is((select count(*) from realtime.messages), 0::bigint,
          'once E is soft-deleted even its owner can no longer join canvas:E');

select * from finish();
rollback;
