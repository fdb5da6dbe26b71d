/**
 * Wiring: the sidebar, its commands and its settings.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';

import { registerCommands } from './commands';
import { clustersIcon } from './icon';
import { insertConnect, openDashboard, resolveDashboard } from './lab';
import { OptionsMemory } from './optionsDialog';
import { ClusterPanel, PANEL_ID } from './panel';

export { CommandIDs } from './commands';

const PLUGIN_ID = 'pipejupyter:plugin';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A sidebar to start, scale and watch pipejupyter Dask clusters.',
  autoStart: true,
  optional: [
    ILayoutRestorer,
    ICommandPalette,
    INotebookTracker,
    ISettingRegistry,
    IStateDB
  ],
  activate
};

function activate(
  app: JupyterFrontEnd,
  restorer: ILayoutRestorer | null,
  palette: ICommandPalette | null,
  notebooks: INotebookTracker | null,
  settingRegistry: ISettingRegistry | null,
  state: IStateDB | null
): void {
  let defaultProfile = '';
  const panel = new ClusterPanel({
    interval: 2000,
    resolveDashboard,
    openDashboard: (url, model) => openDashboard(app, url, model),
    insertConnect: model => insertConnect(app, notebooks, model),
    // The Start dialog remembers the values applied per profile with the workspace.
    memory: new OptionsMemory(state)
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

  registerCommands(app, {
    panel,
    palette,
    defaultProfile: () => defaultProfile
  });
}

export default plugin;
