// A crontab job (cleanup, cleanup_files: one attempt each, `?max=1`) that fails once, e.g. on a
// connection lost mid-run, is out of attempts at once, but its next tick runs it again: it was
// logged as an error 'job failed permanently: out of attempts' with advice to reschedule it by
// hand. Now a warning that says the next tick runs it; any other job out of attempts stays an error.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { startWorker, type WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { fastWorker, waitFor } from '../helpers/worker.ts';

describe('a crontab job that fails', () => {
  let db: Database;
  let worker: WorkerRuntime;
  const lines: { level: number; msg: string; job_id?: string; next?: string }[] = [];

  beforeAll(async () => {
    db = testDatabase(2);
    const sink = new Writable({ write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      done();
    } });
    worker = await startWorker({ databaseUrl: testDatabaseUrl(), worker: fastWorker(), embedding: loadConfig().embedding,
      provider: new LocalProvider(), logger: pino({ level: 'warn' }, sink),
      extraTasks: { test_tick_fails: async () => { throw new Error('Connection terminated unexpectedly'); } } });
  });
  afterAll(async () => {
    await worker?.stop();
    if (db) await db.sql`select graphile_worker.complete_jobs(array_agg(id)) from graphile_worker.jobs where task_identifier = 'test_tick_fails'`;
    await db?.close();
  });

  it('is a warning that its next tick runs it; a job out of attempts that no tick repeats stays an error', async () => {
    const add = async (payload: object) => String((await db.sql`
      select id from graphile_worker.add_job('test_tick_fails', ${JSON.stringify(payload)}::text::json, max_attempts => 1)`)[0]!.id);
    const cron = await add({ _cron: { ts: new Date().toISOString(), backfilled: false } });
    const plain = await add({});
    await waitFor('both jobs to fail', async () => lines.filter((l) => l.job_id === cron || l.job_id === plain).length >= 2);
    const of = (id: string) => lines.filter((l) => l.job_id === id).map((l) => ({ level: l.level, msg: l.msg }));
    expect(of(cron)).toEqual([{ level: 40, msg: 'crontab job failed; it runs again at its next tick' }]);
    expect(lines.find((l) => l.job_id === cron)!.next).toMatch(/next crontab tick runs it again/);
    expect(of(plain)).toEqual([{ level: 50, msg: 'job failed permanently: out of attempts' }]);
  });
});
