import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDemo } from '../../scripts/build-demo.ts';
import { createPotentiaClient } from '../../packages/client/src/index.ts';
import { launchChromium, pageErrors, screenshot } from '../helpers/browser.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';
import { until } from '../helpers/wait.ts';

// The demo app (demo/, served at / by a real `src/main.ts` process) in Debian's Chromium: people
// sign up, share a workspace and open one canvas in separate browser contexts; what one does
// shows for the others — blocks, concurrent typing in one block, drag to reorder and nest, the
// conflict dialog's three choices, live cursors. Screenshots of each step go to
// test-results/screenshots/.

let server: DevServer;
let browser: Browser;
const db = testDatabase(2);
const contexts: BrowserContext[] = [];
const errors = new Map<Page, string[]>();
const password = 'correct horse battery';
const run = randomUUID().slice(0, 8);
const email = (name: string) => `${name}-${run}@example.com`;

type Person = { name: string; page: Page };
let alice: Person;
let bob: Person;
let canvasId: string;

beforeAll(async () => {
  await buildDemo({ ifChanged: true });
  // the seeded demo user (supabase/seed.sql, as npm start loads it), for "Continue as demo user"
  await db.sql.file('supabase/seed.sql');
  server = await startDevServer();
  browser = await launchChromium();
}, 120_000);
afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  await server?.stop();
  await db.close();
});

// a failing step leaves a screenshot of every open page, and the pages' errors in the report
afterEach(async (ctx) => {
  if (ctx.task.result?.state !== 'fail') return;
  for (const [page, errs] of errors) {
    if (page.isClosed()) continue;
    const who = [alice, bob].find((p) => p?.page === page)?.name ?? 'other';
    await screenshot(page, `failed-${ctx.task.name.slice(0, 40).replace(/\W+/g, '-')}-${who}`).catch(() => {});
    if (errs.length) console.error(`${who}: ${errs.join('\n')}`);
  }
});

async function open(name: string): Promise<Person> {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  errors.set(page, pageErrors(page));
  await page.goto(server.url);
  return { name, page };
}

async function signUp(p: Person) {
  await p.page.getByTestId('auth-email').fill(email(p.name));
  await p.page.getByTestId('auth-password').fill(password);
  await p.page.getByTestId('sign-up').click();
  await p.page.getByTestId('current-user').getByText(email(p.name)).waitFor();
}

const blockByTitle = (p: Person, title: string) => p.page.locator(`[data-testid="block"][data-title="${title}"]`);
/** A control of the block titled `title` itself (not of the blocks nested in it). */
const own = (p: Person, title: string, testid: string) =>
  p.page.locator(`[data-testid="block"][data-title="${title}"] > .block-body [data-testid="${testid}"]`);
const titlesIn = (p: Person, container = '[data-testid="blocks"]') =>
  p.page.$$eval(`${container} > [data-testid="block"]`, (els) => els.map((e) => (e as HTMLElement).dataset.title));
async function dbText(title: string, key: string): Promise<unknown> {
  const [row] = await db.sql`select content from app.blocks where canvas_id = ${canvasId} and content->>'title' = ${title}`;
  return row?.content?.[key];
}

/** Waits until `fn` (run in the page) is true, naming what was awaited on timeout. */
async function pageUntil<A>(p: Person, what: string, fn: (arg: A) => boolean, arg: A, timeout = 15_000) {
  try {
    await p.page.waitForFunction(fn as never, arg, { timeout, polling: 50 });
  } catch (err) {
    throw new Error(`${p.name}: timed out waiting for ${what} (${(err as Error).message.split('\n')[0]}); page errors: ${JSON.stringify(errors.get(p.page))}`);
  }
}

