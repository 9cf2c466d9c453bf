-- app.block_operations by canvas: block_operations_canvas_server_seq_idx (canvas_id, server_seq),
-- whole, in place of block_operations_replay_idx, the same columns where server_seq is not null.
--
-- Purging a soft-deleted canvas (internal.cleanup step 6, up to 100 canvases a run) deletes its
-- operation log through the canvas foreign key (on delete cascade): PostgreSQL runs `DELETE FROM
-- ONLY app.block_operations WHERE $1 = canvas_id` once per canvas, and neither its custom nor its
-- generic plan can use an index whose predicate that statement does not imply. Every index led by
-- canvas_id was partial (server_seq, canvas_seq not null), so each purged canvas read the whole
-- log: 600,000 operations over 600 canvases, 28,500 buffers and 80-230 ms a canvas, a cleanup run
-- purging 100 canvases 9-17 s (docs/performance.md, "Purging deleted canvases"). Whole, the index
-- answers it with the canvas's rows alone.
--
-- Why this one made whole: an applied operation (status success, the rows a mutation writes
-- unless it is refused) has server_seq, so it had its entry already and the mutation writes the
-- same entries as before; only a refused operation (conflict, failed: no server_seq, no
-- canvas_seq) gets one more. It still serves what the partial one served, replay by server_seq
-- (api.get_canvas_changes: `canvas_id = $1 and server_seq > $2 order by server_seq`; a null
-- server_seq sorts after every number and never satisfies `>`).
--
-- On a large existing app.block_operations the build reads the table and holds off its writes
-- (every mutation writes a row) meanwhile: create it by hand first, without blocking them,
--   create index concurrently if not exists block_operations_canvas_server_seq_idx on app.block_operations (canvas_id, server_seq);
-- and this migration then skips it (dropping the partial one takes a moment's exclusive lock).
create index if not exists block_operations_canvas_server_seq_idx on app.block_operations (canvas_id, server_seq);
drop index if exists app.block_operations_replay_idx;

comment on index app.block_operations_canvas_server_seq_idx is
  'A canvas''s operations, applied ones in server_seq order (replay) and refused ones (null server_seq) last: whole, so the '
  'canvas foreign key''s cascade (the purge of a deleted canvas, internal.cleanup) reads the canvas''s rows alone.';
