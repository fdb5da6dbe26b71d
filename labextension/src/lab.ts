/**
 * What the panel needs from the rest of JupyterLab: opening a dashboard and
 * writing connect code into a notebook.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';

import { IClusterModel } from './models';
import { hasServerProxy } from './request';
import { safeLink, shown, unsafeLinkMessage } from './util';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]', '0.0.0.0']);

/**
 * dask-labextension's public commands. Its `dask:populate-and-launch-layout`
 * sets the URL and launches the layout at once, before its check of a new URL
 * has answered: the first click on a new dashboard then opens no pane. So the
 * two steps are run here one after the other, waiting in between until
 * `dask:launch-layout` is enabled (dask-labextension enables it once the URL
 * answers as a Dask dashboard).
 */
export const DASK_POPULATE = 'dask:populate-dashboard-url';
export const DASK_LAUNCH_LAYOUT = 'dask:launch-layout';
/** How long dask-labextension may take to check a dashboard URL (ms). */
const DASK_CHECK_TIMEOUT = 30000;

/**
 * The URL to open for a dashboard_link. The server sends links that already go
 * through its proxy (`<base_url>proxy/<port>/status`, relative to this page);
 * an older server sends the dashboard's own address: a loopback one is sent
 * through jupyter-server-proxy here when it is installed. A link that is not
 * http(s) (javascript:, data:, file: ...) is refused with an Error saying so.
 */
export async function resolveDashboard(link: string): Promise<string> {
  const safe = safeLink(link);
  if (safe === null) {
    throw new Error(unsafeLinkMessage(link));
  }
  if (!/^[a-z][a-z0-9+.-]*:/i.test(link.trim())) {
    return safe; // a path on this server: already proxied
  }
  const url = new URL(safe);
  if (!LOOPBACK.has(url.hostname) || !(await hasServerProxy())) {
    return safe;
  }
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const base = ServerConnection.makeSettings().baseUrl;
  return (
    URLExt.join(base, 'proxy', port, url.pathname || '/') +
    url.search +
    url.hash
  );
}

/**
 * Show a dashboard: dask-labextension's panes (task stream, progress, workers)
 * when it is installed, else a new browser tab. A dashboard the server says this
 * browser cannot reach (model.dashboard_problem) is refused with that message.
 */
export async function openDashboard(
  app: JupyterFrontEnd,
  url: string,
  model: IClusterModel
): Promise<void> {
  if (model.dashboard_problem) {
    throw new Error(`${model.name}: ${model.dashboard_problem}`);
  }
  const safe = safeLink(url);
  if (safe === null) {
    throw new Error(unsafeLinkMessage(url));
  }
  const { commands } = app;
  if (
    commands.hasCommand(DASK_POPULATE) &&
    commands.hasCommand(DASK_LAUNCH_LAYOUT)
  ) {
    await commands.execute(DASK_POPULATE, { url: safe });
    const deadline = Date.now() + DASK_CHECK_TIMEOUT;
    while (!commands.isEnabled(DASK_LAUNCH_LAYOUT)) {
      if (Date.now() > deadline) {
        throw new Error(
          `dask-labextension found no Dask dashboard at ${shown(safe)} within ` +
            `${DASK_CHECK_TIMEOUT / 1000} s`
        );
      }
      await new Promise(resolve => setTimeout(resolve, 100));
    }
    await commands.execute(DASK_LAUNCH_LAYOUT);
    return;
  }
  const opened = window.open(safe, '_blank', 'noopener');
  // With "noopener" window.open returns null even on success, so a blocked
  // popup cannot be told apart; nothing to check here.
  void opened;
}

/**
 * A line that may be inserted: `%pipecluster connect ID` with an id that needs no
 * quoting (pipejupyter/models.py CONNECT_ID). IPython expands `$var` and `{expr}` in
 * a magic line even inside quotes, so no quoting could make other ids safe.
 */
const CONNECT_LINE =
  /^%pipecluster connect [A-Za-z0-9][A-Za-z0-9._:/@-]{0,199}$/;

/**
 * The line that connects a kernel to a cluster: the model's `connect_code` (built
 * by the server), or built from the id when the server does not send one. Throws,
 * inserting nothing, unless it is one `%pipecluster connect ID` line with a plain id.
 */
export function connectCode(model: IClusterModel): string {
  const line =
    model.connect_code === undefined
      ? `%pipecluster connect ${model.id}`
      : model.connect_code;
  if (typeof line !== 'string' || !CONNECT_LINE.test(line)) {
    throw new Error(
      `connect code not inserted: the id ${shown(model.id)} of cluster ` +
        `${shown(model.name)} cannot be written into code safely (an id may ` +
        'have letters, digits and . _ : / @ -, up to 200, not first -); ' +
        'connect by its scheduler address instead'
    );
  }
  return line;
}

/**
 * Put the connect code into the active cell of the current notebook: into the
 * cell itself when it is an empty code cell, on a new last line when it is a
 * non-empty code cell, or into a new code cell below a markdown/raw cell.
 */
export function insertConnect(
  app: JupyterFrontEnd,
  tracker: INotebookTracker | null,
  model: IClusterModel
): void {
  const line = connectCode(model); // refuses before anything is changed
  const panel = tracker?.currentWidget ?? null;
  if (!panel) {
    throw new Error('no notebook is open: open one to insert the connect code');
  }
  const notebook = panel.content;
  if (!notebook.activeCell || notebook.activeCell.model.type !== 'code') {
    NotebookActions.insertBelow(notebook);
  }
  const cell = notebook.activeCell;
  if (!cell) {
    throw new Error('the notebook has no active cell');
  }
  const shared = cell.model.sharedModel;
  const source = shared.getSource();
  shared.setSource(
    source.trim() === '' ? line : `${source.replace(/\n*$/, '')}\n${line}`
  );
  app.shell.activateById(panel.id);
}
