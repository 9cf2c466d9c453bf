-- Files on S3-compatible storage (issue 17 item 1; docs/files.md). The bytes live in a bucket,
-- uploaded and downloaded by clients through short-lived presigned URLs; this table is the
-- truth about which objects exist for which canvas. Functions: sql/files/ (api.create_file,
-- api.get_file, internal.complete_file; the block triggers; the cleanup the worker runs).

-- Limits and timings, read by the functions (change with an UPDATE, no deploy).
insert into app.settings (key, value, description) values
  ('max_file_bytes', '52428800', 'largest file an upload may declare, in bytes (50 MiB: Supabase Storage''s default upload limit)'),
  ('allowed_file_types',
   '["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "application/pdf", "text/plain", "text/markdown", "text/csv", "application/json", "application/zip", "audio/mpeg", "audio/wav", "video/mp4", "video/webm"]',
   'content types a file may have (exact, lower case; "image/*" would allow every image type); never text/html or image/svg+xml, which run script when opened'),
  ('file_upload_url_seconds', '900', 'lifetime of a presigned PUT URL (seconds)'),
  ('file_download_url_seconds', '300', 'lifetime of a presigned GET URL (seconds)'),
  ('file_pending_expiry_minutes', '60', 'an upload not completed after this long is abandoned: the cleanup_files job removes its object and marks it deleted (keep it longer than file_upload_url_seconds, so no PUT can land after the removal)'),
  ('file_orphan_grace_minutes', '1440', 'a completed file that no block has referred to for this long is deleted by the cleanup_files job (an upload whose block was never created)')
on conflict (key) do nothing;

create table app.files (
  file_id uuid primary key default gen_random_uuid(),
  -- null once its canvas was purged (deleted_canvas_retention_days): the row stays until the
  -- cleanup job has removed the object, which it could not find again otherwise
  canvas_id uuid references app.canvases on delete set null,
  uploaded_by uuid references auth.users (id) on delete set null,
  -- where the bytes are in the bucket (canvas/<canvas_id>/<file_id>); the name is never part of it
  object_key text not null unique check (char_length(object_key) between 1 and 1024),
  -- what the uploader called it: the download's Content-Disposition filename
  filename text not null check (char_length(filename) between 1 and 255 and filename !~ '[[:cntrl:]/\\]'),
  -- type/subtype, lower case, no parameters: signed into the PUT URL, so the object has exactly this type
  content_type text not null check (content_type ~ '^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$'),
  -- declared at creation and signed into the PUT URL (content-length); checked again by HEAD at completion
  size_bytes bigint not null check (size_bytes >= 0),
  -- base64 MD5 of the bytes, as the Content-MD5 header carries it: what S3 verifies on PUT and what a
  -- HEAD can confirm (the ETag of a single-part upload is its MD5 on S3, MinIO, Supabase Storage and
  -- s3rver; x-amz-checksum-sha256 is not returned by all of them). Declared by the uploader, or
  -- taken from the ETag at completion.
  checksum text check (checksum ~ '^[A-Za-z0-9+/]{22}==$'),
  status text not null default 'pending' check (status in ('pending', 'ready', 'deleted')),
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  deleted_at timestamptz,
  -- the object was removed from the bucket (by the cleanup_files job)
  purged_at timestamptz,
  check (status = 'pending' or status = 'deleted' or completed_at is not null),
  check ((status = 'deleted') = (deleted_at is not null)),
  check (purged_at is null or status = 'deleted')
);
create index files_canvas_idx on app.files (canvas_id);
-- the cleanup job's three queues: abandoned uploads, completed files to check for references, objects to remove
create index files_pending_idx on app.files (created_at) where status = 'pending';
create index files_ready_idx on app.files (completed_at) where status = 'ready';
create index files_unpurged_idx on app.files (deleted_at) where status = 'deleted' and purged_at is null;
-- file blocks refer to their file by content.file_id; the block triggers and the cleanup look them up
create index blocks_file_id_idx on app.blocks ((content ->> 'file_id')) where content ? 'file_id';

-- The canvas's rules: its members read its files (viewers included, with a token that may read the
-- canvas); nothing is written directly. Editors and above create and complete files through
-- api.create_file / api.complete_file, which check the role as every api function does (as for
-- app.blocks: no table of app takes direct writes). Deleted files are gone for everyone.
alter table app.files enable row level security;
grant select on app.files to authenticated;
grant all on app.files to service_role;
create policy files_member_read on app.files for select to authenticated
  using (status <> 'deleted' and internal.canvas_role(canvas_id, auth.uid()) is not null and internal.token_allows(canvas_id, false));

-- F1 create an upload (presigned PUT), F2 complete it (a HEAD of the object), F3 a download URL
-- (a canvas of images asks for many at once)
insert into app.endpoint_limits (endpoint, max_hits, window_seconds) values
  ('F1', 30, 60), ('F2', 30, 60), ('F3', 100, 10)
on conflict (endpoint) do nothing;
