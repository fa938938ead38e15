#!/usr/bin/env python3
"""moelab-cli info --context: the memory plan against figures worked out here from the published
shapes and from the checkpoint's own safetensors header (read by this script), and the refusal
of a load that would not fit (MOELAB_MEMORY_LIMIT stands in for a smaller machine).
Usage: test_cli_memory.py MOELAB_CLI SOURCE_DIR"""
import json
import os
import struct
import sys

from cli_check import check, check_error, finish, run, start

cli, src = sys.argv[1:3]
start(cli)


GiB = 1 << 30
olmoe = os.path.join(src, "resources/real-models/olmoe-1b-7b-0924")

# OLMoE-1B-7B as bf16 (a bare config.json: the dtype is its torch_dtype), context 4096, a forward
# of 512 tokens. 6,919,161,856 parameters; fp32: 16 routers [64, 2048] and the norms.
r = run("info", "--model", olmoe, "--context", "4096", "--json")
mem = json.loads(r.stdout).get("memory", {}) if r.returncode == 0 else {}
owned = 16 * 64 * 2048 + 16 * 4 * 2048 + 2048
check("olmoe mapped", mem.get("mapped") == (6919161856 - owned) * 2, mem)
check("olmoe owned", mem.get("owned") == owned * 4, mem)
check("olmoe kv", mem.get("kv_cache") == 2 * 16 * 4096 * 16 * 128 * 4, mem)
T, H, V = 512, 2048, 50304
act_reals = 3 * T * H + 2 * T * (2048 + 2048) + 16 * T * T + 3 * T * 64 + 2 * T * 8 + T * 8 * (2 * H + 2 * 1024) + T * V
check("olmoe activations", mem.get("activations") == act_reals * 4 + T * V * 4, mem)
check("olmoe total under 16 GB", mem.get("total", 1 << 62) < 16 * 10**9, mem)
check("olmoe fp32 total", mem.get("fp32_total") == 6919161856 * 4 + mem.get("kv_cache", 0) + mem.get("activations", 0), mem)

# The verdict: 16 GiB fits, 12 GiB (the bf16 weights alone are 12.9 GiB) does not.
r = run("info", "--model", olmoe, "--json", limit="16G")
mem = json.loads(r.stdout)["memory"]
check("16G fits", mem["fits"] and mem["budget"]["total"] == 16 * GiB and mem["budget"]["usable"] == 15 * GiB, mem)
r = run("info", "--model", olmoe, limit="12G")
check("12G text verdict", r.returncode == 0 and "does not fit: needs 14.2 GiB" in r.stdout
      and "KV cache" in r.stdout and "1.0 GiB" in r.stdout, r.stdout)
r = run("info", "--model", olmoe, "--context", "2048")
check("context 2048 text", "for a context of 2048 tokens" in r.stdout and "512.0 MiB  keys and values" in r.stdout, r.stdout)
check_error("context over max positions", run("info", "--model", olmoe, "--context", "8192"), 1,
            ["config.json", "--context 8192", "4096", "max_position_embeddings"])

# A folder with weights: the built-in model. Its safetensors header, read here, gives what stays
# as stored (bf16 matrices) and what is widened (norms, routers) to fp32.
builtin = os.path.join(src, "resources/models/builtin")
cfg = json.load(open(os.path.join(builtin, "config.json")))
with open(os.path.join(builtin, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
header.pop("__metadata__", None)
mapped = widened = 0
for name, t in header.items():
    numel = 1
    for d in t["shape"]:
        numel *= d
    small = "norm" in name or name.endswith("block_sparse_moe.gate.weight") or name.endswith("mlp.gate.weight")
    if t["dtype"] in ("BF16", "F16") and not small:
        mapped += t["data_offsets"][1] - t["data_offsets"][0]
    else:
        widened += numel * 4
ctx = min(4096, cfg["max_position_embeddings"])
r = run("info", "--model", builtin, "--json")
mem = json.loads(r.stdout).get("memory", {}) if r.returncode == 0 else {}
check("builtin from its checkpoint", mem.get("basis") == "the checkpoint's tensors", mem)
check("builtin mapped", mem.get("mapped") == mapped and mapped > 0, f"{mem.get('mapped')} vs {mapped}")
check("builtin owned", mem.get("owned") == widened, f"{mem.get('owned')} vs {widened}")
head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
check("builtin kv", mem.get("kv_cache") == 2 * cfg["num_hidden_layers"] * ctx * cfg["num_key_value_heads"] * head_dim * 4, mem)

# A machine too small for the weights: the load is refused in one line naming config.json; with
# room it generates.
check_error("load refused", run("generate", "--model", builtin, "--prompt", "the ", "--tokens", "2", "--device", "cpu",
                                limit="1M"), 1, ["config.json", "the model needs", "this machine can give it"])
r = run("generate", "--model", builtin, "--prompt", "the ", "--tokens", "2", "--device", "cpu", limit="256M")
check("generate with room", r.returncode == 0, r.stderr)

finish()
