/**
 * The options form of one profile as DOM, the body of the Start dialog.
 *
 * The fields are the core's (GET /pipejupyter/profiles/{name}/options, see
 * docs/options-form.md), the same the notebook's form shows: grouped, prefilled
 * with what the profile says (or what was last applied here), with where each
 * value came from, its bounds and unit as hints, and errors next to their field.
 * Only values that differ from the profile's become overrides; an empty value
 * keeps the profile's.
 */
import { Widget } from '@lumino/widgets';

import { IAdapt, IOptionField, IProfileOptions } from './models';
import { h, humanBytes } from './util';

export const WORKERS = 'workers';
export const ADAPT_MINIMUM = 'adapt_kwargs.minimum';
export const ADAPT_MAXIMUM = 'adapt_kwargs.maximum';
const SIZING_KEYS = [WORKERS, ADAPT_MINIMUM, ADAPT_MAXIMUM];

/** Titles of the groups the core puts fields in (as the notebook's form). */
const GROUP_TITLES: Record<string, string> = {
  size: 'Size',
  resources: 'Resources',
  placement: 'Placement',
  'gateway options': 'Gateway options'
};

/** A worker count or an adapt range: what the sidebar always sends. */
export type Sizing = { workers: number } | { adapt: IAdapt };

/** What the user chose: the sizing, and the values that differ from the profile's. */
export interface IChosen {
  sizing: Sizing;
  overrides: Record<string, unknown>;
}

/** A value the form itself refuses (before asking the server), with its field. */
export class FormError extends Error {
  constructor(
    message: string,
    readonly key: string | null
  ) {
    super(message);
    this.name = 'FormError';
  }
}

/** The three sizing fields, for a server that does not describe a profile's options. */
export function sizingFields(): IOptionField[] {
  const field = (key: string, label: string, help: string): IOptionField => ({
    key,
    label,
    kind: 'int',
    value: null,
    origin: null,
    help,
    unit: 'workers',
    minimum: 0,
    maximum: null,
    choices: null,
    choice_help: null,
    group: 'size',
    nullable: true
  });
  return [
    field(WORKERS, 'Workers', 'how many workers to start'),
    field(ADAPT_MINIMUM, 'Adapt minimum', 'the fewest workers kept'),
    field(ADAPT_MAXIMUM, 'Adapt maximum', 'the most workers asked for')
  ];
}

/** 3600 -> "01:00:00", 90000 -> "1-01:00:00" (SLURM's notation). */
export function formatSeconds(total: number): string {
  const seconds = Math.max(0, Math.round(total));
  const days = Math.floor(seconds / 86400);
  const pad = (n: number) => String(n).padStart(2, '0');
  const hms = `${pad(Math.floor((seconds % 86400) / 3600))}:${pad(
    Math.floor((seconds % 3600) / 60)
  )}:${pad(seconds % 60)}`;
  return days > 0 ? `${days}-${hms}` : hms;
}

/** A bound in the field's unit, as a person reads it. */
function boundText(field: IOptionField, value: number): string {
  if (field.unit === 'bytes') {
    return humanBytes(value);
  }
  if (field.unit === 'seconds') {
    return formatSeconds(value);
  }
  return String(value);
}

/** "1–64", "at most 01:00:00", "at least 0.25"; '' when unbounded. */
export function boundsText(field: IOptionField): string {
  const low = field.minimum;
  const high = field.maximum;
  const unit =
    field.unit && field.unit !== 'bytes' && field.unit !== 'seconds'
      ? ` ${field.unit}`
      : '';
  if (
    low !== null &&
    low !== undefined &&
    high !== null &&
    high !== undefined
  ) {
    return `${boundText(field, low)}–${boundText(field, high)}${unit}`;
  }
  if (high !== null && high !== undefined) {
    return `at most ${boundText(field, high)}${unit}`;
  }
  if (low !== null && low !== undefined) {
    return `at least ${boundText(field, low)}${unit}`;
  }
  return '';
}

