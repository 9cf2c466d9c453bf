// `npm run worker` as its own process: it announces itself, serves /metrics only on the
// configured port (and nothing else there), and stops gracefully on SIGTERM.
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { startWorkerProcess, type ScriptProcess } from '../helpers/chaos.ts';
import { waitFor } from '../helpers/worker.ts';

const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address() as { port: number }; s.close(() => resolve(port)); });
});

describe('a standalone worker process', () => {
  let worker: ScriptProcess | undefined;
  afterAll(() => { worker?.child.kill('SIGKILL'); });

  it('serves its metrics on WORKER_METRICS_PORT (to INTERNAL_TOKEN, sent once) and stops on SIGTERM', async () => {
    const port = await freePort();
    const internalToken = 'worker-metrics-token-0123456789';
    // the worker itself, not a wrapper around it (startWorkerProcess checks the pid it announces)
    const w = worker = await startWorkerProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_METRICS_PORT: String(port), LOG_LEVEL: 'silent',
      WORKER_CRONTAB: '', INTERNAL_TOKEN: internalToken });
    await waitFor('the worker to listen', async () => w.output().includes(`:${port}/metrics`), 30_000);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(404); // INTERNAL_TOKEN set: bearer only
    // the token sent twice, or beside another: 400 naming the header, as on the API's /metrics (http-api.test.ts)
    for (const second of [`Bearer ${internalToken}`, 'Bearer wrong-token-0123456789']) {
      const twice = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: [['authorization', `Bearer ${internalToken}`], ['authorization', second]] });
      expect(twice.status).toBe(400);
      expect(await twice.json()).toMatchObject({ error: { code: 'invalid_input', field: 'authorization' } });
    }
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${internalToken}` } });
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toMatch(/potentia_job_queue_depth/);
    expect(text).not.toMatch(/potentia_db_pool_in_use/); // the API's pool: not this process's

    const other = await fetch(`http://127.0.0.1:${port}/health`);
    expect(other.status).toBe(404);
    // 'close': exited, and all it printed read
    const exited = new Promise<number | null>((resolve) => w.child.once('close', (code) => resolve(code)));
    w.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(w.output()).toMatch(/SIGTERM: stopping worker/);
  }, 60_000);
});
