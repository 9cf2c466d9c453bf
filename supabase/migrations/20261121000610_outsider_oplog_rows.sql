-- Tenant isolation of the operation log (no schema change). Until now a rejected attempt by a
-- caller with no role on a canvas (not a member: `not_found` on field canvas_id; no user:
-- actor_id null) left a `failed` row with its whole patch in that canvas's app.block_operations,
-- which the canvas's members read. api.upsert_block_atomic now audits such attempts only
-- (internal.record_rejected_op); this removes the rows already written. Each of them already has
-- its audit row in app.system_audit (every attempt had one), so nothing is lost but the payload.
-- Replay, merge and idempotency read `success` rows only, which no outsider ever had.
delete from app.block_operations
where status <> 'success'
  and (actor_id is null
       or (error_code = 'not_found' and result #>> '{error,field}' = 'canvas_id'));