/** The text an input shows for a value of the field ('' for none). */
function shownText(field: IOptionField, value: unknown): string {
  if (value === null || value === undefined) {
    return '';
  }
  if (field.kind === 'list' && Array.isArray(value)) {
    return value.map(String).join('\n');
  }
  if (typeof value === 'object') {
    return JSON.stringify(value);
  }
  return String(value);
}

/** "/home/u/config.yaml:7" -> "config.yaml:7" (the full text stays in the title). */
function shortOrigin(origin: string): string {
  const match = /([^/\\]+:\d+)$/.exec(origin);
  return match ? match[1] : origin;
}

type Input = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

/** One field's row: its input, hint and error line. */
class FieldRow {
  readonly node: HTMLElement;
  readonly input: Input;
  /** The text (or bool state) the profile's value shows as: a value that
   * still shows so is not an override. */
  readonly profileText: string;
  private _error = h('div', { class: 'pj-option-error', role: 'alert' });

  constructor(
    readonly field: IOptionField,
    prefill: unknown,
    remembered: boolean,
    id: string
  ) {
    this.profileText = this._textOf(field.value);
    this.input = this._makeInput(id);
    this._set(prefill);
    const hint: string[] = [];
    if (field.help) {
      hint.push(field.help);
    }
    const bounds = boundsText(field);
    // A help text that already names a time or size limit (the partition's MaxTime).
    const high = field.maximum;
    const said =
      (field.unit === 'seconds' || field.unit === 'bytes') &&
      high !== null &&
      high !== undefined &&
      field.help.includes(boundText(field, high));
    if (bounds && !said) {
      hint.push(bounds);
    } else if (
      !bounds &&
      field.unit &&
      !['bytes', 'seconds'].includes(field.unit)
    ) {
      hint.push(field.unit);
    }
    const origin = field.origin ?? 'default';
    const from = remembered
      ? `last applied here (the profile says ${
          this.profileText === '' ? 'nothing' : JSON.stringify(this.profileText)
        }, ${shortOrigin(origin)})`
      : `from ${shortOrigin(origin)}`;
    const hintNode = h('div', { class: 'pj-option-hint', title: origin }, [
      [...hint, from].join(' · ')
    ]);
    this._error.hidden = true;
    // A checkbox carries its label; other inputs sit right of theirs.
    const controls =
      field.kind === 'bool'
        ? [h('label', { class: 'pj-option-check' }, [this.input, field.label])]
        : [
            h('label', { class: 'pj-option-label', for: id }, [field.label]),
            this.input
          ];
    this.node = h(
      'div',
      {
        class: 'pj-option',
        'data-key': field.key,
        'data-kind': field.kind,
        'data-remembered': remembered ? 'true' : undefined
      },
      [...controls, hintNode, this._error]
    );
    const input = this.input;
    if (input instanceof HTMLInputElement && input.type === 'number') {
      // The browser checks min/max (and greys out Apply): say why, also for a
      // prefilled value out of bounds.
      const check = () =>
        (this.error = input.validity.valid ? '' : input.validationMessage);
      input.addEventListener('input', check);
      check();
    }
  }

  /** The value typed, as the field's type; text that does not parse is kept
   * as it is, for the core to refuse naming the field. null: empty. */
  read(): unknown {
    const field = this.field;
    const input = this.input;
    if (field.kind === 'bool') {
      const box = input as HTMLInputElement;
      return box.indeterminate ? null : box.checked;
    }
    const raw = input.value.trim();
    if (raw === '') {
      return null;
    }
    if (field.kind === 'list') {
      const lines = input.value
        .split('\n')
        .map(line => line.trim())
        .filter(Boolean);
      return lines.length ? lines : null;
    }
    if (field.kind === 'int' || field.kind === 'number') {
      const number = Number(raw);
      if (!Number.isFinite(number)) {
        return raw;
      }
      return number;
    }
    if (field.kind === 'select' && field.choices) {
      const choice = field.choices.find(c => String(c) === raw);
      return choice === undefined ? raw : choice;
    }
    return raw;
  }