/** Both edit the title of `title`'s block from the same value; bob saves first, then alice: the dialog opens on alice's side. */
async function clashOnTitle(title: string, bobValue: string, aliceValue: string): Promise<Locator> {
  // by id: the block's data-title follows the saved title while alice's input keeps what she types
  const id = (await blockByTitle(alice, title).getAttribute('data-block-id'))!;
  const titleInput = (p: Person) => p.page.locator(`[data-block-id="${id}"] > .block-body [data-testid="block-title"]`);
  const aliceTitle = titleInput(alice);
  const bobTitle = titleInput(bob);
  await aliceTitle.focus();
  await bobTitle.fill(bobValue);
  await bobTitle.press('Enter');
  // alice's page has bob's value (the block's data-title) while her input still shows what she edits
  await pageUntil(alice, `bob's title "${bobValue}"`, (v) => !!document.querySelector(`[data-testid="block"][data-title="${CSS.escape(v)}"]`), bobValue);
  expect(await aliceTitle.inputValue()).toBe(title);
  expect(await aliceTitle.evaluate((el) => document.activeElement === el), 'alice is still editing the title').toBe(true);
  await aliceTitle.fill(aliceValue);
  await aliceTitle.press('Enter');
  const dialog = alice.page.getByTestId('conflict-dialog');
  await dialog.waitFor({ state: 'visible' });
  expect(await dialog.getByTestId('conflict-base').innerText()).toBe(title);
  expect(await dialog.getByTestId('conflict-theirs').innerText()).toBe(bobValue);
  expect(await dialog.getByTestId('conflict-mine').innerText()).toBe(aliceValue);
  return dialog;
}

async function titleEverywhere(value: string) {
  for (const p of [alice, bob]) await pageUntil(p, `title "${value}"`, (v) => !!document.querySelector(`[data-testid="block"][data-title="${CSS.escape(v)}"]`), value);
  expect(await own(alice, value, 'block-title').inputValue()).toBe(value);
  expect(await own(bob, value, 'block-title').inputValue()).toBe(value);
  await until(async () => (await dbText(value, 'title')) === value, 5_000, `title "${value}" in the database`);
}

