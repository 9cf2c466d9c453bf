import type { PotentiaClient } from '../../packages/client/src/index.ts';
import { clear, h, messageOf } from './dom.ts';

/** The seeded demo user (supabase/seed.sql; npm start loads it). */
export const DEMO_USER = { email: 'demo@potentia.local', password: 'demo-password' };

/** Sign in, sign up, or continue as the seeded demo user; `done` runs once signed in. */
export function renderAuth(root: HTMLElement, potentia: PotentiaClient, done: () => void) {
  const email = h('input', { type: 'email', name: 'email', placeholder: 'you@example.com', autocomplete: 'username', required: true, 'data-testid': 'auth-email' });
  const password = h('input', { type: 'password', name: 'password', placeholder: 'password (6+ characters)', autocomplete: 'current-password', required: true, 'data-testid': 'auth-password' });
  const error = h('p', { class: 'error', 'data-testid': 'auth-error', role: 'alert' });
  const buttons: HTMLButtonElement[] = [];

  const attempt = (action: () => Promise<unknown>) => async (event: Event) => {
    event.preventDefault();
    error.textContent = '';
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await action();
      done();
    } catch (err) {
      error.textContent = messageOf(err);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  const valid = () => {
    if (!email.reportValidity() || !password.reportValidity()) throw new Error('enter an email address and a password');
  };
  buttons.push(
    h('button', { type: 'submit', 'data-testid': 'sign-in' }, 'Sign in'),
    h('button', { type: 'button', class: 'secondary', 'data-testid': 'sign-up',
                  onclick: attempt(async () => { valid(); await potentia.auth.signUp(email.value, password.value); }) }, 'Create account'),
    h('button', { type: 'button', class: 'secondary', 'data-testid': 'demo-user',
                  onclick: attempt(() => potentia.auth.signIn(DEMO_USER.email, DEMO_USER.password)) }, 'Continue as demo user'),
  );
  const form = h('form', { class: 'card auth', onsubmit: attempt(() => potentia.auth.signIn(email.value, password.value)) },
    h('h1', {}, 'Potentia'),
    h('p', { class: 'muted' }, 'A real-time collaborative block canvas. Sign in, or try it as the demo user.'),
    h('label', {}, 'Email', email),
    h('label', {}, 'Password', password),
    h('div', { class: 'row' }, ...buttons),
    error);
  clear(root, form);
  email.focus();
}
