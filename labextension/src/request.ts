/**
 * The one fetch helper of the extension: every REST call goes through here.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import {
  IClusterList,
  IClusterModel,
  IErrorBody,
  IProfileList,
  IProfileOptions,
  IScaleRequest,
  IStartRequest
} from './models';

/** The REST namespace of the server extension. */
export const API_NAMESPACE = 'pipejupyter';

/**
 * An error answered by the server (or a network failure, status 0).
 */
export class PipeJupyterError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly key: string | null = null,
    readonly source: string | null = null
  ) {
    super(message);
    this.name = 'PipeJupyterError';
  }

  /** A one-line text for the panel's error area. */
  describe(): string {
    const where = [this.key, this.source].filter(Boolean).join(' @ ');
    const code = this.status ? `${this.status}: ` : '';
    return `${code}${this.message}${where ? ` (${where})` : ''}`;
  }
}

/**
 * Call a route relative to the server's base URL and decode its JSON answer.
 *
 * A non-2xx answer raises a PipeJupyterError carrying the status and the
 * server's `message` (falling back to the status text when the body is not
 * JSON, e.g. tornado's HTML 404 page when the server extension is not loaded).
 */
export async function request<T>(
  route: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, route);
  const what = `${init.method ?? 'GET'} ${new URL(url, window.location.href).pathname}`;
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new PipeJupyterError(0, `network error on ${what}: ${String(error)}`);
  }
  const text = await response.text();
  let data: unknown = null;
  let parsed = false;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
      parsed = true;
    } catch {
      parsed = false;
    }
  }
  if (!response.ok) {
    const body = (
      parsed && data && typeof data === 'object' ? data : {}
    ) as Partial<IErrorBody>;
    const message =
      typeof body.message === 'string' && body.message
        ? body.message
        : `${response.statusText || 'request failed'} (${what})`;
    throw new PipeJupyterError(
      response.status,
      message,
      body.key ?? null,
      body.source ?? null
    );
  }
  if (text.length > 0 && !parsed) {
    throw new PipeJupyterError(response.status, `invalid JSON from ${what}`);
  }
  return data as T;
}

/** Call a route under /pipejupyter/. */
export function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {}
): Promise<T> {
  return request<T>(URLExt.join(API_NAMESPACE, endPoint), init);
}

function jsonBody(method: string, body: unknown): RequestInit {
  return {
    method,
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  };
}

/** Typed wrappers of the routes in docs/wire-format.md. */
export const api = {
  profiles: () => requestAPI<IProfileList>('profiles'),
  options: (profile: string) =>
    requestAPI<IProfileOptions>(
      `profiles/${encodeURIComponent(profile)}/options`
    ),
  clusters: () => requestAPI<IClusterList>('clusters'),
  cluster: (id: string) =>
    requestAPI<IClusterModel>(`clusters/${encodeURIComponent(id)}`),
  start: (body: IStartRequest) =>
    requestAPI<IClusterModel>('clusters', jsonBody('POST', body)),
  scale: (id: string, body: IScaleRequest) =>
    requestAPI<IClusterModel>(
      `clusters/${encodeURIComponent(id)}`,
      jsonBody('PATCH', body)
    ),
  stop: (id: string) =>
    requestAPI<null>(`clusters/${encodeURIComponent(id)}`, {
      method: 'DELETE'
    })
};

/**
 * Whether jupyter-server-proxy answers on this server (probed once).
 */
let proxyProbe: Promise<boolean> | null = null;
export function hasServerProxy(): Promise<boolean> {
  if (!proxyProbe) {
    proxyProbe = request<unknown>('server-proxy/servers-info').then(
      () => true,
      () => false
    );
  }
  return proxyProbe;
}
