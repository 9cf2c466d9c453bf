-- realtime.messages by topic and time (sql/realtime/messages_index.sql): the index is on the
-- parent, so every partition has it, one made later included; and the gateway's reads by topic use
-- it: the bus's outage poll (src/realtime/bus.ts, a generic plan, as postgres.js's prepared
-- statement gets after five runs) and broadcast replay (src/realtime/replay.ts). Without it the
-- poll read the whole of today's partition every tick while the replication stream was down.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(6);

select has_index('realtime', 'messages', 'messages_topic_inserted_at_index', array['topic', 'inserted_at'],
                 'realtime.messages has an index on (topic, inserted_at)');

create temp view leaf_partitions as
select relid from pg_partition_tree('realtime.messages') where isleaf;
create temp view leaves_indexed as
select i.indrelid from pg_partition_tree(to_regclass('realtime.messages_topic_inserted_at_index')) t join pg_index i on i.indexrelid = t.relid
where t.isleaf;
select set_eq('select relid from leaf_partitions', 'select indrelid from leaves_indexed',
              'every partition of realtime.messages has its own');
select realtime.create_partitions(current_date + 20, 1);
select ok(to_regclass(format('realtime.messages_%s', to_char(current_date + 20, 'YYYY_MM_DD'))) is not null
          and (select count(*) from leaf_partitions) = (select count(*) from leaves_indexed),
          'a partition made later has it too');

-- 20,000 messages over 400 topics, as mutations write them, within the last two seconds
insert into realtime.messages (topic, extension, event, private, payload, inserted_at, updated_at)
select 'canvas:' || md5((g % 400)::text)::uuid, 'broadcast', 'block_op', true,
       jsonb_build_object('server_seq', g, 'block', jsonb_build_object('content', repeat('x', 200))),
       localtimestamp - (g % 2000) * interval '1 ms', localtimestamp
from generate_series(1, 20000) g;
analyze realtime.messages;


-- the bus's poll and seed as it sends them (bus.ts catchUp, seed), as a generic plan
prepare poll(timestamp, float8, text[]) as
  select id::text, topic, event, extension, private, payload, inserted_at
  from realtime.messages
  where inserted_at >= $1::timestamp - make_interval(secs => $2)
    and topic = any($3) and event is distinct from 'authorization_probe'
  order by inserted_at, id;
prepare seed(text, timestamp, float8, timestamp, float8) as
  select id::text from realtime.messages
  where topic = $1
    and inserted_at >= $2::timestamp - make_interval(secs => $3)
    and inserted_at < $4::timestamp + make_interval(secs => $5);
-- replay.ts readReplay's query
prepare replay(text, float8, int) as
  select id::text, topic, event, extension, payload
  from realtime.messages
  where topic = $1 and private is true and extension = 'broadcast'
    and event is distinct from 'authorization_probe' and event is distinct from 'access_changed'
    and inserted_at >= (to_timestamp($2 / 1000) at time zone current_setting('TimeZone'))
  order by inserted_at desc,
    case when jsonb_typeof(payload -> 'server_seq') = 'number' then (payload ->> 'server_seq')::numeric end desc nulls last,
    id desc
  limit $3;
set local plan_cache_mode = force_generic_plan;

select matches(tests.plan_of(format('execute poll(%L, 60, array[%L, %L, %L])', localtimestamp - interval '1 s',
                                   'canvas:' || md5('1')::uuid, 'canvas:' || md5('2')::uuid, 'canvas:' || md5('3')::uuid)),
               'Index Scan on messages_\w+_topic_inserted_at_idx\s+Index Cond: \(\(topic = ANY',
               'the outage poll reads its topics through the index, not every row of the partition');
select matches(tests.plan_of(format('execute seed(%L, %L, 60, %L, 0.5)', 'canvas:' || md5('1')::uuid, localtimestamp - interval '1 s', localtimestamp)),
               'Index Scan using messages_\w+_topic_inserted_at_idx[^\n]*\n\s+Index Cond: \(\(topic = ',
               'the seed of a topic first listened to during an outage reads it through the index');
select matches(tests.plan_of(format('execute replay(%L, %s, 25)', 'canvas:' || md5('1')::uuid, (extract(epoch from now() - interval '1 day') * 1000)::bigint)),
               'Index Scan Backward using messages_\w+_topic_inserted_at_idx[^\n]*\n\s+Index Cond: \(\(topic = ',
               'replay reads its topic''s newest rows through the index, not every topic''s back to since');

select * from finish();
rollback;