  /** Whether the input shows something else than the profile's value. */
  get changed(): boolean {
    return this._currentText() !== this.profileText;
  }

  set error(text: string) {
    this._error.textContent = text;
    this._error.hidden = !text;
    this.node.classList.toggle('pj-mod-error', !!text);
  }

  get hidden(): boolean {
    return this.node.hidden;
  }

  /** Hidden rows are also disabled: their :invalid must not block Apply. */
  set hidden(value: boolean) {
    this.node.hidden = value;
    this.input.disabled = value;
  }

  private _textOf(value: unknown): string {
    if (this.field.kind === 'bool') {
      return value === null || value === undefined
        ? 'unset'
        : String(Boolean(value));
    }
    return shownText(this.field, value);
  }

  private _currentText(): string {
    if (this.field.kind === 'bool') {
      const box = this.input as HTMLInputElement;
      return box.indeterminate ? 'unset' : String(box.checked);
    }
    return this.field.kind === 'list'
      ? this.input.value
          .split('\n')
          .map(line => line.trim())
          .filter(Boolean)
          .join('\n')
      : this.input.value.trim();
  }

  private _set(value: unknown): void {
    if (this.field.kind === 'bool') {
      const box = this.input as HTMLInputElement;
      box.indeterminate = value === null || value === undefined;
      box.checked = !!value;
      return;
    }
    const text = shownText(this.field, value);
    if (
      this.input instanceof HTMLSelectElement &&
      text !== '' &&
      ![...this.input.options].some(o => o.value === text)
    ) {
      // A value the choices do not list (e.g. "a,b" partitions): still shown.
      this.input.append(h('option', { value: text }, [text]));
    }
    this.input.value = text;
  }

  private _makeInput(id: string): Input {
    const field = this.field;
    const common = {
      id,
      class: 'pj-option-input',
      'data-field': field.key,
      'aria-label': field.label,
      title: field.help || field.label
    };
    switch (field.kind) {
      case 'bool':
        return h('input', { ...common, class: undefined, type: 'checkbox' });
      case 'int':
      case 'number':
        return h('input', {
          ...common,
          type: 'number',
          step: field.kind === 'int' ? 1 : 'any',
          min: field.minimum ?? undefined,
          max: field.maximum ?? undefined,
          placeholder: field.nullable ? 'keep the profile’s' : undefined
        });
      case 'select': {
        const select = h('select', common);
        if (
          field.nullable ||
          field.value === null ||
          field.value === undefined
        ) {
          select.append(h('option', { value: '' }, ['(default)']));
        }
        (field.choices ?? []).forEach((choice, i) => {
          const help = field.choice_help?.[i] ?? '';
          const text = String(choice);
          select.append(
            h('option', { value: text, title: help || undefined }, [
              help ? `${text} — ${help}` : text
            ])
          );
        });
        return select;
      }
      case 'list':
        return h('textarea', {
          ...common,
          rows: 2,
          placeholder: 'one per line'
        });
      default:
        return h('input', {
          ...common,
          type: 'text',
          spellcheck: 'false',
          placeholder:
            field.kind === 'memory'
              ? 'e.g. 4GiB'
              : field.kind === 'duration'
                ? 'HH:MM:SS'
                : field.nullable
                  ? 'keep the profile’s'
                  : undefined
        });
    }
  }
}

/** The widget in the dialog's body. */
export class OptionsForm extends Widget {
  private _rows = new Map<string, FieldRow>();
  private _adapt: HTMLInputElement | null = null;
  private _top = h('div', { class: 'pj-options-error', role: 'alert' });
  private _progress = h('div', { class: 'pj-options-progress' });
  private _fieldset = h('fieldset', { class: 'pj-options-fields' });
  private _intro = h('div', { class: 'pj-options-intro' });
  private _ready = false;

