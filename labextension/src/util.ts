/**
 * Small DOM and formatting helpers.
 */

type Attrs = Record<string, string | number | boolean | undefined>;

/** Create an element with attributes (class, data-*, ...) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  children: (Node | string)[] = []
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) {
      continue;
    }
    node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children);
  return node;
}

/** A number input with a data-field attribute. */
export function numberInput(
  field: string,
  value: number,
  min = 0,
  title = field
): HTMLInputElement {
  return h('input', {
    class: 'pj-input',
    type: 'number',
    min,
    step: 1,
    value,
    title,
    'aria-label': title,
    'data-field': field
  });
}

/** A button with a data-action attribute. */
export function actionButton(
  action: string,
  label: string,
  title = label
): HTMLButtonElement {
  return h(
    'button',
    {
      class: `pj-button pj-button-${action}`,
      type: 'button',
      title,
      'data-action': action
    },
    [label]
  );
}

/** "1 worker", "2 workers". */
export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 4294967296 -> "4.0 GiB". */
export function humanBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '?';
  }
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** The text of an error of any kind. */
export function errorText(error: unknown): string {
  if (
    error &&
    typeof (error as { describe?: unknown }).describe === 'function'
  ) {
    return (error as { describe(): string }).describe();
  }
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/** Longest text of an untrusted value put into a message. */
const SHOWN = 120;

/** `value` as a quoted, escaped, shortened string for a message. */
export function shown(value: unknown): string {
  const text = String(value);
  return JSON.stringify(
    text.length > SHOWN
      ? `${text.slice(0, SHOWN)}…(${text.length} chars)`
      : text
  );
}

/** Schemes a link may have to be opened (as the Python widget's safe_link). */
const LINK_PROTOCOLS = new Set(['http:', 'https:']);
/** Longer links are not links. */
const MAX_LINK = 8192;

/**
 * The absolute http(s) URL of `link`, or null for anything else (javascript:, data:,
 * file:, blob:, text that is no URL). A relative link (a dashboard behind the
 * Jupyter server's proxy, "/user/x/proxy/8787/status") resolves against `base`.
 * The browser's own URL parser decides, so " JavaScript:..." or "java\nscript:..."
 * are read exactly as window.open would read them.
 */
export function safeLink(
  link: unknown,
  base: string = window.location.href
): string | null {
  if (typeof link !== 'string' || link.length > MAX_LINK) {
    return null;
  }
  let url: URL;
  try {
    url = new URL(link, base);
  } catch {
    return null;
  }
  return LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
}

/** The message for a link that is not opened. */
export function unsafeLinkMessage(link: unknown): string {
  return `dashboard link ${shown(link)} is not an http(s) link: not opened`;
}
