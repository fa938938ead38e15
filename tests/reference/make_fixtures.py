#!/usr/bin/python3
"""Write tiny Hugging Face style MoE checkpoints + golden outputs.

    /usr/bin/python3 tests/reference/make_fixtures.py --out DIR [--only NAME ...] [--no-check]

For each fixture NAME it writes DIR/NAME/config.json (a real transformers
config for the family), the weights (model.safetensors, or shards +
model.safetensors.index.json) and DIR/NAME/expected.json:

    {"family": str, "tokens": [int]*T,
     "logits": [[float]*V]*T,
     "routing": [{"layer": int, "experts": [[int]*K]*T,
                  "weights": [[float]*K]*T, "probs": [[float]*E]*T}, ...]}

Golden values come from moe_reference.forward in float64 applied to the
weights exactly as stored (bf16 / f16 rounded), written with full float64
precision. Router weights are re-drawn (next seed) until every token of every
MoE layer has a relative gap >= MIN_GAP between consecutive probabilities
among the top k+1, so the expert choice and its order are unambiguous.

Unless --no-check is given, every fixture is also self-checked: the files are
read back with the strict reader and compared bit-for-bit, the tensor set is
checked against the family's name list, and the reference is re-run prefix by
prefix and with an incremental KV cache (last-token logits and routing must
agree with the full-sequence run).
"""

import argparse
import json
import math
import os
import sys
import time
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference as ref  # noqa: E402

MIN_GAP = 5e-3
SEQ_LEN = 12


def _base(model_type, arch, dtype, rope=None, **kw):
    cfg = OrderedDict()
    cfg["architectures"] = [arch]
    cfg["model_type"] = model_type
    cfg["dtype"] = dtype
    cfg["torch_dtype"] = dtype
    cfg["hidden_act"] = "silu"
    cfg["initializer_range"] = 0.02
    cfg["attention_dropout"] = 0.0
    cfg["use_cache"] = True
    cfg["output_router_logits"] = False
    cfg.update(kw)
    # transformers >= 5 keeps RoPE settings in rope_parameters; older versions
    # read the top-level rope_theta. Both carry the same value.
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
    if rope is not None:  # a RoPE scaling, under both keys
        cfg["rope_scaling"] = OrderedDict(rope)
        cfg["rope_parameters"] = OrderedDict(rope, rope_theta=cfg["rope_theta"])
    return cfg


