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
import { FieldRow, shownText } from './optionField';
import { h } from './util';

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
