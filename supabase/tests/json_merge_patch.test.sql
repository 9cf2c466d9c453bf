-- internal.json_merge_patch: RFC 7396 JSON Merge Patch, which every content edit applies to the
-- block's content. The cases are the RFC's own examples (RFC 7396, Appendix A), in its order;
-- then that the usual edit stays inlined (an SQL function, sql/rpc/mutate.sql), since a change
-- that stops it costs every mutation a function call.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(17);

create temp table rfc (n int, target jsonb, patch jsonb, result jsonb);
insert into rfc values
  (1,  '{"a":"b"}',               '{"a":"c"}',                     '{"a":"c"}'),
  (2,  '{"a":"b"}',               '{"b":"c"}',                     '{"a":"b","b":"c"}'),
  (3,  '{"a":"b"}',               '{"a":null}',                    '{}'),
  (4,  '{"a":"b","b":"c"}',       '{"a":null}',                    '{"b":"c"}'),
  (5,  '{"a":["b"]}',             '{"a":"c"}',                     '{"a":"c"}'),
  (6,  '{"a":"c"}',               '{"a":["b"]}',                   '{"a":["b"]}'),
  (7,  '{"a":{"b":"c"}}',         '{"a":{"b":"d","c":null}}',      '{"a":{"b":"d"}}'),
  (8,  '{"a":[{"b":"c"}]}',       '{"a":[1]}',                     '{"a":[1]}'),
  (9,  '["a","b"]',               '["c","d"]',                     '["c","d"]'),
  (10, '{"a":"b"}',               '["c"]',                         '["c"]'),
  (11, '{"a":"foo"}',             'null',                          'null'),
  (12, '{"a":"foo"}',             '"bar"',                         '"bar"'),
  (13, '{"e":null}',              '{"a":1}',                       '{"e":null,"a":1}'),
  (14, '[1,2]',                   '{"a":"b","c":null}',            '{"a":"b"}'),
  (15, '{}',                      '{"a":{"bb":{"ccc":null}}}',     '{"a":{"bb":{}}}');
-- each row's arguments are columns, as at run time (not constants folded when planned)
select is(internal.json_merge_patch(target, patch), result, format('RFC 7396 A.%s: %s merged with %s', n, target, patch))
from rfc order by n;

select is(internal.json_merge_patch(null, '{"a":null,"b":1}'), '{"b":1}', 'no target (a new block): the patch without its nulls');

-- inlined: in a generic plan the usual edit is part of the expression; only a patch with a null or
-- an object among its values calls internal.json_merge_patch_members
set local plan_cache_mode = force_generic_plan;
prepare probe(jsonb, jsonb) as select internal.json_merge_patch($1, $2 -> 'content');
select unalike(tests.plan_of($$execute probe('{}', '{}')$$, true), '%json_merge_patch(%', 'json_merge_patch is inlined (no call of it in the plan)');

select * from finish();
rollback;
