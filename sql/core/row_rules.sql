-- The rules on the rows of the three tables every mutation writes (app.canvases' sequence
-- counters, app.blocks, app.block_operations), each table's in one function that its one CHECK
-- constraint calls (app.canvases: its trigger, below) (supabase/migrations/20261203191000_row_rules_as_functions.sql).
--
-- Why functions and not one CHECK per rule: PostgreSQL keeps a table's CHECK constraints as
-- node-tree text (pg_constraint.conbin) and parses, plans and compiles every one of them again in
-- each statement that writes the table (ExecConstraints -> ExecRelCheck: stringToNode,
-- expression_planner, ExecPrepareExpr, per executor state). A mutation's statements re-parsed 11
-- of them per call, 11.6 % of the mutation RPC's instructions under callgrind
-- (docs/performance.md). A PL/pgSQL function's expressions are planned once per session, so what
-- each statement parses is now one small call. PL/pgSQL on purpose: a LANGUAGE sql function would
-- be inlined into the constraint, and its body parsed at every statement again.
-- Domains would have had the same effect, but a domain-typed column does not match pgTAP's is()
-- or any other polymorphic function without a cast, and changing a column's type rewrites the
-- table.
--
-- Each function returns true or raises check_violation (SQLSTATE 23514, as a failed CHECK does)
-- whose message names the column and the rule, with the schema, table, column and constraint in
-- the error's fields (what a client reads as error.column / error.constraint). Values are not
-- echoed: a row may be large, and the writer has it already.
-- Invoker's rights (a CHECK's function runs as the writer). A writer whose session path puts a
-- schema before pg_catalog must not have its own char_length or ~ run here: the two CHECK
-- functions name every function, operator and collation with its schema (pg_catalog), and name
-- no relation or type (pg_temp, searched first for those, has nothing to offer them), so the
-- writer's path decides nothing. They have no SET clause: a SET search_path cost each row a GUC
-- nest level (its setting parsed and assigned, every setting looked at again at the function's
-- end, the path computed again at the next lookup), about 7 K instructions per row, twice in
-- every mutation (docs/performance.md, fiftieth session). check_canvas_row (a trigger, not in a
-- mutation's path) keeps its SET clause.

-- app.canvases is the exception: its rules run from a trigger, BEFORE INSERT OR UPDATE OF title,
-- settings, not from a CHECK. Every mutation updates its canvas's row (the sequence counters:
-- last_seq, last_canvas_seq), and PostgreSQL evaluates all of a table's CHECK constraints at every
-- UPDATE, whatever columns it sets: the constraint re-checked a title and settings nobody had
-- written at every mutation, about 4 % of the mutation RPC's instructions under callgrind
-- (docs/performance.md, "Thirty-sixth session"). A column-list trigger is not even called unless
-- the statement sets one of the columns it names; INSERT and COPY always call it. Enabled ALWAYS,
-- as a CHECK holds (below).
alter table app.canvases drop constraint if exists canvases_row_rules;
drop function if exists internal.check_canvas_row(text, jsonb);

create or replace function internal.check_canvas_row() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  if char_length(new.title) not between 1 and 500 then
    raise exception 'app.canvases.title must be 1 to 500 characters (it is %)', char_length(new.title)
      using errcode = 'check_violation', schema = 'app', table = 'canvases', column = 'title', constraint = 'canvases_row_rules';
  end if;
  if jsonb_typeof(new.settings) <> 'object' then
    raise exception 'app.canvases.settings must be a JSON object (it is %)', jsonb_typeof(new.settings)
      using errcode = 'check_violation', schema = 'app', table = 'canvases', column = 'settings', constraint = 'canvases_row_rules';
  end if;
  return new;
end $$;
comment on function internal.check_canvas_row() is
  'Trigger canvases_row_rules of app.canvases (BEFORE INSERT OR UPDATE OF title, settings): title 1 to 500 characters, settings a JSON object. '
  'Raises check_violation (23514) naming the column, with constraint canvases_row_rules, as a failed CHECK would.';

drop trigger if exists canvases_row_rules on app.canvases;
create trigger canvases_row_rules
  before insert or update of title, settings on app.canvases
  for each row execute function internal.check_canvas_row();
-- ALWAYS: a CHECK holds whatever session_replication_role is, and an ordinary trigger fires only
-- in origin, so under replica (a logical replication subscriber's apply worker, a session loading
-- data with its triggers off) the rules held until they became a trigger. This one only reads the
-- row: firing on a replica repeats no side effect. (ALTER TABLE … ENABLE TRIGGER ALL, as
-- pg_restore --disable-triggers ends a data-only restore, puts it back to origin: docs/self-hosting.md.)
alter table app.canvases enable always trigger canvases_row_rules;

