/**
 * The sidebar widget: profiles, cluster cards, an error area, and a poll.
 */
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  IAdapt,
  IClusterModel,
  IProfileList,
  IProfileModel,
  IStartRequest
} from './models';
import { OptionsMemory, showStartDialog } from './optionsDialog';
import { Sizing } from './optionsForm';
import { api } from './request';
import { errorText, h } from './util';
import { ClusterCard, IViewActions, ProfileRow } from './views';

export const PANEL_ID = 'pipejupyter-sidebar';

export namespace ClusterPanel {
  export interface IOptions {
    /** Poll interval in ms. */
    interval: number;
    /** The URL the dashboard button opens for a dashboard_link. */
    resolveDashboard(link: string): Promise<string>;
    /** Show a dashboard URL (dask-labextension's panes, or a browser tab). */
    openDashboard(url: string, model: IClusterModel): void | Promise<void>;
    /** Put connect code for a cluster into the active notebook. */
    insertConnect(model: IClusterModel): void;
    /** Where the Start dialog remembers the values applied per profile. */
    memory?: OptionsMemory;
  }
}

/** Profiles are re-read every this many successful cluster polls. */
const PROFILE_EVERY = 15;

export class ClusterPanel extends Widget {
  readonly poll: Poll;
  /** The latest answer of GET /pipejupyter/profiles. */
  profiles: IProfileList | null = null;
  /** The latest clusters, in server order. */
  clusters: IClusterModel[] = [];

  private _errorArea = h('div', { class: 'pj-error', role: 'alert' });
  private _pollError = '';
  private _actionError = '';
  private _profileList = h('ul', { class: 'pj-profile-list' });
  private _clusterList = h('ul', { class: 'pj-cluster-list' });
  private _empty = h('div', { class: 'pj-empty' }, ['Loading…']);
  private _profileRows = new Map<string, ProfileRow>();
  private _cards = new Map<string, ClusterCard>();
  private _ticks = 0;
  /** GET /clusters requests sent so far. */
  private _asked = 0;
  /** Answers to requests numbered up to this are older than what is shown. */
  private _staleUpTo = 0;
  private _actions: IViewActions;
  private _hrefs = new Map<string, string>();
  private _memory: OptionsMemory;

  constructor(private _options: ClusterPanel.IOptions) {
    super();
    this.id = PANEL_ID;
    this.addClass('pj-panel');
    this.title.caption = 'Pipeline clusters';

    const refresh = h(
      'button',
      {
        class: 'pj-button pj-button-refresh',
        type: 'button',
        title: 'Refresh now',
        'data-action': 'refresh'
      },
      ['↻']
    );
    refresh.addEventListener('click', () => void this.refresh(true));
    this._errorArea.hidden = true;
    this._errorArea.addEventListener('click', () => {
      this._actionError = '';
      this._renderError();
    });
    this.node.append(
      h('header', { class: 'pj-header' }, [
        h('h2', { class: 'pj-title' }, ['Pipeline clusters']),
        refresh
      ]),
      this._errorArea,
      h('section', { class: 'pj-section pj-profiles' }, [
        h('h3', {}, ['Profiles']),
        this._profileList
      ]),
      h('section', { class: 'pj-section pj-clusters' }, [
        h('h3', {}, ['Clusters']),
        this._empty,
        this._clusterList
      ])
    );

    this._memory = _options.memory ?? new OptionsMemory(null);
    this._actions = {
      start: (profile, sizing) => void this.openStartDialog(profile, sizing),
      scale: (id, workers) =>
        this._run(`scale ${id}`, () => api.scale(id, { workers })),
      adapt: (id, adapt: IAdapt) =>
        this._run(`adapt ${id}`, () => api.scale(id, { adapt })),
      stop: id => this._run(`stop ${id}`, () => api.stop(id)),
      dashboard: model => this._openDashboard(model),
      insert: model => {
        try {
          this._options.insertConnect(model);
        } catch (error) {
          this.showError(error);
        }
      },
      invalid: error => this.showError(error)
    };

    this.poll = new Poll({
      name: 'pipejupyter:clusters',
      factory: () => this._tick(),
      frequency: { interval: _options.interval, backoff: true, max: 30 * 1000 },
      standby: () => !this.isVisible || document.hidden
    });
  }

  /** Change the poll interval (from the settings). */
  set interval(value: number) {
    this.poll.frequency = { ...this.poll.frequency, interval: value };
  }

  /** Re-read clusters (and profiles when `all`) now. */
  async refresh(all = false): Promise<void> {
    if (all) {
      this._ticks = 0;
    }
    await this.poll.refresh();
    await this.poll.tick;
  }

  /** Show an error from an action until dismissed or the next success. */
  showError(error: unknown, what = ''): void {
    this._actionError = (what ? `${what}: ` : '') + errorText(error);
    console.error('pipejupyter:', what, error);
    this._renderError();
  }

  /**
   * The Start dialog of a profile (optionsDialog.ts), prefilled with `sizing`;
   * resolves with the started cluster, or null when none was started.
   */
  async openStartDialog(
    profile: string,
    sizing: Sizing | null = null
  ): Promise<IClusterModel | null> {
    return showStartDialog({
      profile,
      sizing,
      memory: this._memory,
      start: body => this._start(body),
      started: (_model, chosen) => {
        this._actionError = '';
        this._renderError();
        this._profileRows.get(profile)?.setSizing(chosen.sizing);
      },
      lateError: error => this.showError(error, `start ${profile}`)
    });
  }

