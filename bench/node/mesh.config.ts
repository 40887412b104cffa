// Compose config for the Hive Gateway comparison (see README.md beside this file).
// Builds supergraph.graphql from the SAME two OpenAPI files the Python gateway targets.
import { resolve } from 'node:path';
import { defineConfig } from '@graphql-mesh/compose-cli';
import { loadOpenAPISubgraph } from '@omnigraph/openapi';

const upstreams = resolve(process.env.UPSTREAMS_DIR || resolve(process.cwd(), '../../../shared/upstreams'));

export const composeConfig = defineConfig({
  output: 'supergraph.graphql',
  subgraphs: [
    {
      sourceHandler: loadOpenAPISubgraph('Almanac', {
        source: resolve(upstreams, 'almanac.openapi.yaml'),
        endpoint: 'http://almanac.invalid',
      }),
    },
    {
      sourceHandler: loadOpenAPISubgraph('Autoposting', {
        source: resolve(upstreams, 'autoposting.openapi.yaml'),
        endpoint: 'http://autoposting.invalid',
      }),
    },
  ],
});
