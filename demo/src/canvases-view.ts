import type { PotentiaClient } from '../../packages/client/src/index.ts';
import { clear, h, messageOf } from './dom.ts';


/**
 * Your workspaces, each with its canvases, a form to create one and one to share the workspace
 * by email (an address without an account gets an invite it accepts when it signs up). A user
 * with no workspace gets one on their first canvas.
 */
export async function renderCanvases(root: HTMLElement, potentia: PotentiaClient, isCurrent: () => boolean): Promise<void> {
  const [workspaces, canvases] = await Promise.all([
    potentia.workspaces.list(),
    potentia.canvases.list(),
  ]);
  const user = potentia.auth.user();
  const error = h('p', { class: 'error', 'data-testid': 'canvases-error', role: 'alert' });
  const report = (err: unknown) => { error.textContent = messageOf(err); };

  const newTitle = h('input', { placeholder: 'New canvas title', required: true, 'data-testid': 'new-canvas-title' });
  const createForm = h('form', {
    class: 'row',
    onsubmit: async (event: Event) => {
      event.preventDefault();
      if (!newTitle.value.trim()) return;
      try {
        const workspaceId = workspaces[0]?.workspace_id
          ?? (await potentia.workspaces.create(`${user?.email?.split('@')[0] ?? 'My'}'s workspace`)).workspace_id;
        const created = await potentia.canvases.create(workspaceId, newTitle.value.trim());
        location.hash = `#/canvas/${created.canvas_id}`;
      } catch (err) {
        report(err);
      }
    },
  }, newTitle, h('button', { type: 'submit', 'data-testid': 'create-canvas' }, 'Create canvas'));

  const sections = workspaces.map((w) => {
    const shareEmail = h('input', { type: 'email', placeholder: 'teammate@example.com', required: true, 'data-testid': 'share-email' });
    const shared = h('span', { class: 'muted', 'data-testid': 'share-result' });
    const mine = canvases.filter((c) => c.workspace_id === w.workspace_id);
    const canManage = w.role === 'owner' || w.role === 'admin';
    return h('section', { class: 'card', 'data-testid': 'workspace', 'data-workspace-id': w.workspace_id },
      h('h2', {}, w.name, ' ', h('span', { class: 'badge' }, w.role)),
      mine.length
        ? h('ul', { class: 'canvas-list', 'data-testid': 'canvas-list' }, ...mine.map((c) =>
          h('li', {}, h('a', { href: `#/canvas/${c.canvas_id}`, 'data-testid': 'canvas-item', 'data-canvas-id': c.canvas_id }, c.title))))
        : h('p', { class: 'muted' }, 'No canvas yet.'),
      canManage && h('form', {
        class: 'row',
        onsubmit: async (event: Event) => {
          event.preventDefault();
          try {
            const added = await potentia.workspaces.addMember(w.workspace_id, shareEmail.value.trim(), 'editor');
            shared.textContent = `Shared with ${shareEmail.value.trim()} (editor${added.kind === 'invite' ? ': invited, joins on sign-up' : ''})`;
            shareEmail.value = '';
          } catch (err) {
            report(err);
          }
        },
      }, shareEmail, h('button', { type: 'submit', class: 'secondary', 'data-testid': 'share-button' }, 'Share workspace'), shared));
  });

  if (!isCurrent()) return;
  clear(root,
    h('div', { class: 'page' },
      h('h1', {}, 'Your canvases'),
      h('section', { class: 'card' }, createForm, error),
      ...sections,
      !workspaces.length && h('p', { class: 'muted' }, 'You are in no workspace yet: create a canvas, or ask someone to share theirs.')));
  newTitle.focus();
}
