/**
 * One field of the options form: its input (number, text, select, checkbox or lines),
 * prefilled; its hint (help, bounds in readable units, where the value came from); its
 * error; and the value it reads back as, typed like the core's field.
 */
import { IOptionField } from './models';
import { h, humanBytes } from './util';

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
export function shownText(field: IOptionField, value: unknown): string {
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
export class FieldRow {
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
