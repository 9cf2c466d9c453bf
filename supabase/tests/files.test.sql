-- Files (sql/files/, docs/files.md): who may create, read and complete files of a canvas (RLS and
-- the api functions), the limits of app.settings, the status transitions pending -> ready ->
-- deleted, file blocks (content.file_id) and the cleanup job's database half.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(119);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;

-- ---------------------------------------------------------------------------------------------
-- Fixture: workspace W of `owner` with an editor and a viewer, canvases c1 and c2; `outsider`
-- owns workspace O with canvas o1.
-- ---------------------------------------------------------------------------------------------
do $$
declare v_w uuid; v_o uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'editor', 'viewer', 'outsider']) n;
  perform tests.authenticate_as('owner');
  v_w := api.create_workspace('Files') ->> 'workspace_id';
  perform api.set_workspace_member(v_w, tests.user_id('editor'), 'editor');
  perform api.set_workspace_member(v_w, tests.user_id('viewer'), 'viewer');
  insert into ids values ('c1', (api.create_canvas(v_w, 'c1') ->> 'canvas_id')::uuid),
                         ('c2', (api.create_canvas(v_w, 'c2') ->> 'canvas_id')::uuid);
  perform tests.authenticate_as('outsider');
  v_o := api.create_workspace('Other') ->> 'workspace_id';
  insert into ids values ('o1', (api.create_canvas(v_o, 'o1') ->> 'canvas_id')::uuid);
  perform tests.clear_authentication();
end $$;

