// Runs the graphql-http package's audits (the GraphQL-over-HTTP
// specification's MUST/SHOULD/MAY rules) against a running server:
//   node scripts/graphql-http-audit.mjs http://127.0.0.1:8000/graphql
// (scripts/audit-graphql-http.sh installs the package and starts authql.)
import { auditServer } from 'graphql-http';
const url = process.argv[2];
const results = await auditServer({ url });
const counts = {};
for (const r of results) {
  counts[r.status] = (counts[r.status] || 0) + 1;
  if (r.status !== 'ok') {
    let reason = r.reason;
    console.log(`${r.status.toUpperCase()} ${r.id} ${r.name}: ${reason}`);
  }
}
console.log(JSON.stringify(counts));
