-- Who may join (select) and send to (insert) `canvas:{id}` topics: Supabase Realtime and
-- Potentia's gateway both authorize private channels by probing realtime.messages under RLS.
-- A row is visible (or may be written) only on the topic being authorized, so membership of one
-- canvas never exposes, or lets one write to, another canvas's messages.
drop policy if exists canvas_topic_read on realtime.messages;
create policy canvas_topic_read on realtime.messages for select to authenticated
  using (
    topic = (select realtime.topic())
    and internal.canvas_role(internal.topic_canvas_id((select realtime.topic())), auth.uid()) is not null
    and internal.token_allows(internal.topic_canvas_id((select realtime.topic())), false)
  );

-- Any member may broadcast cursors and presence; block changes only arrive from the database.
drop policy if exists canvas_topic_send on realtime.messages;
create policy canvas_topic_send on realtime.messages for insert to authenticated
  with check (
    extension in ('broadcast', 'presence')
    and topic = (select realtime.topic())
    and internal.canvas_role(internal.topic_canvas_id((select realtime.topic())), auth.uid()) is not null
    and internal.token_allows(internal.topic_canvas_id((select realtime.topic())), false)
  );
