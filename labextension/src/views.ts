/**
 * DOM views of one profile and one cluster. They are kept across refreshes
 * and updated in place, so numbers typed into their inputs survive polling.
 */
import { IAdapt, IClusterModel, IProfileModel } from './models';
import { actionButton, h, humanBytes, numberInput, plural } from './util';

/** What the views ask their panel to do. */
export interface IViewActions {
  /** Open the profile's Start dialog, prefilled with the card's sizing. */
  start(profile: string, sizing: { workers: number } | { adapt: IAdapt }): void;
  scale(id: string, workers: number): void;
  adapt(id: string, adapt: IAdapt): void;
  stop(id: string): void;
  dashboard(model: IClusterModel): void;
  insert(model: IClusterModel): void;
  /** Input validation failures. */
  invalid(error: unknown): void;
}

/** Read min/max inputs into an adapt request. */
function readAdapt(min: HTMLInputElement, max: HTMLInputElement): IAdapt {
  const minimum = Number(min.value);
  const maximum = Number(max.value);
  if (
    !Number.isInteger(minimum) ||
    !Number.isInteger(maximum) ||
    minimum < 0 ||
    maximum < minimum ||
    min.value.trim() === '' ||
    max.value.trim() === ''
  ) {
    throw new Error(
      `adapt needs whole numbers 0 <= minimum <= maximum, not "${min.value}".."${max.value}"`
    );
  }
  return { minimum, maximum };
}

function readWorkers(input: HTMLInputElement): number {
  const value = Number(input.value);
  if (input.value.trim() === '' || !Number.isInteger(value) || value < 0) {
    throw new Error(
      `workers must be a whole number >= 0, not "${input.value}"`
    );
  }
  return value;
}

/** "2 workers" or "2 running, 1 pending". */
export function workersText(model: IClusterModel): string {
  if (model.pending > 0) {
    return `${model.workers} running, ${model.pending} pending`;
  }
  return plural(model.workers, 'worker');
}

export function profileSizing(profile: IProfileModel): string {
  const parts: string[] = [];
  if (profile.adapt) {
    parts.push(`adaptive ${profile.adapt.minimum}-${profile.adapt.maximum}`);
  } else if (profile.workers !== null && profile.workers !== undefined) {
    parts.push(plural(profile.workers, 'worker'));
  }
  if (profile.cores !== null && profile.cores !== undefined) {
    parts.push(plural(profile.cores, 'core'));
  }
  if (profile.memory !== null && profile.memory !== undefined) {
    parts.push(
      typeof profile.memory === 'number'
        ? humanBytes(profile.memory)
        : profile.memory
    );
  }
  return parts.join(' · ');
}

/** Warnings listed one by one in a card's tooltip (the rest are counted). */
const MAX_WARNINGS_SHOWN = 20;

/** The warnings of a profile as one text (the marker's tooltip), or '' when none. */
export function profileWarnings(profile: IProfileModel): {
  count: number;
  text: string;
} {
  const all = Array.isArray(profile.warnings) ? profile.warnings : [];
  // The server sends at most 20; an older or broken one is bounded here too.
  const shown = all.slice(0, MAX_WARNINGS_SHOWN);
  const more =
    all.length -
    shown.length +
    (Number.isInteger(profile.warnings_more)
      ? Math.max(0, profile.warnings_more as number)
      : 0);
  const lines = shown.map(text => String(text).slice(0, 500));
  if (more > 0) {
    lines.push(`... and ${plural(more, 'more warning')}`);
  }
  return { count: shown.length + more, text: lines.join('\n') };
}

/** One profile with its Start control. */
export class ProfileRow {
  readonly node: HTMLElement;
  private _title = h('span', { class: 'pj-profile-name' });
  private _backend = h('span', { class: 'pj-badge pj-profile-backend' });
  private _sizing = h('div', { class: 'pj-profile-sizing' });
  private _error = h('div', { class: 'pj-profile-error' });
  private _warnings = h('span', {
    class: 'pj-badge pj-profile-warnings',
    role: 'img'
  });
  private _workers = numberInput('workers', 1, 0, 'workers');
  private _adaptToggle = h('input', {
    type: 'checkbox',
    'data-field': 'adapt',
    title: 'adaptive scaling'
  });
  private _min = numberInput('minimum', 1, 0, 'adapt minimum');
  private _max = numberInput('maximum', 4, 0, 'adapt maximum');
  /** Whether the user typed into the card since it was filled. */
  private _touched = false;
  private _adaptBox = h('span', { class: 'pj-adapt-inputs' }, [
    this._min,
    '–',
    this._max
  ]);