  constructor(readonly profile: string) {
    super();
    this.addClass('pj-options');
    this.node.dataset.profile = profile;
    this._top.hidden = true;
    this._progress.hidden = false;
    this._progress.textContent = `Reading the options of ${profile}…`;
    this.node.append(this._intro, this._top, this._fieldset, this._progress);
  }

  /** Whether the fields are there (Apply can read them). */
  get ready(): boolean {
    return this._ready;
  }

  /**
   * Build the fields. `sizing` prefills workers/adapt (what the profile card
   * says); `remembered` the other values last applied here (keys the schema no
   * longer has are ignored).
   */
  setSchema(
    schema: IProfileOptions,
    sizing: Sizing | null,
    remembered: Record<string, unknown> = {}
  ): void {
    this._fieldset.replaceChildren();
    this._rows.clear();
    this._intro.replaceChildren(
      h('span', { class: 'pj-badge' }, [schema.backend]),
      ` ${schema.description ?? ''}`
    );
    const groups = new Map<string, HTMLElement>();
    schema.fields.forEach((field, index) => {
      let group = groups.get(field.group);
      if (!group) {
        group = h(
          'section',
          { class: 'pj-options-group', 'data-group': field.group },
          [h('h4', {}, [GROUP_TITLES[field.group] ?? field.group])]
        );
        groups.set(field.group, group);
        this._fieldset.append(group);
      }
      const isSizing = SIZING_KEYS.includes(field.key);
      const has =
        !isSizing &&
        Object.prototype.hasOwnProperty.call(remembered, field.key);
      let prefill = has ? remembered[field.key] : field.value;
      if (
        has &&
        field.kind === 'select' &&
        !(field.choices ?? []).some(c => String(c) === String(prefill))
      ) {
        prefill = field.value; // a choice the server no longer offers
      }
      if (isSizing && sizing) {
        prefill =
          'workers' in sizing
            ? field.key === WORKERS
              ? sizing.workers
              : field.value
            : field.key === ADAPT_MINIMUM
              ? sizing.adapt.minimum
              : field.key === ADAPT_MAXIMUM
                ? sizing.adapt.maximum
                : field.value;
      }
      const row = new FieldRow(
        field,
        prefill,
        has && shownText(field, prefill) !== shownText(field, field.value),
        `pj-option-${this.profile}-${index}`.replace(/[^\w-]/g, '_')
      );
      this._rows.set(field.key, row);
      group.append(row.node);
    });
    this._sizingToggle(groups.get('size') ?? null, sizing);
    for (const warning of schema.warnings ?? []) {
      this._fieldset.append(
        h('div', { class: 'pj-options-warning' }, [`warning: ${warning}`])
      );
    }
    this._ready = true;
    this.busy = '';
  }

  /** Show that the options could not be read (the form then holds the sizing only). */
  setLoadError(message: string, sizing: Sizing | null): void {
    this.setSchema(
      {
        profile: this.profile,
        backend: '?',
        description: null,
        fields: sizingFields(),
        warnings: []
      },
      sizing
    );
    this.showError(`could not read the options: ${message}`, null);
  }

  /** A line saying what is going on (''hides it); the fields are disabled meanwhile. */
  set busy(text: string) {
    this._progress.textContent = text;
    this._progress.hidden = !text;
    this._fieldset.disabled = !!text;
    this.node.classList.toggle('pj-mod-busy', !!text);
  }

  /** Whether sizing is an adapt range (else a worker count). */
  get adaptive(): boolean {
    return this._adapt?.checked ?? false;
  }

  /** Focus the first input that can be typed into. */
  focusFirst(): void {
    const first =
      this.node.querySelector<HTMLElement>(
        '.pj-option-input:not([disabled])'
      ) ?? this.node.querySelector<HTMLElement>('input:not([disabled])');
    first?.focus();
  }

  /** Clear every error. */
  clearErrors(): void {
    this._rows.forEach(row => (row.error = ''));
    this._top.textContent = '';
    this._top.hidden = true;
  }

