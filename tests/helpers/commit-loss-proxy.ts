import net from 'node:net';

/**
 * A loopback TCP proxy in front of Postgres that loses the answer to one COMMIT (or, with
 * resetOnMarker, the connection under one statement; with loseAnswer, the answer to one
 * statement): armed with a
 * marker (text a statement's parameters carry, such as the name or id a create sends), the
 * connection that sends the marker is reset the moment Postgres answers its next COMMIT. Postgres
 * has committed; the client (the server's pool) never hears it and sees its connection reset
 * while it waits for the answer: a connection dropped during COMMIT (a killed backend, a failed
 * network, a pooler restarting), made to happen at exactly that point, every time.
 *
 * Otherwise bytes pass unchanged both ways. Markers are looked for within one read of the
 * client's bytes (a statement's Bind message, far below a TCP segment in these tests).
 */
export type CommitLossProxy = {
  /** The proxy's port on 127.0.0.1: put it in the database URL of the process under test. */
  readonly port: number;
  /**
   * Arms the proxy for the next transaction whose statements carry `marker`: its COMMIT's answer
   * is lost. Resolves once it has been (the COMMIT was answered and the connection reset); arming
   * again before then replaces the marker.
   */
  loseCommitAnswer(marker: string): Promise<void>;
  /** COMMIT answers lost so far. */
  readonly lost: number;
  /**
   * Arms the proxy for the next connection that sends `marker`: it is reset at once, those bytes
   * never reaching Postgres (the client sees its connection lost under that statement, as when its
   * backend is terminated); arming again replaces the marker.
   */
  resetOnMarker(marker: string): void;
  /** Connections reset by resetOnMarker so far. */
  readonly reset: number;
  /**
   * Arms the proxy for the next connection that sends `marker`: those bytes reach Postgres, and the
   * connection is reset the moment Postgres's answer to them ends (its ReadyForQuery): the
   * statement ran, the client never hears it (a backend terminated, or a network lost, after the
   * statement and before its answer). Resolves once it has been; arming again replaces the marker.
   */
  loseAnswer(marker: string): Promise<void>;
  /** Answers lost by loseAnswer so far. */
  readonly answersLost: number;
  /**
   * Arms the proxy for the next bytes that carry `marker`, on a connection other than the one
   * loseAnswer's marker went on: they (and what follows on that connection) are held, not sent to
   * Postgres, until releaseHeld(). Resolves once they are held (armed with loseAnswer on the same
   * marker: the statement run again after its answer was lost).
   */
  holdNext(marker: string): Promise<void>;
  /** Sends on what holdNext held. */
  releaseHeld(): void;
  /**
   * Arms the proxy for the next transaction whose statements carry `marker`: its COMMIT's answer
   * (and whatever follows it on that connection) is held, not sent to the client, until
   * releaseCommitAnswer(). Postgres has committed; the client has not heard it yet (a slow
   * network, or a committing backend not yet scheduled again). Resolves once it is held.
   */
  holdCommitAnswer(marker: string): Promise<void>;
  /** Sends on what holdCommitAnswer held. */
  releaseCommitAnswer(): void;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
};

// CommandComplete ('C', length 11) with the tag COMMIT: Postgres's answer to a COMMIT that committed
const COMMIT_COMPLETE = Buffer.concat([Buffer.from([0x43, 0, 0, 0, 11]), Buffer.from('COMMIT\0', 'latin1')]);

// ReadyForQuery ('Z', length 5): the end of Postgres's answer to a query (the status byte follows)
const READY_FOR_QUERY = Buffer.from([0x5a, 0, 0, 0, 5]);

