import { h } from './dom.ts';

/** A same-key clash on a field edited as a whole: the value it was edited from, the current one, and yours. */
export type FieldConflict = { blockId: string; blockLabel: string; key: string; base: unknown; theirs: unknown; mine: unknown };

/** What the person chose: keep theirs (write nothing), or write `value` (theirs, mine, or their edit). */
export type Resolution = { choice: 'theirs' } | { choice: 'mine' | 'edit'; value: string };

const show = (v: unknown) => (v === null || v === undefined ? '(empty)' : typeof v === 'string' ? (v === '' ? '(empty)' : v) : JSON.stringify(v));
const asText = (v: unknown) => (typeof v === 'string' ? v : v === null || v === undefined ? '' : JSON.stringify(v));

/**
 * The conflict dialog: base / theirs / mine side by side, and "Keep mine", "Keep theirs" or an
 * edited value to apply. One at a time: a conflict raised while one is open waits its turn.
 */
export function createConflictDialog(host: HTMLElement) {
  const dialog = h('dialog', { class: 'conflict', 'data-testid': 'conflict-dialog' });
  host.append(dialog);
  let queue = Promise.resolve();

  function ask(conflict: FieldConflict): Promise<Resolution> {
    const answer = queue.then(() => new Promise<Resolution>((resolve) => {
      // focus starts in the edit box, not on a button a stray Enter would press
      const edit = h('textarea', { rows: 3, autofocus: true, 'data-testid': 'conflict-edit' });
      edit.value = asText(conflict.mine);
      const done = (r: Resolution) => { dialog.close(); dialog.replaceChildren(); resolve(r); };
      const column = (title: string, value: unknown, testid: string) =>
        h('div', { class: 'column' }, h('h3', {}, title), h('pre', { 'data-testid': testid }, show(value)));
      dialog.replaceChildren(
        h('h2', {}, `Someone else changed “${conflict.key}” too`),
        h('p', { class: 'muted' }, `Block “${conflict.blockLabel}”: you both edited this field from the same value. Choose what it should be.`),
        h('div', { class: 'columns' },
          column('Base (before both edits)', conflict.base, 'conflict-base'),
          column('Theirs (now saved)', conflict.theirs, 'conflict-theirs'),
          column('Mine', conflict.mine, 'conflict-mine')),
        h('div', { class: 'row' },
          h('button', { type: 'button', 'data-testid': 'conflict-keep-mine', onclick: () => done({ choice: 'mine', value: asText(conflict.mine) }) }, 'Keep mine'),
          h('button', { type: 'button', class: 'secondary', 'data-testid': 'conflict-keep-theirs', onclick: () => done({ choice: 'theirs' }) }, 'Keep theirs')),
        h('label', {}, 'Or edit, then apply', edit),
        h('div', { class: 'row' },
          h('button', { type: 'button', 'data-testid': 'conflict-apply-edit', onclick: () => done({ choice: 'edit', value: edit.value }) }, 'Apply edit')));
      // Escape keeps theirs: closing without a choice must not leave the field half-resolved
      dialog.addEventListener('cancel', (e) => { e.preventDefault(); done({ choice: 'theirs' }); }, { once: true });
      dialog.showModal();
    }));
    queue = answer.then(() => undefined);
    return answer;
  }

  return { ask, element: dialog };
}
