// The Potentia demo: sign in, pick a canvas, edit it with others live. Everything goes through
// @potentia/client (packages/client), as an app built on Potentia would. Routes are hash routes
// (#/, #/canvas/<id>) so the server only serves `/`.
import { createPotentiaClient, type PotentiaClient } from '../../packages/client/src/index.ts';
import { renderAuth } from './auth-view.ts';
import { openCanvas, type CanvasView } from './canvas-view.ts';
import { renderCanvases } from './canvases-view.ts';
import { clear, h, messageOf } from './dom.ts';

const root = document.getElementById('app')!;
const whoEl = document.querySelector<HTMLElement>('[data-testid="current-user"]')!;
const signOutButton = document.querySelector<HTMLButtonElement>('[data-testid="sign-out"]')!;

async function start() {
  const config = await fetch('/demo/config.json').then((r) => r.json() as Promise<{ anonKey: string | null }>);
  if (!config.anonKey) {
    clear(root, h('p', { class: 'error' }, 'This server does not set up the demo (production): run it with npm start locally.'));
    return;
  }
  const potentia = createPotentiaClient({ url: location.origin, anonKey: config.anonKey });
  let current: CanvasView | undefined;
  // a route started later wins: an earlier one still loading must not paint over it
  let routeSeq = 0;

  const route = async () => {
    const seq = ++routeSeq;
    const isCurrent = () => seq === routeSeq;
    current?.close();
    current = undefined;
    const user = potentia.auth.user();
    whoEl.textContent = user?.email ?? '';
    signOutButton.hidden = !user;
    if (!user) {
      renderAuth(root, potentia, home);
      return;
    }
    const m = /^#\/canvas\/([0-9a-f-]{36})$/.exec(location.hash);
    try {
      if (m) {
        const view = await openCanvas(root, potentia, m[1]!, isCurrent);
        if (isCurrent()) current = view;
        else view.close();
      } else await renderCanvases(root, potentia, isCurrent);
    } catch (err) {
      if (isCurrent()) clear(root, h('p', { class: 'error', 'data-testid': 'page-error' }, messageOf(err)), h('a', { href: '#/' }, 'Back to your canvases'));
    }
  };

  // to the canvas list: a hash change routes by itself, the same hash needs a call
  const home = () => {
    if (location.hash === '#/') void route();
    else location.hash = '#/';
  };
  signOutButton.addEventListener('click', async () => {
    await potentia.auth.signOut();
    home();
  });
  window.addEventListener('hashchange', () => void route());
  await waitForSession(potentia);
  await route();
}

/** supabase-js restores a stored session asynchronously: wait until the client knows the user. */
async function waitForSession(potentia: PotentiaClient) {
  const { data } = await potentia.supabase.auth.getSession();
  if (!data.session || potentia.auth.user()) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 2000);
    const off = potentia.auth.onChange(() => { clearTimeout(timer); off(); resolve(); });
  });
}

start().catch((err) => clear(root, h('p', { class: 'error' }, `The demo could not start: ${messageOf(err)}`)));