def mixtral_cfg(dtype, window=None, rope=None):
    return _base(
        "mixtral", "MixtralForCausalLM", dtype, rope=rope,
        vocab_size=96, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=1000000.0,
        sliding_window=window, num_local_experts=8, num_experts_per_tok=2,
        router_aux_loss_coef=0.02, router_jitter_noise=0.0,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def qwen2_moe_cfg(dtype, layers=3, mlp_only=(1,), step=1, experts=6, topk=2, norm=False):
    return _base(
        "qwen2_moe", "Qwen2MoeForCausalLM", dtype,
        vocab_size=80, hidden_size=48, intermediate_size=56, moe_intermediate_size=32,
        shared_expert_intermediate_size=40, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
        use_sliding_window=False, sliding_window=None, max_window_layers=layers,
        decoder_sparse_step=step, mlp_only_layers=list(mlp_only),
        num_experts=experts, num_experts_per_tok=topk, norm_topk_prob=norm,
        qkv_bias=True, router_aux_loss_coef=0.001,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)


def qwen3_moe_cfg(dtype, rope=None):
    return _base(
        "qwen3_moe", "Qwen3MoeForCausalLM", dtype, rope=rope,
        vocab_size=72, hidden_size=48, intermediate_size=64, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
        attention_bias=False, use_sliding_window=False, sliding_window=None,
        max_window_layers=2, decoder_sparse_step=1, mlp_only_layers=[],
        num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
        router_aux_loss_coef=0.001, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=None)


def olmoe_cfg(dtype, layers=2, clip=1.5, norm=False):
    return _base(
        "olmoe", "OlmoeForCausalLM", dtype,
        vocab_size=100, hidden_size=64, intermediate_size=32, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        attention_bias=False, clip_qkv=clip, num_experts=8, num_experts_per_tok=2,
        norm_topk_prob=norm, router_aux_loss_coef=0.01,
        tie_word_embeddings=False, pad_token_id=1, bos_token_id=None, eos_token_id=50)


def granitemoe_cfg(dtype, bias=False, tie=True, layers=2):
    # Multipliers of the size granite-3.0-1b-a400m uses (12, 1/64, 0.22, 6), with the attention
    # scale well away from 1/sqrt(head_dim) = 0.25 so a model that ignored it would fail.
    return _base(
        "granitemoe", "GraniteMoeForCausalLM", dtype,
        vocab_size=88, hidden_size=64, intermediate_size=24, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None,
        attention_bias=bias, num_local_experts=8, num_experts_per_tok=3,
        embedding_multiplier=12.0, attention_multiplier=0.0625, residual_multiplier=0.22,
        logits_scaling=6.0, router_aux_loss_coef=0.001,
        tie_word_embeddings=tie, pad_token_id=0, bos_token_id=0, eos_token_id=0)


# name -> (config, storage dtype, shards, seed, features summary)
FIXTURES = OrderedDict([
    ("mixtral_f32", (mixtral_cfg("float32"), torch.float32, 1, 1000,
                     "GQA 4q/2kv, block_sparse_moe w1/w2/w3, always renormalised top-2")),
    ("qwen2_moe_f32", (qwen2_moe_cfg("float32"), torch.float32, 1, 2000,
                       "q/k/v bias, shared expert + sigmoid gate, mlp_only_layers=[1] dense layer, "
                       "6 experts, norm_topk_prob=false")),
    ("qwen3_moe_f32", (qwen3_moe_cfg("float32"), torch.float32, 1, 3000,
                       "head_dim 16 != 48/4, per-head q/k norm, tied embeddings, norm_topk_prob=true")),
    ("olmoe_f32", (olmoe_cfg("float32"), torch.float32, 1, 4000,
                   "q/k norm over whole projection (64 / 32), clip_qkv=1.5 after norm, "
                   "norm_topk_prob=false")),
    ("mixtral_bf16", (mixtral_cfg("bfloat16"), torch.bfloat16, 1, 5000,
                      "as mixtral_f32, BF16 storage")),
    ("qwen3_moe_rope_linear_f32", (qwen3_moe_cfg("float32", rope={"rope_type": "linear", "factor": 4.0}),
                                   torch.float32, 1, 12000, "as qwen3_moe_f32 with linear RoPE scaling, factor 4")),
    # theta 1e6, D 16: pair 0's wavelength 6.3 < 64 / 4 (kept), pair 1's 35 (interpolated), the
    # others > 64 (divided by 8): every branch of the llama3 rule.
    ("mixtral_rope_llama3_f32", (mixtral_cfg("float32", rope={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}), torch.float32, 1, 13000,
        "Llama-3.1 RoPE scaling: factor 8, low/high freq factors 1/4, original context 64")),
    ("mixtral_window_f32", (mixtral_cfg("float32", window=SEQ_LEN), torch.float32, 1, 11000,
                            "sliding_window = %d = the sequence: the window mask is applied and "
                            "hides nothing" % SEQ_LEN)),
    ("qwen3_moe_f16", (qwen3_moe_cfg("float16"), torch.float16, 1, 6000,
                       "as qwen3_moe_f32, F16 storage")),
    ("olmoe_sharded", (olmoe_cfg("float32", layers=3, clip=2.0, norm=True), torch.float32, 2, 7000,
                       "3 layers, 2 safetensors shards + index.json, clip_qkv=2.0, norm_topk_prob=true")),
    ("qwen2_moe_step2_f32", (qwen2_moe_cfg("float32", layers=4, mlp_only=(), step=2, experts=8, topk=3,
                                           norm=True), torch.float32, 1, 8000,
                             "decoder_sparse_step=2 (MoE at layers 1,3; dense 0,2), top-3 of 8, "
                             "norm_topk_prob=true")),
    ("granitemoe_f32", (granitemoe_cfg("float32"), torch.float32, 1, 9000,
                        "embedding x12, attention scale 1/16, residual x0.22, logits /6, "
                        "input_linear [E,2F,H] gate|up, top-3 of 8 (softmax over the top-3 logits), tied")),
    ("granitemoe_bias_bf16_sharded", (granitemoe_cfg("bfloat16", bias=True, tie=False, layers=3), torch.bfloat16, 2,
                                      10000, "as granitemoe_f32 with q/k/v/o biases, lm_head, 3 layers, "
                                      "BF16 in 2 shards")),
])


def make_weights(cfg, seed, storage):
    """Random weights by name rule; returns OrderedDict in model order."""
    spec = ref.model_spec(cfg)
    g = torch.Generator().manual_seed(seed)
    H = spec["hidden"]
    out = OrderedDict()
    for name, shape in ref.tensor_shapes(cfg).items():
        if name.endswith("norm.weight"):  # layernorms, model.norm, q_norm, k_norm
            t = 0.6 + 0.8 * torch.rand(shape, generator=g)
        elif name == "model.embed_tokens.weight":
            t = torch.randn(shape, generator=g) * (0.5 if spec["tie"] else 1.0)
        elif name.endswith(".gate.weight") or name.endswith(".router.layer.weight"):  # router: logits std ~2
            t = torch.randn(shape, generator=g) * (2.0 / math.sqrt(H))
        elif name.endswith(".bias"):
            t = torch.randn(shape, generator=g) * 0.3
        else:  # every other Linear [out, in] (or [E, out, in]); includes shared_expert_gate and lm_head
            t = torch.randn(shape, generator=g) / math.sqrt(shape[-1])
        out[name] = t.to(torch.float32).to(storage)
    return out


def make_tokens(cfg, seed, n):
    g = torch.Generator().manual_seed(seed + 17)
    V = cfg["vocab_size"]
    specials = {cfg.get("pad_token_id"), cfg.get("bos_token_id"), cfg.get("eos_token_id")}
    toks = []
    while len(toks) < n:
        t = int(torch.randint(0, V, (1,), generator=g))
        if t not in specials:
            toks.append(t)
    return toks


def to_list(t):
    return t.tolist()


def write_fixture(root, name, cfg, storage, shards, tensors, tokens, logits, routing, bf16=None):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):  # stale files from an earlier run (e.g. other sharding)
        if f.endswith(".safetensors") or f.endswith(".index.json"):
            os.remove(os.path.join(d, f))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    order = list(tensors.keys())
    if shards == 1:
        ref.write_safetensors(os.path.join(d, "model.safetensors"), tensors, order=sorted(order))
    else:
        ref.write_sharded(d, tensors, n_shards=shards, order=order)
    exp = OrderedDict()
    exp["family"] = cfg["model_type"]
    exp["tokens"] = list(tokens)
    exp["logits"] = to_list(logits)
    exp["routing"] = [OrderedDict([("layer", r["layer"]),
                                   ("experts", to_list(r["experts"])),
                                   ("weights", to_list(r["weights"])),
                                   ("probs", to_list(r["probs"]))]) for r in routing]
    if bf16 is not None:  # the same forward with every product's operands rounded to bfloat16
        lb, rb = bf16
        exp["bf16_products"] = OrderedDict([("logits", to_list(lb)),
                                            ("experts", [to_list(r["experts"]) for r in rb])])
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)
        f.write("\n")
    return d


