-- The bus of Potentia's realtime gateway: it reads what realtime.send wrote from the WAL (logical
-- decoding over pgoutput, like Supabase Realtime), so a mutation pays no pg_notify commit lock.
-- realtime.messages is partitioned daily: publish_via_partition_root makes every partition's
-- inserts arrive as realtime.messages. Inserts only (retention deletes are not news). Each
-- gateway process streams it through its own TEMPORARY slot (dropped when its connection ends).
do $$
begin
  if not exists (select from pg_publication where pubname = 'potentia_realtime') then
    create publication potentia_realtime for table realtime.messages
      with (publish = 'insert', publish_via_partition_root = true);
  end if;
end $$;
