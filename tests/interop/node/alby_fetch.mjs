// @getalby/lightning-tools's own L402 client (fetchWithL402) paying an httpay demo route, with a
// tiny "webln"-like wallet shim whose payInvoice calls the demo network's POST /ln/pay.
//
//   DEMO_URL=http://127.0.0.1:<port> DEMO_WALLET_KEY=<key> node alby_fetch.mjs <url>
//
// Prints one JSON line: the first (paying) fetch's status, body and payment info, then a second
// fetch that hands back the credential getalby returned (it must not pay again). The preimage
// and the credential stay out of the output: only their shape is reported.
import { fetchWithL402 } from '@getalby/lightning-tools/402/l402';

const url = process.argv[2];
const { DEMO_URL, DEMO_WALLET_KEY } = process.env;
if (!url || !DEMO_URL || !DEMO_WALLET_KEY) {
  console.error('alby_fetch: usage: DEMO_URL=... DEMO_WALLET_KEY=... node alby_fetch.mjs <url>');
  process.exit(2);
}

let payCalls = 0;
const wallet = {
  // The whole contract fetchWithL402 asks of a wallet: pay this BOLT11, return the preimage.
  async payInvoice({ invoice }) {
    payCalls += 1;
    const r = await fetch(`${DEMO_URL}/ln/pay`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${DEMO_WALLET_KEY}` },
      body: JSON.stringify({ invoice }),
    });
    const body = await r.json();
    if (r.status !== 200) throw new Error(`demo network refused the payment: ${body.code || r.status}`);
    return { preimage: body.preimage, fees_paid: body.fee_msat ?? 0 };
  },
};

const read = async (r) => {
  const text = await r.text();
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 200);
  }
};

const first = await fetchWithL402(url, {}, { wallet });
const payment = first.payment;
const out = {
  status: first.status,
  body: await read(first),
  paid: payment?.paid ?? false,
  amount_sat: payment?.amountSat ?? 0,
  credential_header: payment?.credentials?.header ?? null,
  credential_scheme: payment?.credentials?.value?.split(' ')[0] ?? null,
  preimage_is_hex64: /^[0-9a-f]{64}$/.test(payment?.preimage ?? ''),
  pay_calls_after_first: payCalls,
};
if (payment?.credentials) {
  const again = await fetchWithL402(url.replace(/[A-Z]+$/, 'AAPL'), {}, { wallet, credentials: payment.credentials });
  out.reuse_status = again.status;
  out.reuse_body = await read(again);
}
out.pay_calls = payCalls;
process.stdout.write(JSON.stringify(out) + '\n');
