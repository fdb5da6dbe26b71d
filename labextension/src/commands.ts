/**
 * The sidebar's commands and their command palette entries.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';

import { IClusterModel, IStartRequest } from './models';
import { ClusterPanel } from './panel';
import { api } from './request';
import { errorText } from './util';

/** The palette category of the commands. */
const CATEGORY = 'Pipeline clusters';

export namespace CommandIDs {
  export const startDefault = 'pipejupyter:start-default';
  export const stopAll = 'pipejupyter:stop-all';
}

export namespace Commands {
  export interface IOptions {
    /** The sidebar the commands act on and report errors to. */
    panel: ClusterPanel;
    /** The palette to list the commands in, when there is one. */
    palette: ICommandPalette | null;
    /** The profile set in the settings ('' for the server's default), read at each run. */
    defaultProfile(): string;
  }
}

/** Register the commands (and their palette items). */
export function registerCommands(
  app: JupyterFrontEnd,
  options: Commands.IOptions
): void {
  const { panel, palette, defaultProfile } = options;

  app.commands.addCommand(CommandIDs.startDefault, {
    label: 'Pipeline clusters: start default profile',
    caption: 'Start a cluster from the default profile',
    execute: async () => {
      app.shell.activateById(panel.id);
      try {
        const list = panel.profiles ?? (await api.profiles());
        const name = defaultProfile() || list.default;
        if (!name) {
          throw new Error(
            'no default profile: set "defaultProfile" in the settings'
          );
        }
        const profile = list.profiles.find(p => p.name === name);
        const body: IStartRequest = { profile: name };
        if (profile?.adapt) {
          body.adapt = profile.adapt;
        } else if (
          profile?.workers !== null &&
          profile?.workers !== undefined
        ) {
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
    caption:
      'Stop every cluster listed in the panel (args: {confirm: false} skips the dialog)',
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
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Stop all' })
          ]
        });
        if (!answer.button.accept) {
          return [];
        }
      }
      const results = await Promise.allSettled(live.map(c => api.stop(c.id)));
      const failed = results
        .map((r, i) =>
          r.status === 'rejected'
            ? `${live[i].name}: ${errorText(r.reason)}`
            : ''
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
