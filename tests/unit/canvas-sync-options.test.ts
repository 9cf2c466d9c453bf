import { describe, expect, it } from 'vitest';
import { CanvasSync, type CanvasSyncOptions } from '../../packages/client/src/canvas-sync.ts';

// A wrong option must fail at construction with what to do, not later inside the reconnect loop
// (where a token string made join() wait forever, logging a TypeError on every attempt).

const options = (token: unknown) => ({ url: 'http://127.0.0.1:1', canvasId: 'c', token, WebSocket: class {} }) as unknown as CanvasSyncOptions;

describe('CanvasSync options', () => {
  it.each([['a string', 'eyJ…'], ['missing', undefined], ['a promise', Promise.resolve('t')]])('refuses a token that is %s, naming the option', (_, token) => {
    expect(() => new CanvasSync(options(token))).toThrow(TypeError);
    expect(() => new CanvasSync(options(token))).toThrow(/token option must be a function .*token: \(\) => accessToken/);
  });

  it('accepts a function, called only when connecting', () => {
    let calls = 0;
    const sync = new CanvasSync(options(() => { calls++; return 't'; }));
    expect(calls).toBe(0);
    sync.close();
  });
});
