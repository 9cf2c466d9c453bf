-- cleanup_files: the database half of the worker job that removes objects from the bucket
-- (src/storage/cleanup.ts runs it from Graphile Worker's crontab). The job
--   1. calls internal.claim_file_purges(p_limit): files no longer wanted become deleted, and up to
--      p_limit deleted files whose object may still exist are returned, oldest deletion first;
--   2. deletes each object (DeleteObject; a missing object is no error);
--   3. calls internal.mark_files_purged(ids) with the ones removed, which sets purged_at.
-- A file whose object could not be removed stays unpurged and is returned again by the next run.
-- Files become deleted here when (app.settings):
--   * pending longer than file_pending_expiry_minutes (the upload was never completed) and than
--     file_upload_url_seconds: its PUT URL has expired, so no PUT can land after the removal (one
--     that did would leave an object no row names, which no cleanup removes);
--   * ready, completed longer than file_orphan_grace_minutes ago, and no block refers to it
--     (uploaded, but its block was never created; deleted blocks release their file themselves,
--     sql/files/block_files.sql);
--   * its canvas was purged (canvas_id set null by the canvas's deletion).
-- Rows purged longer than oplog_retention_days ago are deleted: no operation the log still holds
-- can name them.

create or replace function internal.claim_file_purges(p_limit integer default 100)
returns table (file_id uuid, object_key text)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_abandoned integer;
  v_orphaned integer;
  v_candidates uuid[];
  v_canvasless integer;
  v_forgotten integer;
begin
  update app.files f set status = 'deleted', deleted_at = now()
  where f.file_id in (select p.file_id from app.files p where p.status = 'pending'
                        and p.created_at < now() - greatest(make_interval(mins => internal.setting_int('file_pending_expiry_minutes')),
                                                            make_interval(secs => internal.setting_int('file_upload_url_seconds')))
                      order by p.created_at limit p_limit);
  get diagnostics v_abandoned = row_count;

  -- orphans: the candidates locked first (a block being written that refers to one holds it FOR
  -- SHARE, internal.check_block_file: skipped, it is wanted), then, in a statement of its own
  -- whose snapshot sees every block committed until the locks were taken, the ones still
  -- unreferenced. In one statement, a block committed while the update waited for its file's row
  -- was not seen, and the file it had just been given was deleted under it.
  select array_agg(r.file_id) into v_candidates from (
    select r.file_id from app.files r where r.status = 'ready'
      and r.completed_at < now() - make_interval(mins => internal.setting_int('file_orphan_grace_minutes'))
      and not exists (select from app.blocks b where b.file_ref = r.file_id::text)
    order by r.completed_at limit p_limit
    for update skip locked) r;
  update app.files f set status = 'deleted', deleted_at = now()
  where f.file_id = any(v_candidates) and not exists (select from app.blocks b where b.file_ref = f.file_id::text);
  get diagnostics v_orphaned = row_count;

  update app.files f set status = 'deleted', deleted_at = now()
  where f.file_id in (select c.file_id from app.files c where c.canvas_id is null and c.status <> 'deleted' limit p_limit);
  get diagnostics v_canvasless = row_count;

  delete from app.files f
  where f.file_id in (select g.file_id from app.files g
                      where g.purged_at < now() - make_interval(days => internal.setting_int('oplog_retention_days')) limit p_limit);
  get diagnostics v_forgotten = row_count;

  if v_abandoned + v_orphaned + v_canvasless + v_forgotten > 0 then
    perform internal.write_audit(jsonb_build_object('role', 'system'), 'system.cleanup_files', 'success', null, null,
                                 jsonb_build_object('abandoned', v_abandoned, 'orphaned', v_orphaned, 'canvas_purged', v_canvasless,
                                                    'rows_deleted', v_forgotten),
                                 null, null, null, v_abandoned + v_orphaned + v_canvasless + v_forgotten);
  end if;
  return query
    select d.file_id, d.object_key from app.files d
    where d.status = 'deleted' and d.purged_at is null
    order by d.deleted_at, d.file_id limit p_limit;
end $$;

-- The objects of these files are gone from the bucket; returns how many rows it marked.
create or replace function internal.mark_files_purged(p_file_ids uuid[]) returns integer
language sql security definer set search_path = pg_catalog, pg_temp as $$
  with marked as (
    update app.files set purged_at = now()
    where file_id = any(p_file_ids) and status = 'deleted' and purged_at is null
    returning 1
  )
  select count(*)::integer from marked
$$;

revoke execute on function internal.claim_file_purges(integer), internal.mark_files_purged(uuid[]) from public;
grant execute on function internal.claim_file_purges(integer), internal.mark_files_purged(uuid[]) to service_role;
