// New experiment: a preset into a JSON editor, submitted as POST /experiments. A 400 shows the
// server's message and marks the line of the named field (config.a.b) in the editor.
import { api, ApiError } from '../api.js';
import { h } from '../dom.js';
import { PRESETS } from '../presets.js';

// The 0-based line of a dotted field path in pretty-printed JSON, or -1.
function lineOf(text, path) {
  const lines = text.split('\n');
  let from = 0, found = -1;
  for (const key of path) {
    const at = lines.findIndex((l, i) => i >= from && l.trimStart().startsWith(`${JSON.stringify(key)}:`));
    if (at < 0) return found;
    found = at;
    from = at + 1;
  }
  return found;
}

export async function newPage(root) {
  const names = Object.keys(PRESETS);
  const editor = h('textarea', { spellcheck: false, 'aria-label': 'config', oninput: () => numberLines() });
  const gutter = h('pre', { class: 'gutter' });
  const nameInput = h('input', { placeholder: 'name (optional)', 'aria-label': 'name' });
  const message = h('p', { class: 'error', 'data-error': '' });
  let badLine = -1;

  function numberLines() {
    const n = editor.value.split('\n').length;
    editor.rows = n + 1;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) =>
      h('span', { class: i === badLine ? 'bad' : '' }, `${i + 1}\n`)));
  }
  function showError(text, line = -1) {
    message.textContent = text;
    badLine = line;
    numberLines();
  }
  function usePreset(name) {
    editor.value = JSON.stringify(PRESETS[name], null, 2);
    showError('');
  }

  async function submit(ev) {
    ev.preventDefault();
    let config;
    try { config = JSON.parse(editor.value); } catch (e) { showError(`Not JSON: ${e.message}`); return; }
    try {
      const body = { config };
      if (nameInput.value.trim()) body.name = nameInput.value.trim();
      const exp = await api('/experiments', { method: 'POST', body });
      location.hash = `#/experiments?created=${exp.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const path = e.field?.startsWith('config.') ? e.field.slice(7).split('.') : null;
      const line = path ? lineOf(editor.value, path) : -1;
      showError(`${e.message}${e.field ? ` (${e.field}${line >= 0 ? `, line ${line + 1}` : ''})` : ''}`, line);
    }
  }

  root.append(
    h('h1', {}, 'New experiment'),
    h('form', { onsubmit: submit, 'data-page': 'new' },
      h('div', { class: 'toolbar' },
        h('label', {}, 'Preset ', h('select', { 'aria-label': 'preset', onchange: (ev) => usePreset(ev.target.value) },
          names.map((n) => h('option', { value: n }, n)))),
        nameInput,
        h('button', { type: 'submit' }, 'Submit')),
      message,
      h('div', { class: 'editor' }, gutter, editor)));
  usePreset(names[0]);
}
