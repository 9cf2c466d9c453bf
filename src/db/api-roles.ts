import type { Sql } from 'postgres';

/** The roles every request runs as (`set local role`, as PostgREST does): the connecting role must be able to become each. */
export const API_ROLES = ['anon', 'authenticated', 'service_role'] as const;

/** The connecting role cannot become the API roles: what to fix, for the operator (the log; /ready shows only its code). */
export class ApiRolesError extends Error {}

/**
 * Throws ApiRolesError, naming the grant to run, when the connecting role cannot `set role` to one of the API
 * roles (a superuser can become any; Supabase's `postgres` is a member of all three). Without it
 * every request fails with `permission denied to set role`, so /ready must not say ready.
 */
export async function checkApiRoles(sql: Sql): Promise<void> {
  const [row] = await sql<{ role: string; missing: string[] | null; absent: string[] | null }[]>`
    select current_user::text as role,
           array_agg(r) filter (where exists (select from pg_roles where rolname = r) and not pg_has_role(current_user, r, 'MEMBER')) as missing,
           array_agg(r) filter (where not exists (select from pg_roles where rolname = r)) as absent
    from unnest(${API_ROLES as unknown as string[]}::text[]) as r`;
  if (row?.absent?.length) {
    throw new ApiRolesError(`role ${row.absent.join(', ')} does not exist: run npm run db:migrate (it creates the API roles on plain Postgres; docs/self-hosting.md, "Database")`);
  }
  if (row?.missing?.length) {
    throw new ApiRolesError(`role ${row.role} cannot set role ${row.missing.join(', ')}, which requests run as: ` +
      `grant ${API_ROLES.join(', ')} to ${row.role} (docs/self-hosting.md, "Database")`);
  }
}
