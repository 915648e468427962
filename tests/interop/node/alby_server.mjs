// A tiny L402 service built from @getalby/lightning-tools's server helpers, so httpay can be
// tried as the client of a getalby-style server on loopback.
//
//   node alby_server.mjs --demo http://127.0.0.1:<port> [--price-sat 10]
//
// Prints one JSON line `{"port": N}` once it listens on 127.0.0.1.
//   GET /stock/<symbol>  402 + makeL402AuthenticateHeader({token: issueL402Macaroon(...), invoice}),
//                        or 200 when parseL402Authorization + verifyL402Macaroon accept the
//                        credential and sha256(preimage) is the token's payment hash.
//   GET /stats           issued / accepted / refused and the last refusal's reason.
// Its "macaroon" is getalby's own token (base64url JSON, '.', hex HMAC), not a real macaroon.
import crypto from 'node:crypto';
import http from 'node:http';
import {
  issueL402Macaroon, verifyL402Macaroon, makeL402AuthenticateHeader, parseL402Authorization,
} from '@getalby/lightning-tools/402/l402';

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const DEMO = arg('--demo');
const PRICE_SAT = Number(arg('--price-sat', '10'));
if (!DEMO) {
  console.error('alby_server: --demo <url of the httpay demo service> is required');
  process.exit(2);
}
const SECRET = crypto.randomBytes(32).toString('hex');
const stats = { issued: 0, accepted: 0, refused: 0, lastRefusal: null, lastScheme: null };

async function challenge() {
  const r = await fetch(`${DEMO}/ln/invoices`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ amount_msat: PRICE_SAT * 1000, description: 'getalby peer (demo)', expiry: 600 }),
  });
  if (r.status !== 201) throw new Error(`demo network refused an invoice: ${r.status}`);
  const { payment_request: invoice, payment_hash: hash } = await r.json();
  const token = await issueL402Macaroon(SECRET, hash, { service: 'stock' });
  stats.issued += 1;
  return makeL402AuthenticateHeader({ token, invoice });
}

async function verify(authorization) {
  const cred = parseL402Authorization(authorization);
  if (!cred) throw new Error('not an L402/LSAT credential');
  const payload = await verifyL402Macaroon(SECRET, cred.token);
  const hash = crypto.createHash('sha256').update(Buffer.from(cred.preimage, 'hex')).digest('hex');
  if (hash !== payload.paymentHash) throw new Error('the preimage does not match the payment hash');
  return payload;
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
        const payload = await verify(auth);
        stats.accepted += 1;
        stats.lastScheme = auth.split(' ')[0];
        return send(res, 200, { symbol: m[1].toUpperCase(), price: 123.45, served_by: 'getalby', payment_hash: payload.paymentHash });
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
