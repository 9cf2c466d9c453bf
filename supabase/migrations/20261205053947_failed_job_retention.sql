-- How long internal.cleanup keeps jobs that will never run again (sql/jobs/cleanup.sql): out of
-- attempts, given up (a malformed payload), or left behind by Graphile Worker when a newer job of
-- their key replaced them. Graphile never deletes them.
insert into app.settings (key, value, description) values
  ('failed_job_retention_days', '7', 'jobs that will never run again (failed for good, or replaced while running) are deleted by cleanup after this many days')
on conflict (key) do nothing;
