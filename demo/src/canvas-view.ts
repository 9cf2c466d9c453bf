import { ConflictError, type Block, type BlockNode, type Canvas, type PotentiaClient, type PresencePeer } from '../../packages/client/src/index.ts';
import { createConflictDialog, type FieldConflict } from './conflict-dialog.ts';
import { clear, h, messageOf } from './dom.ts';
import { colorFor, nameFor, peerColor } from './people.ts';
import { renderPresence } from './presence-view.ts';
import { changedRange, diffToOp, shiftPosition, toCodePoints, toUtf16 } from './text-diff.ts';


export type CanvasView = { close(): void };

/** The text key a block's textarea edits with text OT, and the field edited as a whole (conflict dialog). */
const TEXT_KEY = 'text';
const TITLE_KEY = 'title';

/** One block on screen; kept across renders so focus, caret and typing survive remote changes. */
type BlockView = {
  id: string;
  el: HTMLElement;
  body: HTMLElement;
  title: HTMLInputElement;
  text: HTMLTextAreaElement;
  editors: HTMLElement;
  children: HTMLElement;
  /** the text the textarea showed after the last sync: local edits are diffed against it */
  shown: string;
  /** the title when the person started editing it (focus), undefined when not editing */
  titleBase?: string;
};

type Placement = 'before' | 'after' | 'inside';

/**
 * The canvas page: blocks (title edited as a whole, text edited together with OT), added,
 * nested and reordered by drag and drop, live cursors and who is here, and the conflict dialog
 * when two people set the same field at once.
 */
