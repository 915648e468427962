// Runs the peers' own L402/LSAT challenge parsers over WWW-Authenticate values and prints JSON.
//
//   echo '{"headers": ["LSAT macaroon=..., invoice=...", "L402 version=\"0\", ..."]}' | node parse_challenge.mjs
//
// For each value: lsat-js's Lsat.fromHeader (payment hash from the invoice, the identifier's
// payment hash from the macaroon, caveats) and @getalby/lightning-tools's parseL402 (token,
// invoice, version) plus its own BOLT11 decoder's payment hash and amount. `combined` is the
// values joined with ", " — the one string fetch() hands getalby's fetchWithL402. A parser that
// throws is reported as {"error": "..."}; nothing is hidden.
import lsatjs from 'lsat-js';
import { Invoice } from '@getalby/lightning-tools';
import { parseL402 } from '@getalby/lightning-tools/402/l402';

const { Lsat, Identifier } = lsatjs;

const attempt = (fn) => {
  try {
    return fn();
  } catch (e) {
    return { error: String(e && e.message ? e.message : e).slice(0, 300) };
  }
};

function viaLsatJs(header) {
  return attempt(() => {
    const lsat = Lsat.fromHeader(header);
    return {
      payment_hash: lsat.paymentHash,
      identifier_payment_hash: Identifier.fromString(lsat.id).paymentHash.toString('hex'),
      invoice: lsat.invoice,
      invoice_amount_sat: lsat.invoiceAmount,
      macaroon: lsat.baseMacaroon,
      caveats: lsat.getCaveats().map((c) => c.encode()),
    };
  });
}

function viaAlby(header) {
  return attempt(() => {
    const parsed = parseL402(header);
    const inv = new Invoice({ pr: parsed.invoice });
    return {
      token: parsed.token,
      invoice: parsed.invoice,
      version: parsed.version ?? null,
      payment_hash: inv.paymentHash,
      amount_sat: inv.satoshi,
    };
  });
}

let input = '';
process.stdin.setEncoding('utf8');
for await (const chunk of process.stdin) input += chunk;
const headers = JSON.parse(input).headers;
const combined = headers.join(', ');
process.stdout.write(JSON.stringify({
  lsat_js: headers.map(viaLsatJs),
  alby: headers.map(viaAlby),
  alby_combined: viaAlby(combined),
}) + '\n');
