-- realtime.messages by topic and time: what the gateway reads back by topic (src/realtime/bus.ts)
-- and what broadcast replay reads (src/realtime/replay.ts).
--
--   - the bus's poll, every tick (500 ms) of every gateway process while its replication stream is
--     down, and its catch-up after each reconnect: `topic = any(<listened topics>) and inserted_at
--     >= <watermark> - 60 s`; its seed of a topic first listened to meanwhile: `topic = $1 and
--     inserted_at` between two times;
--   - replay at join: `topic = $1 and inserted_at >= <since>`, the newest `limit` first.
--
-- The only index by time was Supabase's replay index (sql/compat/realtime.sql, `(inserted_at desc,
-- topic) where extension = 'broadcast' and private is true`): the poll, which reads every row of
-- its topics whatever their extension, could not use it and read the whole of today's partition
-- each tick (200,000 rows over 2,000 topics: 15,500 buffers, 50-60 ms, a parallel seq scan); a
-- replay walked every topic's entries back to `since` to find its own (9 ms for a topic with none
-- on that table, growing with the table). docs/realtime.md "Bus" has the plans before and after.
--
-- Made on the parent (realtime.messages is partitioned by day): every partition has its own, the
-- daily ones made later included (CREATE TABLE … PARTITION OF copies the parent's indexes).
-- Only where the realtime schema is ours (sql/compat/realtime.sql, the mark src/db/migrate.ts
-- tests; internal.maintain_realtime_messages tests the same): on Supabase the table is the
-- platform's and its Realtime server's, which its role may not index (see docs/realtime.md).
--
-- On a large existing table the build reads every partition and holds off its writes (every
-- mutation writes a row here) meanwhile: create it by hand first, without blocking them, and this
-- migration then skips it:
--   create index if not exists messages_topic_inserted_at_index on only realtime.messages (topic, inserted_at);
--   -- then for each partition P (\d+ realtime.messages lists them):
--   create index concurrently P_topic_inserted_at_idx on realtime.P (topic, inserted_at);
--   alter index realtime.messages_topic_inserted_at_index attach partition realtime.P_topic_inserted_at_idx;
-- (the parent's index becomes valid once every partition's is attached).
do $$
begin
  if obj_description(to_regnamespace('realtime'), 'pg_namespace') is not distinct from 'potentia compatibility schema'
     and to_regclass('realtime.messages') is not null then
    create index if not exists messages_topic_inserted_at_index on realtime.messages (topic, inserted_at);
    -- by time, the rows Supabase's replay index leaves out (its exact complement: extension is not
    -- null): a bus starting reads every row of the last minute whatever its topic, `inserted_at >=
    -- <start> - 60 s` (src/realtime/bus.ts start), one range scan of each index. Read by time
    -- alone it was a scan of today's whole partition at every process start (200,000 rows:
    -- 3,157 buffers, a parallel seq scan; docs/realtime.md "Bus"). Potentia's own rows are
    -- private broadcasts (every canvas delta, presence, access change): this one holds only
    -- public broadcasts (realtime.send(..., false)) and rows someone else writes, so a mutation's
    -- insert does not write it.
    create index if not exists messages_inserted_at_other_index on realtime.messages (inserted_at)
      where extension <> 'broadcast' or private is not true;
  end if;
end $$;
