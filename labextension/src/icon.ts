import { LabIcon } from '@jupyterlab/ui-components';

/** Three linked nodes: a scheduler and two workers. */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="12" cy="5" r="3"/>
    <circle cx="5" cy="18" r="3"/>
    <circle cx="19" cy="18" r="3"/>
    <path d="M11 7.5h2v3.2l5.2 4.7-1.3 1.5L12 12.4l-4.9 4.5-1.3-1.5 5.2-4.7z"/>
  </g>
</svg>`;

export const clustersIcon = new LabIcon({
  name: 'pipejupyter:clusters',
  svgstr
});
