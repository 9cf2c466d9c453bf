-- app.blocks_parent_canvas_idx (parent_id, canvas_id), in place of blocks_parent_idx (parent_id):
-- the parent foreign key's own columns. Deleting a block deletes its subtree through that key
-- (ON DELETE CASCADE): PostgreSQL runs `DELETE FROM ONLY app.blocks WHERE $1 = canvas_id AND
-- $2 = parent_id` once per deleted block from a plan it keeps for the session, generic after five
-- runs. With parent_id alone indexed, that generic plan (the canvas estimated at the average
-- canvas's share of the table) could AND it with blocks_canvas_y_order_key, reading every entry of
-- the canvas at each level: deleting a chain 2,000 deep on a canvas of 44,000 blocks took 2-4.5 s
-- against 35-110 ms, flipping from one to the other as the table's size and statistics moved
-- (docs/performance.md, "Cascading deletes of a subtree"). Led by parent_id, it serves what
-- blocks_parent_idx served (a block's children: the delete's subtree walk). Partial as before: a
-- top-level block has no entry. No column an edit writes: an edit that was a HOT update stays one.
-- On a large existing app.blocks the build reads the table and holds off its writes (mutations)
-- meanwhile: create it by hand first, `create index concurrently if not exists
-- blocks_parent_canvas_idx on app.blocks (parent_id, canvas_id) where parent_id is not null`, and
-- this migration then skips it.
create index if not exists blocks_parent_canvas_idx on app.blocks (parent_id, canvas_id) where parent_id is not null;
drop index if exists app.blocks_parent_idx;
