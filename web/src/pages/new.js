// New experiment: a preset (or, with ?clone=ID, that experiment's config) in a form of the common
// fields above a JSON editor, the two kept in sync. Submitted as POST /experiments, or for a
// clone as POST /experiments/ID/clone with the fields that differ from the original. A 400 shows
// the server's message, marks the named field (config.a.b) at the form's input when the form has
// it, and its line in the editor.
import { api, ApiError } from '../api.js';
import { h } from '../dom.js';
import { PRESETS } from '../presets.js';

const KINDS = ['grpo', 'eval', 'profile', 'pretrain', 'reward_train'];
// The form's fields per kind: [field, input type or a select's options].
const GRPO_FIELDS = [['method', ['chunk_grpo', 'grpo']], ['chunks', 'text'], ['iterations', 'number'],
  ['prompts_per_iter', 'number'], ['group_size', 'number'], ['lr', 'number'], ['eta', 'number'], ['seed', 'number']];
const FIELDS = {
  grpo: GRPO_FIELDS,
  eval: [['model', 'text'], ['seed', 'number']],
  profile: [['model', 'text'], ['seed', 'number']],
  pretrain: [['seed', 'number']], // a pretrain config has no model
  reward_train: [['steps', 'number'], ['degradations', 'text'], ['seed', 'number']],
};

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

// The top-level fields of config whose values differ from original's; a field the editor removed
// is sent as null, which the server's clone removes (the field takes its default).
const changesFrom = (original, config) => ({
  ...Object.fromEntries(Object.keys(original).filter((k) => !(k in config)).map((k) => [k, null])),
  ...Object.fromEntries(Object.entries(config).filter(([k, v]) => JSON.stringify(v) !== JSON.stringify(original[k]))),
});

export async function newPage(root, { query }) {
  const cloneId = Number(query.get('clone')) || null;
  const [original, schema] = await Promise.all([cloneId ? api(`/experiments/${cloneId}`) : null, api('/schema/experiment')]);
  // each kind's fields, from the schema the server validates with
  const fieldsOf = Object.fromEntries(schema.oneOf.map((b) => [b.title, new Set(Object.keys(b.properties))]));
  const names = Object.keys(PRESETS);
  const editor = h('textarea', { spellcheck: false, 'aria-label': 'config', oninput: () => { numberLines(); fillForm(); } });
  const gutter = h('pre', { class: 'gutter' });
  const nameInput = h('input', { placeholder: 'name (optional)', 'aria-label': 'name' });
  const message = h('p', { class: 'error', 'data-error': '' });
  const form = h('div', { class: 'fields', 'data-fields': '' });
  let inputs = {}; // field -> its input
  let badLine = -1;

  function numberLines() {
    const n = editor.value.split('\n').length;
    editor.rows = n + 1;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) =>
      h('span', { class: i === badLine ? 'bad' : '' }, `${i + 1}\n`)));
  }
  function showError(text, line = -1, field = null) {
    message.textContent = text;
    badLine = line;
    numberLines();
    for (const [k, input] of Object.entries(inputs)) {
      const bad = k === field;
      input.classList.toggle('bad', bad);
      input.parentElement.querySelector('.field-error')?.remove();
      if (bad) input.parentElement.append(h('span', { class: 'field-error error', 'data-field-error': k }, text));
    }
  }
  const parsed = () => { try { return JSON.parse(editor.value); } catch { return null; } };

  // The form from the editor's JSON: the kind's fields, with their current values.
  function fillForm() {
    const config = parsed();
    if (!config || typeof config !== 'object') return;
    const kind = KINDS.includes(config.kind) ? config.kind : 'grpo';
    if (form.dataset.kind !== kind) buildForm(kind);
    for (const [k, input] of Object.entries(inputs)) {
      if (k !== 'kind' && document.activeElement !== input) input.value = config[k] ?? '';
    }
    inputs.kind.value = kind;
  }
  function buildForm(kind) {
    form.dataset.kind = kind;
    const field = (k, type) => {
      const attrs = { 'aria-label': k, name: k, oninput: () => setField(k) };
      return Array.isArray(type)
        ? h('select', attrs, (k === 'kind' ? type : ['', ...type]).map((o) => h('option', { value: o }, o)))
        : h('input', { ...attrs, type, step: 'any' });
    };
    inputs = { kind: field('kind', KINDS) };
    for (const [k, type] of FIELDS[kind]) inputs[k] = field(k, type);
    form.replaceChildren(...Object.entries(inputs).map(([k, input]) => h('label', {}, h('span', {}, k), input)));
  }
  // The editor's JSON from one form field (an empty field leaves the config's default).
  function setField(k) {
    const config = parsed();
    if (!config) { showError('The JSON below does not parse: fix it before using the form.'); return; }
    const { value, type } = inputs[k];
    if (value === '') delete config[k];
    else config[k] = type === 'number' ? Number(value) : value;
    // another kind: drop the fields the new kind does not have (the server would refuse them)
    if (k === 'kind' && fieldsOf[value]) for (const f of Object.keys(config)) if (!fieldsOf[value].has(f)) delete config[f];
    editor.value = JSON.stringify(config, null, 2);
    showError('');
    fillForm();
  }
  function useConfig(config) {
    editor.value = JSON.stringify(config, null, 2);
    showError('');
    fillForm();
  }

  async function submit(ev) {
    ev.preventDefault();
    let config;
    try { config = JSON.parse(editor.value); } catch (e) { showError(`Not JSON: ${e.message}`); return; }
    try {
      const body = original ? { changes: changesFrom(original.config, config) } : { config };
      if (nameInput.value.trim()) body.name = nameInput.value.trim();
      const exp = await api(original ? `/experiments/${cloneId}/clone` : '/experiments', { method: 'POST', body });
      location.hash = original ? `#/experiments/${exp.id}` : `#/experiments?created=${exp.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const path = e.field?.startsWith('config.') ? e.field.slice(7).split('.') : null;
      const line = path ? lineOf(editor.value, path) : -1;
      showError(`${e.message}${e.field ? ` (${e.field}${line >= 0 ? `, line ${line + 1}` : ''})` : ''}`, line,
        path?.length === 1 ? path[0] : null);
    }
  }

  root.append(
    h('h1', {}, original ? `Clone #${cloneId} ${original.name || ''}` : 'New experiment'),
    h('form', { onsubmit: submit, 'data-page': 'new', 'data-clone': cloneId },
      h('div', { class: 'toolbar' },
        original ? '' : h('label', {}, 'Preset ', h('select', { 'aria-label': 'preset', onchange: (ev) => useConfig(PRESETS[ev.target.value]) },
          names.map((n) => h('option', { value: n }, n)))),
        nameInput,
        h('button', { type: 'submit' }, original ? 'Submit clone' : 'Submit')),
      message,
      form,
      h('div', { class: 'editor' }, gutter, editor)));
  if (original) nameInput.value = `copy of ${original.name || `#${cloneId}`}`;
  useConfig(original ? original.config : PRESETS[names[0]]);
}
