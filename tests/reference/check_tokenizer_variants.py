#!/usr/bin/env python3
"""Every tokenizer.json variant of make_tokenizer_variants.py through both the Rust library
(tokenize_reference.mjs, Node) and MoE Lab (test_tokenizer_reference): ids and decodes must be
identical on every test string.

    python3 check_tokenizer_variants.py NODE_MODULES STRINGS.json OUT_DIR TEST_TOKENIZER_REFERENCE [--max-strings N]

Exit 0 when all agree, 1 otherwise, 77 (skipped) when the Node reference is not installed."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

node_modules, strings_file, out, test_bin = sys.argv[1:5]
max_strings = int(sys.argv[sys.argv.index("--max-strings") + 1]) if "--max-strings" in sys.argv else 0
here = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(node_modules, "@anush008", "tokenizers")):
    print("no Node reference: run npm ci in tests/reference")
    sys.exit(77)
os.makedirs(out, exist_ok=True)
if max_strings:
    with open(strings_file, encoding="utf-8") as f:
        strings = json.load(f)[:max_strings]
    strings_file = os.path.join(out, "strings.json")
    with open(strings_file, "w", encoding="utf-8") as f:
        json.dump(strings, f, ensure_ascii=False)
names = subprocess.run([sys.executable, os.path.join(here, "make_tokenizer_variants.py"), node_modules, out],
                       check=True, capture_output=True, text=True).stdout.split()


def check(name):
    """(name, ok, report) for one variant."""
    tok = os.path.join(out, name, "tokenizer.json")
    ref = os.path.join(out, name, "rust.json")
    with open(ref, "w", encoding="utf-8") as f:
        r = subprocess.run(["node", os.path.join(here, "tokenize_reference.mjs"), tok, "--strings", strings_file],
                           stdout=f, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        return name, False, f"the Rust library refused it: {r.stderr.strip()[:300]}"
    r = subprocess.run([test_bin, tok, strings_file, ref], capture_output=True, text=True, errors="replace")
    report = r.stdout.strip().split(": ", 1)[-1]
    return name, r.returncode == 0, report if r.returncode == 0 else report + "\n" + r.stderr[:2000]


bad = []
with ThreadPoolExecutor(max_workers=2) as pool:
    for name, ok, report in pool.map(check, names):
        print(f"{name}: {report}")
        if not ok:
            bad.append(name)
print(f"{len(names) - len(bad)} of {len(names)} variants identical to the Rust library")
sys.exit(1 if bad else 0)
