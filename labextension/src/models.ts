/**
 * TypeScript mirrors of the JSON models in docs/wire-format.md.
 */

/**
 * "lost": the scheduler is gone; "unreachable": another process's scheduler did not
 * answer this server in time (it may be fine: stopped, overloaded, another host).
 */
export type ClusterStatus =
  | 'starting'
  | 'running'
  | 'lost'
  | 'unreachable'
  | 'stopping'
  | 'stopped'
  | 'failed';

export interface IAdapt {
  minimum: number;
  maximum: number;
}

export interface IOwner {
  pid: number | null;
  host: string | null;
  kind: 'kernel' | 'server' | 'cli' | 'script' | string;
}

export interface IWorkerInfo {
  name: string;
  address: string | null;
  host: string | null;
  threads: number | null;
  memory_used: number | null;
  memory_limit: number | null;
  processing: number | null;
  /** "running", "pending", ... */
  status: string;
  job_id: string | null;
  job_state: string | null;
}

export interface IClusterModel {
  /** Stable id, 12 hex chars. */
  id: string;
  name: string;
  backend: string;
  profile: string | null;
  status: ClusterStatus | string;
  scheduler_address: string | null;
  /** The link a browser of this server opens: through the Jupyter server's
   * proxy (`<base_url>proxy/<port>/status`) when it has jupyter-server-proxy. */
  dashboard_link: string | null;
  /** The dashboard's own address (absent from older servers). */
  dashboard_direct?: string | null;
  /** Why dashboard_link may not open in this browser (e.g. a host the proxy does
   * not allow), naming the setting that fixes it; null when it opens. */
  dashboard_problem?: string | null;
  /** Connected workers. */
  workers: number;
  /** Asked for, not yet connected (worker_info lists at most 100 of them). */
  pending: number;
  /** Total threads of connected workers. */
  cores: number;
  /** Total memory limit of connected workers, bytes. */
  memory: number;
  memory_used: number;
  /** Tasks processing right now. */
  tasks: number;
  adapt: IAdapt | null;
  owner: IOwner | null;
  /** Epoch seconds. */
  started: number | null;
  error: string | null;
  /** The line "Insert connect code" puts into a cell; null when the id is unsafe
   * in code (absent from older servers). */
  connect_code?: string | null;
  worker_info?: IWorkerInfo[];
}

export interface IClusterList {
  clusters: IClusterModel[];
}

export interface IProfileModel {
  name: string;
  backend: string;
  cluster_class?: string | null;
  workers: number | null;
  adapt: IAdapt | null;
  cores: number | null;
  /** Human-readable, e.g. "2GiB" (or bytes as a number). */
  memory: string | number | null;
  description?: string | null;
  origin?: Record<string, string>;
  /** Why the profile cannot be used as configured (server-side check). */
  error?: string | null;
  /**
   * What starting it would warn about ("file:line: text", as the CLI prints them),
   * at most 20; `warnings_more` counts the rest. Absent from older servers.
   */
  warnings?: string[];
  warnings_more?: number;
}

export interface IProfileList {
  default: string | null;
  /** Warnings of the configuration as a whole (also in every profile's list). */
  warnings?: string[];
  warnings_more?: number;
  profiles: IProfileModel[];
}

/** What a field of the options form holds (docs/options-form.md). */
export type OptionKind =
  'int' | 'number' | 'str' | 'bool' | 'select' | 'memory' | 'duration' | 'list';

/** One value a user may choose when starting a profile (models.OptionField). */
export interface IOptionField {
  /** The override key relative to the profile, as --set takes it ("cluster_kwargs.cores"). */
  key: string;
  label: string;
  kind: OptionKind | string;
  /** What the profile says now (null: not set). */
  value: unknown;
  /** Where the value came from: "file:line", "default", "override", ... */
  origin: string | null;
  help: string;
  /** The unit of minimum/maximum: "bytes" for memory, "seconds" for durations, or a word. */
  unit: string | null;
  minimum: number | null;
  maximum: number | null;
  choices: unknown[] | null;
  /** A short text per choice (a partition's limits), same order as choices. */
  choice_help: string[] | null;
  /** "size", "resources", "placement", "gateway options", ... */
  group: string;
  /** Whether an empty value is accepted (it keeps the profile's). */
  nullable: boolean;
}

/** Answer of GET /pipejupyter/profiles/{name}/options. */
export interface IProfileOptions {
  profile: string;
  backend: string;
  description: string | null;
  fields: IOptionField[];
  warnings: string[];
}

/** Body of POST /pipejupyter/clusters. */
export interface IStartRequest {
  profile: string;
  workers?: number;
  adapt?: IAdapt;
  overrides?: Record<string, unknown>;
}

/** Body of PATCH /pipejupyter/clusters/{id}. */
export type IScaleRequest = { workers: number } | { adapt: IAdapt };

/** Error body of every route. */
export interface IErrorBody {
  message: string;
  key?: string | null;
  source?: string | null;
}