-- The server completing an upload for `p_name` (internal.complete_file is service_role's).
create function pg_temp.as_server(p_name text) returns void language plpgsql as $$
begin
  perform set_config('role', 'service_role', true);
  perform set_config('request.jwt.claims', jsonb_build_object('sub', tests.user_id(p_name), 'role', 'service_role')::text, true);
end $$;

-- A pending upload by the editor on canvas p_canvas; returns its id.
create function pg_temp.upload(p_name text, p_canvas uuid, p_size bigint, p_checksum text default null, p_type text default 'image/png')
returns uuid language plpgsql as $$
declare v_id uuid;
begin
  perform tests.authenticate_as('editor');
  v_id := (api.create_file(p_canvas, p_name, p_type, p_size, p_checksum) #>> '{file,file_id}')::uuid;
  perform tests.clear_authentication();
  insert into ids values (p_name, v_id);
  return v_id;
end $$;

-- A hex MD5 as S3 sends it in an ETag (quoted), and the same digest base64 as Content-MD5.
create function pg_temp.etag(p_bytes text) returns text language sql immutable as $$ select '"' || md5(p_bytes) || '"' $$;
create function pg_temp.content_md5(p_bytes text) returns text language sql immutable as $$
  select encode(decode(md5(p_bytes), 'hex'), 'base64') $$;

-- ---------------------------------------------------------------------------------------------
-- Creating an upload: editors and above; the row is pending, its key derived from canvas and file
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('editor');
create temp table created as
  select api.create_file(pg_temp.id('c1'), ' photo.png ', 'IMAGE/PNG', 1234, pg_temp.content_md5('photo')) as r;
select tests.clear_authentication();
insert into ids select 'photo', (r #>> '{file,file_id}')::uuid from created;

select is((select r #>> '{file,status}' from created), 'pending', 'create_file: the file is pending');
select is((select r #>> '{file,filename}' from created), 'photo.png', '... its filename trimmed');
select is((select r #>> '{file,content_type}' from created), 'image/png', '... its content type lower-cased');
select is((select (r #>> '{file,size_bytes}')::bigint from created), 1234::bigint, '... its declared size');
select is((select r #>> '{file,checksum}' from created), pg_temp.content_md5('photo'), '... its declared checksum (base64 MD5)');
select is((select (r #>> '{file,uploaded_by}')::uuid from created), tests.user_id('editor'), '... uploaded by the editor');
select is((select r ->> 'object_key' from created), format('canvas/%s/%s', pg_temp.id('c1'), pg_temp.id('photo')),
          '... its object key canvas/<canvas_id>/<file_id> (the filename is never part of it)');
select is((select (r ->> 'upload_url_seconds')::int from created), 900, '... the PUT URL lasts file_upload_url_seconds');
select ok((select r #> '{file}' ? 'object_key' from created) is false, '... the file itself does not show the key');
select is((select count(*) from app.system_audit where action = 'file.create' and entity_id = pg_temp.id('photo')::text), 1::bigint,
          '... audited file.create');

select tests.authenticate_as('owner');
select is(api.create_file(pg_temp.id('c1'), 'o.pdf', 'application/pdf', 1) #>> '{file,status}', 'pending', 'an owner creates uploads');
select tests.authenticate_as('viewer');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 1)', pg_temp.id('c1'), 'v.png', 'image/png')) ->> 'state',
          'PX403', 'a viewer may not upload: forbidden');
select tests.authenticate_as('outsider');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 1)', pg_temp.id('c1'), 'x.png', 'image/png')) ->> 'state',
          'PX404', 'an outsider learns nothing: not_found');
select tests.authenticate_as('editor', jsonb_build_object('scope', format('canvas:%s:read', pg_temp.id('c1'))));
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 1)', pg_temp.id('c1'), 'r.png', 'image/png')) ->> 'state',
          'PX403', 'an editor with a read-only token may not upload: forbidden');
select tests.clear_authentication();
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 1)', pg_temp.id('c1'), 'n.png', 'image/png')) ->> 'state',
          'PX401', 'no user: unauthorized');

-- ---------------------------------------------------------------------------------------------
-- Limits (app.settings max_file_bytes, allowed_file_types) and input
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('editor');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 52428801)', pg_temp.id('c1'), 'big.png', 'image/png')),
          '{"state": "PX413", "code": "payload_too_large", "field": "size_bytes", "limit": 52428800}', 'one byte over max_file_bytes (50 MiB): payload_too_large with the limit');
select is(api.create_file(pg_temp.id('c1'), 'max.png', 'image/png', 52428800) #>> '{file,status}', 'pending', 'exactly max_file_bytes is allowed');
select is(api.create_file(pg_temp.id('c1'), 'empty.txt', 'text/plain', 0) #>> '{file,status}', 'pending', 'an empty file is allowed');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, -1)', pg_temp.id('c1'), 'neg.png', 'image/png')),
          '{"state": "PX400", "code": "invalid_input", "field": "size_bytes"}', 'a negative size: invalid_input size_bytes');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'page.html', 'text/html')),
          '{"state": "PX400", "code": "invalid_input", "field": "content_type"}', 'text/html is not allowed: invalid_input content_type');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'logo.svg', 'image/svg+xml')),
          '{"state": "PX400", "code": "invalid_input", "field": "content_type"}', 'image/svg+xml is not allowed (it runs script)');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'a.txt', 'text/plain; charset=utf-8')),
          '{"state": "PX400", "code": "invalid_input", "field": "content_type"}', 'a content type with parameters: invalid_input content_type');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), '../etc/passwd', 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', 'a filename with a slash: invalid_input filename');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), n, 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', format('a filename that names a directory or nothing where it is saved (%s): invalid_input filename', n))
  from unnest(array['.', '..', '...', ' .. ', '. .', chr(x'2024'::int) || chr(x'2024'::int), chr(x'FF0E'::int), '.' || chr(x'3000'::int) || '.']) n;
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), n, 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', format('a filename with a slash or backslash in compatibility form (%s): invalid_input filename', n))
  from unnest(array['..' || chr(x'FF0F'::int) || 'etc', 'a' || chr(x'FF3C'::int) || 'b', 'a' || chr(x'FE68'::int) || 'b']) n;
select is(api.create_file(pg_temp.id('c1'), n, 'text/plain', 10) #>> '{file,filename}', n,
          format('dots in a name stay allowed (%s)', n))
  from unnest(array['.env', '..notes.txt', 'a..b', 'v1.2.', 'a ' || chr(x'2215'::int) || ' b']) n;
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), '   ', 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', 'a blank filename: invalid_input filename');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'invoice' || chr(x'202E'::int) || 'fdp.exe', 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', 'a filename with a right-to-left override (it would read as invoiceexe.pdf): invalid_input filename');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'a' || chr(x'200B'::int) || '.txt', 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', '... a zero-width space too');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'line' || chr(x'2028'::int) || '.txt', 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', '... and a line separator');
select is(api.create_file(pg_temp.id('c1'), 'Grüße 日本 😀 ﬁle.txt', 'text/plain', 10) #>> '{file,filename}', 'Grüße 日本 😀 ﬁle.txt',
          'letters of any script and emoji stay allowed');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'invoice' || chr(x'3164'::int) || '.exe', 'text/plain')),
          '{"state": "PX400", "code": "invalid_input", "field": "filename"}', '... not a blank-looking filler (Hangul U+3164)');
