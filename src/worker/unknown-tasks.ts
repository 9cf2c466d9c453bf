import type { Logger } from 'pino';

/** An SQL string literal (a task identifier is at most 128 characters, and may hold a quote). */
const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;

/** What an operator does about jobs of a task no worker runs: said with the warning and in docs/self-hosting.md. */
export const unknownTaskNext = (task: string) =>
  `no running worker has task ${task}, and Graphile Worker only fetches the tasks it has. If a newer release enqueues it, `
  + `upgrade the workers (docs/self-hosting.md, "Upgrading"); otherwise fix what enqueues it (a typo in graphile_worker.add_job, `
  + `a task a later release dropped) and delete its jobs: select graphile_worker.complete_jobs(array(select id from graphile_worker.jobs `
  + `where task_identifier = ${literal(task)} and locked_at is null)). cleanup deletes them once failed_job_retention_days past due`;

/**
 * Jobs of a task no live worker runs (internal.job_queue_depth's state 'unknown'): never run and
 * never failed, they showed as a ready backlog that no worker would ever take. Warned once per
 * task when its jobs appear (the gauge counts them meanwhile), and said again once they are gone.
 */
export class UnknownTasks {
  readonly #waiting = new Set<string>();

  constructor(private readonly log: Logger) {}

  /** The unknown tasks' job counts as read now. */
  seen(now: { task: string; jobs: number }[]) {
    const tasks = new Set(now.map((n) => n.task));
    for (const { task, jobs } of now) {
      if (this.#waiting.has(task)) continue;
      this.#waiting.add(task);
      this.log.warn({ task, jobs, next: unknownTaskNext(task) }, 'jobs wait for a task no worker runs: they never run');
    }
    for (const task of this.#waiting) {
      if (tasks.has(task)) continue;
      this.#waiting.delete(task);
      this.log.info({ task }, 'no job waits for the unknown task any more');
    }
  }
}