  /**
   * Show `message` next to the field `key` names (the server's key is the full
   * path, "profiles.slurm.cluster_kwargs.walltime": the field whose key ends it),
   * else at the top. Returns the field key it was shown at, or null.
   */
  showError(message: string, key: string | null): string | null {
    const target = this.fieldFor(key);
    const row = target ? this._rows.get(target) : undefined;
    if (row && !row.hidden) {
      row.error = message;
      row.input.focus();
      row.node.scrollIntoView({ block: 'nearest' });
      return target;
    }
    this._top.textContent = message;
    this._top.hidden = false;
    this._top.scrollIntoView({ block: 'nearest' });
    return null;
  }

  /** The key of the field an error key names (the longest that ends it). */
  fieldFor(key: string | null): string | null {
    if (!key) {
      return null;
    }
    // The start request's own sizing keys ("adapt", "adapt.minimum").
    const sizing: Record<string, string> = {
      adapt: ADAPT_MINIMUM,
      'adapt.minimum': ADAPT_MINIMUM,
      'adapt.maximum': ADAPT_MAXIMUM
    };
    if (sizing[key] && this._rows.has(sizing[key])) {
      return sizing[key];
    }
    let best: string | null = null;
    for (const candidate of this._rows.keys()) {
      if (
        (key === candidate || key.endsWith(`.${candidate}`)) &&
        (!best || candidate.length > best.length)
      ) {
        best = candidate;
      }
    }
    return best;
  }

  /**
   * What the user chose. Raises FormError for sizing the form can tell is
   * wrong; every other value is checked by the server.
   */
  read(): IChosen {
    const overrides: Record<string, unknown> = {};
    for (const [key, row] of this._rows) {
      if (SIZING_KEYS.includes(key) || !row.changed) {
        continue;
      }
      const value = row.read();
      if (value !== null) {
        overrides[key] = value; // empty keeps the profile's value
      }
    }
    return { sizing: this._readSizing(), overrides };
  }

  private _readSizing(): Sizing {
    const count = (key: string, what: string): number => {
      const row = this._rows.get(key);
      const value = row?.read();
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
        throw new FormError(
          `${what} must be a whole number >= 0${
            value === null || value === undefined
              ? ''
              : `, not ${JSON.stringify(value)}`
          }`,
          key
        );
      }
      return value;
    };
    if (this.adaptive) {
      const minimum = count(ADAPT_MINIMUM, 'the adapt minimum');
      const maximum = count(ADAPT_MAXIMUM, 'the adapt maximum');
      if (maximum < minimum) {
        throw new FormError(
          `the adapt maximum ${maximum} is below the minimum ${minimum}`,
          ADAPT_MAXIMUM
        );
      }
      return { adapt: { minimum, maximum } };
    }
    return { workers: count(WORKERS, 'the worker count') };
  }

  /** A switch between a worker count and an adapt range, as on the profile card. */
  private _sizingToggle(
    group: HTMLElement | null,
    sizing: Sizing | null
  ): void {
    this._adapt = null;
    if (!group || !SIZING_KEYS.every(key => this._rows.has(key))) {
      return;
    }
    const adapt = h('input', {
      type: 'checkbox',
      'data-field': 'adapt',
      title: 'adaptive scaling between a minimum and a maximum'
    });
    adapt.checked = sizing
      ? 'adapt' in sizing
      : this._rows.get(ADAPT_MINIMUM)?.field.value !== null;
    adapt.addEventListener('change', () => this._syncSizing());
    group
      .querySelector('h4')
      ?.after(
        h('label', { class: 'pj-option-check pj-options-adapt' }, [
          adapt,
          'adaptive scaling'
        ])
      );
    this._adapt = adapt;
    this._syncSizing();
  }

  private _syncSizing(): void {
    const adaptive = this.adaptive;
    const workers = this._rows.get(WORKERS);
    if (workers) {
      workers.hidden = adaptive;
    }
    for (const key of [ADAPT_MINIMUM, ADAPT_MAXIMUM]) {
      const row = this._rows.get(key);
      if (row) {
        row.hidden = !adaptive;
      }
    }
  }
}