export async function openCanvas(root: HTMLElement, potentia: PotentiaClient, canvasId: string, isCurrent: () => boolean): Promise<CanvasView> {
  const user = potentia.auth.user()!;
  const me = { userId: user.id, name: nameFor(user.email, user.id), color: colorFor(user.id) };
  clear(root, h('p', { class: 'muted' }, 'Opening the canvas…'));
  const canvas: Canvas = potentia.canvas(canvasId);
  await canvas.connect();
  const info = (await potentia.canvases.list()).find((c) => c.canvas_id === canvasId);
  if (!isCurrent()) return { close: () => canvas.close() };

  const views = new Map<string, BlockView>();
  const blocksEl = h('div', { class: 'blocks', 'data-testid': 'blocks' });
  const cursorsEl = h('div', { class: 'cursors', 'aria-hidden': 'true' });
  const surface = h('div', { class: 'surface', 'data-testid': 'canvas-surface' }, blocksEl, cursorsEl);
  const presenceEl = h('ul', { class: 'presence', 'data-testid': 'presence-list' });
  const errorEl = h('p', { class: 'error', 'data-testid': 'canvas-error', role: 'alert' });
  const page = h('div', { class: 'canvas-page' },
    h('div', { class: 'toolbar' },
      h('a', { href: '#/', 'data-testid': 'back' }, '← Canvases'),
      h('h1', { 'data-testid': 'canvas-title' }, info?.title ?? 'Canvas'),
      presenceEl,
      h('button', { type: 'button', 'data-testid': 'add-block', onclick: () => void addBlock(null) }, '+ Block')),
    errorEl,
    surface);
  clear(root, page);
  const conflicts = createConflictDialog(page);
  const report = (err: unknown) => { errorEl.textContent = messageOf(err); };

  // --- blocks ------------------------------------------------------------------------------
  const blockOf = (id: string) => canvas.block(id);
  const titleOf = (id: string) => String(blockOf(id)?.content?.[TITLE_KEY] ?? '');

  async function addBlock(parent: string | null) {
    try {
      const siblings = parent ? findNode(canvas.tree(), parent)?.children ?? [] : canvas.tree();
      const last = siblings[siblings.length - 1];
      // optimistic: the block is in the tree at once; focus its title while the server applies it
      const id = crypto.randomUUID();
      const created = canvas.create({
        id, type: 'text', content: { [TITLE_KEY]: '', [TEXT_KEY]: '' },
        ...(parent ? { parent } : {}), ...(last ? { after: last.block_id } : {}),
      });
      render();
      views.get(id)?.title.focus();
      await created;
    } catch (err) {
      report(err);
    }
  }

  function makeView(id: string): BlockView {
    const title = h('input', { class: 'title', placeholder: 'Title', 'data-testid': 'block-title', 'aria-label': 'Block title' });
    const text = h('textarea', { rows: 2, placeholder: 'Write together…', 'data-testid': 'block-text', 'aria-label': 'Block text' });
    const editors = h('span', { class: 'editors', 'data-testid': 'block-editors' });
    const handle = h('span', { class: 'handle', draggable: 'true', title: 'Drag to move or nest', 'data-testid': 'drag-handle' }, '⠿');
    const body = h('div', { class: 'block-body' },
      h('div', { class: 'block-head' }, handle, title, editors,
        h('button', { type: 'button', class: 'icon', title: 'Add a nested block', 'data-testid': 'add-child', onclick: () => void addBlock(id) }, '+'),
        h('button', { type: 'button', class: 'icon', title: 'Delete block', 'data-testid': 'delete-block',
                      onclick: () => canvas.delete(id).catch(report) }, '×')),
      text);
    const children = h('div', { class: 'children', 'data-testid': 'block-children' });
    const el = h('div', { class: 'block', 'data-testid': 'block', 'data-block-id': id }, body, children);
    const view: BlockView = { id, el, body, title, text, editors, children, shown: '' };

    // text: every input becomes a text operation (the changed range), merged with others' typing
    text.addEventListener('input', () => {
      const op = diffToOp(view.shown, text.value);
      if (!op) return;
      try {
        view.shown = canvas.editText(id, TEXT_KEY, op);
        if (view.shown !== text.value) setText(view, view.shown);
      } catch (err) {
        report(err);
        syncText(view);
      }
      typing();
      sendSelection(view);
    });
    for (const ev of ['select', 'keyup', 'click', 'focus']) text.addEventListener(ev, () => sendSelection(view));
    text.addEventListener('blur', () => canvas.presence.set({ selection: null, typing: false }));

    // title: edited as a whole; the value it was edited from is kept to spot a clash
    title.addEventListener('focus', () => {
      view.titleBase = titleOf(id);
      canvas.presence.set({ selection: { blockId: id, key: TITLE_KEY, start: 0, end: 0 } });
    });
    // Enter saves; its default is stopped, or it would also press the conflict dialog's first button
    title.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); title.blur(); } });
    title.addEventListener('blur', () => {
      canvas.presence.set({ selection: null });
      void commitTitle(view);
    });

    // drag and drop: the handle drags, any block body is a drop target (before / inside / after)
    handle.addEventListener('dragstart', (e) => {
      e.dataTransfer!.setData('application/x-potentia-block', id);
      e.dataTransfer!.setData('text/plain', id);
      e.dataTransfer!.effectAllowed = 'move';
      el.classList.add('dragging');
    });
    handle.addEventListener('dragend', () => el.classList.remove('dragging'));
    body.addEventListener('dragover', (e) => {
      e.preventDefault();
      e.stopPropagation();
      e.dataTransfer!.dropEffect = 'move';
      markDrop(body, placementAt(body, e.clientY));
    });
    body.addEventListener('dragleave', () => markDrop(body, null));
    body.addEventListener('drop', (e) => {
      e.preventDefault();
      e.stopPropagation();
      markDrop(body, null);
      const dragged = e.dataTransfer!.getData('application/x-potentia-block') || e.dataTransfer!.getData('text/plain');
      if (dragged) void moveBlock(dragged, id, placementAt(body, e.clientY));
    });
    return view;
  }

  function placementAt(body: HTMLElement, clientY: number): Placement {
    const r = body.getBoundingClientRect();
    const f = (clientY - r.top) / r.height;
    return f < 0.3 ? 'before' : f > 0.7 ? 'after' : 'inside';
  }
  function markDrop(body: HTMLElement, where: Placement | null) {
    body.classList.toggle('drop-before', where === 'before');
    body.classList.toggle('drop-after', where === 'after');
    body.classList.toggle('drop-inside', where === 'inside');
  }

  async function moveBlock(dragged: string, target: string, where: Placement) {
    if (dragged === target) return;
    // a block cannot go inside itself or its own descendants
    for (let b = blockOf(target); b; b = b.parent_id ? blockOf(b.parent_id) : undefined) if (b.block_id === dragged) return;
    try {
      // before / after a block: it joins that block's parent
      if (where === 'before') await canvas.move(dragged, { before: target });
      else if (where === 'after') await canvas.move(dragged, { after: target });
      else {
        const kids = findNode(canvas.tree(), target)?.children.filter((c) => c.block_id !== dragged) ?? [];
        await canvas.move(dragged, { parent: target, after: kids[kids.length - 1]?.block_id ?? null });
      }
    } catch (err) {
      report(err);
    }
  }

  // dropping on the empty part of the canvas moves a block to the end, at the top level
  blocksEl.addEventListener('dragover', (e) => { e.preventDefault(); });
  blocksEl.addEventListener('drop', (e) => {
    e.preventDefault();
    const dragged = e.dataTransfer!.getData('application/x-potentia-block');
    const roots = canvas.tree().filter((b) => b.block_id !== dragged);
    if (dragged) canvas.move(dragged, { parent: null, after: roots[roots.length - 1]?.block_id ?? null }).catch(report);
  });

  async function commitTitle(view: BlockView) {
    const base = view.titleBase;
    view.titleBase = undefined;
    const mine = view.title.value;
    const theirs = titleOf(view.id);
    if (base === undefined || mine === theirs) return;
    if (mine === base) { view.title.value = theirs; return; } // not edited here: show theirs
    if (theirs !== base) {
      view.title.value = theirs; // behind the dialog: what is saved now
      return resolve({ blockId: view.id, blockLabel: theirs || 'untitled', key: TITLE_KEY, base, theirs, mine });
    }
    await saveTitle(view.id, mine);
  }

  async function saveTitle(blockId: string, value: string) {
    try {
      await canvas.update(blockId, { content: { [TITLE_KEY]: value } });
    } catch (err) {
      if (err instanceof ConflictError) {
        const f = err.fields[`content.${TITLE_KEY}`];
        if (f) return resolve({ blockId, blockLabel: String(f.theirs ?? '') || 'untitled', key: TITLE_KEY, base: f.base, theirs: f.theirs, mine: f.mine ?? value });
      }
      report(err);
    } finally {
      render();
    }
  }

  async function resolve(conflict: FieldConflict) {
    const r = await conflicts.ask(conflict);
    if (r.choice === 'theirs') render();
    else await saveTitle(conflict.blockId, r.value); // from the current version; clashes again only if it changed meanwhile
  }

  // --- text sync ------------------------------------------------------------------------------
  function setText(view: BlockView, next: string) {
    const ta = view.text;
    if (document.activeElement !== ta) { ta.value = next; return; }
    // keep the caret where it was relative to the text around it
    const change = changedRange(ta.value, next);
    const start = toCodePoints(ta.value, ta.selectionStart);
    const end = toCodePoints(ta.value, ta.selectionEnd);
    ta.value = next;
    if (change) ta.setSelectionRange(toUtf16(next, shiftPosition(start, change)), toUtf16(next, shiftPosition(end, change)));
  }
  function syncText(view: BlockView) {
    const current = canvas.text(view.id, TEXT_KEY);
    if (current !== view.text.value) setText(view, current);
    view.shown = current;
    view.text.style.height = 'auto';
    view.text.style.height = `${Math.max(48, view.text.scrollHeight)}px`;
  }

  // --- rendering --------------------------------------------------------------------------------
  function render() {
    const tree = canvas.tree();
    const seen = new Set<string>();
    const place = (container: HTMLElement, nodes: BlockNode[]) => {
      const wanted = nodes.map((n) => {
        seen.add(n.block_id);
        let view = views.get(n.block_id);
        if (!view) { view = makeView(n.block_id); views.set(n.block_id, view); }
        const title = String(n.content?.[TITLE_KEY] ?? '');
        if (document.activeElement !== view.title && view.title.value !== title) view.title.value = title;
        view.el.dataset.title = title;
        view.el.dataset.version = String(n.version);
        syncText(view);
        place(view.children, n.children ?? []);
        return view.el;
      });
      reorder(container, wanted);
    };
    place(blocksEl, tree);
    for (const [id, view] of views) if (!seen.has(id)) { view.el.remove(); views.delete(id); }
    blocksEl.classList.toggle('empty', tree.length === 0);
    renderOthers();
  }

  /** Puts `wanted` in order in `container`, moving only what is out of place (moving the focused block would blur it). */
  function reorder(container: HTMLElement, wanted: HTMLElement[]) {
    const active = document.activeElement as HTMLInputElement | HTMLTextAreaElement | null;
    const selection = active && 'selectionStart' in active ? [active.selectionStart, active.selectionEnd] as const : undefined;
    let moved = false;
    wanted.forEach((el, i) => {
      if (container.children[i] !== el) { container.insertBefore(el, container.children[i] ?? null); moved = true; }
    });
    while (container.children.length > wanted.length) container.lastElementChild!.remove();
    if (moved && active && document.activeElement !== active && document.contains(active)) {
      active.focus();
      if (selection && selection[0] !== null) active.setSelectionRange(selection[0], selection[1]);
    }
  }

  // --- presence: cursors, who is here, who edits which block ----------------------------------
  function renderOthers() {
    const others: PresencePeer[] = canvas.presence.others();
    renderPresence({ me, others, listEl: presenceEl, cursorsEl });
    for (const view of views.values()) {
      const editing = others.filter((o) => o.selection?.blockId === view.id);
      view.editors.replaceChildren(...editing.map((o) => h('span', {
        class: 'editor', style: `background:${peerColor(o.color, o.userId)}`, 'data-testid': 'block-editor', 'data-user-id': o.userId,
      }, `${o.name ?? nameFor(null, o.userId)}${o.typing ? ' is typing…' : ' is here'}`)));
      view.el.classList.toggle('being-edited', editing.length > 0);
    }
  }

  let typingTimer: ReturnType<typeof setTimeout> | undefined;
  function typing() {
    if (!typingTimer) canvas.presence.set({ typing: true });
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { typingTimer = undefined; canvas.presence.set({ typing: false }); }, 1500);
  }
  function sendSelection(view: BlockView) {
    const v = view.text.value;
    canvas.presence.set({ selection: { blockId: view.id, key: TEXT_KEY,
      start: toCodePoints(v, view.text.selectionStart), end: toCodePoints(v, view.text.selectionEnd) } });
  }

  // cursor positions in the surface's own coordinates (px from its top-left, scrolled content included)
  let lastSent = 0;
  let pending: { x: number; y: number } | undefined;
  let cursorTimer: ReturnType<typeof setTimeout> | undefined;
  const sendCursor = () => {
    cursorTimer = undefined;
    lastSent = Date.now();
    canvas.presence.set({ cursor: pending ?? null });
  };
  surface.addEventListener('mousemove', (e) => {
    const r = surface.getBoundingClientRect();
    pending = { x: Math.round(e.clientX - r.left + surface.scrollLeft), y: Math.round(e.clientY - r.top + surface.scrollTop) };
    if (cursorTimer) return;
    cursorTimer = setTimeout(sendCursor, Math.max(0, 40 - (Date.now() - lastSent)));
  });
  surface.addEventListener('mouseleave', () => { pending = undefined; clearTimeout(cursorTimer); sendCursor(); });

  canvas.presence.set({ name: me.name, color: me.color, cursor: null, selection: null, typing: false });
  const offCanvas = canvas.subscribe(() => render());
  // H1 tells a newcomer nobody's presence: whoever sees someone new says who they are again
  const known = new Set<string>();
  const offPresence = canvas.presence.subscribe((others) => {
    const newcomer = others.some((o) => !known.has(o.userId));
    known.clear();
    for (const o of others) known.add(o.userId);
    if (newcomer) canvas.presence.set({});
    renderOthers();
  });
  render();

  return {
    close() {
      offCanvas();
      offPresence();
      clearTimeout(typingTimer);
      clearTimeout(cursorTimer);
      canvas.close();
    },
  };
}

function findNode(nodes: BlockNode[], id: string): BlockNode | undefined {
  for (const n of nodes) {
    if (n.block_id === id) return n;
    const found = findNode(n.children ?? [], id);
    if (found) return found;
  }
  return undefined;
}
