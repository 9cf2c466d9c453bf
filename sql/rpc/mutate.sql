-- The mutation RPC: api.upsert_block_atomic and its all-or-nothing batch form.
--
-- Per operation, in one transaction:
--   1. the caller's role, token scope (from the request context, computed once per call) and the
--      caller's rate-limit hit (internal.take_limit_slot: a slot of the minute, or rate_limited
--      before any work; rejections are returned and audited);
--   2. a known client_op_id returns its original result (exactly-once effect under retries): not
--      looked up in advance; applying it again fails (at the latest on the unique idempotency
--      index of the success rows), and the failure is answered from the log;
--   3. before any lock, the change is computed from the block as it stands (base_version
--      compared, merge, text operations transformed and applied): the part of the
--      work that does not need the canvas order overlaps with other writers on the canvas;
--   4. the canvas row is locked, so writers on one canvas are serialized: server_seq order is
--      commit order per canvas and replay by since_seq can never skip a late commit; the block
--      is locked FOR UPDATE (an update needing no other block is written on condition that the
--      block is still the version its change was prepared on): if it changed
--      since step 3, the change is computed again here (a text edit only over what committed
--      since: internal.rebase_block_change); then what needs the canvas's current blocks
--      (parent in the same canvas, no cycle, rank);
--   5. server_seq, block, operation row with its canvas_seq, audit row, realtime.send to
--      `canvas:{id}`.
-- The helpers called on every operation are PL/pgSQL, not SQL: PL/pgSQL caches its plans per
-- session, while a SQL function called from PL/pgSQL is planned again at each call.
-- Two numbers per applied operation, both taken under the canvas lock: server_seq (one global
-- sequence: order across canvases, gaps per canvas) and canvas_seq (the canvas's counter
-- canvases.last_canvas_seq + 1: per canvas 1, 2, 3, … with no gap, in commit order). Rejected
-- attempts take neither; a rolled-back operation gives its canvas_seq back with the rest of its
-- work, so a client that sees canvas_seq N after M knows it missed something unless N = M + 1.
-- Any failure rolls back the operation's work (a subtransaction) and leaves a `failed` or
-- `conflict` operation row and audit row, which commit with the caller's transaction — the
-- operation row only for a caller with a role on the canvas: anyone else's attempt is audited
-- only, bounded and without its payload (internal.record_rejected_op).
--
-- Patch shape: `content` is a JSON Merge Patch (RFC 7396) on the block's content (a key set to
-- null is removed, an object merges into an object, anything else replaces the key's value);
-- `text` maps content keys holding text to text operations (ShareDB's text-unicode type, see
-- sql/rpc/text_ot.sql); `type`, `parent_id`, `y_order` / `after_id` set those fields.
--
-- Merge rule for a stale base_version (base_version < current version), from the operation log
-- (every applied operation on the block since base_version, in commit order):
--   * fields are `content.<key>` (per top-level content key), `type`, `parent` (parent_id) and
--     `position` (y_order, after_id); a text operation on a key changes field `content.<key>` too;
--   * disjoint from what changed since → the operation applies on top of the current block;
--   * a text operation on a key that only text operations changed since → transformed against
--     each of them in commit order (text_op_transform with side 'left': at one position the later
--     committed insert goes first, ShareDB's server rule), applied, and logged/broadcast transformed;
--   * otherwise (the same field set on both sides, or a text operation on a key that was set as
--     a whole) → `conflict`, carrying per field the value at base_version (`base`, from the log),
--     the current one (`theirs`) and the operation's (`mine`); a stale `delete` always conflicts;
--   * the block was deleted and created again under its block_id since base_version → `conflict`
--     (a block created under a used block_id continues its versions, so a base_version names one
--     state of one block: an operation made for the deleted block never lands on the new one);
--   * the log no longer holds every operation since base_version (retention) → `rebase_required`
--     with the current block: nothing can be merged safely.

-- Helpers below without a SET clause are not SECURITY DEFINER and name only schema-qualified
-- objects: a SET clause costs a GUC nest level at each call, and these run on every mutation.
-- An SQL function the planner inlines (one expression, no SET clause, not SECURITY DEFINER): a
-- call costs what the expression costs. Stable, not immutable: the timestamps' JSON text
-- follows the session's TimeZone.
create or replace function internal.block_json(b app.blocks) returns jsonb
language sql stable as $$
  select case when b.block_id is null then null else jsonb_build_object(
    'block_id', b.block_id, 'canvas_id', b.canvas_id, 'parent_id', b.parent_id, 'type', b.type,
    'content', b.content, 'y_order', b.y_order, 'version', b.version,
    'created_at', b.created_at, 'created_by', b.created_by, 'updated_at', b.updated_at, 'updated_by', b.updated_by)
  end
$$;

drop function if exists internal.next_seq(uuid);  -- nextval('app.seq_block_events') where it is taken

-- The fields an operation's patch changes (see the merge rule above): `content.<key>` per
-- top-level key of `content` and of `text`, then `type`, `parent`, `position`.
create or replace function internal.patch_fields(p_patch jsonb) returns text[]
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  return coalesce((select array_agg(distinct 'content.' || k order by 'content.' || k) from (
           select jsonb_object_keys(case when jsonb_typeof(p_patch -> 'content') = 'object' then p_patch -> 'content' else '{}' end)
           union all
           select jsonb_object_keys(case when jsonb_typeof(p_patch -> 'text') = 'object' then p_patch -> 'text' else '{}' end)) ks(k)), '{}')
    || array_remove(array[
    case when p_patch ? 'type' then 'type' end,
    case when p_patch ? 'parent_id' then 'parent' end,
    case when p_patch ? 'y_order' or p_patch ? 'after_id' then 'position' end], null);
end $$;

-- internal.json_merge_patch's rule (RFC 7396) for a patch object with a null or an object among
-- its values; defined first, as json_merge_patch's body names it. One statement over both objects:
-- the target's members the patch does not name, and each member the patch sets, merged (a null
-- removes it). Built once, not member by member: a jsonb_set or `-` per member rebuilds the whole
-- object each time, which made a content of 5,000 members (60 KB) cost 50 s of one backend's CPU
-- while its canvas stayed locked.
create or replace function internal.json_merge_patch_members(p_target jsonb, p_patch jsonb) returns jsonb
language plpgsql immutable as $$
declare
  v_target jsonb := case when jsonb_typeof(p_target) = 'object' then p_target else '{}' end;
begin
  return (select coalesce(jsonb_object_agg(m.key, m.value), '{}') from (
    select t.key, t.value from jsonb_each(v_target) t where not p_patch ? t.key
    union all
    select p.key, internal.json_merge_patch(v_target -> p.key, p.value) from jsonb_each(p_patch) p where jsonb_typeof(p.value) <> 'null'
  ) m);
end $$;

-- RFC 7396 JSON Merge Patch: p_patch applied to p_target (null removes a key, objects merge
-- recursively, anything else replaces). An SQL function the planner inlines (one expression, no
-- SET clause): the usual edit (no null and no object among the patch's values: every key simply
-- replaced) costs an expression in its caller, not a call; any other patch object is merged
-- member by member by internal.json_merge_patch_members. The body reads each argument more than
-- once, so each is evaluated that often: pass a variable, a column or a `->`.
create or replace function internal.json_merge_patch(p_target jsonb, p_patch jsonb) returns jsonb
language sql immutable as $$
  select case
    when jsonb_typeof(p_patch) is distinct from 'object' then p_patch
    when jsonb_path_exists(p_patch, '$.* ? (@.type() == "object" || @ == null)') then internal.json_merge_patch_members(p_target, p_patch)
    when jsonb_typeof(p_target) = 'object' then p_target || p_patch
    else p_patch
  end
$$;

-- The value of one field (see patch_fields) in a block's JSON, for a conflict's base/theirs/mine.
-- A content key by its path (#>): `-> 'content' ->` copied the whole content for each field asked.
create or replace function internal.field_value(p_block jsonb, p_field text) returns jsonb
language sql stable as $$
  select case
    when p_field like 'content.%' then p_block #> array['content', substr(p_field, 9)]
    when p_field = 'type' then p_block -> 'type'
    when p_field = 'parent' then p_block -> 'parent_id'
    when p_field = 'position' then p_block -> 'y_order' end
$$;

-- (apply_block_op's short path for the usual edit, step 3, and its direct text edit, step 5, write
-- the same three rows and result themselves, which spares those edits this call: a change to them
-- here goes there too.)
-- Operation row + audit row + broadcast for an applied operation; numbers it on its canvas and
-- returns its result (the caller's answer, as logged): {status: success, server_seq, canvas_seq,
-- client_op_id, block_id, version, block} with p_extra's members (deleted_ids) and `text` (the
-- text operations as applied, p_text) when there are any. The result is built here, once, with
-- its canvas_seq: built by the caller and completed here, the block in it was encoded twice more
-- per mutation (a jsonb `||` re-encodes both sides), for the log row and for the answer.
-- The canvas row update waits for (or already holds) the canvas lock
-- until commit, so canvas_seq order is commit order and a rollback returns the number. With
-- p_canvas_seq the caller has made that update itself (p_seq and p_canvas_seq its numbers:
-- apply_block_op's direct update, step 4), and it is not made again.
-- The canvas row's watermarks, the operation row, the broadcast row and the audit row, each one
-- plain statement: cheaper, measured per mutation, than the same writes as data-modifying CTEs of
-- one statement (docs/performance.md). The broadcast row is the row realtime.send inserts, inserted
-- here without realtime.send's exception block, whose subtransaction took a second sub-XID per
-- mutation: the broadcast commits or rolls back with the operation it announces.
-- Not SECURITY DEFINER and no SET clause (a SET clause costs a GUC nest level at each call, and
-- this runs for every applied operation): it runs inside the mutation RPCs (through apply_block_op)
-- and internal.assign_ranks, all SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp,
-- so as their owner; it names only schema-qualified objects.
drop function if exists internal.record_applied_op(jsonb, uuid, uuid, text, text, integer, integer, jsonb, jsonb, bigint,
                                                   timestamptz, integer, jsonb, jsonb);
create or replace function internal.record_applied_op(
  p_ctx jsonb, p_canvas_id uuid, p_block_id uuid, p_action text, p_client_op_id text,
  p_base_version integer, p_new_version integer, p_patch jsonb, p_block jsonb, p_seq bigint,
  p_started_at timestamptz, p_affected_rows integer, p_text jsonb default null, p_extra jsonb default '{}',
  p_canvas_seq bigint default null
) returns jsonb language plpgsql as $$
declare
  v_canvas_seq bigint := p_canvas_seq;
  v_result jsonb;
  v_payload jsonb;
begin
  if v_canvas_seq is null then  -- (apply_block_op's in-place update numbered it already: p_seq, p_canvas_seq)
    update app.canvases set last_seq = p_seq, last_canvas_seq = last_canvas_seq + 1
    where canvas_id = p_canvas_id returning last_canvas_seq into v_canvas_seq;
  end if;
  -- `text` built in, not added with `||`: a jsonb `||` re-encodes both sides, the block with them
  -- (p_extra is '{}' but for a delete, and `||` returns the other side of an empty object as it is).
  -- Two branches, not one CASE: PL/pgSQL sets up only the expressions a call reaches.
  if p_text is null then
    v_result := jsonb_build_object('status', 'success', 'server_seq', p_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_client_op_id,
                                   'block_id', p_block_id, 'version', p_new_version, 'block', p_block) || p_extra;
    v_payload := jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', p_seq, 'canvas_seq', v_canvas_seq, 'action', p_action,
                                    'block_id', p_block_id, 'version', p_new_version, 'block', p_block, 'client_op_id', p_client_op_id,
                                    'actor_id', p_ctx ->> 'user_id') || p_extra;
  else
    v_result := jsonb_build_object('status', 'success', 'server_seq', p_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_client_op_id,
                                   'block_id', p_block_id, 'version', p_new_version, 'block', p_block, 'text', p_text) || p_extra;
    v_payload := jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', p_seq, 'canvas_seq', v_canvas_seq, 'action', p_action,
                                    'block_id', p_block_id, 'version', p_new_version, 'block', p_block, 'client_op_id', p_client_op_id,
                                    'actor_id', p_ctx ->> 'user_id', 'text', p_text) || p_extra;
  end if;
  insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                    base_version, new_version, patch, block, result, started_at, duration_ms)
  values (p_seq, v_canvas_seq, p_client_op_id, (p_ctx ->> 'user_id')::uuid, p_canvas_id, p_block_id, p_action, 'success',
          p_base_version, p_new_version, p_patch, p_block, v_result, p_started_at, extract(epoch from clock_timestamp() - p_started_at) * 1000);
  insert into realtime.messages (payload, event, topic, private, extension)
  values (v_payload, 'block_op', 'canvas:' || p_canvas_id, true, 'broadcast');
  -- internal.write_audit's row, written here: a PERFORM of it was a query around a call around
  -- this INSERT, on every applied operation
  insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq,
                                status, ip, user_agent, session_id, request_id, response_time_ms, affected_rows)
  values ((p_ctx ->> 'user_id')::uuid, 'block.' || p_action, 'block', p_block_id::text,
          jsonb_build_object('canvas_id', p_canvas_id) || p_extra, p_client_op_id, p_seq, 'success',
          (p_ctx ->> 'ip')::inet, left(p_ctx ->> 'user_agent', 200), left(p_ctx ->> 'session_id', 200),
          left(p_ctx ->> 'request_id', 200), extract(epoch from clock_timestamp() - p_started_at) * 1000, p_affected_rows);
  return v_result;
