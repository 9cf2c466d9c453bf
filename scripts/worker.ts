// npm run worker: a headless worker process (scale out by running more). It runs the jobs the
// database enqueues (embed_block, rebalance_canvas, the cleanup crontab) until SIGINT/SIGTERM,
// then shuts down gracefully (running jobs finish or are released for another worker).
import { pino } from 'pino';
import { loadConfig } from '../src/config.ts';
import { startWorker } from '../src/worker/runtime.ts';

const config = loadConfig();
const logger = pino({ level: config.logLevel });
const worker = await startWorker({ databaseUrl: config.databaseUrl, worker: config.worker, embedding: config.embedding, logger });
console.log(`potentia worker ${worker.workerId} running (pid ${process.pid}, concurrency ${config.worker.concurrency}, provider ${worker.provider.model})`);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping worker…`);
    await worker.stop();
    process.exit(0);
  });
}
