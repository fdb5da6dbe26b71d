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
 * The URL to open for a dashboard_link: through jupyter-server-proxy
 * (`<base>/proxy/<port>/status`) when it is installed and the dashboard is on
 * this machine, else the link itself (made absolute). A link that is not http(s)
 * (javascript:, data:, file: ...) is refused with an Error saying so.
 */
export async function resolveDashboard(link: string): Promise<string> {
  const safe = safeLink(link);
  if (safe === null) {
    throw new Error(unsafeLinkMessage(link));
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

/** Open a dashboard in a new browser tab; only http(s) URLs are opened. */
export function openDashboard(url: string): void {
  const safe = safeLink(url);
  if (safe === null) {
    throw new Error(unsafeLinkMessage(url));
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
