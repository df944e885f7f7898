// A small Node HTTP service guarded by Dimmer without a Dimmer SDK: it evaluates its flag with
// OpenFeature's server SDK and OFREP provider, OpenFeature's SpanEventHook records each
// evaluation as a `feature_flag.evaluation` event on the request's SERVER span, and the
// OpenTelemetry SDK exports those spans to Dimmer's OTLP receiver. Dimmer turns each span into an
// outcome (error when 5xx, its duration as latency) for the variant evaluated under it, and the
// flag's guards judge the rollout from that alone.
//
//   DIMMER_URL=http://127.0.0.1:8080 DIMMER_SDK_TOKEN=dmr_… PORT=3000 \
//   CHECKOUT_ON_FAILURE_SHARE=0.04 CHECKOUT_OFF_FAILURE_SHARE=0.01 node server.mjs
//
// GET /checkout?user=<id> evaluates `new-checkout` for that user; a share
// CHECKOUT_ON_FAILURE_SHARE (0 to 1, default 0) of the requests on the `on` variant fail with
// 500, and CHECKOUT_OFF_FAILURE_SHARE (default 0) of those on `off` (a baseline: real services
// fail now and then); the rest answer 200. The failures are spread evenly (every 1/share-th
// request of the variant), so a run is reproducible.
// Once listening, the service prints one JSON line with its port (PORT=0 picks a free one).
import { createServer } from 'node:http';

import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';
import { SpanEventHook } from '@openfeature/open-telemetry-hooks';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';

const url = (process.env.DIMMER_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
const token = process.env.DIMMER_SDK_TOKEN;
if (!token) {
  console.error('set DIMMER_SDK_TOKEN to an sdk token: dimmer token create my-service --scope sdk --env production');
  process.exit(2);
}
/** A share of requests from the environment variable `name`: a number from 0 to 1. */
function shareFrom(name) {
  const share = Number(process.env[name] ?? '0');
  if (!Number.isFinite(share) || share < 0 || share > 1) {
    console.error(`${name} must be a number from 0 to 1, not ${process.env[name]}`);
    process.exit(2);
  }
  return share;
}
const failureShare = { on: shareFrom('CHECKOUT_ON_FAILURE_SHARE'), off: shareFrom('CHECKOUT_OFF_FAILURE_SHARE') };
const port = Number(process.env.PORT ?? '3000');
// How long finished spans wait before they are exported: short, so a guard sees them soon.
const batchDelayMs = Number(process.env.OTEL_BSP_SCHEDULE_DELAY ?? '200');

// The sdk token is a secret of the service: it goes in a header, never in a URL or a log.
const exporter = new OTLPTraceExporter({
  url: `${url}/v1/traces`,
  headers: { Authorization: `Bearer ${token}` },
});
const tracerProvider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'dimmer-node-service-example' }),
  spanProcessors: [new BatchSpanProcessor(exporter, { scheduledDelayMillis: batchDelayMs })],
});
// Registers the async-hooks context manager too, so the hook finds the request's active span.
tracerProvider.register();
const tracer = trace.getTracer('dimmer-node-service-example');

OpenFeature.addHooks(new SpanEventHook());
await OpenFeature.setProviderAndWait(
  new OFREPProvider({ baseUrl: url, headers: [['Authorization', `Bearer ${token}`]] }),
);
const flags = OpenFeature.getClient('dimmer-node-service-example');

const requests = { on: 0, off: 0 };
/** Whether this request on `variant` is one of the configured share that fails. */
function fails(variant) {
  const share = failureShare[variant] ?? 0;
  requests[variant] = (requests[variant] ?? 0) + 1;
  const n = requests[variant];
  return Math.floor(n * share) > Math.floor((n - 1) * share);
}

async function checkout(user) {
  // OpenFeature never throws from an evaluation: a failure is the default (`false`).
  const details = await flags.getBooleanDetails('new-checkout', false, { targetingKey: user });
  const variant = details.variant ?? (details.value ? 'on' : 'off');
  if (fails(variant)) {
    return { status: 500, body: { error: 'the checkout failed', variant } };
  }
  return { status: 200, body: { ok: true, variant } };
}

const server = createServer((req, res) => {
  const requestUrl = new URL(req.url ?? '/', 'http://localhost');
  const route = requestUrl.pathname === '/checkout' ? '/checkout' : 'unknown';
  // The request's SERVER span: the span Dimmer counts, one per request.
  tracer.startActiveSpan(
    `${req.method} ${route}`,
    { kind: SpanKind.SERVER, attributes: { 'http.request.method': req.method, 'http.route': route } },
    async (span) => {
      let status = 404;
      let body = { error: 'not found' };
      try {
        if (route === '/checkout' && req.method === 'GET') {
          const user = requestUrl.searchParams.get('user');
          if (!user || user.length > 256) {
            status = 400;
            body = { error: 'user: required, at most 256 characters' };
          } else {
            ({ status, body } = await checkout(user));
          }
        }
      } catch (err) {
        status = 500;
        body = { error: 'internal error' };
        span.recordException(err);
      }
      span.setAttribute('http.response.status_code', status);
      if (status >= 500) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: body.error });
      }
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
      span.end();
    },
  );
});

async function shutdown() {
  server.close();
  await OpenFeature.close();
  // Exports what is still batched before exiting.
  await tracerProvider.shutdown();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ listening: server.address().port }));
});