create or replace function internal.check_block_row(p_type text, p_y_order text, p_version integer, p_content jsonb)
returns boolean language plpgsql immutable parallel safe as $$
begin
  -- (every name with its schema: no SET search_path, above)
  if p_type operator(pg_catalog.!~) '^[a-z][a-z0-9_]{0,39}$' then
    raise exception 'app.blocks.type must be a lower-case identifier of 1 to 40 characters: a letter, then letters, digits or _'
      using errcode = 'check_violation', schema = 'app', table = 'blocks', column = 'type', constraint = 'blocks_row_rules';
  end if;
  -- LexoRank, base 62 (0-9 A-Z a-z, byte order under collation "C"); never ending in 0, so there
  -- is always a key between two keys (docs/mutations.md, Placement)
  if p_y_order collate pg_catalog."C" operator(pg_catalog.!~) '^[0-9A-Za-z]{0,9}[1-9A-Za-z]$' then
    raise exception 'app.blocks.y_order must be a LexoRank key: 1 to 10 characters of 0-9 A-Z a-z, not ending in 0'
      using errcode = 'check_violation', schema = 'app', table = 'blocks', column = 'y_order', constraint = 'blocks_row_rules';
  end if;
  if p_version operator(pg_catalog.<) 1 then
    raise exception 'app.blocks.version must be 1 or more (it is %)', p_version
      using errcode = 'check_violation', schema = 'app', table = 'blocks', column = 'version', constraint = 'blocks_row_rules';
  end if;
  if pg_catalog.jsonb_typeof(p_content) operator(pg_catalog.<>) 'object' then
    raise exception 'app.blocks.content must be a JSON object (it is %)', pg_catalog.jsonb_typeof(p_content)
      using errcode = 'check_violation', schema = 'app', table = 'blocks', column = 'content', constraint = 'blocks_row_rules';
  end if;
  return true;
end $$;
comment on function internal.check_block_row(text, text, integer, jsonb) is
  'CHECK of app.blocks (constraint blocks_row_rules): type a lower-case identifier of 1 to 40 characters, y_order a LexoRank key (1 to 10 base-62 characters, not ending in 0), version >= 1, content a JSON object. Returns true or raises check_violation (23514) naming the column.';

create or replace function internal.check_block_operation_row(p_client_op_id text, p_action text, p_status text,
                                                              p_server_seq bigint, p_canvas_seq bigint)
returns boolean language plpgsql immutable parallel safe as $$
begin
  -- (every name with its schema: no SET search_path, above; BETWEEN and IN would look their
  -- operators up by the path)
  if pg_catalog.char_length(p_client_op_id) operator(pg_catalog.<) 1 or pg_catalog.char_length(p_client_op_id) operator(pg_catalog.>) 128 then
    raise exception 'app.block_operations.client_op_id must be 1 to 128 characters (it is %)', pg_catalog.char_length(p_client_op_id)
      using errcode = 'check_violation', schema = 'app', table = 'block_operations', column = 'client_op_id', constraint = 'block_operations_row_rules';
  end if;
  if p_action operator(pg_catalog.<>) all (array['create', 'update', 'move', 'delete']) then
    raise exception 'app.block_operations.action must be create, update, move or delete'
      using errcode = 'check_violation', schema = 'app', table = 'block_operations', column = 'action', constraint = 'block_operations_row_rules';
  end if;
  if p_status operator(pg_catalog.<>) all (array['success', 'conflict', 'failed', 'duplicate']) then
    raise exception 'app.block_operations.status must be success, conflict, failed or duplicate'
      using errcode = 'check_violation', schema = 'app', table = 'block_operations', column = 'status', constraint = 'block_operations_row_rules';
  end if;
  -- an applied operation is numbered in both sequences (replay reads them); any other in neither
  if (p_status operator(pg_catalog.=) 'success') operator(pg_catalog.<>) (p_server_seq is not null) then
    raise exception 'app.block_operations.server_seq must be set exactly when status is success'
      using errcode = 'check_violation', schema = 'app', table = 'block_operations', column = 'server_seq', constraint = 'block_operations_row_rules';
  end if;
  if (p_status operator(pg_catalog.=) 'success') operator(pg_catalog.<>) (p_canvas_seq is not null) then
    raise exception 'app.block_operations.canvas_seq must be set exactly when status is success'
      using errcode = 'check_violation', schema = 'app', table = 'block_operations', column = 'canvas_seq', constraint = 'block_operations_row_rules';
  end if;
  return true;
end $$;
comment on function internal.check_block_operation_row(text, text, text, bigint, bigint) is
  'CHECK of app.block_operations (constraint block_operations_row_rules): client_op_id 1 to 128 characters, action create|update|move|delete, status success|conflict|failed|duplicate, server_seq and canvas_seq set exactly when status is success. Returns true or raises check_violation (23514) naming the column.';

-- a CHECK's function runs with the writer's rights: the roles that write these tables directly
-- (a trigger's function needs no grant: EXECUTE is checked when the trigger is created)
grant execute on function internal.check_block_row(text, text, integer, jsonb),
                          internal.check_block_operation_row(text, text, text, bigint, bigint)
  to service_role;
