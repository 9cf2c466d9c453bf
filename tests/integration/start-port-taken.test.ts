// `npm start` (role all, a worker in the process) on a port another process holds: it must say so
// and exit before its worker takes any job or writes a heartbeat. It started the worker first and
// only then bound the port, so a second `npm start` beside a running one left a heartbeat row of a
// dead worker behind (counted as a live worker by every /ready until WORKER_STALE_MS), and could
// have locked a job it never ran. The worker role binds its port first already (src/roles.ts).
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { testDatabase } from '../helpers/db.ts';

const db = testDatabase(1);

describe('a server started on a port in use', () => {
  it('says what to do and exits 1, leaving no worker heartbeat behind', async () => {
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const port = (holder.address() as AddressInfo).port;
    try {
      const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
        env: { ...process.env, DATABASE_URL: testDatabaseUrl(), HOST: '127.0.0.1', PORT: String(port), WORKER_MODE: 'inprocess', LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout!.on('data', (d) => { out += d; });
      child.stderr!.on('data', (d) => { out += d; });
      const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
      expect(code, out).toBe(1);
      expect(out).toContain(`port ${port} on 127.0.0.1 is in use (another npm start?): stop that process or set PORT to a free port`);
      const rows = await db.sql`select worker_id from app.worker_heartbeats where pid = ${child.pid!} and hostname = ${hostname()}`;
      expect(rows).toEqual([]);
      expect(out).not.toContain('worker started');
    } finally {
      holder.close();
    }
  }, 60_000);
});