  constructor(
    profile: IProfileModel,
    private _actions: IViewActions
  ) {
    const start = actionButton(
      'start',
      'Start…',
      `Choose the options of a ${profile.name} cluster and start it`
    );
    start.addEventListener('click', () => this._start());
    this._adaptToggle.addEventListener('change', () => this._syncMode());
    for (const input of [
      this._workers,
      this._adaptToggle,
      this._min,
      this._max
    ]) {
      input.addEventListener('input', () => (this._touched = true));
    }
    this.node = h('li', { class: 'pj-profile', 'data-profile': profile.name }, [
      h('div', { class: 'pj-row' }, [
        this._title,
        this._backend,
        this._warnings
      ]),
      this._sizing,
      this._error,
      h('div', { class: 'pj-row pj-controls' }, [
        this._workers,
        h('label', { class: 'pj-toggle' }, [this._adaptToggle, 'adapt']),
        this._adaptBox,
        start
      ])
    ]);
    // Defaults come from the profile once; later updates keep user input.
    if (profile.adapt) {
      this._adaptToggle.checked = true;
      this._min.value = String(profile.adapt.minimum);
      this._max.value = String(profile.adapt.maximum);
    } else if (profile.workers !== null && profile.workers !== undefined) {
      this._workers.value = String(profile.workers);
    }
    this.update(profile);
    this._syncMode();
  }

  update(profile: IProfileModel): void {
    this._title.textContent = profile.name;
    this._backend.textContent = profile.backend;
    this._sizing.textContent = profileSizing(profile);
    this.node.title = profile.description ?? '';
    this._error.textContent = profile.error ?? '';
    this._error.hidden = !profile.error;
    this.node.classList.toggle('pj-mod-invalid', !!profile.error);
    const warnings = profileWarnings(profile);
    this._warnings.hidden = warnings.count === 0;
    this._warnings.textContent =
      warnings.count === 0 ? '' : `\u26a0 ${warnings.count}`;
    this._warnings.title = warnings.text;
    if (warnings.count === 0) {
      this._warnings.removeAttribute('aria-label');
    } else {
      this._warnings.setAttribute(
        'aria-label',
        `${plural(warnings.count, 'configuration warning')}: ${warnings.text}`
      );
    }
  }

  /**
   * Show a worker count or adapt range on the card (the one applied last).
   * `ifUntouched`: only while the user has not typed into the card.
   */
  setSizing(
    sizing: { workers: number } | { adapt: IAdapt },
    ifUntouched = false
  ): void {
    if (ifUntouched && this._touched) {
      return;
    }
    if ('adapt' in sizing) {
      this._adaptToggle.checked = true;
      this._min.value = String(sizing.adapt.minimum);
      this._max.value = String(sizing.adapt.maximum);
    } else {
      this._adaptToggle.checked = false;
      this._workers.value = String(sizing.workers);
    }
    this._touched = false;
    this._syncMode();
  }

  set isDefault(value: boolean) {
    this.node.classList.toggle('pj-mod-default', value);
  }

  private _syncMode(): void {
    const adapt = this._adaptToggle.checked;
    this._workers.hidden = adapt;
    this._adaptBox.hidden = !adapt;
  }

  private _start(): void {
    const name = this.node.dataset.profile ?? '';
    try {
      const sizing = this._adaptToggle.checked
        ? { adapt: readAdapt(this._min, this._max) }
        : { workers: readWorkers(this._workers) };
      this._actions.start(name, sizing);
    } catch (error) {
      this._actions.invalid(error);
    }
  }
}

