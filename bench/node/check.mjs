// Smoke check and request bodies for the operations in operations.json.
//   node check.mjs [URL]         POST every operation to URL (default http://127.0.0.1:4000/graphql);
//                                exit 1 unless each answer has data, no errors and no error branch.
//   node check.mjs --body NAME   print the JSON request body of operation NAME (for wrk-post.lua).
import { readFileSync } from 'node:fs';

const ops = JSON.parse(readFileSync(new URL('./operations.json', import.meta.url), 'utf8'));
const body = op => JSON.stringify({ query: op.query, variables: op.variables, operationName: op.operationName });

if (process.argv[2] === '--body') {
  const op = ops[process.argv[3]];
  if (!op) throw new Error(`no operation ${process.argv[3]}`);
  process.stdout.write(body(op));
  process.exit(0);
}

const url = process.argv[2] || 'http://127.0.0.1:4000/graphql';
let failed = 0;
for (const [name, op] of Object.entries(ops)) {
  if (name.startsWith('_')) continue;
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: body(op),
  });
  const answer = await res.json();
  const typenames = answer.data ? Object.values(answer.data).map(v => v?.__typename) : [];
  const ok = res.status === 200 && answer.data && !answer.errors &&
    typenames.every(t => t && t !== 'ErrorResponse' && t !== 'HTTPValidationError');
  if (!ok) failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name} HTTP ${res.status} ${JSON.stringify(answer).slice(0, ok ? 160 : 2000)}`);
}
process.exit(failed ? 1 : 0);