select is(api.create_file(pg_temp.id('c1'), 'family 👨‍👩‍👧 نامه‌ها.txt', 'text/plain', 10) #>> '{file,filename}', 'family 👨‍👩‍👧 نامه‌ها.txt',
          'the joiners stay allowed: emoji sequences (U+200D) and Persian words (U+200C)');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10, %L)', pg_temp.id('c1'), 'a.txt', 'text/plain', md5('x'))),
          '{"state": "PX400", "code": "invalid_input", "field": "checksum"}', 'a hex MD5 as checksum: invalid_input (base64, as Content-MD5)');
select tests.clear_authentication();
update app.settings set value = '100' where key = 'max_file_bytes';
update app.settings set value = '["image/*", "text/plain"]' where key = 'allowed_file_types';
select tests.authenticate_as('editor');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 101)', pg_temp.id('c1'), 'b.txt', 'text/plain')),
          '{"state": "PX413", "code": "payload_too_large", "field": "size_bytes", "limit": 100}', 'max_file_bytes is read from app.settings at each call');
select is(api.create_file(pg_temp.id('c1'), 'pic.tiff', 'image/tiff', 100) #>> '{file,content_type}', 'image/tiff',
          'allowed_file_types "image/*" allows every image type');
select is(tests.error_of(format('select api.create_file(%L, %L, %L, 10)', pg_temp.id('c1'), 'd.pdf', 'application/pdf')) ->> 'state',
          'PX400', '... and only what it lists');
select tests.clear_authentication();
update app.settings set value = '52428800' where key = 'max_file_bytes';
update app.settings set value = '["image/png", "application/pdf", "text/plain"]' where key = 'allowed_file_types';

-- ---------------------------------------------------------------------------------------------
-- Reading: RLS on app.files and api.get_file give members (viewers too) the canvas's files
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('editor');
select is((select status from app.files where file_id = pg_temp.id('photo')), 'pending', 'RLS: the editor reads the pending file');
select tests.authenticate_as('viewer');
select is((select status from app.files where file_id = pg_temp.id('photo')), 'pending', 'RLS: a viewer reads it too');
select is(api.get_file(pg_temp.id('c1'), pg_temp.id('photo')) #>> '{file,file_id}', pg_temp.id('photo')::text,
          'get_file: a viewer gets it');
select is((api.get_file(pg_temp.id('c1'), pg_temp.id('photo')) ->> 'download_url_seconds')::int, 300,
          '... with the GET URL lifetime file_download_url_seconds');
select is(tests.error_of(format('select api.get_file(%L, %L)', pg_temp.id('c2'), pg_temp.id('photo'))),
          '{"state": "PX404", "code": "not_found", "field": "file_id"}', 'get_file through another canvas of the workspace: not_found');
select tests.authenticate_as('viewer', jsonb_build_object('scope', format('canvas:%s:read', pg_temp.id('c2'))));
select is((select count(*) from app.files where file_id = pg_temp.id('photo')), 0::bigint,
          'RLS: a token scoped to another canvas reads nothing of c1');
select tests.authenticate_as('outsider');
select is((select count(*) from app.files), 0::bigint, 'RLS: the outsider sees no file at all');
select is(tests.error_of(format('select api.get_file(%L, %L)', pg_temp.id('c1'), pg_temp.id('photo'))) ->> 'state', 'PX404',
          'get_file: the outsider gets not_found');
select is(tests.error_of(format('select api.get_file(%L, %L)', pg_temp.id('o1'), pg_temp.id('photo'))) ->> 'state', 'PX404',
          '... also through a canvas of their own');
select is(tests.error_of('update app.files set status = ''ready''') ->> 'state', '42501', 'no direct writes: update is denied');
select is(tests.error_of(format('insert into app.files (canvas_id, object_key, filename, content_type, size_bytes) values (%L, %L, %L, %L, 1)',
            pg_temp.id('o1'), 'k', 'f', 'image/png')) ->> 'state', '42501', '... and insert too');
