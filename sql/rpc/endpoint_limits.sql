-- Per-endpoint rate limits (the seed's table, in app.endpoint_limits). The HTTP layer calls
-- api.hit_endpoint_limit first in each request's transaction; a rejection raises rate_limited
-- (PX429) with retry_after, which the HTTP layer answers with 429 and Retry-After.

create or replace function internal.hit_window_limit(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns void language plpgsql security definer set search_path = '' as $$
declare
  v_window timestamptz := to_timestamp(floor(extract(epoch from now()) / p_window_seconds) * p_window_seconds);
  v_hits integer;
begin
  insert into app.rate_limits as r (user_id, bucket, window_start, hits) values (p_subject, p_bucket, v_window, 1)
  on conflict (user_id, bucket, window_start) do update set hits = r.hits + 1
  returning hits into v_hits;
  if v_hits > p_limit then
    perform internal.raise_error('rate_limited',
      format('rate limit reached (%s per %s s): retry after %s', p_limit, p_window_seconds, v_window + make_interval(secs => p_window_seconds)),
      jsonb_build_object('retry_after', greatest(1, ceil(extract(epoch from v_window + make_interval(secs => p_window_seconds) - now())))::int,
                         'limit', p_limit));
  end if;
end $$;

drop function if exists api.hit_endpoint_limit(text);
create or replace function api.hit_endpoint_limit(p_endpoint text, p_relaxed boolean default false) returns void
language plpgsql security definer set search_path = '' as $$
declare
  v_limit app.endpoint_limits;
begin
  select * into v_limit from app.endpoint_limits where endpoint = p_endpoint;
  if found and auth.uid() is not null then
    if p_relaxed then
      -- the development profile: 100x the hits in a window of at most 60 s (own bucket, so a
      -- relaxed process never spends a standard one's budget)
      perform internal.hit_window_limit(auth.uid(), 'endpoint-dev:' || p_endpoint, v_limit.max_hits * 100, least(v_limit.window_seconds, 60));
    else
      perform internal.hit_window_limit(auth.uid(), 'endpoint:' || p_endpoint, v_limit.max_hits, v_limit.window_seconds);
    end if;
  end if;
end $$;
comment on function api.hit_endpoint_limit(text, boolean) is
  'Counts one call of endpoint p_endpoint (app.endpoint_limits: max_hits per window_seconds, per user); raises rate_limited (PX429) '
  'with retry_after seconds when over. p_relaxed (the development profile, POTENTIA_PROFILE=development): 100x the hits per window '
  'of at most 60 s. Calling it only ever counts against the caller.';

grant execute on function api.hit_endpoint_limit(text, boolean) to authenticated, service_role;
