// Form helpers: labelled fields, the driver picker, a JSON body from a form, and errors shown at
// the field at fault.

import { api } from './api.js';
import { clear, h } from './dom.js';

export function field(name, label, { placeholder, textarea, value, type = 'text', required, hint } = {}) {
  const attrs = { name, id: `f-${name}`, placeholder, required, spellcheck: 'false', autocomplete: 'off' };
  const input = textarea ? h('textarea', { ...attrs, rows: 3 }, value || '') : h('input', { ...attrs, type, value });
  return h('label.field', { class: textarea ? 'wide' : '' }, h('span', label), input, hint ? h('small.hint', hint) : null);
}

/**
 * A `driver` select filled from /api/drivers (unavailable drivers shown, disabled, with the reason
 * as a tooltip). Until then, and if that fails, its one option is the daemon's default driver (an
 * empty value, which the form leaves out). Fires `change` once filled.
 */
export function driverSelect(id) {
  const select = h('select', { name: 'driver', id }, h('option', { value: '' }, 'default'));
  api('/api/drivers')
    .then((drivers) => {
      const was = select.value;
      clear(
        select,
        drivers.map((d) =>
          h('option', { value: d.name, disabled: !d.available, title: d.reason || d.description }, d.available ? d.name : `${d.name} (unavailable)`),
        ),
      );
      if (drivers.some((d) => d.name === was && d.available)) select.value = was;
      select.dispatchEvent(new Event('change'));
    })
    .catch(() => {});
  return select;
}

/** The form's non-empty fields as an object; `lists` fields become arrays of their lines. */
export function formBody(form, { lists = [], keep = () => true } = {}) {
  const body = {};
  for (const el of form.querySelectorAll('input[name], select[name], textarea[name]')) {
    const value = el.value.trim();
    if (!value || !keep(el.name)) continue;
    body[el.name] = lists.includes(el.name)
      ? value
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean)
      : value;
  }
  return body;
}

/** The server's message under the form; the field it names marked. */
export function showFormError(form, errorEl, err) {
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  errorEl.textContent = err.message;
  errorEl.hidden = false;
  const at = err.field && form.querySelector(`[name="${CSS.escape(err.field)}"]`);
  if (at) {
    at.setAttribute('aria-invalid', 'true');
    at.addEventListener(
      'input',
      () => {
        at.removeAttribute('aria-invalid');
        errorEl.hidden = true;
      },
      { once: true },
    );
    at.closest('details')?.setAttribute('open', '');
    at.focus();
  }
}