  /**
   * POST a start; the panel shows it is busy, shows the started cluster from the
   * POST's own answer (the server read it from the scheduler once the workers were
   * up: no guess) without waiting for a GET, and refreshes after it.
   */
  private async _start(body: IStartRequest): Promise<IClusterModel> {
    this.node.classList.add('pj-mod-busy');
    try {
      const model = await api.start(body);
      this._showAnswer(model);
      return model;
    } finally {
      this.node.classList.remove('pj-mod-busy');
      void this.refresh();
    }
  }

  /** Run a REST action, show its error, refresh after it. */
  private async _run(
    what: string,
    action: () => Promise<unknown>
  ): Promise<void> {
    this.node.classList.add('pj-mod-busy');
    try {
      await action();
      this._actionError = '';
      this._renderError();
    } catch (error) {
      this.showError(error, what);
    } finally {
      this.node.classList.remove('pj-mod-busy');
      void this.refresh();
    }
  }

  /**
   * Show `model`, the answer of an action, in the cluster list at once. A GET sent
   * before it may answer after it with an older list: that answer is dropped.
   */
  private _showAnswer(model: IClusterModel): void {
    this._staleUpTo = this._asked;
    const index = this.clusters.findIndex(c => c.id === model.id);
    // A new cluster goes last; the refresh after the action puts it in server order.
    this.clusters =
      index >= 0
        ? this.clusters.map(c => (c.id === model.id ? model : c))
        : [...this.clusters, model];
    this._renderClusters(this.clusters);
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.poll.refresh();
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  private async _tick(): Promise<void> {
    try {
      if (this._ticks % PROFILE_EVERY === 0 || !this.profiles) {
        this.profiles = await api.profiles();
        this._renderProfiles(this.profiles);
      }
      const asked = ++this._asked;
      const clusters = (await api.clusters()).clusters;
      if (asked > this._staleUpTo) {
        this.clusters = clusters;
        this._renderClusters(this.clusters);
      }
      this._ticks += 1;
      this._pollError = '';
    } catch (error) {
      this._pollError = errorText(error);
      throw error; // makes the poll back off
    } finally {
      this._renderError();
    }
  }

  private _renderError(): void {
    const text = [this._pollError, this._actionError].filter(Boolean);
    this._errorArea.textContent = text.join('\n');
    this._errorArea.hidden = text.length === 0;
    this._errorArea.title = this._actionError ? 'click to dismiss' : '';
  }

  private _renderProfiles(list: IProfileList): void {
    const seen = new Set<string>();
    list.profiles.forEach((profile: IProfileModel, index: number) => {
      seen.add(profile.name);
      let row = this._profileRows.get(profile.name);
      if (!row) {
        const created = (row = new ProfileRow(profile, this._actions));
        this._profileRows.set(profile.name, row);
        // The card shows the sizing applied last (unless typed into meanwhile).
        void this._memory.fetch(profile.name).then(chosen => {
          if (chosen) {
            created.setSizing(chosen.sizing, true);
          }
        });
      } else {
        row.update(profile);
      }
      row.isDefault = profile.name === list.default;
      placeAt(this._profileList, row.node, index); // keeps server order
    });
    this._prune(this._profileRows, seen);
  }

  private _renderClusters(clusters: IClusterModel[]): void {
    const seen = new Set<string>();
    clusters.forEach((model, index) => {
      seen.add(model.id);
      let card = this._cards.get(model.id);
      if (!card) {
        card = new ClusterCard(model, this._actions);
        this._cards.set(model.id, card);
      } else {
        card.update(model);
      }
      const link = model.dashboard_link;
      if (link && !this._hrefs.has(link)) {
        // '' until resolved, and for a link that is not http(s): a click then
        // resolves again and shows why it is not opened.
        this._hrefs.set(link, '');
        this._options.resolveDashboard(link).then(
          href => {
            this._hrefs.set(link, href);
            this._cards.forEach(c => {
              if (c.model.dashboard_link === link) {
                c.dashboardHref = href;
              }
            });
          },
          () => undefined
        );
      } else if (link) {
        card.dashboardHref = this._hrefs.get(link) ?? '';
      }
      placeAt(this._clusterList, card.node, index);
    });
    this._prune(this._cards, seen);
    this._empty.textContent = 'No clusters.';
    this._empty.hidden = clusters.length > 0;
  }

  private _prune(views: Map<string, { node: HTMLElement }>, keep: Set<string>) {
    for (const [key, view] of views) {
      if (!keep.has(key)) {
        view.node.remove();
        views.delete(key);
      }
    }
  }

  private _openDashboard(model: IClusterModel): void {
    const link = model.dashboard_link;
    if (!link) {
      this.showError(new Error(`cluster ${model.name} has no dashboard`));
      return;
    }
    const show = (url: string) =>
      Promise.resolve()
        .then(() => this._options.openDashboard(url, model))
        .catch(error => this.showError(error, 'dashboard'));
    // Open synchronously when the URL is known: popup blockers want the
    // window.open inside the click.
    const href = this._hrefs.get(link);
    if (href) {
      try {
        void Promise.resolve(this._options.openDashboard(href, model)).catch(
          error => this.showError(error, 'dashboard')
        );
      } catch (error) {
        this.showError(error, 'dashboard');
      }
      return;
    }
    this._options
      .resolveDashboard(link)
      .then(show)
      .catch(error => this.showError(error, 'dashboard'));
  }
}

/** Put `node` at position `index` of `parent` without touching it if it is
 * already there (moving a node would blur a focused input inside it). */
function placeAt(parent: HTMLElement, node: HTMLElement, index: number): void {
  const current = parent.children[index] ?? null;
  if (current !== node) {
    parent.insertBefore(node, current);
  }
}