select tests.authenticate_as('editor');
select is(tests.error_of(format('select internal.complete_file(%L, %L, 1234, %L)', pg_temp.id('c1'), pg_temp.id('photo'), pg_temp.etag('photo'))) ->> 'state',
          '42501', 'complete_file is not callable by users (its evidence is the server''s HEAD): denied');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Completion (as the server, after its HEAD): refusals change nothing; pending -> ready once
-- ---------------------------------------------------------------------------------------------
select pg_temp.as_server('viewer');
select is(tests.error_of(format('select internal.complete_file(%L, %L, 1234, %L)', pg_temp.id('c1'), pg_temp.id('photo'), pg_temp.etag('photo'))) ->> 'state',
          'PX403', 'completing for a viewer: forbidden');
select pg_temp.as_server('outsider');
select is(tests.error_of(format('select internal.complete_file(%L, %L, 1234, %L)', pg_temp.id('c1'), pg_temp.id('photo'), pg_temp.etag('photo'))) ->> 'state',
          'PX404', 'completing for an outsider: not_found');
select pg_temp.as_server('editor');
select is(tests.error_of(format('select internal.complete_file(%L, %L, null, null)', pg_temp.id('c1'), pg_temp.id('photo'))),
          '{"state": "PX409", "code": "conflict", "reason": "not_uploaded"}', 'no object yet: conflict not_uploaded');
select is(tests.error_of(format('select internal.complete_file(%L, %L, 1233, %L)', pg_temp.id('c1'), pg_temp.id('photo'), pg_temp.etag('photo'))),
          '{"state": "PX409", "code": "conflict", "reason": "size_mismatch", "expected": 1234, "actual": 1233}', 'a wrong size: conflict size_mismatch');
select is(tests.error_of(format('select internal.complete_file(%L, %L, 1234, %L)', pg_temp.id('c1'), pg_temp.id('photo'), pg_temp.etag('other'))),
          jsonb_build_object('state', 'PX409', 'code', 'conflict', 'reason', 'checksum_mismatch', 'expected', pg_temp.content_md5('photo'),
                             'actual', pg_temp.content_md5('other')), 'other bytes: conflict checksum_mismatch');
select tests.clear_authentication();
select is((select status from app.files where file_id = pg_temp.id('photo')), 'pending', '... after which the file is still pending');

-- the removal of refused bytes (functions/files.ts, after a refusal): one claim at a time, held by
-- the completion that removes them outside any transaction, released only by it, lapsing after 60 s
select tests.authenticate_as('editor');
select is(tests.error_of(format('select internal.claim_file_removal(%L)', pg_temp.id('photo'))) ->> 'state', '42501',
          'claim_file_removal is not callable by users: denied');
select tests.clear_authentication();
select pg_temp.as_server('editor');
select isnt(internal.claim_file_removal(pg_temp.id('photo')), null, 'a refusal claims the removal of the pending file''s object');
select is(internal.claim_file_removal(pg_temp.id('photo')), null, '... and while that claim is held, another refusal gets none (it removes nothing)');
select tests.clear_authentication();
select is(internal.release_file_removal(pg_temp.id('photo'), now() - interval '1 hour'), false, 'a claim other than the one held releases nothing');
select ok(internal.release_file_removal(pg_temp.id('photo'), (select removal_claimed_at from app.files where file_id = pg_temp.id('photo'))),
          'the held claim is released by its holder');
select isnt(internal.claim_file_removal(pg_temp.id('photo')), null, '... after which the removal can be claimed again');
update app.files set removal_claimed_at = removal_claimed_at - interval '61 seconds' where file_id = pg_temp.id('photo');
select isnt(internal.claim_file_removal(pg_temp.id('photo')), null, 'a claim older than 60 s (its holder gone) has lapsed: taken over');
select ok(internal.release_file_removal(pg_temp.id('photo'), (select removal_claimed_at from app.files where file_id = pg_temp.id('photo'))),
          '... and released by the completion that took it over');
select pg_temp.as_server('editor');
select is(internal.complete_file(pg_temp.id('c1'), pg_temp.id('photo'), 1234, pg_temp.etag('photo')) #>> '{file,status}', 'ready',
          'the declared size and MD5: ready');
