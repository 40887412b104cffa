// Hive Gateway runtime config for the comparison benchmark (see README.md beside this file).
// Upstream base URLs come from ALMANAC_URL / AUTOPOSTING_URL at RUN time through transportEntries,
// so supergraph.graphql never needs recomposing for other ports.
import { defineConfig } from '@graphql-hive/gateway';

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set`);
  return value;
}

export const gatewayConfig = defineConfig({
  supergraph: './supergraph.graphql',
  graphqlEndpoint: '/graphql',
  graphiql: false,
  landingPage: false,
  logging: 'warn',
  transportEntries: {
    Almanac: {
      location: required('ALMANAC_URL'),
      headers: [['Authorization', `Bearer ${required('ALMANAC_TOKEN')}`]],
    },
    Autoposting: {
      location: required('AUTOPOSTING_URL'),
      headers: [['Authorization', `Bearer ${required('AUTOPOSTING_KEY')}`]],
    },
  },
});
