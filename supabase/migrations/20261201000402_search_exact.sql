-- Semantic search is exact for a canvas with at most this many embedded blocks (sql/jobs/search.sql):
-- scanning a canvas's own rows is cheap and never misses, where the shared HNSW index filtered by
-- canvas can miss a canvas's few related blocks among many unrelated vectors.
insert into app.settings (key, value, description) values
  ('search_exact_max_blocks', '5000', 'semantic search scans a canvas exactly up to this many embedded blocks, then uses the HNSW index')
on conflict (key) do nothing;
