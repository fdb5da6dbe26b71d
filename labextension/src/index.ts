/**
 * Wiring: the sidebar, its commands and its settings.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { clustersIcon } from './icon';
import { insertConnect, openDashboard, resolveDashboard } from './lab';
import { IClusterModel, IStartRequest } from './models';
import { ClusterPanel, PANEL_ID } from './panel';
import { api } from './request';
import { errorText } from './util';

const PLUGIN_ID = 'pipejupyter:plugin';
const CATEGORY = 'Pipeline clusters';

export namespace CommandIDs {
  export const startDefault = 'pipejupyter:start-default';
  export const stopAll = 'pipejupyter:stop-all';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A sidebar to start, scale and watch pipejupyter Dask clusters.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, INotebookTracker, ISettingRegistry],
  activate
};

function activate(
  app: JupyterFrontEnd,
  restorer: ILayoutRestorer | null,
  palette: ICommandPalette | null,
  notebooks: INotebookTracker | null,
  settingRegistry: ISettingRegistry | null
): void {
  let defaultProfile = '';
  const panel = new ClusterPanel({
    interval: 2000,
    resolveDashboard,
    openDashboard: url => openDashboard(url),
    insertConnect: model => insertConnect(app, notebooks, model)
  });
  panel.title.icon = clustersIcon;
  app.shell.add(panel, 'left', { rank: 210 });
  restorer?.add(panel, PANEL_ID);

  if (settingRegistry) {
    settingRegistry
      .load(PLUGIN_ID)
      .then(settings => {
        const apply = () => {
          panel.interval = settings.get('pollInterval').composite as number;
          defaultProfile = settings.get('defaultProfile').composite as string;
        };
        apply();
        settings.changed.connect(apply);
      })
      .catch(reason => console.error(`pipejupyter: settings: ${reason}`));
  }

  app.commands.addCommand(CommandIDs.startDefault, {
    label: 'Pipeline clusters: start default profile',
    caption: 'Start a cluster from the default profile',
    execute: async () => {
      app.shell.activateById(panel.id);
      try {
        const list = panel.profiles ?? (await api.profiles());
        const name = defaultProfile || list.default;
        if (!name) {
          throw new Error('no default profile: set "defaultProfile" in the settings');
        }
        const profile = list.profiles.find(p => p.name === name);
        const body: IStartRequest = { profile: name };
        if (profile?.adapt) {
          body.adapt = profile.adapt;
        } else if (profile?.workers !== null && profile?.workers !== undefined) {
          body.workers = profile.workers;
        }
        const model = await api.start(body);
        void panel.refresh();
        return model;
      } catch (error) {
        panel.showError(error, 'start default profile');
        throw error;
      }
    }
  });

  app.commands.addCommand(CommandIDs.stopAll, {
    label: 'Pipeline clusters: stop all',
    caption: 'Stop every cluster listed in the panel (args: {confirm: false} skips the dialog)',
    execute: async args => {
      const live = (await api.clusters()).clusters.filter(
        (c: IClusterModel) => c.status !== 'stopped' && c.status !== 'stopping'
      );
      if (live.length === 0) {
        return [];
      }
      if (args['confirm'] !== false) {
        const answer = await showDialog({
          title: 'Stop all clusters?',
          body: live.map(c => `${c.name} (${c.backend})`).join(', '),
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop all' })]
        });
        if (!answer.button.accept) {
          return [];
        }
      }
      const results = await Promise.allSettled(live.map(c => api.stop(c.id)));
      const failed = results
        .map((r, i) =>
          r.status === 'rejected' ? `${live[i].name}: ${errorText(r.reason)}` : ''
        )
        .filter(Boolean);
      void panel.refresh();
      if (failed.length > 0) {
        panel.showError(failed.join('; '), 'stop all');
      }
      return live.map(c => c.id);
    }
  });

  for (const command of [CommandIDs.startDefault, CommandIDs.stopAll]) {
    palette?.addItem({ command, category: CATEGORY });
  }
}

export default plugin;
