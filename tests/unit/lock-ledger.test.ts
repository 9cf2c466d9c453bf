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
    expect(pool().ledger.inUse()).toEqual({ running: [], lockedBefore: null, started: [] });
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
    expect(ledger.inUse()).toEqual({ running: ['7'], lockedBefore: at(2), started: ['7'] });
    // ended with its outcome lost, it is still named as started here (its lock is released, its attempt not given back)
    emit('job:complete', { worker: a, job: a.active, recorded: false });
    a.active = null;
    expect(ledger.inUse()).toMatchObject({ running: [], started: ['7'] });
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
    expect(ledger.inUse()).toEqual({ running: [], lockedBefore: at(1), started: [] });
  });

  it('names, of the jobs that ended, only those whose outcome was not recorded, whatever the throughput', () => {
    const { ledger, worker, emit } = pool();
    const concurrency = 4;
    const workers = Array.from({ length: concurrency }, worker);
    ledger.mark(at(1));
    const lost: string[] = [];
    let largest = 0;
    // 60,000 jobs (100 jobs/s for the 10 minutes the ledger used to keep every one), a heartbeat
    // every 500; every 7,919th job's outcome is lost
    for (let id = 1; id <= 60_000; id++) {
      const w = workers[id % concurrency]!;
      emit('worker:getJob:start', { worker: w });
      w.active = { id: String(id) } as Job;
      emit('job:start', { worker: w, job: w.active });
      if (id % 500 === 0) {
        const { started } = ledger.inUse();
        largest = Math.max(largest, started.length);
        expect(started.length).toBeLessThanOrEqual(concurrency + lost.length);
      }
      const recorded = id % 7919 !== 0;
      if (!recorded) lost.push(String(id));
      emit('job:complete', { worker: w, job: w.active, recorded });
      w.active = null;
    }
    expect(lost).toHaveLength(7);
    expect(largest).toBeGreaterThan(concurrency);
    expect(ledger.inUse()).toMatchObject({ running: [], started: lost });
  });

  it('forgets a lost outcome once a heartbeat released its lock, unless the job ran again since', async () => {
    const { ledger, worker, emit } = pool();
    const a = worker();
    ledger.mark(at(1));
    for (const id of ['1', '2']) {
      a.active = { id } as Job;
      emit('job:start', { worker: a, job: a.active });
      emit('job:complete', { worker: a, job: a.active, recorded: false });
    }
    a.active = null;
    await sleep(2);
    const asOf = performance.now();
    expect(ledger.inUse().started).toEqual(['1', '2']);
    // while that heartbeat is on its way, job 2, released by it, runs here again and its outcome is lost again
    await sleep(2);
    a.active = { id: '2' } as Job;
    emit('job:start', { worker: a, job: a.active });
    expect(ledger.inUse().started).toEqual(['2', '1']);
    emit('job:complete', { worker: a, job: a.active, recorded: false });
    a.active = null;
    ledger.released(['1', '2'], asOf);
    // job 2's new lock is still to be released, and it ran
    expect(ledger.inUse().started).toEqual(['2']);
  });

  it('counts a job whose worker failed to release it, and one Graphile Worker says nothing about, as not recorded', () => {
    const { ledger, worker, emit } = pool();
    const [a, b] = [worker(), worker()];
    a.active = { id: '3' } as Job;
    emit('job:start', { worker: a, job: a.active });
    emit('worker:fatalError', { worker: a, error: new Error('Failed to release job'), jobError: null });
    a.active = null;
    b.active = { id: '4' } as Job;
    emit('job:start', { worker: b, job: b.active });
    emit('job:complete', { worker: b, job: b.active, error: null }); // an unpatched Graphile Worker: no `recorded`
    b.active = null;
    expect(ledger.inUse().started).toEqual(['3', '4']);
  });
});
