-- Development seed data, loaded by `supabase db reset` (and by `npm start` locally).
-- Kept empty of secrets; the demo workspace arrives with the HTTP API.
select 1;
