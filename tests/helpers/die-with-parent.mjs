// Preloaded (node --import) into every process tests/helpers/chaos.ts starts. Its stdin is a pipe
// from the test process, which never writes to it: the pipe ends only when the test process is
// gone, however it went (a SIGKILL, a test worker torn down, a crash past every hook). Then this
// process stops itself as an operator's SIGTERM would (src/main.ts and scripts/worker.ts stop
// gracefully on it), and is killed 10 s later if it has not exited: it must not outlive its test
// file, holding its port, database connections and replication slot through the next ones.
// Plain JavaScript, loaded before anything else: no loader needed. Does not keep the process alive.
import { fstatSync } from 'node:fs';

const stopMyself = () => {
  process.kill(process.pid, 'SIGTERM');
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), 10_000).unref();
};
// (a pipe only, which Node's spawn makes a socket pair: started any other way, stdin may be a
// terminal or /dev/null, which ends at once)
const stdinKind = fstatSync(0);
if (stdinKind.isFIFO() || stdinKind.isSocket()) {
  const stdin = process.stdin;
  stdin.once('end', stopMyself);
  stdin.once('error', stopMyself);
  stdin.resume();
  stdin.unref?.();
}