/** Starts the proxy on an ephemeral port of 127.0.0.1, forwarding to `127.0.0.1:upstreamPort`. */
export async function startCommitLossProxy(upstreamPort: number): Promise<CommitLossProxy> {
  let armed: { marker: Buffer; done: () => void } | null = null;
  let lost = 0;
  let resetArmed: Buffer | null = null;
  let reset = 0;
  let answerArmed: { marker: Buffer; done: () => void } | null = null;
  let answersLost = 0;
  let holdArmed: { marker: Buffer; done: () => void } | null = null;
  let releases: (() => void)[] = [];
  let answerHoldArmed: { marker: Buffer; done: () => void } | null = null;
  let answerReleases: (() => void)[] = [];
  const sockets = new Set<net.Socket>();

  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort });
    sockets.add(client).add(upstream);
    let marked: typeof armed = null; // this connection sent the armed marker: lose its next COMMIT answer
    let answerMarked: typeof answerArmed = null; // this connection sent loseAnswer's marker: lose the answer to it
    let held: Buffer[] | null = null; // holdNext's: what this connection sends, kept from Postgres until released
    let commitHoldMarked: typeof answerHoldArmed = null; // this connection sent holdCommitAnswer's marker
    let answersHeld: Buffer[] | null = null; // what Postgres sends this connection from that COMMIT's answer on, until released
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.on('data', (chunk: Buffer) => {
      if (resetArmed && chunk.includes(resetArmed)) {
        resetArmed = null;
        reset++;
        client.resetAndDestroy(); // never forwarded
        upstream.destroy();
        return;
      }
      if (answerArmed && !answerMarked && chunk.includes(answerArmed.marker)) {
        answerMarked = answerArmed;
        answerArmed = null;
      } else if (holdArmed && !answerMarked && !held && chunk.includes(holdArmed.marker)) {
        const { done } = holdArmed;
        holdArmed = null;
        const chunks: Buffer[] = [];
        held = chunks;
        releases.push(() => {
          held = null;
          for (const c of chunks) upstream.write(c);
        });
        done();
      }
      if (held) return void held.push(chunk);
      if (armed && !marked && chunk.includes(armed.marker)) {
        marked = armed;
        armed = null;
      }
      if (answerHoldArmed && !commitHoldMarked && chunk.includes(answerHoldArmed.marker)) {
        commitHoldMarked = answerHoldArmed;
        answerHoldArmed = null;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (answerMarked && chunk.includes(READY_FOR_QUERY)) {
        const { done } = answerMarked;
        answerMarked = null;
        answersLost++;
        client.resetAndDestroy(); // never forwarded: the statement ran, the client hears a reset
        upstream.destroy();
        done();
        return;
      }
      if (marked && chunk.includes(COMMIT_COMPLETE)) {
        const { done } = marked;
        marked = null;
        lost++;
        client.resetAndDestroy(); // never forwarded: the client hears a reset instead
        upstream.destroy();
        done();
        return;
      }
      if (!answersHeld && commitHoldMarked && chunk.includes(COMMIT_COMPLETE)) {
        const { done } = commitHoldMarked;
        commitHoldMarked = null;
        const chunks: Buffer[] = [];
        answersHeld = chunks;
        answerReleases.push(() => {
          answersHeld = null;
          for (const c of chunks) client.write(c);
        });
        done();
      }
      if (answersHeld) return void answersHeld.push(chunk);
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });

  return {
    port: (server.address() as net.AddressInfo).port,
    get lost() {
      return lost;
    },
    get reset() {
      return reset;
    },
    get answersLost() {
      return answersLost;
    },
    holdNext(marker) {
      return new Promise<void>((done) => {
        holdArmed = { marker: Buffer.from(marker, 'utf8'), done };
      });
    },
    releaseHeld() {
      for (const r of releases.splice(0)) r();
    },
    holdCommitAnswer(marker) {
      return new Promise<void>((done) => {
        answerHoldArmed = { marker: Buffer.from(marker, 'utf8'), done };
      });
    },
    releaseCommitAnswer() {
      for (const r of answerReleases.splice(0)) r();
    },
    loseAnswer(marker) {
      return new Promise<void>((done) => {
        answerArmed = { marker: Buffer.from(marker, 'utf8'), done };
      });
    },
    resetOnMarker(marker) {
      resetArmed = Buffer.from(marker, 'utf8');
    },
    loseCommitAnswer(marker) {
      // arming again replaces a marker no connection sent (a test that failed before sending it)
      return new Promise<void>((done) => {
        armed = { marker: Buffer.from(marker, 'utf8'), done };
      });
    },
    async close() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
