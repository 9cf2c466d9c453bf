-- File blocks (docs/files.md): a block refers to a file by `content.file_id`, the file's id as a
-- lower-case uuid string (any block type; the demo's is `file`). Rules, for every write path
-- (mutations, batches, plain SQL):
--   * the file must be a ready file of the block's canvas when a block gets or changes its
--     file_id; otherwise the write fails with invalid_input (field patch.content.file_id), so a
--     block never points at an upload that was not completed, or at another canvas's file;
--   * when the last block referring to a file is deleted (or changes or drops its file_id) the file
--     is deleted at once (status deleted: no more download URLs) and the cleanup_files job removes
--     its object. Several blocks may share a file; it goes with the last of them.

create or replace function internal.check_block_file() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_file_id uuid;
begin
  if tg_op = 'UPDATE' and new.content -> 'file_id' is not distinct from old.content -> 'file_id' then
    return new;
  end if;
  v_file_id := case when jsonb_typeof(new.content -> 'file_id') = 'string' then internal.try_uuid(new.content ->> 'file_id') end;
  -- the file's row held FOR SHARE until this transaction ends: the cleanup job (which does not
  -- take the canvas lock) skips it instead of deleting it under the block, and a deletion it
  -- committed meanwhile is seen here (the row is read again after the wait)
  if v_file_id is not null and v_file_id::text = new.content ->> 'file_id' then
    perform from app.files where file_id = v_file_id and canvas_id = new.canvas_id and status = 'ready' for share;
  end if;
  if v_file_id is null or v_file_id::text <> new.content ->> 'file_id' or not found then
    perform internal.raise_error('invalid_input',
      'content.file_id must be the id (a lower-case uuid) of a completed file of this canvas: '
      'POST /api/v1/canvas/{id}/files, PUT the bytes to its upload_url, then POST /api/v1/canvas/{id}/files/{file_id}/complete (docs/files.md)',
      '{"field":"patch.content.file_id"}');
  end if;
  return new;
end $$;

drop trigger if exists blocks_file_check on app.blocks;
create trigger blocks_file_check before insert or update of content on app.blocks
  for each row when (new.content ? 'file_id') execute function internal.check_block_file();

create or replace function internal.release_block_file() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_file_id uuid := internal.try_uuid(old.content ->> 'file_id');
begin
  if tg_op = 'UPDATE' and new.content -> 'file_id' is not distinct from old.content -> 'file_id' then
    return null;
  end if;
  if v_file_id is not null and not exists (
       select from app.blocks where file_ref = v_file_id::text) then
    update app.files set status = 'deleted', deleted_at = now() where file_id = v_file_id and status <> 'deleted';
  end if;
  return null;
end $$;

drop trigger if exists blocks_file_release on app.blocks;
create trigger blocks_file_release after delete or update of content on app.blocks
  for each row when (old.content ? 'file_id') execute function internal.release_block_file();

revoke execute on function internal.check_block_file(), internal.release_block_file() from public;
