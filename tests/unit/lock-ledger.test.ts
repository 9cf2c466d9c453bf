// LockLedger (src/worker/lock-ledger.ts): the jobs a worker pool runs, and the time before which
// every lock it took has reached a worker, so that releasing older locks never frees a job a
// get_job in flight is about to hand to a worker.
import { EventEmitter } from 'node:events';
import type { Job, Worker, WorkerEventMap, WorkerEvents } from 'graphile-worker';
import { describe, expect, it } from 'vitest';
import { LockLedger } from '../../src/worker/lock-ledger.ts';
import { sleep } from '../helpers/wait.ts';

function pool() {
  const events: WorkerEvents = new EventEmitter();
  const ledger = new LockLedger(events);
  const worker = (): Worker & { active: Job | null } => {
    const w = { active: null as Job | null, getActiveJob: () => w.active } as Worker & { active: Job | null };
    events.emit('worker:create', { worker: w } as never);
    return w;
  };
  const emit = (name: keyof WorkerEventMap, payload: object) => events.emit(name, payload as never);
  return { ledger, worker, emit };
}
const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));

describe('LockLedger', () => {
  it('bounds nothing before its first heartbeat mark', () => {
    expect(pool().ledger.inUse()).toEqual({ running: [], lockedBefore: null });
  });

  it('names the running jobs, and bounds by the latest mark when no get_job is in flight', async () => {
    const { ledger, worker, emit } = pool();
    const [a, b] = [worker(), worker()];
    ledger.mark(at(1));
    await sleep(2);
    emit('worker:getJob:start', { worker: a });
    a.active = { id: '7' } as Job;
    emit('job:start', { worker: a, job: a.active });
    emit('worker:getJob:start', { worker: b });
    emit('worker:getJob:empty', { worker: b });
    ledger.mark(at(2));
    expect(ledger.inUse()).toEqual({ running: ['7'], lockedBefore: at(2) });
  });

  it('bounds by the latest mark older than every get_job in flight, and by none if none is', async () => {
    const { ledger, worker, emit } = pool();
    const [a, b] = [worker(), worker()];
    emit('worker:getJob:start', { worker: a }); // may lock a job before any mark
    await sleep(2);
    ledger.mark(at(1));
    await sleep(2);
    emit('worker:getJob:start', { worker: b }); // locks after at(1)
    await sleep(2);
    ledger.mark(at(2));
    expect(ledger.inUse().lockedBefore).toBeNull();
    emit('worker:getJob:error', { worker: a, error: new Error('Connection terminated unexpectedly') });
    expect(ledger.inUse().lockedBefore).toEqual(at(1));
    emit('worker:getJob:empty', { worker: b });
    expect(ledger.inUse().lockedBefore).toEqual(at(2));
  });

  it('forgets a stopped worker', () => {
    const { ledger, worker, emit } = pool();
    const a = worker();
    a.active = { id: '9' } as Job;
    emit('worker:getJob:start', { worker: a });
    ledger.mark(at(1));
    emit('worker:stop', { worker: a });
    expect(ledger.inUse()).toEqual({ running: [], lockedBefore: at(1) });
  });
});
