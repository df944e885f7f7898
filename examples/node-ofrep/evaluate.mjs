// Evaluates Dimmer flags from a Node service with OpenFeature's server SDK
// (@openfeature/server-sdk) and its OFREP provider (@openfeature/ofrep-provider): the way a
// JavaScript back end uses Dimmer without a Dimmer SDK of its own.
//
//   DIMMER_URL=http://127.0.0.1:8080 DIMMER_SDK_TOKEN=dmr_… node evaluate.mjs [cases.json]
//
// Each case names a flag, its type (boolean, string, number or object), the default the
// application falls back to, and the evaluation context. The script prints one JSON result per
// case: the value, variant and reason OpenFeature resolved, or the error code and the default.
import { readFile } from 'node:fs/promises';

import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const url = process.env.DIMMER_URL ?? 'http://127.0.0.1:8080';
const token = process.env.DIMMER_SDK_TOKEN;
if (!token) {
  console.error('set DIMMER_SDK_TOKEN to an sdk token: dimmer token create my-service --scope sdk --env production');
  process.exit(2);
}
const casesFile = process.argv[2] ?? new URL('./cases.json', import.meta.url);
const cases = JSON.parse(await readFile(casesFile, 'utf8'));

// An sdk token is a secret of the service: it goes in a header, never in a URL or a log.
const provider = new OFREPProvider({ baseUrl: url, headers: [['Authorization', `Bearer ${token}`]] });
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient('dimmer-node-ofrep-example');

const getters = {
  boolean: (flag, fallback, context) => client.getBooleanDetails(flag, fallback, context),
  string: (flag, fallback, context) => client.getStringDetails(flag, fallback, context),
  number: (flag, fallback, context) => client.getNumberDetails(flag, fallback, context),
  object: (flag, fallback, context) => client.getObjectDetails(flag, fallback, context),
};

const results = [];
for (const c of cases) {
  const get = getters[c.type];
  if (!get) {
    console.error(`case for ${c.flag}: type is boolean, string, number or object, not ${c.type}`);
    process.exit(2);
  }
  // OpenFeature never throws from an evaluation: a failure is the default with an error code.
  const details = await get(c.flag, c.default, c.context ?? {});
  results.push({
    flag: c.flag,
    type: c.type,
    value: details.value,
    variant: details.variant ?? null,
    reason: details.reason ?? null,
    errorCode: details.errorCode ?? null,
    errorMessage: details.errorMessage ?? null,
  });
}
console.log(JSON.stringify(results, null, 2));
await OpenFeature.close();
