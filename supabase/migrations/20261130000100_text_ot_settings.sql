-- Limit for collaborative text edits (sql/rpc/text_ot.sql): an op longer than this is refused
-- before any work is done, so one request cannot make every concurrent edit transform through a
-- huge op.
insert into app.settings (key, value, description) values
  ('max_text_op_components', '1000', 'most components (skips, inserts, deletes) in one text op')
on conflict do nothing;
