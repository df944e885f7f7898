// Evaluates Dimmer flags in the browser with OpenFeature's web SDK and its OFREP provider.
//
// - The token is a *client* token (`dimmer token create web --scope client --env production`):
//   it can only evaluate flags of its environment, so it may sit in a page. Never put an sdk or
//   admin token in a page.
// - Dimmer must allow this page's origin: `dimmer serve --cors-origin http://127.0.0.1:5173`.
// - No polling: Dimmer's bulk answer advertises an event stream (OFREP `eventStreams`); the
//   provider connects to it and evaluates again when a flag changes, so a kill shows at once.
// - `setContext` evaluates again for the new context (Dimmer's ETag covers the context, so the
//   provider's If-None-Match never keeps the old context's values).
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const params = new URLSearchParams(location.search);
const DIMMER_URL = params.get('server') ?? 'http://127.0.0.1:8080';
const CLIENT_TOKEN = params.get('token') ?? 'dmr_paste_a_client_token_here';

const user = { targetingKey: params.get('user') ?? 'visitor-1', plan: 'free' };
const client = OpenFeature.getClient();

// What the page showed and when (tests read it through window.dimmerExample).
const renders = [];
const waiters = [];
const errors = [];

function render(trigger) {
  const details = client.getBooleanDetails('new-checkout', false);
  const out = document.querySelector('#new-checkout');
  out.textContent = details.value ? 'new checkout' : 'classic checkout';
  out.dataset.value = String(details.value);
  out.dataset.reason = details.reason;
  document.querySelector('#plan').value = user.plan;
  const entry = { at: Date.now(), value: details.value, reason: details.reason, variant: details.variant, trigger };
  renders.push(entry);
  for (const waiter of waiters.splice(0)) waiter();
}

function status(text) {
  document.querySelector('#status').textContent = text;
}

async function setPlan(plan) {
  user.plan = plan;
  await OpenFeature.setContext({ ...user });
  render('context');
  return renders[renders.length - 1];
}

// Resolves with the first render from index `since` on that shows `value`, or null after `ms`.
function waitFor(value, since, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    const check = () => {
      const found = renders.slice(since).find((r) => r.value === value);
      if (found) {
        clearTimeout(timer);
        resolve(found);
      } else {
        waiters.push(check);
      }
    };
    check();
  });
}

client.addHandler(ProviderEvents.ConfigurationChanged, () => render('change'));
client.addHandler(ProviderEvents.Stale, (e) => status(`stale: ${e?.message ?? ''}`));
client.addHandler(ProviderEvents.Error, (e) => {
  errors.push(e?.message ?? 'error');
  status(`error: ${e?.message ?? ''}`);
});
window.addEventListener('error', (e) => errors.push(String(e.message)));
document.querySelector('#plan').addEventListener('change', (e) => setPlan(e.target.value));

const provider = new OFREPWebProvider({
  baseUrl: DIMMER_URL,
  headers: [['Authorization', `Bearer ${CLIENT_TOKEN}`]],
  // The default, 'local-cache-first', answers a new context of the same targetingKey from the
  // cache of the old one and corrects it a moment later (a ConfigurationChanged event);
  // 'network-first' makes setContext wait for the new context's values, and still falls back to
  // the cache when the network fails.
  cacheMode: 'network-first',
});
const ready = (async () => {
  await OpenFeature.setContext({ ...user });
  await OpenFeature.setProviderAndWait(provider);
  render('ready');
  status('ready');
})();
ready.catch((e) => {
  errors.push(String(e));
  status(`failed: ${e}`);
});

window.dimmerExample = { ready, renders, errors, setPlan, waitFor };
