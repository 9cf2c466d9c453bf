-- The CHECK constraints of the three tables every mutation writes become one per table, calling
-- the table's rule function (sql/core/row_rules.sql, created by the migration before this one).
-- The rules are the same: every existing row passed them before, and VALIDATE checks again.
--
-- Why: PostgreSQL parses, plans and compiles each CHECK constraint again in every statement that
-- writes its table. The eleven constraints below were 11.6 % of the mutation RPC's instructions;
-- one call to a PL/pgSQL function, whose expressions are planned once per session, is what
-- remains (sql/core/row_rules.sql says more).
--
-- For a DBA: no table is rewritten. The ALTERs that swap the constraints change the catalog only;
-- each VALIDATE then reads its table once, calling the function per row: 2.1-2.3 s for 1,000,000
-- operation rows, measured. `npm run db:migrate` and `supabase db push` run a migration in one
-- transaction, so mutations wait for that long (their statement timeout is 5 s: on a log of more
-- than about 2 million rows, apply this file in a quiet moment). Nothing is lost: a mutation that
-- waited commits after the migration, one that timed out was never acknowledged
-- (tests/integration/row-rules-migration.test.ts mutates through the whole upgrade).

alter table app.canvases
  drop constraint canvases_title_check,
  drop constraint canvases_settings_check,
  add constraint canvases_row_rules check (internal.check_canvas_row(title, settings)) not valid;

alter table app.blocks
  drop constraint blocks_type_check,
  drop constraint blocks_y_order_check,
  drop constraint blocks_version_check,
  drop constraint blocks_content_check,
  add constraint blocks_row_rules check (internal.check_block_row(type, y_order, version, content)) not valid;

alter table app.block_operations
  drop constraint block_operations_client_op_id_check,
  drop constraint block_operations_action_check,
  drop constraint block_operations_status_check,
  drop constraint block_operations_check,
  drop constraint block_operations_canvas_seq_check,
  add constraint block_operations_row_rules
    check (internal.check_block_operation_row(client_op_id, action, status, server_seq, canvas_seq)) not valid;

alter table app.canvases validate constraint canvases_row_rules;
alter table app.blocks validate constraint blocks_row_rules;
alter table app.block_operations validate constraint block_operations_row_rules;

comment on constraint canvases_row_rules on app.canvases is
  'internal.check_canvas_row: title 1 to 500 characters, settings a JSON object.';
comment on constraint blocks_row_rules on app.blocks is
  'internal.check_block_row: type a lower-case identifier (1 to 40), y_order a LexoRank key, version >= 1, content a JSON object.';
comment on constraint block_operations_row_rules on app.block_operations is
  'internal.check_block_operation_row: client_op_id 1 to 128 characters, action and status from their lists, server_seq and canvas_seq set exactly when applied.';
