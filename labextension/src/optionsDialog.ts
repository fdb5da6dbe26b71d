/**
 * The Start dialog of a profile card: JupyterLab's Dialog around the options
 * form (optionsForm.ts). Apply starts the cluster with the chosen values as
 * overrides; a value the server refuses is shown next to its field and the
 * dialog stays open, with nothing started. The values applied last are
 * remembered per profile in JupyterLab's state database.
 */
import { Dialog } from '@jupyterlab/apputils';
import { IStateDB } from '@jupyterlab/statedb';
import type { ReadonlyPartialJSONValue } from '@lumino/coreutils';

import { IClusterModel, IStartRequest } from './models';
import { FormError, IChosen, OptionsForm, Sizing } from './optionsForm';
import { PipeJupyterError, api } from './request';
import { errorText } from './util';

/** Index of Apply among the dialog's buttons (the default, taken on Enter). */
const APPLY = 1;

/**
 * The values last applied per profile, under `pipejupyter:options:<profile>`
 * in the state database (kept with the workspace), or in memory without one.
 */
export class OptionsMemory {
  private _local = new Map<string, IChosen>();

  constructor(private _state: IStateDB | null) {}

  static key(profile: string): string {
    return `pipejupyter:options:${profile}`;
  }

  async fetch(profile: string): Promise<IChosen | null> {
    if (!this._state) {
      return this._local.get(profile) ?? null;
    }
    try {
      return asChosen(await this._state.fetch(OptionsMemory.key(profile)));
    } catch (error) {
      console.warn('pipejupyter: reading remembered options:', error);
      return null;
    }
  }

  async save(profile: string, chosen: IChosen): Promise<void> {
    this._local.set(profile, chosen);
    if (this._state) {
      const value = JSON.parse(
        JSON.stringify(chosen)
      ) as ReadonlyPartialJSONValue;
      await this._state.save(OptionsMemory.key(profile), value);
    }
  }
}

/** A stored value as IChosen, or null when it is not one (an old or foreign entry). */
function asChosen(value: unknown): IChosen | null {
  if (!value || typeof value !== 'object') {
    return null;
  }
  const { sizing, overrides } = value as Partial<IChosen>;
  const count = (n: unknown) =>
    typeof n === 'number' && Number.isInteger(n) && n >= 0;
  let ok: Sizing | null = null;
  if (sizing && 'workers' in sizing && count(sizing.workers)) {
    ok = { workers: sizing.workers };
  } else if (
    sizing &&
    'adapt' in sizing &&
    sizing.adapt &&
    count(sizing.adapt.minimum) &&
    count(sizing.adapt.maximum)
  ) {
    ok = {
      adapt: { minimum: sizing.adapt.minimum, maximum: sizing.adapt.maximum }
    };
  }
  if (
    !ok ||
    !overrides ||
    typeof overrides !== 'object' ||
    Array.isArray(overrides)
  ) {
    return null;
  }
  return { sizing: ok, overrides: { ...overrides } };
}

/**
 * A Dialog whose Apply runs the start first: the dialog closes only once the
 * cluster runs; a refusal keeps it open with the error shown.
 */
class OptionsDialog extends Dialog<void> {
  /** loading: reading the schema; ready: Apply may run; starting; done. */
  phase: 'loading' | 'ready' | 'starting' | 'done' = 'loading';
  /** Set once the dialog is closed (Cancel, Escape, or done). */
  closed = false;

  constructor(
    readonly form: OptionsForm,
    private _apply: () => Promise<boolean>
  ) {
    super({
      title: `Start ${form.profile}`,
      body: form,
      buttons: [
        Dialog.cancelButton({ label: 'Cancel' }),
        Dialog.okButton({
          label: 'Apply',
          caption: 'Start the cluster with these values',
          className: 'pj-options-apply'
        })
      ],
      defaultButton: APPLY
    });
    this.addClass('pj-options-dialog');
    this.applyEnabled = false;
  }

  /** Enable or disable the Apply button. */
  set applyEnabled(value: boolean) {
    this.node
      .querySelectorAll<HTMLButtonElement>('button.jp-mod-accept')
      .forEach(button => (button.disabled = !value));
  }

