-- H7: GET /api/v1/canvas/{id}/changes?since_canvas_seq= (functions/canvas.ts), the operation log of
-- a canvas by canvas_seq over HTTP (api.get_canvas_changes_since): how a supabase-js client fills a
-- canvas_seq gap between two block_op broadcasts without PostgREST. A page of the log, not the
-- snapshot (H4, 1/s): 10/s, as the mutations it follows (H2), so a gap of several pages is read
-- page after page.
insert into app.endpoint_limits (endpoint, max_hits, window_seconds) values ('H7', 10, 1)
on conflict (endpoint) do nothing;
