import { Writable } from 'node:stream';
import pino from 'pino';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { databaseCheck } from '../../src/http/probes.ts';
import { startServer, type Server } from '../../src/server.ts';

// docs/self-hosting.md ("Database") runs Potentia as its own login role, not a superuser. Every
// request runs `set local role authenticated` (anon, service_role), as PostgREST does, so that
// role must be a member of the three API roles. Without the grant every request failed with
// `permission denied to set role "service_role"` (500) while /ready said ready; now /ready is 503
// with the stable code api_roles, and the log names the grant to run (/ready answers anyone who
// reaches the port: it shows no role names).

const role = `potentia_ready_roles_${process.pid}`;
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const asRole = (() => { const u = new URL(testDatabaseUrl()); u.username = role; u.password = 'ready-roles'; return u.toString(); })();
let server: Server | undefined;

/** What the server logs at warn and above, parsed. */
const logged: any[] = [];
const logger = pino({ level: 'warn' }, new Writable({
  write(chunk, _enc, done) {
    for (const line of String(chunk).split('\n').filter(Boolean)) logged.push(JSON.parse(line));
    done();
  },
}));
const grant = `role ${role} cannot set role anon, authenticated, service_role, which requests run as: ` +
  `grant anon, authenticated, service_role to ${role} (docs/self-hosting.md, "Database")`;

beforeAll(async () => {
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.unsafe(`create role ${role} login password 'ready-roles'`);
});
afterAll(async () => {
  await server?.stop();
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.end();
});

describe('/ready and the API roles', () => {
  it('is 503 api_roles (the log names the grant) while the connecting role cannot become anon, authenticated and service_role, then 200 once granted', async () => {
    server = await startServer({ ...loadConfig(), databaseUrl: asRole, port: 0 }, { realtime: false, logger });
    const before = await fetch(`${server.url}/ready`);
    expect(before.status).toBe(503);
    expect(await before.json()).toEqual({ status: 'unavailable', checks: { database: 'api_roles' },
      message: 'database: the connecting role cannot act as the API roles (anon, authenticated, service_role); '
        + 'the server log names the grant to run (docs/self-hosting.md, "Database")' });
    expect(logged.filter((l) => l.code === 'api_roles').map((l) => l.err?.message)).toContain(grant);
    await admin.unsafe(`grant anon, authenticated, service_role to ${role}`);
    const after = await fetch(`${server.url}/ready`);
    expect(after.status).toBe(200);
    expect(await after.json()).toEqual({ status: 'ready', checks: { database: 'ok' } });
    await server.stop();
    server = undefined;
    await admin.unsafe(`revoke anon, authenticated, service_role from ${role}`);
  });

  it('the gateway probe checks the same; the worker probe (its jobs run as its own role) does not', async () => {
    const sql = postgres(asRole, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`revoke anon, authenticated, service_role from ${role}`);
      await admin.unsafe(`grant authenticated to ${role}`);
      expect(await databaseCheck(sql, logger)).toBe('api_roles');
      expect(logged.at(-1)?.err?.message).toBe(`role ${role} cannot set role anon, service_role, which requests run as: ` +
        `grant anon, authenticated, service_role to ${role} (docs/self-hosting.md, "Database")`);
      expect(await databaseCheck(sql, logger, { apiRoles: false })).toBe('ok');
      await admin.unsafe(`grant anon, service_role to ${role}`);
      expect(await databaseCheck(sql, logger)).toBe('ok');
    } finally {
      await sql.end();
      await admin.unsafe(`revoke anon, authenticated, service_role from ${role}`);
    }
  });
});