select tests.clear_authentication();
select is(internal.claim_file_removal(pg_temp.id('photo')), null, 'a ready file''s object is never claimed for removal');
select isnt((select completed_at from app.files where file_id = pg_temp.id('photo')), null, '... completed_at set');
select is((select count(*) from app.system_audit where action = 'file.complete' and entity_id = pg_temp.id('photo')::text), 1::bigint,
          '... audited file.complete');
select pg_temp.as_server('owner');
select is(internal.complete_file(pg_temp.id('c1'), pg_temp.id('photo'), 0, null) #>> '{file,status}', 'ready',
          'completing a ready file again answers it as it is (idempotent)');
select tests.clear_authentication();
select is((select count(*) from app.system_audit where action = 'file.complete' and entity_id = pg_temp.id('photo')::text), 1::bigint,
          '... and changes nothing');

do $$ begin perform pg_temp.upload('plain.txt', pg_temp.id('c1'), 5, null, 'text/plain'); end $$;
select pg_temp.as_server('editor');
select is(internal.complete_file(pg_temp.id('c1'), pg_temp.id('plain.txt'), 5, pg_temp.etag('hello')) #>> '{file,checksum}',
          pg_temp.content_md5('hello'), 'no declared checksum: the ETag''s MD5 is kept');
do $$ begin perform pg_temp.upload('multipart.bin', pg_temp.id('c1'), 7, pg_temp.content_md5('seven b'), 'application/pdf'); end $$;
select pg_temp.as_server('editor');
select is(internal.complete_file(pg_temp.id('c1'), pg_temp.id('multipart.bin'), 7, '"0123456789abcdef0123456789abcdef-2"') #>> '{file,checksum}',
          pg_temp.content_md5('seven b'), 'an ETag that is no MD5 (multipart) is not compared; the declared checksum stays');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- File blocks: content.file_id must name a ready file of the block's canvas
-- ---------------------------------------------------------------------------------------------
do $$ begin perform pg_temp.upload('pending.png', pg_temp.id('c1'), 3); end $$;
do $$ begin perform pg_temp.upload('elsewhere.png', pg_temp.id('c2'), 3); end $$;
do $$ begin
  perform pg_temp.as_server('editor');
  perform internal.complete_file(pg_temp.id('c2'), pg_temp.id('elsewhere.png'), 3, null);
end $$;
select tests.authenticate_as('editor');
create temp table blocks as select api.upsert_block_atomic(pg_temp.id('c1'), null, 'create', 'file-block-1', null,
  jsonb_build_object('type', 'file', 'content', jsonb_build_object('file_id', pg_temp.id('photo'), 'caption', 'a photo'))) as r;
