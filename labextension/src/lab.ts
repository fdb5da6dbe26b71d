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

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]', '0.0.0.0']);

/**
 * The URL to open for a dashboard_link: through jupyter-server-proxy
 * (`<base>/proxy/<port>/status`) when it is installed and the dashboard is on
 * this machine, else the raw link.
 */
export async function resolveDashboard(link: string): Promise<string> {
  let url: URL;
  try {
    url = new URL(link, window.location.href);
  } catch {
    return link;
  }
  if (!LOOPBACK.has(url.hostname) || !(await hasServerProxy())) {
    return link;
  }
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const base = ServerConnection.makeSettings().baseUrl;
  return (
    URLExt.join(base, 'proxy', port, url.pathname || '/') +
    url.search +
    url.hash
  );
}

/** Open a dashboard in a new browser tab. */
export function openDashboard(url: string): void {
  const opened = window.open(url, '_blank', 'noopener');
  // With "noopener" window.open returns null even on success, so a blocked
  // popup cannot be told apart; nothing to check here.
  void opened;
}

/** The line that connects a kernel to a cluster. */
export function connectCode(model: IClusterModel): string {
  return `%pipecluster connect ${model.id}`;
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
  const line = connectCode(model);
  const shared = cell.model.sharedModel;
  const source = shared.getSource();
  shared.setSource(
    source.trim() === '' ? line : `${source.replace(/\n*$/, '')}\n${line}`
  );
  app.shell.activateById(panel.id);
}
