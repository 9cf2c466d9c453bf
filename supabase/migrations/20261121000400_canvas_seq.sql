-- Per-canvas operation numbers. canvas_seq numbers the applied operations of one canvas 1, 2, 3,
-- … with no gap, in commit order (it is taken under the canvas lock, like server_seq), so a
-- client can tell from the numbers alone that it missed something: the next delta must carry
-- last + 1. server_seq stays: one order across all canvases, with gaps per canvas.
-- Functions that assign and serve it are in sql/rpc/mutate.sql and sql/rpc/replay.sql.

-- highest canvas_seq committed on this canvas (the counter the next operation adds 1 to)
alter table app.canvases add column last_canvas_seq bigint not null default 0;

-- set for applied operations only, like server_seq
alter table app.block_operations add column canvas_seq bigint;

-- Existing history: number each canvas's applied operations in server_seq order, which is their
-- commit order (server_seq was taken under the canvas lock). Operations already removed by
-- retention take no number: numbering starts at 1 with the oldest one still in the log.
update app.block_operations o set canvas_seq = n.canvas_seq
from (select op_id, row_number() over (partition by canvas_id order by server_seq) as canvas_seq
      from app.block_operations where server_seq is not null) n
where o.op_id = n.op_id;

update app.canvases c set last_canvas_seq = n.last_canvas_seq
from (select canvas_id, max(canvas_seq) as last_canvas_seq from app.block_operations
      where canvas_seq is not null group by canvas_id) n
where c.canvas_id = n.canvas_id;

alter table app.block_operations
  add constraint block_operations_canvas_seq_check check ((status = 'success') = (canvas_seq is not null));
-- one number per applied operation of a canvas; also the index replay by canvas_seq reads
create unique index block_operations_canvas_seq_idx on app.block_operations (canvas_id, canvas_seq)
  where canvas_seq is not null;

comment on column app.canvases.last_canvas_seq is
  'Highest canvas_seq applied on this canvas; written under the canvas lock with last_seq.';
comment on column app.block_operations.canvas_seq is
  'Per-canvas number of an applied operation: 1, 2, 3, … without gaps, in commit order.';
