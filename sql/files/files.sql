-- Files on S3-compatible storage (docs/files.md): the functions behind F1-F3. The database
-- decides who may upload, download and complete, and what a file may be (app.settings:
-- max_file_bytes, allowed_file_types); the HTTP layer (functions/files.ts) presigns URLs for the
-- objects these functions name and HEADs them. Lifecycle of app.files.status:
--   pending  --internal.complete_file (the object is there, size and MD5 as declared)-->  ready
--   pending  --cleanup_files job, file_pending_expiry_minutes after creation-------->  deleted
--   ready    --the last block referring to it deleted or changed (block_files.sql)-->  deleted
--   ready    --no block referred to it for file_orphan_grace_minutes (cleanup)------->  deleted
-- and the cleanup job removes a deleted file's object, then sets purged_at. Nothing leaves deleted.

-- A file as the API shows it (object_key and purged_at stay inside).
create or replace function internal.file_json(f app.files) returns jsonb
language sql stable as $$
  select jsonb_build_object('file_id', f.file_id, 'canvas_id', f.canvas_id, 'filename', f.filename,
                            'content_type', f.content_type, 'size_bytes', f.size_bytes, 'checksum', f.checksum,
                            'status', f.status, 'uploaded_by', f.uploaded_by, 'created_at', f.created_at,
                            'completed_at', f.completed_at)
$$;

-- Whether a content type is allowed by app.settings.allowed_file_types (exact, or "<type>/*").
create or replace function internal.file_type_allowed(p_content_type text) returns boolean
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce((select value ? p_content_type or value ? (split_part(p_content_type, '/', 1) || '/*')
                   from app.settings where key = 'allowed_file_types'), false)
$$;

-- F1: an editor (or above) announces an upload; the file is pending until completed.
create or replace function api.create_file(p_canvas_id uuid, p_filename text, p_content_type text, p_size_bytes bigint,
                                           p_checksum text default null) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_role app.member_role;
  v_type text := lower(btrim(p_content_type));
  v_name text := btrim(p_filename);
  v_max bigint;
  v_file app.files;