def self_check(d, cfg, tensors, tokens, logits, routing):
    """Re-read the files and re-run the reference in other ways."""
    # 1. files parse strictly and round-trip bit-exactly
    back = ref.load_checkpoint(d, strict=True)
    assert list(sorted(back)) == list(sorted(tensors)), "tensor names differ after read-back"
    for n, t in tensors.items():
        b = back[n]
        assert b.dtype == t.dtype and tuple(b.shape) == tuple(t.shape), n
        assert torch.equal(b.view(torch.int16) if b.dtype != torch.float32 else b.view(torch.int32),
                           t.view(torch.int16) if t.dtype != torch.float32 else t.view(torch.int32)), n
    with open(os.path.join(d, "config.json")) as f:
        cfg2 = json.load(f)
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
    lg2, rt2 = ref.forward(cfg2, back, exp["tokens"])
    assert torch.equal(lg2, logits), "re-run from files differs"
    assert torch.equal(torch.tensor(exp["logits"], dtype=torch.float64), logits), "json logits not exact"
    # 2. prefix-by-prefix: logits/routing of the last token of every prefix
    T = len(tokens)
    worst = 0.0
    for t in range(1, T):
        lp, rp = ref.forward(cfg, tensors, tokens[:t])
        worst = max(worst, float((lp[-1] - logits[t - 1]).abs().max()))
        for a, b in zip(rp, routing):
            assert torch.equal(a["experts"][-1], b["experts"][t - 1]), "prefix routing differs"
    # 3. incremental decoding with a KV cache: prompt of 5 tokens, then 1 at a time
    cache = ref.new_cache(cfg)
    lc, rc = ref.forward(cfg, tensors, tokens[:5], cache=cache)
    rows = [lc]
    for t in range(5, T):
        lt, _ = ref.forward(cfg, tensors, tokens[t:t + 1], cache=cache)
        rows.append(lt)
    inc = torch.cat(rows, 0)
    worst = max(worst, float((inc - logits).abs().max()))
    assert worst < 1e-9 * max(1.0, float(logits.abs().max())), "prefix/KV mismatch %g" % worst
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    t_all = time.time()
    for name, (cfg, storage, shards, seed0, feats) in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        spec = ref.model_spec(cfg)
        tokens = make_tokens(cfg, seed0, SEQ_LEN)
        for attempt in range(100):
            seed = seed0 + attempt
            tensors = make_weights(cfg, seed, storage)
            stats = {}
            logits, routing = ref.forward(cfg, tensors, tokens, stats=stats)
            logits_bf16, routing_bf16 = ref.forward(cfg, tensors, tokens, bf16_products=True)
            gap = min(ref.routing_margin(routing, spec["topk"]), ref.routing_margin(routing_bf16, spec["topk"]))
            clip_ok = spec["clip_qkv"] is None or all(stats["clipped_" + c] > 0 for c in "qkv")
            if gap >= MIN_GAP and clip_ok:
                break
        else:
            raise SystemExit("%s: no seed with routing gap >= %g" % (name, MIN_GAP))
        d = write_fixture(args.out, name, cfg, storage, shards, tensors, tokens, logits, routing,
                          bf16=(logits_bf16, routing_bf16))
        chk = "skipped" if args.no_check else "ok (prefix/KV max diff %.1e)" % self_check(
            d, cfg, tensors, tokens, logits, routing)
        clip = ""
        if spec["clip_qkv"] is not None:
            clip = " clipped q/k/v=%.0f%%/%.0f%%/%.0f%%" % tuple(
                100.0 * stats["clipped_" + c] / stats["total_" + c] for c in "qkv")
        print("%-20s %-9s %-5s L=%d H=%d V=%d heads=%d/%d hd=%d E=%d k=%d moe_layers=%s T=%d seed=%d "
              "min_gap=%.3g |logit|max=%.2f bf16 shift=%.1e%s check=%s %.2fs" % (
                  name, spec["family"], {torch.float32: "F32", torch.bfloat16: "BF16",
                                         torch.float16: "F16"}[storage],
                  spec["layers"], spec["hidden"], spec["vocab"], spec["heads"], spec["kv_heads"],
                  spec["head_dim"], spec["experts"], spec["topk"],
                  [r["layer"] for r in routing], len(tokens), seed, gap,
                  float(logits.abs().max()),
                  float((logits_bf16 - logits).abs().max() / logits.abs().max()), clip, chk, time.time() - t0))
    print("all fixtures written to %s in %.1fs" % (args.out, time.time() - t_all))


if __name__ == "__main__":
    main()
