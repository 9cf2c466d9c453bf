// Not a test of its own: tests/integration/chaos-orphans.test.ts runs this file in a vitest of its
// own (vitest.config.ts beside it) and then looks for what it started. ORPHANS_MODE:
//  - reject: two processes started in one Promise.all, one of which fails at once (an unknown
//    role: exit 2) while the other is still starting; the Promise.all rejects, beforeAll fails,
//    and nothing holds the other one;
//  - kill: one process started, then this test process is SIGKILLed (no hook runs).
// The processes started carry POTENTIA_TEST_ORPHAN=<ORPHANS_MARK> in their environment, which is
// how the outer test finds them; what the fixture saw is written to the file ORPHANS_OUT.
import { writeFileSync } from 'node:fs';
import { beforeAll, it } from 'vitest';
import { testDatabaseUrl } from '../../../src/config.ts';
import { startPotentiaProcess } from '../chaos.ts';
import { markedProcesses } from './marked.ts';

const mark = process.env.ORPHANS_MARK!;
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', POTENTIA_ROLE: 'api', POTENTIA_TEST_ORPHAN: mark };

beforeAll(async () => {
  if (process.env.ORPHANS_MODE === 'kill') {
    const p = await startPotentiaProcess(env);
    writeFileSync(process.env.ORPHANS_OUT!, `started pid ${p.pid}`); // before the kill: a log line may not get out
    process.kill(process.pid, 'SIGKILL');
    await new Promise(() => {}); // (the kill is on its way)
  }
  await Promise.all([startPotentiaProcess(env), startPotentiaProcess({ ...env, POTENTIA_ROLE: 'router' }, 20_000)]).catch((err) => {
    // the one still starting, which nothing holds now
    writeFileSync(process.env.ORPHANS_OUT!, `orphans marked: ${markedProcesses(mark).join(' ')}`);
    throw err;
  });
}, 60_000);

it('never runs: its beforeAll fails', () => {});