  resolve(index?: number): void {
    const apply = (index ?? APPLY) === APPLY;
    if (!apply || this.phase === 'done') {
      super.resolve(index);
      return;
    }
    if (this.phase !== 'ready' || this.node.querySelector(':invalid')) {
      // Still loading, already starting, or a value the browser refuses (out of its
      // bounds; Enter reaches here even while Apply is disabled).
      return;
    }
    this.phase = 'starting';
    this.applyEnabled = false;
    void this._apply().then(started => {
      if (started) {
        this.phase = 'done';
        super.resolve(APPLY);
      } else {
        this.phase = 'ready';
        this.applyEnabled = true;
      }
    });
  }
}

export namespace StartDialog {
  export interface IOptions {
    profile: string;
    /** The worker count or adapt range of the profile card. */
    sizing: Sizing | null;
    memory: OptionsMemory;
    /** POST /pipejupyter/clusters (the panel's, which also refreshes it). */
    start(body: IStartRequest): Promise<IClusterModel>;
    /** Called once the cluster runs, with what was applied. */
    started(model: IClusterModel, chosen: IChosen): void;
    /** An error of a start whose dialog was closed meanwhile. */
    lateError(error: unknown): void;
  }
}

/** The message of a server error without the "source: key: " it starts with
 * (the field it is shown at says that). */
function fieldMessage(error: PipeJupyterError): string {
  let text = error.message;
  for (const part of [error.source, error.key]) {
    if (part && text.startsWith(`${part}: `)) {
      text = text.slice(part.length + 2);
    }
  }
  return text;
}

/**
 * Show the Start dialog of a profile; resolves with the started cluster's
 * model, or null when the dialog was closed without starting one.
 */
export async function showStartDialog(
  options: StartDialog.IOptions
): Promise<IClusterModel | null> {
  const { profile, memory } = options;
  const form = new OptionsForm(profile);
  let model: IClusterModel | null = null;

  const apply = async (): Promise<boolean> => {
    form.clearErrors();
    let chosen: IChosen;
    try {
      chosen = form.read();
    } catch (error) {
      if (error instanceof FormError) {
        form.showError(error.message, error.key);
        return false;
      }
      throw error;
    }
    const body: IStartRequest = { profile, ...chosen.sizing };
    if (Object.keys(chosen.overrides).length > 0) {
      body.overrides = chosen.overrides;
    }
    const began = Date.now();
    const tick = () => {
      const seconds = Math.round((Date.now() - began) / 1000);
      form.busy = `Starting ${profile}… ${seconds} s (the dialog closes once the workers are up)`;
    };
    tick();
    const timer = window.setInterval(tick, 1000);
    try {
      model = await options.start(body);
    } catch (error) {
      if (dialog.closed) {
        options.lateError(error);
      } else if (error instanceof PipeJupyterError) {
        const where = form.fieldFor(error.key);
        form.showError(
          where ? fieldMessage(error) : error.describe(),
          error.key
        );
      } else {
        form.showError(errorText(error), null);
      }
      return false;
    } finally {
      window.clearInterval(timer);
      form.busy = '';
    }
    await memory.save(profile, chosen).catch(error => {
      console.warn('pipejupyter: remembering options:', error);
    });
    options.started(model, chosen);
    return true;
  };

  const dialog = new OptionsDialog(form, apply);
  // Disposing an open dialog rejects its promise: closed either way.
  const shown = dialog
    .launch()
    .catch(() => undefined)
    .finally(() => {
      dialog.closed = true;
    });

  try {
    const [schema, remembered] = await Promise.all([
      api.options(profile),
      memory.fetch(profile)
    ]);
    form.setSchema(schema, options.sizing, remembered?.overrides ?? {});
  } catch (error) {
    form.setLoadError(errorText(error), options.sizing);
  }
  if (!dialog.closed) {
    dialog.phase = 'ready';
    dialog.applyEnabled = true;
    form.focusFirst();
  }
  await shown;
  dialog.dispose();
  return model;
}