describe('the demo app, two people on one canvas', () => {
  it('continue as demo user: signs in as the seeded user and lists the seeded canvas', async () => {
    const demo = await open('demo');
    await demo.page.getByTestId('demo-user').click();
    await demo.page.getByTestId('current-user').getByText('demo@potentia.local').waitFor();
    await demo.page.getByTestId('canvas-item').getByText('Demo canvas').waitFor();
    expect(await demo.page.getByTestId('api-link').getAttribute('href')).toBe('/docs/api');
    await screenshot(demo.page, '01-demo-user-canvases');
    await demo.page.context().close();
  }, 60_000);

  it('alice signs up, creates a canvas and shares her workspace; bob signs up and opens it', async () => {
    alice = await open('alice');
    await screenshot(alice.page, '02-sign-in');
    await signUp(alice);
    await alice.page.getByTestId('new-canvas-title').fill('Plans');
    await alice.page.getByTestId('create-canvas').click();
    await alice.page.waitForURL(/#\/canvas\/[0-9a-f-]{36}$/);
    canvasId = /#\/canvas\/([0-9a-f-]{36})$/.exec(alice.page.url())![1]!;
    await alice.page.getByTestId('canvas-title').getByText('Plans').waitFor();

    await alice.page.getByTestId('back').click();
    for (const name of ['bob', 'carol']) {
      await alice.page.getByTestId('share-email').fill(email(name));
      await alice.page.getByTestId('share-button').click();
      await alice.page.getByTestId('share-result').getByText(`Shared with ${email(name)}`).waitFor();
    }
    await screenshot(alice.page, '03-canvases-shared');
    await alice.page.getByTestId('canvas-item').getByText('Plans').click();

    bob = await open('bob');
    await signUp(bob);
    await bob.page.getByTestId('canvas-item').getByText('Plans').click();
    await bob.page.waitForURL(new RegExp(`#/canvas/${canvasId}$`));
    // who is here: each sees both
    for (const p of [alice, bob]) await pageUntil(p, 'two people present', () => document.querySelectorAll('[data-testid="presence-user"]').length === 2, null);
    expect(await alice.page.getByTestId('presence-list').innerText()).toContain('bob-');
    expect(await bob.page.getByTestId('presence-list').innerText()).toContain('alice-');
  }, 90_000);

  it('a block alice adds appears for bob, with its title and text', async () => {
    await alice.page.getByTestId('add-block').click();
    const title = alice.page.getByTestId('block-title').first();
    await title.fill('Agenda');
    await title.press('Enter');
    await blockByTitle(bob, 'Agenda').waitFor();
    await own(alice, 'Agenda', 'block-text').fill('middle');
    await pageUntil(bob, 'the text "middle"', () => (document.querySelector('[data-testid="block-text"]') as HTMLTextAreaElement | null)?.value === 'middle', null);
    await until(async () => (await dbText('Agenda', 'text')) === 'middle', 5_000, 'the text in the database');
    await screenshot(alice.page, '04-block-added-alice');
    await screenshot(bob.page, '04-block-added-bob');
  }, 60_000);

  it('both type in the same block at once and end with the same text holding both edits', async () => {
    const aliceText = own(alice, 'Agenda', 'block-text');
    const bobText = own(bob, 'Agenda', 'block-text');
    await aliceText.focus();
    await alice.page.keyboard.press('Control+Home');
    await bobText.focus();
    await bob.page.keyboard.press('Control+End');
    // keystrokes interleave: each side's ops are sent while the other's arrive
    await Promise.all([
      alice.page.keyboard.type('start ', { delay: 40 }),
      bob.page.keyboard.type(' end', { delay: 55 }),
    ]);
    const expected = 'start middle end';
    for (const p of [alice, bob]) {
      await pageUntil(p, `the text "${expected}"`, (v) => (document.querySelector('[data-testid="block"][data-title="Agenda"] [data-testid="block-text"]') as HTMLTextAreaElement).value === v, expected);
    }
    await until(async () => (await dbText('Agenda', 'text')) === expected, 5_000, 'the merged text in the database');
    await screenshot(alice.page, '05-concurrent-typing-alice');
    await screenshot(bob.page, '05-concurrent-typing-bob');
  }, 60_000);

  it('a drag reorder in one shows in the other, and so does nesting', async () => {
    await alice.page.getByTestId('add-block').click();
    const second = alice.page.locator('[data-testid="blocks"] > [data-testid="block"]').nth(1).getByTestId('block-title');
    await second.fill('Second');
    await second.press('Enter');
    for (const p of [alice, bob]) {
      await pageUntil(p, 'two blocks in order', () => [...document.querySelectorAll('[data-testid="blocks"] > [data-testid="block"]')]
        .map((e) => (e as HTMLElement).dataset.title).join() === 'Agenda,Second', null);
    }
    // drag Second onto the top edge of Agenda: before it
    const target = alice.page.locator('[data-testid="block"][data-title="Agenda"] > .block-body');
    const box = (await target.boundingBox())!;
    await own(alice, 'Second', 'drag-handle').dragTo(target, { targetPosition: { x: box.width / 2, y: 4 } });
    for (const p of [alice, bob]) {
      await pageUntil(p, 'the new order Second, Agenda', () => [...document.querySelectorAll('[data-testid="blocks"] > [data-testid="block"]')]
        .map((e) => (e as HTMLElement).dataset.title).join() === 'Second,Agenda', null);
    }
    await screenshot(bob.page, '06-reordered-bob');

    // drag Agenda onto the middle of Second: nested inside it
    const parent = alice.page.locator('[data-testid="block"][data-title="Second"] > .block-body');
    const pbox = (await parent.boundingBox())!;
    await own(alice, 'Agenda', 'drag-handle').dragTo(parent, { targetPosition: { x: pbox.width / 2, y: pbox.height / 2 } });
    for (const p of [alice, bob]) {
      await pageUntil(p, 'Agenda nested in Second', () => {
        const kids = document.querySelector('[data-testid="block"][data-title="Second"] > [data-testid="block-children"]');
        return !!kids && [...kids.children].map((e) => (e as HTMLElement).dataset.title).join() === 'Agenda'
          && document.querySelectorAll('[data-testid="blocks"] > [data-testid="block"]').length === 1;
      }, null);
    }
    expect(await titlesIn(bob)).toEqual(['Second']);
    const [row] = await db.sql`select c.content->>'title' as child, p.content->>'title' as parent from app.blocks c join app.blocks p on p.block_id = c.parent_id where c.canvas_id = ${canvasId}`;
    expect(row).toEqual({ child: 'Agenda', parent: 'Second' });
    await screenshot(bob.page, '07-nested-bob');

    // and back out: Agenda dropped on the empty part of the canvas goes last, at the top level
    const blocks = alice.page.getByTestId('blocks');
    const bbox = (await blocks.boundingBox())!;
    await own(alice, 'Agenda', 'drag-handle').dragTo(blocks, { targetPosition: { x: bbox.width / 2, y: bbox.height - 10 } });
    for (const p of [alice, bob]) {
      await pageUntil(p, 'Second, Agenda at the top level', () => [...document.querySelectorAll('[data-testid="blocks"] > [data-testid="block"]')]
        .map((e) => (e as HTMLElement).dataset.title).join() === 'Second,Agenda', null);
    }
  }, 60_000);

  it('a same-key conflict opens the dialog, and each choice ends with the chosen value everywhere', async () => {
    // keep mine
    let dialog = await clashOnTitle('Second', 'Bob title', 'Alice title');
    await screenshot(alice.page, '08-conflict-dialog');
    await dialog.getByTestId('conflict-keep-mine').click();
    await dialog.waitFor({ state: 'hidden' });
    await titleEverywhere('Alice title');
    await screenshot(bob.page, '09-conflict-kept-mine-bob');

    // keep theirs
    dialog = await clashOnTitle('Alice title', 'Bob again', 'Alice again');
    await dialog.getByTestId('conflict-keep-theirs').click();
    await dialog.waitFor({ state: 'hidden' });
    await titleEverywhere('Bob again');
    await screenshot(alice.page, '10-conflict-kept-theirs-alice');

    // edit, then apply
    dialog = await clashOnTitle('Bob again', 'Bob third', 'Alice third');
    await dialog.getByTestId('conflict-edit').fill('Agreed title');
    await screenshot(alice.page, '11-conflict-editing');
    await dialog.getByTestId('conflict-apply-edit').click();
    await dialog.waitFor({ state: 'hidden' });
    await titleEverywhere('Agreed title');
    await screenshot(bob.page, '12-conflict-edited-bob');

    // both save at the same moment: the server applies one and refuses the other (ConflictError),
    // or the later one already saw the first; either way exactly one of them is asked
    const id = (await blockByTitle(alice, 'Agreed title').getAttribute('data-block-id'))!;
    const input = (p: Person) => p.page.locator(`[data-block-id="${id}"] > .block-body [data-testid="block-title"]`);
    await input(alice).fill('Alice at once');
    await input(bob).fill('Bob at once');
    await Promise.all([input(alice).press('Enter'), input(bob).press('Enter')]);
    const asked = await Promise.race([alice, bob].map(async (p) => {
      await p.page.getByTestId('conflict-dialog').waitFor({ state: 'visible' });
      return p;
    }));
    const other = asked === alice ? bob : alice;
    await asked.page.waitForTimeout(1000);
    expect(await other.page.getByTestId('conflict-dialog').isVisible(), `${other.name} is not asked as well`).toBe(false);
    const mine = await asked.page.getByTestId('conflict-mine').innerText();
    expect(mine).toBe(asked === alice ? 'Alice at once' : 'Bob at once');
    expect(await asked.page.getByTestId('conflict-theirs').innerText()).toBe(asked === alice ? 'Bob at once' : 'Alice at once');
    await asked.page.getByTestId('conflict-keep-mine').click();
    await titleEverywhere(mine);
  }, 90_000);

  it("the other's cursor moves on screen; with a third person, two cursors and a block being edited", async () => {
    const surfaceAt = async (p: Person) => (await p.page.getByTestId('canvas-surface').boundingBox())!;
    const bobSurface = await surfaceAt(bob);
    const aliceSurface = await surfaceAt(alice);
    const bobCursor = alice.page.locator(`[data-testid="remote-cursor"][data-name="bob-${run}"]`);
    for (const [x, y] of [[150, 120], [520, 330]] as const) {
      await bob.page.mouse.move(bobSurface.x + x, bobSurface.y + y, { steps: 4 });
      await pageUntil(alice, `bob's cursor at ${x},${y}`, ([name, x, y]) => {
        const el = document.querySelector(`[data-testid="remote-cursor"][data-name="${name}"]`) as HTMLElement | null;
        return !!el && Math.abs(Number(el.dataset.x) - x) <= 1 && Math.abs(Number(el.dataset.y) - y) <= 1;
      }, [`bob-${run}`, x, y] as const);
      await until(async () => {
        const b = await bobCursor.boundingBox();
        return !!b && Math.abs(b.x - (aliceSurface.x + x)) <= 2 && Math.abs(b.y - (aliceSurface.y + y)) <= 2;
      }, 5_000, `bob's cursor drawn at ${x},${y} on alice's screen`);
    }

    const carol = await open('carol');
    await signUp(carol);
    await carol.page.getByTestId('canvas-item').getByText('Plans').click();
    await pageUntil(alice, 'three people present', () => document.querySelectorAll('[data-testid="presence-user"]').length === 3, null);
    const carolSurface = await surfaceAt(carol);
    await carol.page.mouse.move(carolSurface.x + 760, carolSurface.y + 90, { steps: 3 });
    // bob types in Agenda, his pointer over it
    const bobText = own(bob, 'Agenda', 'block-text');
    await bobText.click();
    await bob.page.keyboard.press('Control+End');
    await bob.page.keyboard.type(' (bob adds)', { delay: 30 });
    const tb = (await bobText.boundingBox())!;
    await bob.page.mouse.move(tb.x + tb.width * 0.6, tb.y + tb.height / 2, { steps: 3 });
    await bob.page.keyboard.type('!', { delay: 10 });
    await pageUntil(alice, 'two cursors and bob editing Agenda', () =>
      document.querySelectorAll('[data-testid="remote-cursor"]').length === 2
      && !!document.querySelector('[data-testid="block"][data-title="Agenda"] [data-testid="block-editor"]'), null);
    expect(await own(alice, 'Agenda', 'block-editors').innerText()).toContain(`bob-${run}`);
    await pageUntil(alice, "bob's typing", () => (document.querySelector('[data-testid="block"][data-title="Agenda"] > .block-body [data-testid="block-text"]') as HTMLTextAreaElement).value === 'start middle end (bob adds)!', null);
    const path = await screenshot(alice.page, '13-canvas-two-cursors-block-editing');
    expect(path).toMatch(/test-results\/screenshots\/13-canvas-two-cursors-block-editing\.png$/);
    for (const [page, errs] of errors) expect(errs, page.url()).toEqual([]);
  }, 90_000);

  it("a peer's presence name is shown as text, and a color that is CSS (url(), a declaration, var()) never reaches the page", async () => {
    // what another member's client sends: the demo once put the color into style="background:…"
    // and --color, so a peer could make every other browser fetch a URL (their IP to a tracker) or
    // restyle the page. The server now refuses such a color (internal.presence_state_error), and
    // the demo draws only a color it parsed itself; a name is any display text, drawn as text
    const fetched: string[] = [];
    const tracker = createServer((req, res) => { fetched.push(req.url ?? ''); res.end(); });
    await new Promise<void>((r) => tracker.listen(0, '127.0.0.1', r));
    const at = `http://127.0.0.1:${(tracker.address() as AddressInfo).port}`;
    const mallory = createPotentiaClient({ url: server.url, anonKey: server.anonKey, WebSocket: WebSocket as never,
      auth: { persistSession: false } });
    try {
      const me = await mallory.auth.signUp(email('mallory'), password);
      await db.sql`insert into app.workspace_members (workspace_id, user_id, role)
        select workspace_id, ${me.id}::uuid, 'editor' from app.canvases where canvas_id = ${canvasId}`;
      const canvas = mallory.canvas(canvasId);
      await canvas.connect();
      const name = '<img src=x onerror="document.title=1">';
      canvas.presence.set({ name, color: '#c0ffee', cursor: { x: 40, y: 40 }, typing: false });
      await pageUntil(alice, 'mallory present', (id) => !!document.querySelector(`[data-testid="remote-cursor"][data-user-id="${id}"]`), me.id);
      const drawn = () => alice.page.evaluate((id) => {
        const avatar = document.querySelector(`[data-testid="presence-user"][data-user-id="${id}"] [data-testid="avatar"]`) as HTMLElement;
        const label = document.querySelector(`[data-testid="remote-cursor"][data-user-id="${id}"] .label`) as HTMLElement;
        return { avatar: getComputedStyle(avatar).backgroundImage, label: getComputedStyle(label).backgroundImage,
          name: label.textContent, images: document.querySelectorAll('img').length };
      }, me.id);
      expect(await drawn()).toEqual({ avatar: 'none', label: 'none', name, images: 0 });
      // a url(), a second declaration, a var() whose fallback is a url() (which the browser's
      // CSS.supports('color', …) accepts): refused, so the page keeps what it drew; the plain
      // presence sent after them shows they were all handled
      for (const color of [`url(${at}/color)`, `red;background-image:url(${at}/declaration)`, `var(--none, url(${at}/var))`]) {
        canvas.presence.set({ name: 'mallory again', color });
      }
      canvas.presence.set({ name: 'mallory last', color: '#c0ffee' });
      await pageUntil(alice, "mallory's last presence", (id) => document.querySelector(`[data-testid="presence-user"][data-user-id="${id}"]`)?.textContent
        ?.includes('mallory last') ?? false, me.id);
      expect(await drawn()).toEqual({ avatar: 'none', label: 'none', name: 'mallory last', images: 0 });
      expect(fetched).toEqual([]);
      canvas.close();
    } finally {
      await mallory.auth.signOut().catch(() => {});
      await new Promise((r) => tracker.close(r));
    }
  }, 60_000);
});
