// A tiny LSAT-guarded service built only from lsat-js (2.0.6) and its macaroon library, so httpay
// can be proven against a peer's real server-side code, on loopback.
//
//   node lsat_server.mjs --demo http://127.0.0.1:<port> [--price-sat 10]
//
// Prints one JSON line `{"port": N}` once it listens on 127.0.0.1. Invoices come from the httpay
// demo network (POST <demo>/ln/invoices), so a DemoWallet can really pay them.
//   GET /stock/<symbol>  402 + `WWW-Authenticate: LSAT macaroon=..., invoice=...` (lsat.toChallenge()),
//                        or 200 once the Authorization credential passes lsat-js's own checks:
//                        Lsat.fromToken (preimage must hash to the macaroon's payment hash),
//                        lsat.isSatisfied(), verifyMacaroonCaveats with its satisfiers.
//   GET /stats           what the server issued, accepted and refused (and the last refusal's reason).
import crypto from 'node:crypto';
import http from 'node:http';
import lsatjs from 'lsat-js';
import macaroon from 'macaroon';

const {
  Lsat, Identifier, Caveat, getRawMacaroon, verifyMacaroonCaveats,
  expirationSatisfier, createServicesSatisfier, createCapabilitiesSatisfier,
} = lsatjs;

const SERVICE = 'stock';
const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const DEMO = arg('--demo');
const PRICE_SAT = Number(arg('--price-sat', '10'));
if (!DEMO) {
  console.error('lsat_server: --demo <url of the httpay demo service> is required');
  process.exit(2);
}
const ROOT_KEY = crypto.randomBytes(32).toString('hex'); // per process: a restart forgets every token
const stats = { issued: 0, accepted: 0, refused: 0, lastRefusal: null, lastScheme: null };

async function newInvoice() {
  const r = await fetch(`${DEMO}/ln/invoices`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ amount_msat: PRICE_SAT * 1000, description: 'lsat-js peer (demo)', expiry: 600 }),
  });
  if (r.status !== 201) throw new Error(`demo network refused an invoice: ${r.status}`);
  return r.json(); // {payment_request, payment_hash}
}

async function challenge() {
  const { payment_request: invoice, payment_hash: hash } = await newInvoice();
  const id = new Identifier({ paymentHash: Buffer.from(hash, 'hex') });
  const mac = macaroon.newMacaroon({ version: 2, rootKey: ROOT_KEY, identifier: id.toString(), location: 'lsat-js-peer' });
  for (const c of [
    new Caveat({ condition: 'services', value: `${SERVICE}:0` }),
    new Caveat({ condition: `${SERVICE}_capabilities`, value: 'ticker' }),
    new Caveat({ condition: 'expiration', value: Date.now() + 3_600_000 }),
  ]) mac.addFirstPartyCaveat(c.encode());
  const lsat = Lsat.fromMacaroon(getRawMacaroon(mac), invoice);
  stats.issued += 1;
  return lsat.toChallenge();
}

function verify(authorization) {
  // lsat-js only reads the LSAT scheme (fromToken asserts the prefix); anything else is refused.
  const lsat = Lsat.fromToken(authorization); // throws when the preimage does not match the hash
  if (!lsat.isSatisfied()) throw new Error('the LSAT is not satisfied (no or wrong preimage)');
  const satisfiers = [expirationSatisfier, createServicesSatisfier(SERVICE), createCapabilitiesSatisfier(SERVICE, 'ticker')];
  if (!verifyMacaroonCaveats(lsat.baseMacaroon, ROOT_KEY, satisfiers)) throw new Error('macaroon signature or caveats rejected');
  return lsat;
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  try {
    const path = new URL(req.url, 'http://localhost').pathname;
    if (path === '/stats') return send(res, 200, stats);
    const m = path.match(/^\/stock\/([A-Za-z]{1,8})$/);
    if (!m) return send(res, 404, { error: 'not found' });
    const auth = req.headers.authorization;
    if (auth) {
      try {
        const lsat = verify(auth);
        stats.accepted += 1;
        stats.lastScheme = auth.split(' ')[0];
        return send(res, 200, {
          symbol: m[1].toUpperCase(), price: 123.45, served_by: 'lsat-js',
          payment_hash: lsat.paymentHash, caveats: lsat.getCaveats().map((c) => c.encode()),
        });
      } catch (e) {
        stats.refused += 1;
        stats.lastRefusal = String(e && e.message ? e.message : e).slice(0, 200);
      }
    }
    return send(res, 402, { error: 'payment required' }, { 'www-authenticate': await challenge() });
  } catch (e) {
    return send(res, 500, { error: String(e && e.message ? e.message : e).slice(0, 200) });
  }
});

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