end $$;

-- Operation row + audit row for an attempt that did not apply (conflict, failed, duplicate).
-- Tenant rule: a canvas's operation log (readable by its members) holds only attempts by callers
-- with a role on that live canvas. An attempt by anyone else (not a member, no user, a missing or
-- deleted canvas) is the system's business, not the tenant's: it goes to the system audit only,
-- bounded and without its payload (internal.audit_outside_attempt), so an outsider can neither
-- write into nor grow another tenant's log.
create or replace function internal.record_rejected_op(
  p_ctx jsonb, p_canvas_id uuid, p_block_id uuid, p_action text, p_client_op_id text,
  p_base_version integer, p_patch jsonb, p_status text, p_result jsonb, p_started_at timestamptz
) returns void language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if internal.canvas_role(p_canvas_id, (p_ctx ->> 'user_id')::uuid) is null then
    perform internal.audit_outside_attempt(p_ctx, 'block.' || coalesce(p_action, 'unknown'), p_status, p_canvas_id,
                                           p_block_id, p_client_op_id, p_result -> 'error', p_started_at);
    return;
  end if;
  -- the log needs a well-formed op; the audit row records every attempt
  if p_client_op_id is not null and char_length(p_client_op_id) between 1 and 128
     and p_action in ('create', 'update', 'move', 'delete')
     and exists (select from app.canvases where canvas_id = p_canvas_id) then
    insert into app.block_operations (client_op_id, actor_id, canvas_id, block_id, action, status, base_version,
                                      patch, block, result, error_code, error_message, started_at, duration_ms)
    values (p_client_op_id, (p_ctx ->> 'user_id')::uuid, p_canvas_id, p_block_id, p_action, p_status, p_base_version,
            coalesce(p_patch, '{}'), p_result -> 'block', p_result, p_result #>> '{error,code}',
            p_result #>> '{error,message}', p_started_at, extract(epoch from clock_timestamp() - p_started_at) * 1000);
  end if;
  perform internal.write_audit(p_ctx, 'block.' || coalesce(left(p_action, 20), 'unknown'), p_status, 'block',
                               p_block_id::text, jsonb_build_object('canvas_id', p_canvas_id, 'error', p_result -> 'error'),
                               left(p_client_op_id, 128), null, p_started_at, 0);
end $$;

-- The result of an already-applied operation of this caller, if any (with its canvas_seq, also
-- for one applied before canvas_seq existed and numbered by the migration), marked
-- `duplicate: true`: the original result, answered again, nothing applied a second time.
-- A client_op_id names one operation: the applied one answers only for the same canvas, action
-- and block (a create without block_id matches its create whatever id the server chose; any
-- other action without one is another operation). Reused for another operation, the answer is
-- {status: failed, error: invalid_input on client_op_id}, with no `duplicate` key: answering it
-- with the other operation's result would tell the client that an operation applied which never
-- did (Stripe's idempotency keys refuse a reuse with other parameters the same way). The patch is
-- not compared: the log holds it as applied (text operations transformed).
drop function if exists internal.prior_result(jsonb, text);
create or replace function internal.prior_result(p_ctx jsonb, p_client_op_id text, p_canvas_id uuid, p_block_id uuid,
                                                 p_action text) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_op record;
begin
  select o.result, o.canvas_seq, o.canvas_id, o.block_id, o.action into v_op from app.block_operations o
  where o.actor_id = (p_ctx ->> 'user_id')::uuid and o.client_op_id = p_client_op_id and o.status = 'success';
  if not found then
    return null;
  end if;
  if v_op.canvas_id is distinct from p_canvas_id or v_op.action is distinct from p_action
     or (v_op.block_id is distinct from p_block_id and not (p_action = 'create' and p_block_id is null)) then
    -- the message is logged with this attempt in this canvas's log, which its members read: it
    -- names the other operation's block only when that is on this canvas too
    return jsonb_build_object('status', 'failed', 'error', jsonb_build_object(
      'code', 'invalid_input', 'field', 'client_op_id',
      'message', format('client_op_id %s was already used for another of your operations (%s): give each operation a client_op_id of its own',
                        p_client_op_id, case when v_op.canvas_id = p_canvas_id then format('%s of block %s', v_op.action, v_op.block_id)
                                             else format('%s on another canvas', v_op.action) end)));
  end if;
  return v_op.result || jsonb_build_object('canvas_seq', v_op.canvas_seq, 'duplicate', true);
end $$;

-- What an update, move or delete does to block p_old, decided from the block and the operation
-- log alone (base_version checks, the merge rule above, text operations transformed and applied;
-- the size of the content is checked on the row written, in apply_block_op), without writing or
-- locking: returns the patch as applied (text operations
-- transformed), the text operations as applied and the new content (null for a delete), or
-- raises. apply_block_op runs it before the canvas lock on the block as read then, and again
-- under the lock only if the block changed in between. Not SECURITY DEFINER and no SET clause:
-- only apply_block_op calls it, on every update, inside the mutation RPCs (SECURITY DEFINER,
-- search_path pinned), so it runs as their owner with that search_path; it names only
-- schema-qualified objects.
-- p_recheck: the patch and text operations are this same operation as already prepared against
-- an earlier version p_base_version of the block (text operations transformed up to it): only
-- the operations committed since are merged and transformed (a transform chain is a fold, so this
-- is the same result as starting over from the client's base_version). Where the answer would
-- be a refusal it returns o_patch null instead: the caller then prepares from the client's
-- base_version, for the refusal exactly as it reads from there.
drop function if exists internal.prepare_block_change(app.blocks, text, integer, jsonb, jsonb);
create or replace function internal.prepare_block_change(
  p_old app.blocks, p_action text, p_base_version integer, p_patch jsonb, p_text jsonb, p_recheck boolean default false,
  out o_patch jsonb, out o_text jsonb, out o_content jsonb
) language plpgsql stable as $$
declare
  v_fields text[];
  v_changed text[];
  v_since jsonb[];       -- patches of the operations applied since base_version, in commit order
  v_since_text_only boolean;  -- every one of them is an update with text operations only
  v_recreated boolean;   -- the block was deleted and created again since base_version
  v_logged integer;      -- how many operations the log holds since base_version (on any canvas)
  v_clash text[];
  v_base_block jsonb;
  v_theirs jsonb;
  v_keys jsonb;
  v_text_key text;
  v_op jsonb;
  v_text_keys_json jsonb;  -- o_text's keys, a JSON array
  v_current jsonb;       -- a text key's value in the content
  v_text_keys text[];    -- several keys' text operations: the keys, and for each:
  v_text_ops text[];     --   "key":op as applied, JSON text
  v_texts text[];        --   the key's new text
begin
  o_patch := p_patch;
  o_text := p_text;      -- text operations by content key: normalized, then transformed as applied
  -- base_version: absent, below 1 or newer than the block, each refused on the field
  if p_base_version is null or p_base_version not between 1 and p_old.version then
    perform internal.raise_error('invalid_input', case
      when p_base_version is null then 'base_version is required'
      -- versions start at 1: below it, the log's create would read as the block created again
      when p_base_version < 1 then format('base_version must be 1 or more (a block''s first version is 1), not %s: '
                                          'send the version of the block your change was made on', p_base_version)
      else format('base_version %s is newer than the block (version %s)', p_base_version, p_old.version) end,
      '{"field":"base_version"}');
  end if;
  -- patch_fields(p_patch) = '{}', without building the list (content and text are objects here)
  if p_action <> 'delete' and not p_patch ?| array['type', 'parent_id', 'y_order', 'after_id']
     and coalesce(p_patch -> 'content', '{}') = '{}' and coalesce(p_patch -> 'text', '{}') = '{}' then
    perform internal.raise_error('invalid_input', 'patch changes nothing', '{"field":"patch"}');
  end if;
  if p_base_version < p_old.version then
    -- up to p_old's version: p_old may have been read before this statement's snapshot.
    -- v_since holds only this canvas's operations: a block_id deleted on one canvas and created
    -- on another continues its versions, and the other canvas's log (another tenant's, maybe)
    -- must not reach this canvas's answers; without a create since base_version they are all
    -- this block's, on this canvas (a block never changes canvas).
    -- First the common case of a shared text, without an aggregate: every operation since is an
    -- update on this canvas with text operations only, all there (read in the index's order into
    -- an array, each row's patch, or null for any other row). That array is then v_since as the
    -- aggregate below builds it, with v_logged its length, v_since_text_only true and v_recreated
    -- false. The aggregate (its set-up, four transition functions and the sort of its ORDER BY,
    -- in every transaction) cost a shared-text edit about 2 % of its instructions
    -- (docs/performance.md, forty-ninth session); it runs for anything else.
    v_since := array(select case when o.action = 'update' and o.canvas_id = p_old.canvas_id and o.patch - 'text' = '{}' then o.patch end
                     from app.block_operations o
                     where o.block_id = p_old.block_id and o.status = 'success' and o.new_version > p_base_version
                       and o.new_version <= p_old.version
                     order by o.new_version);
    if cardinality(v_since) = p_old.version - p_base_version and array_position(v_since, null) is null then
      v_logged := cardinality(v_since); v_since_text_only := true; v_recreated := false;
    else
      select coalesce(array_agg(o.patch order by o.new_version) filter (where o.canvas_id = p_old.canvas_id), '{}'),
             count(*),
             coalesce(bool_and(o.action = 'update' and o.patch - 'text' = '{}'), true), coalesce(bool_or(o.action = 'create'), false)
        into v_since, v_logged, v_since_text_only, v_recreated
      from app.block_operations o
      where o.block_id = p_old.block_id and o.status = 'success' and o.new_version > p_base_version
        and o.new_version <= p_old.version;
    end if;
    if v_logged <> p_old.version - p_base_version then
      if p_recheck then
        o_patch := null;
        return;
      end if;
      -- retention removed some of them: what changed since base_version is unknown
      perform internal.raise_error('rebase_required',
        format('the operation log no longer holds every change since version %s (now %s): rebase on the current block and retry', p_base_version, p_old.version),
        jsonb_build_object('block', internal.block_json(p_old), 'version', p_old.version));
    end if;
    -- a field changed on both sides clashes, except a text operation on a key that only text
    -- operations changed since (it is transformed below); plain jsonb tests per logged patch,
    -- as this runs for every operation behind the current version. When only text operations
    -- were logged since and this patch sets no content key, nothing can clash (their keys are
    -- text on both sides or untouched on theirs): the common case of a shared text, unqueried.
    if v_recreated then
      v_clash := '{}';  -- nothing to merge with: the block p_base_version named is gone
    elsif v_since_text_only and not p_patch ? 'content' then
      v_clash := '{}';
    else
      -- the fields written since, gathered once and matched as a set (a test per field and
      -- logged patch was fields × patches, seconds for a wide content behind a few versions)
      v_fields := internal.patch_fields(p_patch);
      select coalesce(array_agg(f order by f), '{}') into v_clash
      from unnest(v_fields) f
      where f in (
        select 'content.' || k
        from unnest(v_since) p, jsonb_object_keys(case when jsonb_typeof(p -> 'content') = 'object' then p -> 'content' else '{}' end) k
        union all
        select 'content.' || k
        from unnest(v_since) p, jsonb_object_keys(case when jsonb_typeof(p -> 'text') = 'object' then p -> 'text' else '{}' end) k
        where not coalesce(p_text ? k, false)
        union all
        select case when g = 1 and p ? 'type' then 'type' when g = 2 and p ? 'parent_id' then 'parent'
                    when g = 3 and (p ? 'y_order' or p ? 'after_id') then 'position' end
        from unnest(v_since) p, generate_series(1, 3) g);
    end if;
    if p_action = 'delete' or v_recreated or v_clash <> '{}' then
      if p_recheck then
        o_patch := null;
        return;
      end if;
      select o.block into v_base_block from app.block_operations o
      where o.block_id = p_old.block_id and o.canvas_id = p_old.canvas_id and o.status = 'success' and o.new_version = p_base_version;
      -- the log says which fields were written since, not whether they changed: a field whose
      -- value is what it was at base_version (set to its own value, or changed and back), or that
      -- this patch would leave as it now is (the same value; removed on both sides; an object that
      -- merges, RFC 7396, into the value it has), does not clash (their write changed nothing this
      -- patch could lose). Decided only here, where a clash was found. A text operation of this
      -- patch keeps its clash: it is transformed against the logged text operations, which only
      -- make sense in their order from base_version on.
      if p_action <> 'delete' and not v_recreated then
        v_theirs := internal.block_json(p_old);
        select coalesce(array_agg(f order by f), '{}') into v_clash from unnest(v_clash) f
        where (f like 'content.%' and coalesce(p_text ? substr(f, 9), false))
           or internal.field_value(v_base_block, f) is distinct from internal.field_value(v_theirs, f)
          and not coalesce(case
                -- the key as this patch would leave it is the key as it is (absent: null); the
                -- key's value merged, not the whole content (a wide content has many such keys)
                when f like 'content.%' then case
                  when jsonb_typeof(p_patch #> array['content', substr(f, 9)]) = 'null' then internal.field_value(v_theirs, f) is null
                  else internal.json_merge_patch(internal.field_value(v_theirs, f), p_patch #> array['content', substr(f, 9)])
                       = internal.field_value(v_theirs, f) end
                when f = 'type' then p_patch -> 'type' = internal.field_value(v_theirs, f)
                when f = 'parent' then p_patch ? 'parent_id' and p_patch -> 'parent_id' = internal.field_value(v_theirs, f) end, false);
      end if;
    end if;
    if p_action = 'delete' or v_recreated or v_clash <> '{}' then
      select coalesce(array_agg(distinct f order by f), '{}') into v_changed
      from unnest(v_since) p, unnest(internal.patch_fields(p)) f;
      v_theirs := coalesce(v_theirs, internal.block_json(p_old));  -- once, not per field
      select coalesce(jsonb_object_agg(f, jsonb_build_object(
               'base', internal.field_value(v_base_block, f),
               'theirs', internal.field_value(v_theirs, f),
               'mine', case
                 when f like 'content.%' and p_patch #> array['content', substr(f, 9)] is not null then p_patch #> array['content', substr(f, 9)]
                 when f like 'content.%' then jsonb_build_object('text', p_text -> substr(f, 9))
                 when f = 'type' then p_patch -> 'type'
                 when f = 'parent' then p_patch -> 'parent_id'
                 else jsonb_strip_nulls(jsonb_build_object('y_order', p_patch -> 'y_order', 'after_id', p_patch -> 'after_id')) end)), '{}')
        into v_keys from unnest(v_clash) f;
      perform internal.raise_error('conflict',
        format('block changed since version %s (now %s): %s', p_base_version, p_old.version,
               case when v_recreated then 'the block was deleted and created again since; rebase on the current block and retry'
                    when p_action = 'delete' then 'rebase on the current block and retry'
                    else 'both sides changed ' || array_to_string(v_clash, ', ') || '; choose a value and retry from the current version' end),
        jsonb_build_object('block', v_theirs, 'version', p_old.version, 'changed', v_changed, 'fields', v_keys));
    end if;
  end if;
  if p_action = 'delete' then
    return;
  end if;

  -- content is merged (RFC 7396), then text operations apply to their keys, each first
  -- transformed (when behind) against each text operation on the same key since base_version, in
  -- commit order, ours on the 'left' (ShareDB's server rule): at one position our insert goes
  -- before the one committed earlier. One loop for both: each is a statement per operation.
  o_content := p_old.content;
  if p_patch ? 'content' then
    o_content := internal.json_merge_patch(o_content, p_patch -> 'content');
  end if;
  if o_text is not null then  -- (no text operations, as in most edits: no statement here)
    -- each key's op and new text are collected, and o_text and o_content built once after the
    -- loop, each by one expression: a jsonb_set per key rebuilt the whole content and the ops
    -- each time (4,000 keys took seconds). No statement is added for it either: a keystroke is
    -- one key, and a statement (an aggregate of the logged ops by key, say) cost a shared-text
    -- edit 16 % more instructions (docs/performance.md, thirty-fourth session)
    -- the keys from their JSON array, not a statement over jsonb_each (docs/performance.md,
    -- thirty-fifth session)
    v_text_keys_json := jsonb_path_query_array(o_text, '$.keyvalue().key');
    if jsonb_array_length(v_text_keys_json) = 1 then
      -- one key, as a keystroke is: the same steps as the loop below, its text and op built
      -- into the content and o_text directly (no arrays, no JSON text parsed): a handful of
      -- expressions fewer, each set up in every transaction (docs/performance.md, forty-ninth session)
      v_text_key := v_text_keys_json ->> 0;
      v_op := o_text -> v_text_key;
      if p_base_version < p_old.version then
        v_op := internal.text_op_transform_all(v_op, v_since, 'left', array['text', v_text_key]);
      end if;
      v_current := o_content -> v_text_key;
      if v_current is not null and jsonb_typeof(v_current) <> 'string' then
        perform internal.raise_error('invalid_input', format('content key %s holds a %s, not text: set it with content instead', v_text_key, jsonb_typeof(v_current)),
                                     jsonb_build_object('field', 'patch.text' || internal.field_step(v_text_key)));
      end if;
      o_content := o_content || jsonb_build_object(v_text_key, internal.text_op_apply(coalesce(v_current #>> '{}', ''), v_op, 'patch.text', v_text_key));
      o_text := jsonb_build_object(v_text_key, v_op);
    else
      v_text_keys := '{}'; v_text_ops := '{}'; v_texts := '{}';
      for i in 0 .. jsonb_array_length(v_text_keys_json) - 1 loop
        v_text_key := v_text_keys_json ->> i;
        v_op := o_text -> v_text_key;
        if p_base_version < p_old.version then
          -- the logged patches' ops on this key (a patch without one is skipped), one call, each
          -- read in place at text.<key> (p -> 'text' -> key copied each patch's whole text object
          -- for every key: S patches × K keys × their size)
          v_op := internal.text_op_transform_all(v_op, v_since, 'left', array['text', v_text_key]);
        end if;
        v_current := o_content -> v_text_key;
        if v_current is not null and jsonb_typeof(v_current) <> 'string' then
          perform internal.raise_error('invalid_input', format('content key %s holds a %s, not text: set it with content instead', v_text_key, jsonb_typeof(v_current)),
                                       jsonb_build_object('field', 'patch.text' || internal.field_step(v_text_key)));
        end if;
        v_text_keys := v_text_keys || v_text_key;
        v_text_ops := v_text_ops || (to_jsonb(v_text_key)::text || ':' || v_op::text);
        v_texts := v_texts || internal.text_op_apply(coalesce(v_current #>> '{}', ''), v_op, 'patch.text', v_text_key);
      end loop;
      o_content := o_content || jsonb_object(v_text_keys, v_texts);   -- the texts, as JSON strings
      o_text := ('{' || array_to_string(v_text_ops, ',') || '}')::jsonb; -- the ops as applied, by key
    end if;
    o_patch := p_patch || jsonb_build_object('text', o_text); -- logged and broadcast as applied
  end if;
end $$;

-- The change computed again under the lock, for a block that moved on since step 3 read it
-- (p_seen, whose change was p_applied / p_applied_text): a text edit carries on from what step 3
-- prepared, transformed only over the operations committed since p_seen (a transform chain is a
-- fold); anything else, or where that would refuse, is prepared again from the client's
-- p_base_version, for the answer exactly as it reads from there. Not SECURITY DEFINER, no SET
-- clause: only apply_block_op calls it (see prepare_block_change).
create or replace function internal.rebase_block_change(
  p_seen app.blocks, p_old app.blocks, p_action text, p_base_version integer, p_patch jsonb, p_text jsonb,
  p_applied jsonb, p_applied_text jsonb, out o_patch jsonb, out o_text jsonb, out o_content jsonb
) language plpgsql stable as $$
declare
  v_change record;
begin
  if p_applied_text is not null and p_seen.created_at = p_old.created_at and p_seen.version < p_old.version then
    v_change := internal.prepare_block_change(p_old, p_action, p_seen.version, p_applied, p_applied_text, true);
    if v_change.o_patch is not null then
      o_patch := v_change.o_patch; o_text := v_change.o_text; o_content := v_change.o_content;
      return;
    end if;
  end if;
  v_change := internal.prepare_block_change(p_old, p_action, p_base_version, p_patch, p_text);
  o_patch := v_change.o_patch; o_text := v_change.o_text; o_content := v_change.o_content;
end $$;

-- One operation. Raises (internal.raise_error) on anything but success; callers catch.
-- Not SECURITY DEFINER and no SET clause (each costs every mutation a GUC nest level and a
-- security switch, docs/performance.md): its only callers, upsert_block_atomic and
-- upsert_blocks_atomic, are SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp, so it
-- runs as their owner with that search_path; it names only schema-qualified objects. Called by
-- anyone else, it runs with that caller's own rights.
create or replace function internal.apply_block_op(
  p_ctx jsonb, p_canvas_id uuid, p_block_id uuid, p_action text, p_client_op_id text,
  p_base_version integer, p_patch jsonb, p_started_at timestamptz
) returns jsonb language plpgsql as $$
declare
  v_user uuid := (p_ctx ->> 'user_id')::uuid;
  v_limit integer;        -- app.settings mutations_per_minute
  v_max_setting jsonb;    -- app.settings max_content_bytes, cast only for a patch with content or text
  v_max_content integer;
  v_other_fields boolean;  -- the patch has fields besides content
  v_role app.member_role;
  v_seen app.blocks;     -- the block as read before the canvas lock
  v_old app.blocks;      -- the block under the lock
  v_new app.blocks;
  v_patch jsonb;          -- coalesce(p_patch, '{}'), set where the usual edit's path does not go (no defaults
                          -- here but v_user's: a default is an expression PL/pgSQL sets up in every transaction)
  v_text jsonb;          -- the text operations, normalized
  v_text_keys jsonb;     -- the patch's text keys, a JSON array
  v_text_key text;
  v_text_parts text[];   -- "key":op, JSON text, per text key
  v_applied jsonb;       -- the patch as applied (text operations transformed)
  v_applied_text jsonb;  -- the text operations as applied
  v_content jsonb;
  v_change record;       -- internal.prepare_block_change's answer
  v_prepared boolean;    -- (false, set with v_patch)
  v_direct boolean;      -- an update written straight from step 3 if the block is still that version (set in step 4)
  v_usual boolean;       -- the usual edit, written by its own short path (step 3)
  v_block_id uuid;       -- (p_block_id, set with v_patch; a create without one gets one in step 4)
  v_parent uuid;
  v_key text;
  v_seq bigint;
  v_deleted uuid[];
  v_bad_key text;
  v_slot integer;         -- the rate-limit slot taken (unused)
  v_window timestamptz;   -- the rate-limit window (internal.take_limit_slot's, for the mutations bucket)
  v_window_key bigint;    --   and its key
  v_canvas_seq bigint;    -- taken with v_seq by a direct update's canvas row UPDATE (step 4), else null
  v_checked boolean;      -- internal.check_json_policy's answer (unused: it raises)
  v_version integer;      -- the usual edit's block as written (step 3): its version,
  v_size integer;         --   its content's size in bytes, as JSON text,
  v_result jsonb;         --   and its result (with the block's JSON)
  v_first_version integer;  -- a created block's version: 1, or past a used block_id's last (step 5)
  v_block jsonb;          -- a direct text edit's block as written (step 5)
  v_since jsonb[];        -- a one-key text edit's own path (step 2): the logged patches since base_version,
  v_op jsonb;             --   its op as applied
  v_current jsonb;        --   and its key's value in the content
begin
  -- 1. who may do this. One test of the four refusals first, each asked on its own (in order) only
  -- when one applies: an expression each cost every mutation its set-up (docs/performance.md,
  -- fiftieth session); the same for the role's and the scope's below
  if v_user is null or p_action is null or p_action not in ('create', 'update', 'move', 'delete')
     or p_client_op_id is null or char_length(p_client_op_id) not between 1 and 128 or p_canvas_id is null then
    if v_user is null then
      -- claims whose sub is not a uuid read as no user (internal.request_context): say so, or a
      -- caller from SQL who left a placeholder in the sub is told only that nobody signed in; no
      -- sub at all (no claims set) is told what to set (|| keeps a missing sub null: format()
      -- would print it empty). This branch only: the claims are read again here, never on the
      -- way of a mutation
      perform internal.raise_error('unauthorized', 'a signed-in user is required to change blocks: ' || coalesce(
        'the claims'' sub ' || left(internal.try_jsonb(current_setting('request.jwt.claims', true)) ->> 'sub', 60)
          || ' is not a user id (the user''s uuid, auth.users.id)',
        'no claims name one (from SQL: set local role authenticated and request.jwt.claims with the user''s id as sub, docs/mutations.md)'));
    end if;
    if p_action is null or p_action not in ('create', 'update', 'move', 'delete') then
      perform internal.raise_error('invalid_input', 'action must be one of create, update, move, delete', '{"field":"action"}');
    end if;
    if p_client_op_id is null or char_length(p_client_op_id) not between 1 and 128 then
      perform internal.raise_error('invalid_input', 'client_op_id must be 1 to 128 characters', '{"field":"client_op_id"}');
    end if;
    if p_canvas_id is null then
      perform internal.raise_error('invalid_input', 'canvas_id is required', '{"field":"canvas_id"}');
    end if;
  end if;
  -- the role (internal.canvas_role's rule, inlined) and both settings in one statement: each
  -- call or statement of its own costs every mutation (docs/performance.md).
  -- With them, the caller's user row locked FOR KEY SHARE to the end of the transaction: the lock
  -- the block's created_by / updated_by foreign keys take in step 5, taken before the canvas row
  -- (step 4), as a deletion of the user takes them (the user's row, then the rows its ON DELETE
  -- actions change: the canvases and blocks the user created or last edited). Taken only by the
  -- foreign key, after the canvas row, a mutation holding the canvas (or a block) waited for the
  -- deletion holding the user, which waited for that canvas: a deadlock, and Postgres failed one
  -- of them (the deletion, when it waited first: a user deleting their account while a tab of
  -- theirs still sent edits). Now a deletion waits for the mutation, or the mutation waits for it
  -- before holding anything the deletion needs (and then finds no role, or fails its foreign key:
  -- internal.operation_error). Every action: a batch's first op may be a delete. A lane's
  -- transaction carrying several requests locks all of its callers' first, and the canvas
  -- creator's, whose row its second change of the canvas row locks (internal.lock_callers).
  -- The lock is the statement's own row lock (FOR KEY SHARE OF u, the user joined beside the
  -- role), not a scalar subquery of its own: that was one more InitPlan, set up and run in every
  -- transaction (10 K instructions of a mutation, docs/performance.md, forty-fifth session). With
  -- no role the statement returns no row and locks nothing, as the operation is refused then; a
  -- user deleted meanwhile is waited for and then gone, so no row either (unauthorized below).
  -- The rate-limit window and its key (below) are read with them: now() is the transaction's.
  select r.role,
         (select (value #>> '{}')::integer from app.settings where key = 'mutations_per_minute'),
         (select value from app.settings where key = 'max_content_bytes'),
         internal.rate_window_start(60), internal.rate_limit_window_key(v_user, 'mutations', internal.rate_window_start(60))
    into v_role, v_limit, v_max_setting, v_window, v_window_key
    from internal.canvas_roles(p_canvas_id, v_user) r, auth.users u
    where u.id = v_user
    for key share of u;
  -- (can_write_role is false for no role; a token without a scope claim, whose context's scope is
  -- JSON null, carries the user's full rights: scope_allows' first case)
  if not internal.can_write_role(v_role) or jsonb_typeof(p_ctx -> 'scope') <> 'null' then
    if v_role is null then
      -- a deleted user's token (valid until it expires) is unauthorized, as everywhere: asked here,
      -- where it ends up (no role), not on every mutation
      perform internal.require_user_exists(v_user);
      perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
    end if;
    if not internal.can_write_role(v_role) then
      perform internal.raise_error('forbidden', format('your role on this canvas (%s) cannot change blocks', v_role));
    end if;
    -- only a scoped token reaches scope_allows, whose CASE (formats, arrays, a regexp split)
    -- PL/pgSQL would set up whole at every mutation (docs/performance.md, forty-fourth session)
    if jsonb_typeof(p_ctx -> 'scope') <> 'null' then
      if not internal.scope_allows(p_ctx -> 'scope', p_canvas_id, true) then
        perform internal.raise_error('forbidden', format('this token''s scope does not include canvas:%s:write', p_canvas_id));
      end if;
    end if;
  end if;
  -- the hit, before any work: a full window is refused here. It never waits (a slot another
  -- transaction holds is skipped), and a rejected attempt gives it back with the rest of its
  -- work, to be counted again by internal.count_rejected_attempt; a retry answered from the log
  -- is not counted. The usual hit is internal.take_limit_slot's first statement, written out here
  -- with the window and key read above (the same statement, the same key and advisory lock: the
  -- rule of sql/rpc/endpoint_limits.sql): a call of the function cost every mutation its SET
  -- clause and its own expressions (docs/performance.md, fiftieth session). Anything else (the
  -- slot held or committed meanwhile, the window full, no limit configured: then no row) is the
  -- function's, which tries that statement again and goes on from there.
  insert into app.rate_limit_slots (window_key, slot, user_id, window_start, bucket)
  select v_window_key, t.slot, v_user, v_window, 'mutations'
  from (select coalesce((select s.slot from app.rate_limit_slots s
                         where s.window_key = v_window_key order by s.slot desc limit 1), 0) + 1 as slot
        offset 0) t  -- kept a subquery: pulled up, each use of t.slot would read the highest again
  where t.slot <= v_limit and pg_try_advisory_xact_lock(v_window_key # t.slot)
  on conflict do nothing
  returning slot into v_slot;
  if not found then
    -- an assignment, not PERFORM (which runs a query of its own around the call)
    v_slot := internal.take_limit_slot(v_user, 'mutations', v_limit, 60);
  end if;

  -- The usual edit: content set on a block, the patch's only field (nothing that needs the log or
  -- another block), on the version the client names; written by its own short path in step 3. Its
  -- shape is this one test, so it skips step 2 (whose checks it passes: the input policy and the
  -- size it asks in step 3). True or false, never null: step 4 asks `not v_usual` (a patch null, or
  -- without content, makes the test null)
  v_usual := coalesce(p_action = 'update' and p_block_id is not null and p_base_version is not null and jsonb_typeof(p_patch) = 'object'
                      and p_patch - 'content' = '{}' and jsonb_typeof(p_patch -> 'content') = 'object' and p_patch -> 'content' <> '{}', false);

  -- 2. shape of the patch. A patch of content alone skips the checks of the other fields: each
  -- check is an expression PL/pgSQL sets up once per transaction, so a mutation pays for every
  -- check it reaches (docs/performance.md). The order of the checks is the same for all. The usual
  -- edit skips the block (EXIT).
  <<shape>> begin
  exit shape when v_usual;
  v_patch := coalesce(p_patch, '{}');
  v_block_id := p_block_id;
  v_prepared := false;
  if jsonb_typeof(v_patch) <> 'object' then
    perform internal.raise_error('invalid_input', 'patch must be a JSON object', '{"field":"patch"}');
  end if;
  -- what the server's input policy refused before it called (its calls are not walked again)
  v_checked := internal.check_json_policy(v_patch, 'patch');
  v_other_fields := v_patch - 'content' <> '{}';
  -- (`if v_other_fields then if …`, not `if v_other_fields and …`: PL/pgSQL sets up an expression
  -- whole at its first evaluation, the operators AND skips too)
  if v_other_fields then
    if v_patch - array['content', 'text', 'type', 'parent_id', 'y_order', 'after_id'] <> '{}' then
      select k into v_bad_key from jsonb_object_keys(v_patch) k
        where k not in ('content', 'text', 'type', 'parent_id', 'y_order', 'after_id') limit 1;
      perform internal.raise_error('invalid_input', format('unknown patch field %s', v_bad_key), jsonb_build_object('field', 'patch' || internal.field_step(v_bad_key)));
    end if;
  end if;
  if p_action = 'move' and (v_patch ? 'content' or v_patch ? 'text' or v_patch ? 'type') then
    perform internal.raise_error('invalid_input', 'a move changes only parent_id, y_order or after_id', '{"field":"patch"}');
  end if;
  if v_patch ? 'content' and jsonb_typeof(v_patch -> 'content') <> 'object' then
    perform internal.raise_error('invalid_input', 'content must be a JSON object (a JSON Merge Patch: null removes a key)', '{"field":"patch.content"}');
  end if;
  if v_other_fields then if v_patch ? 'text' then
    if jsonb_typeof(v_patch -> 'text') <> 'object' then
      perform internal.raise_error('invalid_input', 'text must be an object of content key → text operation', '{"field":"patch.text"}');
    end if;
    if p_action = 'create' then
      perform internal.raise_error('invalid_input', 'text operations edit an existing block: give a new block its text in content',
                                   '{"field":"patch.text"}');
    end if;
    if v_patch ? 'content' then  -- (a statement: only when there is content to clash with)
      select k into v_bad_key from jsonb_object_keys(v_patch -> 'text') k where v_patch -> 'content' ? k limit 1;
    end if;
    if v_bad_key is not null then
      perform internal.raise_error('invalid_input', format('content key %s is both set (content) and edited (text) in one operation: send one of them', v_bad_key),
                                   jsonb_build_object('field', 'patch.text' || internal.field_step(v_bad_key)));
    end if;
    -- each key's op normalized, the object built as JSON text (linear in the keys): a loop over
    -- the keys' array, not a statement (this aggregate over jsonb_each and prepare_block_change's
    -- loop over it cost, with two jsonb || of the block, 2.6 % of a text edit's instructions:
    -- docs/performance.md, thirty-fifth session)
    v_text_keys := jsonb_path_query_array(v_patch -> 'text', '$.keyvalue().key');
    if jsonb_array_length(v_text_keys) = 1 then
      -- one key (a keystroke): its op normalized into the object directly, no JSON text parsed
      v_text_key := v_text_keys ->> 0;
      v_text := jsonb_build_object(v_text_key, internal.text_op_normalize(v_patch -> 'text' -> v_text_key, 'patch.text', v_text_key));
    else
      for i in 1 .. jsonb_array_length(v_text_keys) loop
        v_text_key := v_text_keys ->> (i - 1);
        v_text_parts[i] := to_jsonb(v_text_key)::text || ':'
                           || internal.text_op_normalize(v_patch -> 'text' -> v_text_key, 'patch.text', v_text_key)::text;
      end loop;
      v_text := coalesce(('{' || array_to_string(v_text_parts, ',') || '}')::jsonb, '{}');  -- (no keys: parts is null)
    end if;
  end if; end if;
  v_max_content := case when v_patch ? 'content' or v_text is not null then (v_max_setting #>> '{}')::integer end;
  if v_patch ? 'content' and octet_length((v_patch -> 'content')::text) > v_max_content then
    perform internal.raise_error('payload_too_large', format('content is larger than %s bytes', v_max_content),
                                 '{"field":"patch.content"}');
  end if;
  -- (a text edit has other fields, but none of these: one operator instead of all three checks')
  if v_other_fields then if v_patch ?| array['type', 'y_order', 'parent_id'] then
    if v_patch ? 'type' and (jsonb_typeof(v_patch -> 'type') <> 'string' or (v_patch ->> 'type') !~ '^[a-z][a-z0-9_]{0,39}$') then
      perform internal.raise_error('invalid_input', 'type must match ^[a-z][a-z0-9_]{0,39}$', '{"field":"patch.type"}');
    end if;
    if v_patch ? 'y_order' and (jsonb_typeof(v_patch -> 'y_order') <> 'string' or not internal.lexorank_is_valid(v_patch ->> 'y_order')) then
      perform internal.raise_error('invalid_input', 'y_order must be 1-10 base-62 characters not ending in 0', '{"field":"patch.y_order"}');
    end if;
    if v_patch ? 'parent_id' and jsonb_typeof(v_patch -> 'parent_id') <> 'null' then
      v_parent := internal.try_uuid(v_patch ->> 'parent_id');
      if v_parent is null or jsonb_typeof(v_patch -> 'parent_id') <> 'string' then
        perform internal.raise_error('invalid_input', 'parent_id must be a block id or null', '{"field":"patch.parent_id"}');
      end if;
    end if;
  elsif v_text is not null then
    if p_action = 'update' and v_block_id is not null and p_base_version is not null and not v_patch ?| array['content', 'after_id']
       and jsonb_array_length(v_text_keys) = 1 then
      -- A text edit of one key and nothing else (a keystroke on a shared text, behind or not),
      -- written here from start to end, as the usual edit is in step 3: the steps below reach some
      -- thirty expressions (the create, delete, parent and rank branches' tests, the CASEs of the
      -- direct UPDATE), and prepare_block_change as many more with its call, for nothing this edit
      -- needs; PL/pgSQL sets up each expression a call reaches in every transaction
      -- (docs/performance.md, fiftieth session). The block and the log since base_version are
      -- read by one statement (the log as prepare_block_change reads it first: each row's patch
      -- in the index's order, null for a row that is not a text-only update on this canvas). When
      -- the block is missing, base_version is out of its range or the log is anything but that
      -- common case, nothing is written here and steps 3 to 5 take the edit as any other (they
      -- read again and refuse, or merge and transform, as prepare_block_change does).
      select b.version, b.created_at, b.content, array(select case when o.action = 'update' and o.canvas_id = p_canvas_id and o.patch - 'text' = '{}' then o.patch end
                      from app.block_operations o
                      where o.block_id = v_block_id and o.status = 'success' and o.new_version > p_base_version
                        and o.new_version <= b.version
                      order by o.new_version)
        into v_seen.version, v_seen.created_at, v_seen.content, v_since   -- (all of v_seen this path reads)
        from app.blocks b where b.block_id = v_block_id and b.canvas_id = p_canvas_id;
      if found then if p_base_version between 1 and v_seen.version and cardinality(v_since) = v_seen.version - p_base_version
                       and array_position(v_since, null) is null then
        -- prepare_block_change's answer for it: nothing to merge or clash with (only text
        -- operations logged since, no content in the patch), the op transformed over the logged
        -- ops on its key (ours on the 'left') and applied to the key's text
        v_op := v_text -> v_text_key;
        if p_base_version < v_seen.version then
          v_op := internal.text_op_transform_all(v_op, v_since, 'left', array['text', v_text_key]);
        end if;
        v_current := v_seen.content -> v_text_key;
        if v_current is not null and jsonb_typeof(v_current) <> 'string' then
          perform internal.raise_error('invalid_input', format('content key %s holds a %s, not text: set it with content instead', v_text_key, jsonb_typeof(v_current)),
                                       jsonb_build_object('field', 'patch.text' || internal.field_step(v_text_key)));
        end if;
        v_content := v_seen.content || jsonb_build_object(v_text_key, internal.text_op_apply(coalesce(v_current #>> '{}', ''), v_op, 'patch.text', v_text_key));
        v_applied_text := jsonb_build_object(v_text_key, v_op);
        v_applied := v_patch || jsonb_build_object('text', v_applied_text);
        -- the canvas lock and both numbers (step 4's direct update), then the block on condition
        -- that it is still the version read (step 5's direct update; a text edit sets neither type
        -- nor parent)
        update app.canvases set last_seq = nextval('app.seq_block_events'), last_canvas_seq = last_canvas_seq + 1
        where canvas_id = p_canvas_id and deleted_at is null returning last_seq, last_canvas_seq into v_seq, v_canvas_seq;
        if not found then
          perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
        end if;
        update app.blocks b set
          content = v_content,
          version = version + 1,
          updated_at = now(),
          updated_by = v_user
        where block_id = v_block_id and canvas_id = p_canvas_id and version = v_seen.version and created_at = v_seen.created_at
        returning b.version, internal.block_json(b), octet_length(b.content::text) into v_version, v_block, v_size;
        if not found then
          -- written by another process's lane since the read: locked, the change carried on over
          -- what committed since (as step 5 does for a direct update), written and recorded
          select * into v_old from app.blocks where block_id = v_block_id and canvas_id = p_canvas_id for update;
          if not found then
            perform internal.raise_error('not_found', 'block not found on this canvas', '{"field":"block_id"}');
          end if;
          v_change := internal.rebase_block_change(v_seen, v_old, p_action, p_base_version, v_patch, v_text, v_applied, v_applied_text);
          v_applied := v_change.o_patch; v_applied_text := v_change.o_text; v_content := v_change.o_content;
          -- (step 5's UPDATE for it, y_order in its list as there: the rank's trigger sees the same statement)
          update app.blocks set
            content = v_content,
            y_order = y_order,
            version = version + 1,
            updated_at = now(),
            updated_by = v_user
          where block_id = v_block_id
          returning * into v_new;
          if octet_length(v_new.content::text) > v_max_content then
            perform internal.raise_error('payload_too_large', format('the edited content would be larger than %s bytes', v_max_content),
                                         '{"field":"patch.text"}');
          end if;
          return internal.record_applied_op(p_ctx, p_canvas_id, v_block_id, p_action, p_client_op_id, v_old.version, v_new.version,
                                            v_applied, internal.block_json(v_new), v_seq, p_started_at, 1, v_applied_text, '{}', v_canvas_seq);
        end if;
        if v_size > v_max_content then
          perform internal.raise_error('payload_too_large', format('the edited content would be larger than %s bytes', v_max_content),
                                       '{"field":"patch.text"}');
        end if;
        -- the rows and the result as step 5 writes them for a direct text edit (and
        -- internal.record_applied_op for any other: supabase/tests/text_edit_path.test.sql)
        v_result := jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_client_op_id,
                                       'block_id', v_block_id, 'version', v_version, 'block', v_block, 'text', v_applied_text);
        insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                          base_version, new_version, patch, block, result, started_at, duration_ms)
        values (v_seq, v_canvas_seq, p_client_op_id, v_user, p_canvas_id, v_block_id, 'update', 'success',
                v_seen.version, v_version, v_applied, v_block, v_result, p_started_at, extract(epoch from clock_timestamp() - p_started_at) * 1000);
        insert into realtime.messages (payload, event, topic, private, extension)
        values (jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'action', 'update',
                                   'block_id', v_block_id, 'version', v_version, 'block', v_block, 'client_op_id', p_client_op_id,
                                   'actor_id', p_ctx ->> 'user_id', 'text', v_applied_text),
                'block_op', 'canvas:' || p_canvas_id, true, 'broadcast');
        insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq,
                                      status, ip, user_agent, session_id, request_id, response_time_ms, affected_rows)
        values (v_user, 'block.update', 'block', v_block_id::text, jsonb_build_object('canvas_id', p_canvas_id), p_client_op_id, v_seq, 'success',
                (p_ctx ->> 'ip')::inet, left(p_ctx ->> 'user_agent', 200), left(p_ctx ->> 'session_id', 200),
                left(p_ctx ->> 'request_id', 200), extract(epoch from clock_timestamp() - p_started_at) * 1000, 1);
        return v_result;
      end if; end if;
    end if;
  end if; end if;
  end shape;

  -- 3. the change, computed before the canvas lock from the block as it stands, and kept under
  -- the lock if the block is unchanged by then. A refusal here is final: the block only moves
  -- on (versions grow, the log since base_version only gets longer), and a refusal writes
  -- nothing, so it is the answer at the moment of this read.
  -- The usual edit (v_usual, above) is not read here: it is written with one UPDATE that merges
  -- the content in the row, on condition that the block is still the version the client names.
  -- What prepare_block_change would do for it is that merge alone. If the block has moved on, the
  -- UPDATE finds nothing and the change is prepared under the lock as for any other.
  -- (A read here cost a statement per mutation: docs/performance.md.)
  if v_usual then
    -- The usual edit, written here from start to end (steps 4 and 5 for it alone): the canvas
    -- row's UPDATE (the lock and both numbers, as for a direct update in step 4), then the block's,
    -- on condition that it is still the version the client names. Its own short path, because
    -- PL/pgSQL sets up every expression a call reaches, each in every transaction: the general
    -- steps below reach some twenty more (the create, delete, parent and rank branches' tests,
    -- and the CASEs of the direct UPDATE), for nothing this edit needs (docs/performance.md,
    -- forty-fourth session). The refusals come in the same order as below.
    -- First step 2's two checks that its shape does not answer, in step 2's order, in one
    -- expression: the input policy (check_json_policy is true or raises), then the size.
    if internal.check_json_policy(p_patch, 'patch') and octet_length((p_patch -> 'content')::text) > (v_max_setting #>> '{}')::integer then
      perform internal.raise_error('payload_too_large', format('content is larger than %s bytes', (v_max_setting #>> '{}')::integer),
                                   '{"field":"patch.content"}');
    end if;
    update app.canvases set last_seq = nextval('app.seq_block_events'), last_canvas_seq = last_canvas_seq + 1
    where canvas_id = p_canvas_id and deleted_at is null returning last_seq, last_canvas_seq into v_seq, v_canvas_seq;
    if not found then
      perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
    end if;
    -- The result (with the block's JSON, internal.block_json inlined) and the content's size from
    -- RETURNING: a row variable of the whole row, then read field by field in PL/pgSQL, cost more,
    -- and so did the result built in an expression of its own. The rows below take the block's
    -- JSON from it.
    update app.blocks b set
      content = internal.json_merge_patch(content, p_patch -> 'content'),
      version = version + 1,
      updated_at = now(),
      updated_by = v_user
    where block_id = p_block_id and canvas_id = p_canvas_id and version = p_base_version
    returning b.version,
              jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_client_op_id,
                                 'block_id', p_block_id, 'version', b.version, 'block', internal.block_json(b)),
              octet_length(b.content::text)
    into v_version, v_result, v_size;
    if found then
      if v_size > (v_max_setting #>> '{}')::integer then
        perform internal.raise_error('payload_too_large', format('the edited content would be larger than %s bytes', (v_max_setting #>> '{}')::integer),
                                     '{"field":"patch.content"}');
      end if;
      -- internal.record_applied_op's rows and result, written here (a call of it costs this edit a
      -- PL/pgSQL call with its fifteen arguments and its own expressions): the operation row, the
      -- broadcast row and the audit row, as record_applied_op writes them for an update without
      -- text operations, in one statement (a statement each cost this edit two more executor
      -- set-ups: docs/performance.md, fiftieth session). The operation row's unique idempotency
      -- index refuses a second success of this client_op_id here, as before (the statement fails,
      -- whichever of its rows is written first).
      with operation as (
        insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                          base_version, new_version, patch, block, result, started_at, duration_ms)
        values (v_seq, v_canvas_seq, p_client_op_id, v_user, p_canvas_id, p_block_id, 'update', 'success',
                p_base_version, v_version, p_patch, v_result -> 'block', v_result, p_started_at,
                extract(epoch from clock_timestamp() - p_started_at) * 1000)
      ), broadcast as (
        insert into realtime.messages (payload, event, topic, private, extension)
        values (jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'action', 'update',
                                   'block_id', p_block_id, 'version', v_version, 'block', v_result -> 'block', 'client_op_id', p_client_op_id,
                                   'actor_id', p_ctx ->> 'user_id'),
                'block_op', 'canvas:' || p_canvas_id, true, 'broadcast')
      )
      insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq,
                                    status, ip, user_agent, session_id, request_id, response_time_ms, affected_rows)
      values (v_user, 'block.update', 'block', p_block_id::text, jsonb_build_object('canvas_id', p_canvas_id), p_client_op_id, v_seq, 'success',
              (p_ctx ->> 'ip')::inet, left(p_ctx ->> 'user_agent', 200), left(p_ctx ->> 'session_id', 200),
              left(p_ctx ->> 'request_id', 200), extract(epoch from clock_timestamp() - p_started_at) * 1000, 1);
      return v_result;
    end if;
    -- changed (or gone) since the version the client named: the canvas is locked and the
    -- operation numbered; the block is locked and the change prepared below (steps 4 and 5), as
    -- for any other update, with what step 2 sets for it
    v_patch := p_patch;
    v_block_id := p_block_id;
    v_prepared := false;
    v_max_content := (v_max_setting #>> '{}')::integer;
  elsif p_action = 'create' then
    v_applied := v_patch;
    v_content := case when v_patch ? 'content' then internal.json_merge_patch('{}', v_patch -> 'content') else '{}' end;
  elsif p_action in ('update', 'move') and v_block_id is not null then
    select * into v_seen from app.blocks where block_id = v_block_id and canvas_id = p_canvas_id;
    if found and v_seen.version = p_base_version and v_text is null and v_patch -> 'content' <> '{}' then
      -- content set on the block as the client last saw it, with a rank or parent: the merge
      -- alone, as for the usual edit, without the call of prepare_block_change
      v_applied := v_patch;
      v_content := internal.json_merge_patch(v_seen.content, v_patch -> 'content');
      v_prepared := true;
    elsif found then
      -- an assignment (a simple expression), not SELECT … FROM the function (a query with a
      -- function scan that materializes its row)
      v_change := internal.prepare_block_change(v_seen, p_action, p_base_version, v_patch, v_text);
      v_applied := v_change.o_patch; v_applied_text := v_change.o_text; v_content := v_change.o_content;
      v_prepared := true;
    end if;
  end if;

  -- 4. serialize writers on this canvas (held to commit), then lock and compare the block.
  -- A concurrent retry of this op that committed since the caller looked (upsert_block_atomic)
  -- makes this attempt fail (its block changed, or the operation row's unique idempotency index
  -- refuses a second success); the caller then answers from the log (duplicate).
  -- An update that needs no other block (no parent to check, no rank to place) is written in
  -- step 5 on condition that the block is still the version its change was prepared on (the one
  -- step 3 read, the change transformed or merged over what was logged since the client's
  -- version; the usual edit is written so in step 3, on the version the client named), which locks it
  -- too. A canvas's mutations from one process come down one lane, one after another on one
  -- backend (src/db/canvas-lanes.ts), so the block is still that version here unless another
  -- process's lane wrote it meanwhile; then the UPDATE finds nothing, and the change is prepared
  -- again under the lock (step 5).
  v_direct := p_action = 'update' and v_prepared and v_parent is null and not (v_patch ? 'y_order' or v_patch ? 'after_id');
  if v_usual then
    null;  -- locked and numbered in step 3 (a usual edit whose block had moved on)
  elsif v_direct then
    -- Such an update places nothing, so it is numbered here: the canvas row's UPDATE is the canvas
    -- lock (FOR NO KEY UPDATE, as below) and takes server_seq and canvas_seq in one statement,
    -- where the lock and the numbering were two statements and two WAL records. The numbers are
    -- still taken under the lock: when another writer holds the row, the UPDATE waits for it and
    -- then evaluates its SET again on the row that writer committed (READ COMMITTED's recheck),
    -- so a value drawn before the wait is dropped (a gap in server_seq, which has gaps anyway).
    update app.canvases set last_seq = nextval('app.seq_block_events'), last_canvas_seq = last_canvas_seq + 1
    where canvas_id = p_canvas_id and deleted_at is null returning last_seq, last_canvas_seq into v_seq, v_canvas_seq;
  else
    perform from app.canvases where canvas_id = p_canvas_id and deleted_at is null for no key update;
  end if;
  -- the canvas was deleted while this operation waited for its row (the role above was read
  -- before): the recheck after the wait reads the row its deleter committed, and finds no live
  -- canvas. Nothing is applied to a deleted canvas. (A usual edit here had its canvas row in
  -- step 3, and FOUND is its block's UPDATE.)
  if not v_usual and not found then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if p_action = 'create' then
    if v_patch ->> 'type' is null then
      perform internal.raise_error('invalid_input', 'type is required to create a block', '{"field":"patch.type"}');
    end if;
    -- a block_id the client names may be taken; a new random one is not looked up (a statement
    -- per create for a clash of 122 random bits)
    if v_block_id is null then
      v_block_id := gen_random_uuid();
    elsif exists (select from app.blocks where block_id = v_block_id) then
      perform internal.raise_error('invalid_input', 'a block with this block_id already exists', '{"field":"block_id"}');
    end if;
  else
    if v_block_id is null then
      perform internal.raise_error('invalid_input', 'block_id is required', '{"field":"block_id"}');
    end if;
    if not v_direct then
      select * into v_old from app.blocks where block_id = v_block_id and canvas_id = p_canvas_id for update;
      if not found then
        perform internal.raise_error('not_found', 'block not found on this canvas', '{"field":"block_id"}');
      end if;
      -- every write of a block raises its version; created_at tells a recreated block apart
      if not v_prepared then
        select o_patch, o_text, o_content into v_applied, v_applied_text, v_content
        from internal.prepare_block_change(v_old, p_action, p_base_version, v_patch, v_text);
      elsif v_seen.version <> v_old.version or v_seen.created_at <> v_old.created_at then
        v_change := internal.rebase_block_change(v_seen, v_old, p_action, p_base_version, v_patch, v_text, v_applied, v_applied_text);
        v_applied := v_change.o_patch; v_applied_text := v_change.o_text; v_content := v_change.o_content;
      end if;
    end if;
  end if;

  -- validate the parent: same canvas, and not the block itself or one of its descendants
  if v_parent is not null then
    if not exists (select from app.blocks where block_id = v_parent and canvas_id = p_canvas_id) then
      perform internal.raise_error('invalid_input', 'parent_id must be a block of the same canvas', '{"field":"patch.parent_id"}');
    end if;
    if v_parent = v_block_id or exists (
      with recursive ancestors as (
        select parent_id from app.blocks where block_id = v_parent
        union
        select b.parent_id from app.blocks b join ancestors a on b.block_id = a.parent_id
      ) select from ancestors where parent_id = v_block_id) then
      perform internal.raise_error('invalid_input', 'parent_id would make the block its own ancestor', '{"field":"patch.parent_id"}');
    end if;
  end if;
  if p_action = 'create' or v_patch ? 'y_order' or v_patch ? 'after_id' then
    v_key := internal.place_block(p_canvas_id, v_block_id, v_patch);
  end if;

  -- 5. write
  if v_seq is null then
    v_seq := nextval('app.seq_block_events');  -- under the canvas lock: server_seq order is commit order per canvas
  end if;
  if p_action = 'create' then
    -- a block_id used before (a block deleted, now created again) continues that block's
    -- versions (from its log and its tombstone, app.block_tombstones): a version names one state
    -- of one block_id for as long as the log keeps it, so an operation made for the deleted block
    -- can never pass as one on the new block
    -- (the version read by a statement of its own, only for a block_id the client names: as one
    -- CASE in the INSERT, PostgreSQL planned the INSERT again at every call, its custom plan for a
    -- null block_id being cheaper than the generic one with both subqueries: 180 K instructions per
    -- create, docs/performance.md, "RPC instructions (2026-12-07, h204)")
    if p_block_id is null then
      v_first_version := 1;
    else
      select coalesce(greatest((select max(o.new_version) from app.block_operations o
                                where o.block_id = v_block_id and o.status = 'success'),
                               (select t.version from app.block_tombstones t where t.block_id = v_block_id)), 0) + 1
        into v_first_version;
    end if;
    insert into app.blocks (block_id, canvas_id, parent_id, type, content, y_order, version, created_by, updated_by)
    values (v_block_id, p_canvas_id, v_parent, v_patch ->> 'type', v_content, v_key, v_first_version, v_user, v_user)
    returning * into v_new;
  elsif p_action = 'delete' then
    with recursive subtree as (
      select block_id from app.blocks where block_id = v_block_id
      union all
      select b.block_id from app.blocks b join subtree s on b.parent_id = s.block_id
    ) select array_agg(block_id) into v_deleted from subtree;
    -- each block's last version outlives it (a descendant takes no version of its own here, and
    -- its own log rows may have aged out): a create under its id continues from there
    insert into app.block_tombstones (block_id, version)
    select b.block_id, case when b.block_id = v_block_id then b.version + 1 else b.version end
    from app.blocks b where b.block_id = any(v_deleted)
    on conflict (block_id) do update set version = excluded.version, deleted_at = excluded.deleted_at;
    delete from app.blocks where block_id = v_block_id;
  else
    if v_direct then
      update app.blocks set
        content = v_content,
        type = coalesce(v_patch ->> 'type', type),
        parent_id = case when v_patch ? 'parent_id' then v_parent else parent_id end,
        version = version + 1,
        updated_at = now(),
        updated_by = v_user
      where block_id = v_block_id and canvas_id = p_canvas_id
        and version = v_seen.version and created_at = v_seen.created_at
      returning * into v_new;
      if found then
        -- all the log and the answer need of the block before
        v_old.version := v_seen.version;
      else
        -- changed (or gone) since the version the change was prepared on: lock it, compute the
        -- change (again), write it below
        v_direct := false;
        select * into v_old from app.blocks where block_id = v_block_id and canvas_id = p_canvas_id for update;
        if not found then
          perform internal.raise_error('not_found', 'block not found on this canvas', '{"field":"block_id"}');
        end if;
        -- (only a change step 3 prepared is written directly: the usual edit has its own path there)
        v_change := internal.rebase_block_change(v_seen, v_old, p_action, p_base_version, v_patch, v_text, v_applied, v_applied_text);
        v_applied := v_change.o_patch; v_applied_text := v_change.o_text; v_content := v_change.o_content;
      end if;
    end if;
    if not v_direct then
      update app.blocks set
        content = v_content,
        type = coalesce(v_patch ->> 'type', type),
        parent_id = case when v_patch ? 'parent_id' then v_parent else parent_id end,
        y_order = coalesce(v_key, y_order),
        version = version + 1,
        updated_at = now(),
        updated_by = v_user
      where block_id = v_block_id
      returning * into v_new;
    end if;
  end if;
  -- the content as written is bounded too, not only the patch: keys added edit by edit, or text
  -- typed op by op, must not grow a block past max_content_bytes (one check for both, on the row
  -- written; a created block's content is its patch, checked in step 2). The field is the text
  -- when the patch edits text, else the content.
  if v_max_content is not null and p_action = 'update' and octet_length(v_new.content::text) > v_max_content then
    perform internal.raise_error('payload_too_large', format('the edited content would be larger than %s bytes', v_max_content),
                                 jsonb_build_object('field', case when v_text is not null then 'patch.text' else 'patch.content' end));
  end if;
  -- the deferred UNIQUE (canvas_id, y_order) is checked here, inside the operation, not at
  -- commit, when this operation placed the block (a write that keeps its key cannot clash)
  if v_key is not null then
    set constraints app.blocks_canvas_y_order_key immediate;
    set constraints app.blocks_canvas_y_order_key deferred;
  end if;

  -- A text edit written directly (step 5: every shared-text keystroke, behind or not): the rows
  -- and result internal.record_applied_op would write for it (an update numbered in step 4, one
  -- row, no rank, no deleted ids, text operations), written here: its call cost the edit a
  -- PL/pgSQL call with its fifteen arguments and its own expressions, about 1 % of its
  -- instructions (docs/performance.md, forty-ninth session; the usual edit's short path in step 3
  -- does the same). A change to those rows there goes here too.
  if v_direct then if v_applied_text is not null then
    v_block := internal.block_json(v_new);
    v_result := jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'client_op_id', p_client_op_id,
                                   'block_id', v_block_id, 'version', v_new.version, 'block', v_block, 'text', v_applied_text);
    insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                      base_version, new_version, patch, block, result, started_at, duration_ms)
    values (v_seq, v_canvas_seq, p_client_op_id, v_user, p_canvas_id, v_block_id, 'update', 'success',
            v_seen.version, v_new.version, v_applied, v_block, v_result, p_started_at, extract(epoch from clock_timestamp() - p_started_at) * 1000);
    insert into realtime.messages (payload, event, topic, private, extension)
    values (jsonb_build_object('canvas_id', p_canvas_id, 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'action', 'update',
                               'block_id', v_block_id, 'version', v_new.version, 'block', v_block, 'client_op_id', p_client_op_id,
                               'actor_id', p_ctx ->> 'user_id', 'text', v_applied_text),
            'block_op', 'canvas:' || p_canvas_id, true, 'broadcast');
    insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq,
                                  status, ip, user_agent, session_id, request_id, response_time_ms, affected_rows)
    values (v_user, 'block.update', 'block', v_block_id::text, jsonb_build_object('canvas_id', p_canvas_id), p_client_op_id, v_seq, 'success',
            (p_ctx ->> 'ip')::inet, left(p_ctx ->> 'user_agent', 200), left(p_ctx ->> 'session_id', 200),
            left(p_ctx ->> 'request_id', 200), extract(epoch from clock_timestamp() - p_started_at) * 1000, 1);
    return v_result;
  end if; end if;

  return internal.record_applied_op(
    p_ctx, p_canvas_id, v_block_id, p_action, p_client_op_id, v_old.version, coalesce(v_new.version, v_old.version + 1),
    coalesce(v_applied, v_patch) || case when v_key is null then '{}' else jsonb_build_object('y_order', v_key) end,
    internal.block_json(v_new), v_seq, p_started_at, coalesce(array_length(v_deleted, 1), 1), v_applied_text,
    case when v_deleted is null then '{}' else jsonb_build_object('deleted_ids', to_jsonb(v_deleted)) end, v_canvas_seq);
end $$;

-- A rejected attempt gave its rate-limit hit back with the rest of its work (rolled back); count
-- it again here so invalid, forbidden or conflicting attempts are limited like accepted ones
-- (unless the window filled meanwhile: then it is not counted, and the next attempt is refused).
-- An attempt refused as rate_limited is not counted (the window is full already), nor one without
-- a user. The hit never waits (internal.take_limit_slot), so it needs no lock around it.
drop function if exists internal.count_rejected_attempt(jsonb, uuid, jsonb);
create or replace function internal.count_rejected_attempt(p_ctx jsonb, p_error jsonb) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if p_ctx ->> 'user_id' is null or p_error ->> 'code' in ('rate_limited', 'unauthorized') then
    return;
  end if;
  perform internal.take_limit_slot((p_ctx ->> 'user_id')::uuid, 'mutations', internal.setting_int('mutations_per_minute'), 60);
exception when sqlstate 'PX429' then
  null;  -- over the limit already: the next attempt is refused
end $$;

-- The error object of an operation's caught exception (internal.error_object), but for a foreign
-- key violation (23503) whose caller no longer exists: the user was deleted after the operation
-- read their role (the memberships go with the user, so a caller deleted before that read is
-- refused there: apply_block_op) and before it wrote a row naming them (app.blocks created_by /
-- updated_by, whose check waits for the deleting transaction and then fails). That is the same
-- caller as one deleted a moment sooner: unauthorized, with require_user_exists's message, not
-- invalid_input with the constraint's. Asked only of a 23503 (its block's subtransaction is
-- entered only then). A delete writes no row naming its caller (the log's actor_id and the audit's
-- user_id have no foreign key: they outlive the user), so one that read the role before the
-- deletion committed applies, as if it came first. The rejection is then recorded in the system
-- audit only (record_rejected_op: no role left), which has no foreign key on the user either.
-- Not SECURITY DEFINER and no SET clause: called by the mutation RPCs (SECURITY DEFINER,
-- search_path pinned) on the way to a rejection; it names only schema-qualified objects.
create or replace function internal.operation_error(p_ctx jsonb, p_sqlstate text, p_message text, p_detail text, p_hint text)
returns jsonb language plpgsql stable as $$
declare
  v_msg text; v_detail text; v_hint text;
begin
  if p_sqlstate = '23503' and p_ctx ->> 'user_id' is not null then
    begin
      perform internal.require_user_exists((p_ctx ->> 'user_id')::uuid);
    exception when sqlstate 'PX401' then
      get stacked diagnostics v_msg = message_text, v_detail = pg_exception_detail, v_hint = pg_exception_hint;
      return internal.error_object('PX401', v_msg, v_detail, v_hint);
    end;
  end if;
  return internal.error_object(p_sqlstate, p_message, p_detail, p_hint);
end $$;

-- What a caught exception becomes for the caller: a conflict carries the current block.
create or replace function internal.rejection_result(p_client_op_id text, p_block_id uuid, p_error jsonb)
returns jsonb language sql stable as $$
  select case when p_error ->> 'code' in ('conflict', 'rebase_required') then
    jsonb_build_object('status', 'conflict', 'server_seq', null, 'canvas_seq', null, 'client_op_id', p_client_op_id, 'block_id', p_block_id,
                       'version', p_error -> 'version', 'block', p_error -> 'block',
                       'error', p_error - 'block' - 'version')
  else
    jsonb_build_object('status', 'failed', 'server_seq', null, 'canvas_seq', null, 'client_op_id', p_client_op_id, 'block_id', p_block_id,
                       'error', p_error)
  end
$$;

-- enable_seqscan = off (both mutation RPCs, in the SET clause they have anyway: no nest level of
-- its own): every table a mutation reads by key is read through its index, never scanned. The
-- planner scans a table of one page (app.settings always; app.canvases, the member tables and
-- auth.users of a small deployment), checking every row version on the page, and on a hot canvas
-- that page holds each version its lane's transaction wrote of the canvas row (its counters, one
-- per mutation, locked in turn by the operation row's foreign key: a multixact each, whose members
-- are looked up by every scan): 1.7 M instructions of a lane's 8-mutation transaction, 77 K of a
-- lone mutation (docs/performance.md, "RPC instructions (2026-12-07, h204)"). A table without a
-- usable index is still scanned; the plans are the ones a deployment's large tables get.
create or replace function api.upsert_block_atomic(
  p_canvas_id uuid,
  p_block_id uuid,
  p_action text,
  p_client_op_id text,
  p_base_version integer default null,
  p_patch jsonb default '{}'
) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '3s' set enable_seqscan = off
as $$
declare
  v_ctx jsonb;
  v_claims jsonb;
  v_headers jsonb;
  v_started timestamptz := clock_timestamp();
  v_prior jsonb;
  v_error jsonb;
  v_result jsonb;
  v_state text; v_msg text; v_detail text; v_hint text;
begin
  -- A retry of an applied op is not looked up first: applying it again always fails (its success
  -- row's unique idempotency index refuses a second one, if nothing before it does: a changed
  -- block, a conflict, the block gone or already there), which rolls the attempt back, and the
  -- log then answers it below. A lookup before every attempt cost each first attempt, nearly all
  -- of them, an index probe for the few retries.
  -- The caller's claims and headers, and the claims' sub as a UUID, are cast inside this block,
  -- whose subtransaction the operation needs anyway: internal.request_context would take one more
  -- per setting (internal.try_jsonb) and check the sub's form (internal.try_uuid). A setting that
  -- is not JSON, or a sub that is not a UUID, fails its cast before any work (22P02; 22P05 for a
  -- \u0000 escape, which jsonb cannot hold); the operation then runs once more with the context as
  -- request_context reads it (the setting absent, the sub no user).
  -- The two attempts written out, not a loop: its bounds and the test of the attempt were three
  -- more expressions PL/pgSQL set up in every transaction (docs/performance.md, fiftieth session).
  begin
    -- variables, not arguments: context_of is inlined and reads each several times; a sub
    -- that is not a UUID fails its cast (22P02) like a setting that is not JSON
    v_claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
    v_headers := nullif(current_setting('request.headers', true), '')::jsonb;
    -- the client's address cast plainly too (an x-forwarded-for or x-real-ip that is not an
    -- address fails here, 22P02, and the second attempt reads it as request_context does:
    -- skipped), where internal.try_inet would take a subtransaction of its own
    v_ctx := internal.context_of(v_claims, v_headers, (v_claims ->> 'sub')::uuid,
                                 coalesce(trim(split_part(v_headers ->> 'x-forwarded-for', ',', 1))::inet,
                                          trim(v_headers ->> 'x-real-ip')::inet,
                                          inet_client_addr()));
    return internal.apply_block_op(v_ctx, p_canvas_id, p_block_id, p_action, p_client_op_id, p_base_version, p_patch, v_started);
  exception when read_only_sql_transaction then
    raise;  -- the session's state, not the operation's: the driver must see it (internal.error_object)
  when query_canceled or others then
    get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text, v_detail = pg_exception_detail,
                            v_hint = pg_exception_hint;
  end;
  -- only a cast of the first attempt failed (before any work): once more with the context as
  -- request_context reads it; else the operation ran and failed, or a cancel came: answered below
  if v_ctx is null and v_state in ('22P02', '22P05') then
    begin
      v_ctx := internal.request_context();
      return internal.apply_block_op(v_ctx, p_canvas_id, p_block_id, p_action, p_client_op_id, p_base_version, p_patch, v_started);
    exception when read_only_sql_transaction then
      raise;  -- the session's state, not the operation's: the driver must see it (internal.error_object)
    when query_canceled or others then
      get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text, v_detail = pg_exception_detail,
                              v_hint = pg_exception_hint;
    end;
  end if;
  -- applied before, by an earlier attempt or a concurrent one that committed first (whatever this
  -- attempt then ran into: the idempotency index, a changed block, a conflict): its result
  v_prior := internal.prior_result(v_ctx, p_client_op_id, p_canvas_id, p_block_id, p_action);
  if v_prior ? 'duplicate' then
    perform internal.record_rejected_op(v_ctx, p_canvas_id, p_block_id, p_action, p_client_op_id, p_base_version,
                                        p_patch, 'duplicate', v_prior, v_started);
    return v_prior;
  end if;
  -- the client_op_id names another applied operation (prior_result), or the attempt's own error
  v_error := coalesce(v_prior -> 'error', internal.operation_error(v_ctx, v_state, v_msg, v_detail, v_hint));
  if v_state = '57014' and p_action in ('create', 'move') then
    perform internal.rebalance_after_timeout(p_canvas_id);  -- an inline rebalance may have run out of time
  end if;
  perform internal.count_rejected_attempt(v_ctx, v_error);
  v_result := internal.rejection_result(p_client_op_id, p_block_id, v_error);
  perform internal.record_rejected_op(v_ctx, p_canvas_id, p_block_id, p_action, p_client_op_id, p_base_version, p_patch,
                                      v_result ->> 'status', v_result, v_started);
  return v_result;
end $$;

comment on function api.upsert_block_atomic(uuid, uuid, text, text, integer, jsonb) is
  'Create, update, move or delete one block atomically; idempotent by client_op_id. Returns {status, server_seq, canvas_seq, version, block[, text]} or {status: conflict|failed, error}. '
  'p_patch: {content?: JSON Merge Patch (RFC 7396) on the block content, text?: {<content key>: text-unicode op} (update only; components n = skip n '
  'code points, "str" = insert, {d: n} = delete n; at most max_text_op_components), type?, parent_id?, y_order? | after_id?}. '
  'Merge rule for a stale base_version (docs/merge.md): fields are content.<key>, type, parent and position; fields changed only on one side merge; '
  'a text op is transformed against every text op applied to its key since base_version in commit order (ShareDB text-unicode transform, the '
  'incoming op on the left: at one position the later committed insert goes first) and returned, logged and broadcast as applied (`text`); '
  'a field changed on both sides (or a text op on a key set as a whole since) is a conflict whose error carries changed[] and '
  'fields.<field>.{base, theirs, mine}; a stale delete always conflicts, as does any op whose block was deleted and created again since '
  'base_version (a block created under a used block_id continues its versions, so it starts above 1); when retention removed part of the log since base_version the answer '
  'is a conflict with error code rebase_required and the current block. '
  'server_seq orders operations across all canvases (with gaps per canvas); canvas_seq numbers the applied operations of this canvas 1, 2, 3, … '
  'with no gap, in commit order (both taken under the canvas lock; conflicts, failures and rolled-back attempts take no number), so a client '
  'that applied canvas_seq N knows the next one is N + 1. A retried client_op_id returns the original numbers (duplicate: true); one already used '
  'for another operation of the caller (another canvas, action, or block) is refused with invalid_input on field client_op_id. '
  'Logging rule: a rejected attempt (failed, conflict, duplicate) by a caller with a role on the canvas is logged in that canvas''s '
  'app.block_operations with its patch, as the tenant''s own; one by a caller with no role on it (not a member, no user, a missing or '
  'deleted canvas) is recorded only in app.system_audit (who, action, canvas, block, client_op_id, error code, ip, user agent; '
  'texts cut to 200 characters, never the payload) and never in the canvas''s log. Either way it counts toward the caller''s rate limit. '
  'base_version is an int4 of at least 1 (a block''s first version): below 1 it is refused with invalid_input on field base_version, above '
  'the int4 range with invalid_input (SQLSTATE 22003 when cast at the call).';

-- All-or-nothing batch on one canvas: p_ops is an array of
-- {block_id, action, client_op_id, base_version, patch}. Either every op applies (or had
-- applied before, by client_op_id) or none does and the first failure is reported.
create or replace function api.upsert_blocks_atomic(p_canvas_id uuid, p_ops jsonb) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '3s' set enable_seqscan = off
as $$
declare
  v_ctx jsonb := internal.request_context();
  v_started timestamptz := clock_timestamp();
  v_results jsonb := '[]';
  v_op jsonb;
  v_index integer := 0;
  v_prior jsonb;
  v_error jsonb;
  v_result jsonb;
  v_state text; v_msg text; v_detail text; v_hint text; v_constraint text;
  v_attempt integer;
  v_op_block uuid;        -- the op's block_id: null when absent or JSON null (checked to be a UUID otherwise)
  v_bad_field text;
begin
  if p_ops is null or jsonb_typeof(p_ops) <> 'array' or jsonb_array_length(p_ops) = 0 then
    v_error := jsonb_build_object('code', 'invalid_input', 'message', 'ops must be a non-empty array', 'field', 'ops');
  elsif jsonb_array_length(p_ops) > internal.setting_int('max_batch_ops') then
    v_error := jsonb_build_object('code', 'payload_too_large', 'message',
                                  format('a batch holds at most %s ops', internal.setting_int('max_batch_ops')), 'field', 'ops');
  end if;
  if v_error is not null then
    perform internal.write_audit(v_ctx, 'block.batch', 'failed', 'canvas', p_canvas_id::text,
                                 jsonb_build_object('error', v_error), null, null, v_started, 0);
    return jsonb_build_object('status', 'failed', 'failed_index', null, 'error', v_error);
  end if;
  -- a second pass only when a concurrent retry of this batch committed first: it is then
  -- answered from the log, op by op
  for v_attempt in 1 .. 2 loop
    v_results := '[]';
    v_index := 0;
    begin
      for v_op in select value from jsonb_array_elements(p_ops) loop
        if jsonb_typeof(v_op) <> 'object' then
          perform internal.raise_error('invalid_input', 'each op must be an object', jsonb_build_object('field', format('ops.%s', v_index)));
        end if;
        -- a base_version given must be a JSON number and an int4: say so by field rather than by a
        -- cast error, or by "required" for one that is there (a string "3", say)
        if jsonb_typeof(v_op -> 'base_version') <> 'null'
           and (jsonb_typeof(v_op -> 'base_version') <> 'number'
                or (v_op ->> 'base_version')::numeric not between -2147483648 and 2147483647
                or (v_op ->> 'base_version')::numeric % 1 <> 0) then
          perform internal.raise_error('invalid_input', 'base_version must be a whole number within the 32-bit integer range',
                                       '{"field":"base_version"}');
        end if;
        -- a block_id given must be a UUID (as the single RPC's uuid argument is): read as absent, a
        -- create would take a new id, and anything else would say block_id is required
        v_op_block := internal.try_uuid(v_op ->> 'block_id');
        if jsonb_typeof(v_op -> 'block_id') <> 'null' and (jsonb_typeof(v_op -> 'block_id') <> 'string' or v_op_block is null) then
          perform internal.raise_error('invalid_input', 'block_id must be a block id (a UUID), or absent or null for a create',
                                       '{"field":"block_id"}');
        end if;
        -- action and client_op_id are strings (a number would be read as its digits); absent,
        -- apply_block_op refuses them
        v_bad_field := case when jsonb_typeof(v_op -> 'action') <> 'string' then 'action'
                            when jsonb_typeof(v_op -> 'client_op_id') <> 'string' then 'client_op_id' end;
        if v_bad_field is not null then
          perform internal.raise_error('invalid_input', format('%s must be a string', v_bad_field), jsonb_build_object('field', v_bad_field));
        end if;
        v_prior := internal.prior_result(v_ctx, v_op ->> 'client_op_id', p_canvas_id, v_op_block, v_op ->> 'action');
        if v_prior ? 'duplicate' then
          v_results := v_results || jsonb_build_array(v_prior);
        elsif v_prior is not null then
          perform internal.raise_error('invalid_input', v_prior #>> '{error,message}', '{"field":"client_op_id"}');
        else
          v_results := v_results || jsonb_build_array(internal.apply_block_op(
            v_ctx, p_canvas_id, v_op_block, v_op ->> 'action', v_op ->> 'client_op_id',
            -- through numeric: a whole number may be written 1.0 or 1e0 in JSON (the check above
            -- passed it), and its text is not an integer literal
            (v_op ->> 'base_version')::numeric::integer,
            coalesce(v_op -> 'patch', '{}'), clock_timestamp()));
        end if;
        v_index := v_index + 1;
      end loop;
      -- the whole batch's ranks must be unique before we report success
      set constraints app.blocks_canvas_y_order_key immediate;
      set constraints app.blocks_canvas_y_order_key deferred;
      return jsonb_build_object('status', 'success', 'results', v_results,
                                'server_seq', (select max((r ->> 'server_seq')::bigint) from jsonb_array_elements(v_results) r),
                                'canvas_seq', (select max((r ->> 'canvas_seq')::bigint) from jsonb_array_elements(v_results) r));
    exception when read_only_sql_transaction then
      raise;  -- the session's state, not the operation's: the driver must see it (internal.error_object)
    when query_canceled or others then
      get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text, v_detail = pg_exception_detail,
                              v_hint = pg_exception_hint, v_constraint = constraint_name;
    end;
    exit when not ((v_state = '23505' and v_constraint = 'block_operations_idempotency_idx')
                   or coalesce(internal.prior_result(v_ctx, p_ops -> v_index ->> 'client_op_id', p_canvas_id,
                                                     internal.try_uuid(p_ops -> v_index ->> 'block_id'),
                                                     p_ops -> v_index ->> 'action') ? 'duplicate', false));
  end loop;
  v_error := internal.operation_error(v_ctx, v_state, v_msg, v_detail, v_hint);
  if v_state = '57014' then
    perform internal.rebalance_after_timeout(p_canvas_id);  -- an inline rebalance may have run out of time
  end if;
  perform internal.count_rejected_attempt(v_ctx, v_error);
  v_op := p_ops -> v_index;
  v_result := internal.rejection_result(v_op ->> 'client_op_id', internal.try_uuid(v_op ->> 'block_id'), v_error)
              || jsonb_build_object('failed_index', case when v_index < jsonb_array_length(p_ops) then v_index end);
  perform internal.record_rejected_op(v_ctx, p_canvas_id, internal.try_uuid(v_op ->> 'block_id'), v_op ->> 'action',
                                      v_op ->> 'client_op_id', null, v_op -> 'patch', v_result ->> 'status', v_result, v_started);
  return v_result;
end $$;

comment on function api.upsert_blocks_atomic(uuid, jsonb) is
  'Apply several block operations on one canvas all-or-nothing. Returns {status, results[], server_seq, canvas_seq} or the first failure with failed_index. '
  'An op whose client_op_id the caller applied before answers with its original result (duplicate: true) when it is the same operation '
  '(canvas, action, block), and fails the batch with invalid_input on field client_op_id when it names another. '
  'The ops this batch applies take consecutive canvas_seqs in array order (results[i].canvas_seq; an op applied earlier keeps its original number; '
  'the top-level canvas_seq is the highest); a failed batch takes none. '
  'Each op''s block_id, when given and not null, must be a UUID string, base_version a JSON number, action and client_op_id strings '
  '(else invalid_input on that field); a base_version that is a whole number written with a fraction or exponent (1.0, 1e0) is that number. '
  'Logging rule as for upsert_block_atomic: the failing op of a batch by a caller with a role on the canvas is logged in its '
  'app.block_operations; by anyone else only in app.system_audit, bounded and without the payload. A base_version outside int4 '
  'fails the batch with invalid_input on field base_version.';

grant execute on function api.upsert_block_atomic(uuid, uuid, text, text, integer, jsonb),
                          api.upsert_blocks_atomic(uuid, jsonb) to authenticated, service_role;
-- per-schema default privileges cannot take away PUBLIC's EXECUTE: revoke it here (no anon calls)
revoke execute on function api.upsert_block_atomic(uuid, uuid, text, text, integer, jsonb),
                           api.upsert_blocks_atomic(uuid, jsonb) from public;