select is((select r ->> 'status' from blocks), 'success', 'a block referring to a ready file of its canvas is created');
select is((select r #>> '{block,content,file_id}' from blocks), pg_temp.id('photo')::text, '... its content.file_id is the file''s id');
select is((select api.upsert_block_atomic(pg_temp.id('c1'), null, 'create', 'file-block-pending', null,
            jsonb_build_object('type', 'file', 'content', jsonb_build_object('file_id', pg_temp.id('pending.png')))) #>> '{error,field}'),
          'patch.content.file_id', 'a pending file: the mutation fails, invalid_input patch.content.file_id');
select is((select api.upsert_block_atomic(pg_temp.id('c1'), null, 'create', 'file-block-elsewhere', null,
            jsonb_build_object('type', 'file', 'content', jsonb_build_object('file_id', pg_temp.id('elsewhere.png')))) #>> '{error,code}'),
          'invalid_input', 'a ready file of another canvas: invalid_input');
select is((select api.upsert_block_atomic(pg_temp.id('c1'), null, 'create', 'file-block-upper', null,
            jsonb_build_object('type', 'file', 'content', jsonb_build_object('file_id', upper(pg_temp.id('photo')::text)))) #>> '{error,code}'),
          'invalid_input', 'the id in upper case: invalid_input (one spelling, so references are found again)');
select is((select api.upsert_block_atomic(pg_temp.id('c1'), null, 'create', 'file-block-2', null,
            jsonb_build_object('type', 'file', 'content', jsonb_build_object('file_id', pg_temp.id('photo')))) ->> 'status'),
          'success', 'a second block may refer to the same file');
select is((select api.upsert_block_atomic(pg_temp.id('c1'), (r ->> 'block_id')::uuid, 'update', 'file-block-1-caption', 1,
            '{"content": {"caption": "renamed"}}') ->> 'status' from blocks), 'success',
          'editing a file block''s other content keeps its file');
select is((select api.upsert_block_atomic(pg_temp.id('c1'), (r ->> 'block_id')::uuid, 'delete', 'file-block-1-delete', 2, '{}') ->> 'status'
           from blocks), 'success', 'the first block is deleted');
select tests.clear_authentication();
select is((select status from app.files where file_id = pg_temp.id('photo')), 'ready', '... the file stays: another block refers to it');
select tests.authenticate_as('editor');
select is(api.upsert_block_atomic(pg_temp.id('c1'), (select block_id from app.blocks where content ->> 'file_id' = pg_temp.id('photo')::text),
            'delete', 'file-block-2-delete', 1, '{}') ->> 'status', 'success', 'the last block referring to it is deleted');
select tests.clear_authentication();
select is((select status from app.files where file_id = pg_temp.id('photo')), 'deleted', '... and the file is deleted with it');
select isnt((select deleted_at from app.files where file_id = pg_temp.id('photo')), null, '... deleted_at set, not purged yet');
select tests.authenticate_as('viewer');
select is(tests.error_of(format('select api.get_file(%L, %L)', pg_temp.id('c1'), pg_temp.id('photo'))) ->> 'state', 'PX404',
          'a deleted file: get_file not_found (no more download URLs)');
select is((select count(*) from app.files where file_id = pg_temp.id('photo')), 0::bigint, 'RLS: members no longer see it');
select pg_temp.as_server('editor');
select is(tests.error_of(format('select internal.complete_file(%L, %L, 1234, null)', pg_temp.id('c1'), pg_temp.id('photo'))) ->> 'state',
          'PX404', 'a deleted file cannot be completed again: not_found');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- The cleanup job's database half: abandoned uploads, orphans, purged canvases
-- ---------------------------------------------------------------------------------------------
-- a referenced old file stays; an unreferenced old one goes; a fresh pending upload stays
do $$ begin perform pg_temp.upload('kept.png', pg_temp.id('c2'), 3); end $$;
do $$ begin
  perform pg_temp.as_server('editor');
  perform internal.complete_file(pg_temp.id('c2'), pg_temp.id('kept.png'), 3, null);
  perform tests.authenticate_as('editor');
  perform api.upsert_block_atomic(pg_temp.id('c2'), null, 'create', 'kept-block', null,
    jsonb_build_object('type', 'file', 'content', jsonb_build_object('file_id', pg_temp.id('kept.png'))));
  perform tests.clear_authentication();
end $$;
update app.files set completed_at = now() - interval '25 hours', created_at = now() - interval '25 hours'
where file_id in (pg_temp.id('kept.png'), pg_temp.id('elsewhere.png'));
update app.files set created_at = now() - interval '61 minutes' where file_id = pg_temp.id('pending.png');
do $$ begin perform pg_temp.upload('fresh.png', pg_temp.id('c1'), 3); end $$;

create temp table claimed as select * from internal.claim_file_purges(100);
select is((select status from app.files where file_id = pg_temp.id('pending.png')), 'deleted',
          'an upload pending longer than file_pending_expiry_minutes is deleted');
select is((select status from app.files where file_id = pg_temp.id('elsewhere.png')), 'deleted',
          'a ready file no block referred to for file_orphan_grace_minutes is deleted');
select is((select status from app.files where file_id = pg_temp.id('kept.png')), 'ready', 'an old file a block refers to stays ready');
select is((select status from app.files where file_id = pg_temp.id('fresh.png')), 'pending', 'a fresh pending upload stays');
select set_eq('select file_id from claimed', format('select unnest(array[%L, %L, %L]::uuid[])',
                pg_temp.id('photo'), pg_temp.id('pending.png'), pg_temp.id('elsewhere.png')),
              'claim_file_purges returns every deleted file whose object may still exist');
select is((select object_key from claimed where file_id = pg_temp.id('photo')), format('canvas/%s/%s', pg_temp.id('c1'), pg_temp.id('photo')),
          '... with its object key');
select is(internal.mark_files_purged(array[pg_temp.id('photo'), pg_temp.id('pending.png')]), 2, 'mark_files_purged marks the removed ones');
select set_eq('select file_id from internal.claim_file_purges(100)', format('select %L::uuid', pg_temp.id('elsewhere.png')),
              '... and the next claim returns only what is still to remove');
select is((select count(*) from app.system_audit where action = 'system.cleanup_files'), 1::bigint, 'a cleanup that deleted files is audited');

-- an upload whose PUT URL still lasts is not abandoned: removed under it, the PUT that lands later
-- leaves an object no row names, which no cleanup removes (the URL outlived the pending expiry
-- when file_upload_url_seconds was raised past file_pending_expiry_minutes)
do $$ begin perform pg_temp.upload('long-url.png', pg_temp.id('c1'), 3); end $$;
update app.files set created_at = now() - interval '61 minutes' where file_id = pg_temp.id('long-url.png');
update app.settings set value = '7200' where key = 'file_upload_url_seconds';
select is((select count(*) from internal.claim_file_purges(100) where file_id = pg_temp.id('long-url.png')), 0::bigint,
          'an upload pending past file_pending_expiry_minutes whose PUT URL (file_upload_url_seconds) still lasts is kept');
update app.files set created_at = now() - interval '121 minutes' where file_id = pg_temp.id('long-url.png');
select is((select count(*) from internal.claim_file_purges(100) where file_id = pg_temp.id('long-url.png')), 1::bigint,
          '... and deleted once the URL has expired too');
update app.settings set value = '900' where key = 'file_upload_url_seconds';

-- a purged canvas leaves its files' rows (canvas_id null) for the job to remove their objects
do $$ begin perform pg_temp.upload('c2-pending.png', pg_temp.id('c2'), 3); end $$;
delete from app.canvases where canvas_id = pg_temp.id('c2');
select is((select count(*) from app.files where file_id in (pg_temp.id('kept.png'), pg_temp.id('c2-pending.png')) and canvas_id is null),
          2::bigint, 'purging a canvas keeps its files'' rows, canvas_id null');
select is((select status from app.files where file_id = pg_temp.id('kept.png')), 'deleted',
          '... a file of its blocks is deleted with them');
select ok(array[pg_temp.id('kept.png'), pg_temp.id('c2-pending.png')] <@ array(select file_id from internal.claim_file_purges(100)),
          '... and the next cleanup deletes the rest and returns their objects');
select is((select status from app.files where file_id = pg_temp.id('c2-pending.png')), 'deleted',
          '... a fresh upload of the purged canvas included');

-- grants: only the server (service_role) runs the cleanup
select tests.authenticate_as('owner');
select is(tests.error_of('select internal.claim_file_purges(1)') ->> 'state', '42501', 'claim_file_purges: not for users');
select tests.clear_authentication();
select ok(has_function_privilege('service_role', 'internal.claim_file_purges(integer)', 'execute')
          and has_function_privilege('service_role', 'internal.mark_files_purged(uuid[])', 'execute')
          and not has_function_privilege('authenticated', 'internal.mark_files_purged(uuid[])', 'execute'),
          'the cleanup functions are service_role''s');

-- ---------------------------------------------------------------- lookups by file, and HOT edits
select is((select pg_get_indexdef('app.blocks_file_ref_idx'::regclass)),
          'CREATE INDEX blocks_file_ref_idx ON app.blocks USING btree (file_ref) WHERE (file_ref IS NOT NULL)',
          'blocks are found by file through file_ref (content ->> ''file_id'', generated), indexed where set');
select is((select array_agg(indexrelid::regclass::text) from pg_index
           where indrelid = 'app.blocks'::regclass and pg_get_indexdef(indexrelid) ~ '\mcontent\M'),
          null, 'no index of app.blocks reads content: an edit of content changes no indexed column');
select is((select pg_get_expr(d.adbin, d.adrelid) from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
           where d.adrelid = 'app.blocks'::regclass and a.attname = 'file_ref' and a.attgenerated = 's'),
          '(content ->> ''file_id''::text)', 'file_ref is content.file_id');

select * from finish();
rollback;
