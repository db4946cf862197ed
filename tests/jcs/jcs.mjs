// A second, independent reader of the gateway's audit chain, written only from docs/security.md and
// RFC 8785 with the npm `canonicalize` package (by one of the RFC's authors), not from our Python.
//
//   node jcs.mjs canonicalize   < one JSON text a line  > its RFC 8785 form, a line each
//   node jcs.mjs verify DIR [HEX_KEY]                   > {"ok":..., "events":..., "jcs":..., "problems":[...]}
//
// verify checks every event written in the JCS form (`"canon":"jcs"`): the line is the canonical
// form of its own content, `hash` is SHA-256 (or HMAC-SHA-256 with the key) of the canonical form of
// everything but `hash`, `seq` counts up by one and `prev` is the previous event's `hash`. Events in
// the older form (no `canon`) are linked but not re-hashed: that form is Python's, not a standard.
import { createHash, createHmac } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import canonicalize from 'canonicalize';

const GENESIS = '0'.repeat(64);

async function canonicalizeLines () {
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    process.stdout.write(canonicalize(JSON.parse(line)) + '\n');
  }
}

function digest (text, alg, key) {
  if (alg === 'sha256') return createHash('sha256').update(text, 'utf8').digest('hex');
  if (alg === 'hmac-sha256' && key) return createHmac('sha256', key).update(text, 'utf8').digest('hex');
  return null;
}

function verify (dir, hexKey) {
  const key = hexKey ? Buffer.from(hexKey, 'hex') : null;
  const files = readdirSync(dir).filter((name) => /^audit-\d+\.jsonl$/.test(name)).sort();
  const result = { ok: true, events: 0, jcs: 0, problems: [] };
  let prev = GENESIS;
  let seq = 0;
  for (const name of files) {
    const lines = readFileSync(join(dir, name), 'utf8').split('\n');
    lines.forEach((line, index) => {
      if (line === '') return;
      const where = `${name} line ${index + 1}`;
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        result.problems.push(`${where}: not JSON`);
        return;
      }
      result.events += 1;
      if (record.seq !== seq + 1 || record.prev !== prev) {
        result.problems.push(`${where}: does not follow event ${seq}`);
      }
      seq = record.seq;
      prev = record.hash;
      if (record.canon === undefined) return;
      if (record.canon !== 'jcs') {
        result.problems.push(`${where}: unknown canon ${record.canon}`);
        return;
      }
      result.jcs += 1;
      if (canonicalize(record) !== line) result.problems.push(`${where}: not in canonical form`);
      const { hash, ...body } = record;
      const expected = digest(canonicalize(body), record.alg, key);
      if (expected === null) result.problems.push(`${where}: cannot check ${record.alg}`);
      else if (expected !== hash) result.problems.push(`${where}: hash does not match`);
    });
  }
  result.ok = result.problems.length === 0;
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exitCode = result.ok ? 0 : 1;
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'canonicalize') await canonicalizeLines();
else if (mode === 'verify') verify(args[0], args[1]);
else {
  process.stderr.write('usage: node jcs.mjs canonicalize | verify DIR [HEX_KEY]\n');
  process.exitCode = 2;
}