/** One cluster card. */
export class ClusterCard {
  readonly node: HTMLElement;
  model: IClusterModel;
  private _name = h('span', { class: 'pj-cluster-name' });
  private _backend = h('span', { class: 'pj-badge pj-cluster-backend' });
  private _status = h('span', { class: 'pj-cluster-status' });
  private _workers = h('span', { class: 'pj-cluster-workers' });
  private _cores = h('span', { class: 'pj-cluster-cores' });
  private _memory = h('span', { class: 'pj-cluster-memory' });
  private _tasks = h('span', { class: 'pj-cluster-tasks' });
  private _adapt = h('span', { class: 'pj-cluster-adapt' });
  private _error = h('div', { class: 'pj-cluster-error' });
  private _scale = numberInput('scale', 1, 0, 'workers');
  private _min = numberInput('minimum', 1, 0, 'adapt minimum');
  private _max = numberInput('maximum', 4, 0, 'adapt maximum');
  private _dashboard = actionButton(
    'dashboard',
    'Dashboard',
    'Open the Dask dashboard'
  );

  constructor(
    model: IClusterModel,
    private _actions: IViewActions
  ) {
    this.model = model;
    const on = (button: HTMLButtonElement, fn: () => void) => {
      button.addEventListener('click', () => {
        try {
          fn();
        } catch (error) {
          this._actions.invalid(error);
        }
      });
      return button;
    };
    const id = model.id;
    this.node = h('li', { class: 'pj-cluster', 'data-cluster-id': id }, [
      h('div', { class: 'pj-row' }, [this._name, this._backend, this._status]),
      h('div', { class: 'pj-stats' }, [
        this._workers,
        this._cores,
        this._memory,
        this._tasks,
        this._adapt
      ]),
      this._error,
      h('div', { class: 'pj-row pj-controls' }, [
        h('span', { class: 'pj-group' }, [
          this._scale,
          on(actionButton('scale', 'Scale', 'Ask for this many workers'), () =>
            this._actions.scale(id, readWorkers(this._scale))
          )
        ]),
        h('span', { class: 'pj-group' }, [
          this._min,
          '–',
          this._max,
          on(
            actionButton(
              'adapt',
              'Adapt',
              'Scale adaptively between minimum and maximum'
            ),
            () => this._actions.adapt(id, readAdapt(this._min, this._max))
          )
        ])
      ]),
      h('div', { class: 'pj-row pj-controls' }, [
        on(this._dashboard, () => this._actions.dashboard(this.model)),
        on(
          actionButton(
            'insert',
            'Insert connect code',
            'Put %pipecluster connect into the active cell'
          ),
          () => this._actions.insert(this.model)
        ),
        on(actionButton('stop', 'Stop', 'Stop this cluster'), () =>
          this._actions.stop(id)
        )
      ])
    ]);
    this._scale.value = String(model.workers + model.pending);
    if (model.adapt) {
      this._min.value = String(model.adapt.minimum);
      this._max.value = String(model.adapt.maximum);
    }
    this.update(model);
  }

  update(model: IClusterModel): void {
    this.model = model;
    const data = this.node.dataset;
    data.status = model.status;
    data.workers = String(model.workers);
    data.pending = String(model.pending);
    this._name.textContent = model.name;
    this._name.title = model.scheduler_address ?? '';
    this._backend.textContent = model.backend;
    this._status.textContent = model.status;
    this._status.dataset.status = model.status;
    this._workers.textContent = workersText(model);
    this._cores.textContent = plural(model.cores, 'core');
    this._memory.textContent = `${humanBytes(model.memory_used)} / ${humanBytes(model.memory)}`;
    this._memory.title = 'memory used / memory limit';
    this._tasks.textContent = plural(model.tasks, 'task');
    this._adapt.textContent = model.adapt
      ? `adaptive ${model.adapt.minimum}-${model.adapt.maximum}`
      : '';
    this._adapt.hidden = !model.adapt;
    this._error.textContent = model.error ?? '';
    this._error.hidden = !model.error;
    this._dashboard.disabled = !model.dashboard_link;
  }

  /** Where the dashboard button goes (set by the panel once resolved). */
  set dashboardHref(href: string) {
    this._dashboard.dataset.href = href;
  }
}
