-- Who may join (select) and send to (insert) `canvas:{id}` topics: Supabase Realtime and
-- Potentia's gateway both authorize private channels by probing realtime.messages under RLS.
drop policy if exists canvas_topic_read on realtime.messages;
create policy canvas_topic_read on realtime.messages for select to authenticated
  using (
    internal.canvas_role(internal.topic_canvas_id((select realtime.topic())), auth.uid()) is not null
    and internal.token_allows(internal.topic_canvas_id((select realtime.topic())), false)
  );

-- Any member may broadcast cursors and presence; block changes only arrive from the database.
drop policy if exists canvas_topic_send on realtime.messages;
create policy canvas_topic_send on realtime.messages for insert to authenticated
  with check (
    extension in ('broadcast', 'presence')
    and internal.canvas_role(internal.topic_canvas_id((select realtime.topic())), auth.uid()) is not null
    and internal.token_allows(internal.topic_canvas_id((select realtime.topic())), false)
  );