begin
  perform internal.count_endpoint_call('F1');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_user := internal.lock_user();
  v_role := internal.canvas_role(p_canvas_id, v_user);
  v_max := (select (value #>> '{}')::bigint from app.settings where key = 'max_file_bytes');
  if v_role is null then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if not internal.can_write_role(v_role) then
    perform internal.raise_error('forbidden', format('your role (%s) cannot upload files to this canvas', v_role));
  end if;
  if not internal.token_allows(p_canvas_id, true) then
    perform internal.raise_error('forbidden', format('this token''s scope does not allow writing canvas:%s', p_canvas_id));
  end if;
  -- a name as every name a person reads (internal.is_display_text: no control, invisible or
  -- direction-changing character, which make a name read as another in the download's
  -- Content-Disposition), and a name a file can have where it is saved: no / or \, also not as
  -- its compatibility form (NFKC: fullwidth U+FF0F, small U+FE68, which Windows' best-fit mapping
  -- and NFKC-normalising clients turn into / and \), and not only dots and spaces (`.`, `..`,
  -- `. .`, also as U+2024/U+FF0E: the current or parent directory, or nothing once Windows drops
  -- trailing dots and spaces)
  if v_name is null or char_length(v_name) not between 1 and 255 or not internal.is_display_text(v_name)
     or normalize(v_name, NFKC) ~ '[/\\]' or normalize(v_name, NFKC) ~ '^[.[:space:]]+$' then
    perform internal.raise_error('invalid_input',
      'filename must be 1 to 255 characters, without control characters, invisible or direction-changing characters (such as U+200B, U+202E, U+FEFF, U+2028), / or \ (also fullwidth), and not only spaces, joiners or dots (such as . or ..)',
      '{"field":"filename"}');
  end if;
  if v_type is null or v_type !~ '^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$' then
    perform internal.raise_error('invalid_input', 'content_type must be a media type type/subtype, without parameters',
                                 '{"field":"content_type"}');
  end if;
  if not internal.file_type_allowed(v_type) then
    perform internal.raise_error('invalid_input', format('content_type %s is not allowed (app.settings allowed_file_types: %s)',
      v_type, left((select value::text from app.settings where key = 'allowed_file_types'), 300)), '{"field":"content_type"}');
  end if;
  if p_size_bytes is null or p_size_bytes < 0 then
    perform internal.raise_error('invalid_input', 'size_bytes must be a number of bytes, 0 or more', '{"field":"size_bytes"}');
  end if;
  if p_size_bytes > v_max then
    perform internal.raise_error('payload_too_large', format('a file may have at most %s bytes (max_file_bytes)', v_max),
                                 jsonb_build_object('field', 'size_bytes', 'limit', v_max));
  end if;
  if p_checksum is not null and p_checksum !~ '^[A-Za-z0-9+/]{22}==$' then
    perform internal.raise_error('invalid_input', 'checksum must be the base64 MD5 of the bytes (24 characters, as Content-MD5)',
                                 '{"field":"checksum"}');
  end if;
  v_file.file_id := gen_random_uuid();
  insert into app.files (file_id, canvas_id, uploaded_by, object_key, filename, content_type, size_bytes, checksum)
  values (v_file.file_id, p_canvas_id, v_user, format('canvas/%s/%s', p_canvas_id, v_file.file_id), v_name, v_type, p_size_bytes,
          p_checksum)
  returning * into v_file;
  perform internal.write_audit(internal.request_context(), 'file.create', 'success', 'file', v_file.file_id::text,
                               jsonb_build_object('canvas_id', p_canvas_id, 'content_type', v_type, 'size_bytes', p_size_bytes),
                               null, null, null, 1);
  return jsonb_build_object('file', internal.file_json(v_file), 'object_key', v_file.object_key,
                            'upload_url_seconds', internal.setting_int('file_upload_url_seconds'));
end $$;
comment on function api.create_file(uuid, text, text, bigint, text) is
  'F1: records a pending upload of a file to the canvas: {file: File {file_id, canvas_id, filename, content_type, size_bytes, '
  'checksum, status: pending, uploaded_by, created_at, completed_at: null}, object_key (where the bytes go in the bucket), '
  'upload_url_seconds (the PUT URL''s lifetime)}. p_content_type: type/subtype, allowed by app.settings allowed_file_types; '
  'p_size_bytes: 0 to max_file_bytes; p_checksum: optional base64 MD5 (Content-MD5). Errors: unauthorized; not_found '
  '(canvas_id: none, or not a member); forbidden (viewer, read-only token scope); invalid_input (filename, content_type, '
  'size_bytes, checksum); payload_too_large (size_bytes, with limit). Editors, admins, owners. Audited file.create.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint F1 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- F2/F3: a file of the canvas, for its members (pending or ready; a deleted file is gone).
create or replace function api.get_file(p_canvas_id uuid, p_file_id uuid) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_file app.files;
begin
  perform internal.count_endpoint_call('F3', array['F2', 'F3']);  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  select * into v_file from app.files where file_id = p_file_id and canvas_id = p_canvas_id and status <> 'deleted';
  if v_file.file_id is null then
    perform internal.raise_error('not_found', 'file not found on this canvas', '{"field":"file_id"}');
  end if;
  return jsonb_build_object('file', internal.file_json(v_file), 'object_key', v_file.object_key,
                            'download_url_seconds', internal.setting_int('file_download_url_seconds'));
end $$;
comment on function api.get_file(uuid, uuid) is
  'F2, F3: a file of the canvas: {file: File, object_key, download_url_seconds (a GET URL''s lifetime)}; pending or ready '
  '(only a ready file is downloadable: the HTTP layer checks file.status). Errors: unauthorized; not_found (canvas_id: none, '
  'or not a member; file_id: none on this canvas, or deleted); forbidden (token scope). Any member.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint F3 (F2 when the upload-complete handler counted it; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- F2: marks a pending upload ready once the object is in the bucket as declared. The evidence
-- (p_size_bytes, p_etag) is what a HEAD of the object answered, so only the server that made the
-- HEAD may call this, which is why it is internal and not api (clients call api): EXECUTE is
-- service_role's, acting for the user of request.jwt.claims (the HTTP layer runs it with the
-- caller's claims, role service_role), whose role and token are checked as for api.create_file.
-- A refusal changes nothing: the upload stays pending, so the uploader may PUT again (while the
-- URL lasts) and complete again.
create or replace function internal.complete_file(p_canvas_id uuid, p_file_id uuid, p_size_bytes bigint, p_etag text) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid := internal.require_user();
  v_role app.member_role := internal.canvas_role(p_canvas_id, v_user);
  v_file app.files;
  -- the ETag of a single-part upload is the hex MD5 of its bytes (quoted); a multipart or SSE-KMS
  -- ETag is not, and is not compared (the PUT URL signed Content-MD5, which S3 verified)
  v_md5 text := case when btrim(p_etag, '"') ~ '^[0-9a-fA-F]{32}$' then encode(decode(btrim(p_etag, '"'), 'hex'), 'base64') end;
begin
  if v_role is null then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if not internal.can_write_role(v_role) or not internal.token_allows(p_canvas_id, true) then
    perform internal.raise_error('forbidden', format('your role (%s) or token cannot complete uploads to this canvas', v_role));
  end if;
  select * into v_file from app.files where file_id = p_file_id and canvas_id = p_canvas_id and status <> 'deleted' for update;
  if v_file.file_id is null then
    perform internal.raise_error('not_found', 'file not found on this canvas (an upload not completed in time is removed)',
                                 '{"field":"file_id"}');
  end if;
  if v_file.status = 'ready' then
    return jsonb_build_object('file', internal.file_json(v_file)); -- completing twice is completing once
  end if;
  if p_size_bytes is null then
    perform internal.raise_error('conflict', 'nothing was uploaded for this file yet: PUT the bytes to upload_url, then complete',
                                 '{"reason":"not_uploaded"}');
  end if;
  if p_size_bytes <> v_file.size_bytes then
    perform internal.raise_error('conflict', format('the uploaded object has %s bytes, the upload declared %s: PUT the declared bytes again',
                                                    p_size_bytes, v_file.size_bytes),
                                 jsonb_build_object('reason', 'size_mismatch', 'expected', v_file.size_bytes, 'actual', p_size_bytes));
  end if;
  if v_file.checksum is not null and v_md5 is not null and v_md5 <> v_file.checksum then
    perform internal.raise_error('conflict', 'the uploaded object''s MD5 differs from the declared checksum: PUT the declared bytes again',
                                 jsonb_build_object('reason', 'checksum_mismatch', 'expected', v_file.checksum, 'actual', v_md5));
  end if;
  update app.files set status = 'ready', completed_at = now(), checksum = coalesce(checksum, v_md5)
  where file_id = p_file_id returning * into v_file;
  perform internal.write_audit(internal.request_context(), 'file.complete', 'success', 'file', p_file_id::text,
                               jsonb_build_object('canvas_id', p_canvas_id, 'size_bytes', p_size_bytes), null, null, null, 1);
  return jsonb_build_object('file', internal.file_json(v_file));
end $$;
comment on function internal.complete_file(uuid, uuid, bigint, text) is
  'F2 (server only): marks a pending file ready: {file: File (status ready, completed_at; checksum from the ETag when none was declared)}; '
  'a ready file is answered as it is. p_size_bytes, p_etag: what a HEAD of the object answered (null size: no object). '
  'Errors: unauthorized; not_found (canvas_id; file_id: none on this canvas, or deleted); forbidden (viewer, read-only token); '
  'conflict with reason not_uploaded (no object), size_mismatch or checksum_mismatch (expected, actual): nothing changes. '
  'EXECUTE: service_role only (the server, after its HEAD), for the editor, admin or owner of request.jwt.claims. Audited file.complete.';

-- F2's removal of refused bytes. A completion that refuses the object (size_mismatch,
-- checksum_mismatch) removes it, so that the upload URL (which writes once, If-None-Match: *) may
-- PUT the right bytes; it decides under the file's row lock and claims the removal on the row,
-- commits, and only then HEADs the object again and DELETEs it, holding no lock and no
-- transaction while the storage answers (functions/files.ts). The claim makes that removal the
-- only one of the object: a completion refusing the same bytes while it is held removes nothing,
-- so a second DELETE, landing after the right bytes were PUT and completed, cannot remove them. A
-- claim whose holder never released it (the process ended) lapses after 60 seconds; the server
-- gives up its storage calls well before that.
do $$
begin
  if not exists (select from pg_catalog.pg_attribute where attrelid = 'app.files'::regclass
                 and attname = 'removal_claimed_at' and not attisdropped) then
    alter table app.files add column removal_claimed_at timestamptz;
    comment on column app.files.removal_claimed_at is
      'when a completion that refused the object claimed its removal (internal.claim_file_removal); null when none is in flight. '
      'While set (and younger than 60 s) no other completion removes the object.';
  end if;
end $$;

-- The removal of a pending file's object, claimed: the claim (pass it to release_file_removal),
-- or null when another completion's claim is in flight (it removes the object) or the file is no
-- longer pending. Called under the row lock, in the transaction that refused the object.
create or replace function internal.claim_file_removal(p_file_id uuid) returns timestamptz
language sql security definer set search_path = pg_catalog, pg_temp as $$
  update app.files set removal_claimed_at = clock_timestamp()
  where file_id = p_file_id and status = 'pending'
    and (removal_claimed_at is null or removal_claimed_at < clock_timestamp() - interval '60 seconds')
  returning removal_claimed_at
$$;
comment on function internal.claim_file_removal(uuid) is
  'F2 (server only): claims the removal of a pending file''s refused object: the claim (for release_file_removal), or null '
  'when another claim younger than 60 s is held or the file is not pending. EXECUTE: service_role only.';

-- The claim ended: the object is removed, or was not the refused one any more. Only this claim
-- (a lapsed one taken over by another completion stays that completion's).
create or replace function internal.release_file_removal(p_file_id uuid, p_claim timestamptz) returns boolean
language sql security definer set search_path = pg_catalog, pg_temp as $$
  with released as (
    update app.files set removal_claimed_at = null where file_id = p_file_id and removal_claimed_at = p_claim returning 1
  )
  select exists (select from released)
$$;
comment on function internal.release_file_removal(uuid, timestamptz) is
  'F2 (server only): ends the removal claim internal.claim_file_removal returned (true), unless another completion holds the '
  'file''s claim now (false). EXECUTE: service_role only.';

revoke execute on function internal.file_json(app.files), internal.file_type_allowed(text) from public;
revoke execute on function internal.claim_file_removal(uuid), internal.release_file_removal(uuid, timestamptz) from public;
grant execute on function api.create_file(uuid, text, text, bigint, text), api.get_file(uuid, uuid) to authenticated, service_role;
grant execute on function internal.complete_file(uuid, uuid, bigint, text), internal.claim_file_removal(uuid),
  internal.release_file_removal(uuid, timestamptz) to service_role;

-- The canvas's rules (as app.blocks, sql/auth/policies.sql): its members read its live files, with
-- a token that may read the canvas; the set of readable canvases is computed once per query.
drop policy if exists files_member_read on app.files;
create policy files_member_read on app.files for select to authenticated
  using (status <> 'deleted' and canvas_id in (select internal.readable_canvas_ids(true)));
