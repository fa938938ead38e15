#!/usr/bin/python3
"""Independent parameter counter for Hugging Face MoE configs (test-data cross-check).

Plain Python 3, no third-party modules.  For a config.json it enumerates every
weight tensor (name and shape) that the Hugging Face `transformers` model for
that architecture creates with nn.Parameter / nn.Linear / nn.Embedding /
RMSNorm, following the modeling files in huggingface/transformers:

  mixtral      src/transformers/models/mixtral/modeling_mixtral.py
  qwen2_moe    src/transformers/models/qwen2_moe/modeling_qwen2_moe.py
  qwen3_moe    src/transformers/models/qwen3_moe/modular_qwen3_moe.py (+ qwen3 attention)
  olmoe        src/transformers/models/olmoe/modular_olmoe.py
  granitemoe   src/transformers/models/granitemoe/modular_granitemoe.py (+ jetmoe experts)
  deepseek_v2  src/transformers/models/deepseek_v2/modular_deepseek_v2.py
  deepseek_v3  src/transformers/models/deepseek_v3/modeling_deepseek_v3.py
  gpt_oss      src/transformers/models/gpt_oss/modeling_gpt_oss.py

The count is what `sum(p.numel() for p in model.parameters())` gives for the
*ForCausalLM model (tied lm_head counted once).  Buffers are not parameters:
DeepseekV3TopkRouter.e_score_correction_bias is a persistent buffer (in the
state dict and in the checkpoint, not in parameters()); it is reported apart,
as are checkpoint-only tensors (DeepSeek-V3's MTP layer model.layers.61).

Usage:
  count_reference.py CONFIG.json [--tensors]      count one config
  count_reference.py --check FIGURES.json         compare every stored config with figures.json
"""
import json
import math
import os
import sys


def _get(cfg, key, default=None):
    v = cfg.get(key, default)
    return default if v is None else v


class Counter:
    def __init__(self):
        self.tensors = []          # (name, shape, kind) kind: "param" | "buffer" | "checkpoint-only"

    def add(self, name, shape, kind="param"):
        self.tensors.append((name, tuple(int(s) for s in shape), kind))

    def linear(self, name, n_in, n_out, bias=False):
        self.add(name + ".weight", (n_out, n_in))
        if bias:
            self.add(name + ".bias", (n_out,))

    def norm(self, name, n):
        self.add(name + ".weight", (n,))

    def total(self, kind="param"):
        return sum(math.prod(s) for _, s, k in self.tensors if k == kind)


# ---------------------------------------------------------------- helpers
def _swiglu_mlp(c, prefix, hidden, inter, names=("gate_proj", "up_proj", "down_proj")):
    g, u, d = names
    c.linear(f"{prefix}.{g}", hidden, inter)
    c.linear(f"{prefix}.{u}", hidden, inter)
    c.linear(f"{prefix}.{d}", inter, hidden)


def _embed_and_head(c, cfg, tie_default=False):
    V, H = cfg["vocab_size"], cfg["hidden_size"]
    c.add("model.embed_tokens.weight", (V, H))
    c.norm("model.norm", H)
    if not _get(cfg, "tie_word_embeddings", tie_default):
        c.add("lm_head.weight", (V, H))


def _gqa_attention(c, p, cfg, head_dim, qkv_bias=False, o_bias=False):
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = _get(cfg, "num_key_value_heads", nh)
    c.linear(f"{p}.q_proj", H, nh * head_dim, qkv_bias)
    c.linear(f"{p}.k_proj", H, nkv * head_dim, qkv_bias)
    c.linear(f"{p}.v_proj", H, nkv * head_dim, qkv_bias)
    c.linear(f"{p}.o_proj", nh * head_dim, H, o_bias)


def _head_dim(cfg):
    hd = cfg.get("head_dim")
    return hd if hd else cfg["hidden_size"] // cfg["num_attention_heads"]


# ---------------------------------------------------------------- architectures
def count_mixtral(cfg):
    """MixtralForCausalLM: q/k/v/o (no bias), block_sparse_moe.gate Linear(H,E),
    experts.{i}.w1/w3 (H->I), w2 (I->H); 2 RMSNorms per layer."""
    c = Counter()
    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    hd = _head_dim(cfg)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _gqa_attention(c, p + ".self_attn", cfg, hd)
        c.linear(p + ".block_sparse_moe.gate", H, E)
        for e in range(E):
            _swiglu_mlp(c, f"{p}.block_sparse_moe.experts.{e}", H, I, ("w1", "w3", "w2"))
        c.norm(p + ".input_layernorm", H)
        c.norm(p + ".post_attention_layernorm", H)
    _embed_and_head(c, cfg)
    return c


def _qwen_is_sparse(cfg, i):
    return (i not in _get(cfg, "mlp_only_layers", [])) and (
        cfg.get("num_experts", 0) > 0 and (i + 1) % _get(cfg, "decoder_sparse_step", 1) == 0)


def count_qwen2_moe(cfg):
    """Qwen2MoeForCausalLM: q/k/v WITH bias (qkv_bias, default True), o without;
    sparse layers: gate Linear(H,E), E experts (moe_intermediate_size),
    shared_expert MLP (shared_expert_intermediate_size), shared_expert_gate Linear(H,1);
    dense layers (mlp_only_layers / decoder_sparse_step): MLP(intermediate_size)."""
    c = Counter()
    H, E = cfg["hidden_size"], cfg["num_experts"]
    hd = _head_dim(cfg)
    qkv_bias = _get(cfg, "qkv_bias", True)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _gqa_attention(c, p + ".self_attn", cfg, hd, qkv_bias=qkv_bias, o_bias=False)
        if _qwen_is_sparse(cfg, i):
            c.linear(p + ".mlp.gate", H, E)
            for e in range(E):
                _swiglu_mlp(c, f"{p}.mlp.experts.{e}", H, cfg["moe_intermediate_size"])
            _swiglu_mlp(c, p + ".mlp.shared_expert", H, cfg["shared_expert_intermediate_size"])
            c.linear(p + ".mlp.shared_expert_gate", H, 1)
        else:
            _swiglu_mlp(c, p + ".mlp", H, cfg["intermediate_size"])
        c.norm(p + ".input_layernorm", H)
        c.norm(p + ".post_attention_layernorm", H)
    _embed_and_head(c, cfg)
    return c


def count_qwen3_moe(cfg):
    """Qwen3MoeForCausalLM: q/k/v/o with bias=attention_bias (False), q_norm/k_norm
    RMSNorm(head_dim); sparse layers: gate Linear(H,E) + E experts
    (moe_intermediate_size), no shared expert; dense layers MLP(intermediate_size)."""
    c = Counter()
    H, E = cfg["hidden_size"], cfg["num_experts"]
    hd = _head_dim(cfg)
    ab = _get(cfg, "attention_bias", False)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _gqa_attention(c, p + ".self_attn", cfg, hd, qkv_bias=ab, o_bias=ab)
        c.norm(p + ".self_attn.q_norm", hd)
        c.norm(p + ".self_attn.k_norm", hd)
        if _qwen_is_sparse(cfg, i):
            c.linear(p + ".mlp.gate", H, E)
            for e in range(E):
                _swiglu_mlp(c, f"{p}.mlp.experts.{e}", H, cfg["moe_intermediate_size"])
        else:
            _swiglu_mlp(c, p + ".mlp", H, cfg["intermediate_size"])
        c.norm(p + ".input_layernorm", H)
        c.norm(p + ".post_attention_layernorm", H)
    _embed_and_head(c, cfg)
    return c


def count_olmoe(cfg):
    """OlmoeForCausalLM: q/k/v/o with bias=attention_bias; q_norm RMSNorm(hidden_size),
    k_norm RMSNorm(head_dim * num_key_value_heads) (over the whole projection, not per
    head); gate Linear(H,E); E experts of intermediate_size."""
    c = Counter()
    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"]
    nh = cfg["num_attention_heads"]
    nkv = _get(cfg, "num_key_value_heads", nh)
    hd = H // nh
    ab = _get(cfg, "attention_bias", False)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _gqa_attention(c, p + ".self_attn", cfg, hd, qkv_bias=ab, o_bias=ab)
        c.norm(p + ".self_attn.q_norm", H)
        c.norm(p + ".self_attn.k_norm", hd * nkv)
        c.linear(p + ".mlp.gate", H, E)
        for e in range(E):
            _swiglu_mlp(c, f"{p}.mlp.experts.{e}", H, I)
        c.norm(p + ".input_layernorm", H)
        c.norm(p + ".post_attention_layernorm", H)
    _embed_and_head(c, cfg)
    return c


def count_granitemoe(cfg):
    """GraniteMoeForCausalLM: Llama attention (bias=attention_bias); block_sparse_moe:
    router.layer Linear(H,E,no bias), input_linear.weight [E, 2*I, H],
    output_linear.weight [E, H, I]; lm_head tied when tie_word_embeddings."""
    c = Counter()
    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    hd = _head_dim(cfg)
    ab = _get(cfg, "attention_bias", False)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _gqa_attention(c, p + ".self_attn", cfg, hd, qkv_bias=ab, o_bias=ab)
        c.linear(p + ".block_sparse_moe.router.layer", H, E)
        c.add(p + ".block_sparse_moe.input_linear.weight", (E, 2 * I, H))
        c.add(p + ".block_sparse_moe.output_linear.weight", (E, H, I))
        c.norm(p + ".input_layernorm", H)
        c.norm(p + ".post_attention_layernorm", H)
    _embed_and_head(c, cfg)
    return c


def _mla_attention(c, p, cfg):
    """DeepSeek MLA: q_proj (q_lora_rank null) or q_a_proj+q_a_layernorm+q_b_proj;
    kv_a_proj_with_mqa (H -> kv_lora_rank + qk_rope_head_dim), kv_a_layernorm,
    kv_b_proj (kv_lora_rank -> heads*(qk_nope+v)), o_proj (heads*v -> H)."""
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    ab = _get(cfg, "attention_bias", False)
    r_q, r_kv = cfg.get("q_lora_rank"), cfg["kv_lora_rank"]
    if r_q is None:
        c.linear(p + ".q_proj", H, nh * qk)
    else:
        c.linear(p + ".q_a_proj", H, r_q, ab)
        c.norm(p + ".q_a_layernorm", r_q)
        c.linear(p + ".q_b_proj", r_q, nh * qk)
    c.linear(p + ".kv_a_proj_with_mqa", H, r_kv + cfg["qk_rope_head_dim"], ab)
    c.norm(p + ".kv_a_layernorm", r_kv)
    c.linear(p + ".kv_b_proj", r_kv, nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]))
    c.linear(p + ".o_proj", nh * cfg["v_head_dim"], H, ab)


def _deepseek_layer(c, p, cfg, i, v3):
    H = cfg["hidden_size"]
    _mla_attention(c, p + ".self_attn", cfg)
    moe = cfg.get("n_routed_experts") is not None and i >= _get(cfg, "first_k_dense_replace", 0) \
        and i % _get(cfg, "moe_layer_freq", 1) == 0
    if moe:
        E, Im = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
        for e in range(E):
            _swiglu_mlp(c, f"{p}.mlp.experts.{e}", H, Im)
        c.add(p + ".mlp.gate.weight", (E, H))
        if v3:
            # register_buffer -> persistent buffer, not a parameter; stored in checkpoints
            c.add(p + ".mlp.gate.e_score_correction_bias", (E,), "buffer")
        if cfg.get("n_shared_experts"):
            _swiglu_mlp(c, p + ".mlp.shared_experts", H, Im * cfg["n_shared_experts"])
    else:
        _swiglu_mlp(c, p + ".mlp", H, cfg["intermediate_size"])
    c.norm(p + ".input_layernorm", H)
    c.norm(p + ".post_attention_layernorm", H)


def count_deepseek(cfg, v3):
    c = Counter()
    L = cfg["num_hidden_layers"]
    for i in range(L):
        _deepseek_layer(c, f"model.layers.{i}", cfg, i, v3)
    _embed_and_head(c, cfg)
    if v3:
        # Checkpoint-only multi-token-prediction modules (README_WEIGHTS.md of
        # deepseek-ai/DeepSeek-V3): model.layers.{L+k}: embed_tokens, enorm, hnorm,
        # eh_proj (2H -> H), a full decoder layer, shared_head.norm, shared_head.head.
        # DeepseekV3Model ignores them (_keys_to_ignore_on_load_unexpected = layers.61.*).
        H, V = cfg["hidden_size"], cfg["vocab_size"]
        for k in range(_get(cfg, "num_nextn_predict_layers", 0)):
            tmp = Counter()
            p = f"model.layers.{L + k}"
            _deepseek_layer(tmp, p, cfg, L + k, v3)
            tmp.add(p + ".embed_tokens.weight", (V, H))
            tmp.norm(p + ".enorm", H)
            tmp.norm(p + ".hnorm", H)
            tmp.add(p + ".eh_proj.weight", (H, 2 * H))
            tmp.norm(p + ".shared_head.norm", H)
            tmp.add(p + ".shared_head.head.weight", (V, H))
            for n, s, kind in tmp.tensors:
                c.add(n, s, "mtp-" + kind)
    return c


def count_gpt_oss(cfg):
    """GptOssForCausalLM: q/k/v/o with bias=attention_bias (True), sinks [heads];
    router weight [E,H] + bias [E]; experts: gate_up_proj [E,H,2I], gate_up_proj_bias
    [E,2I], down_proj [E,I,H], down_proj_bias [E,H]; 2 RMSNorms per layer."""
    c = Counter()
    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    hd = _head_dim(cfg)
    ab = _get(cfg, "attention_bias", True)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        _gqa_attention(c, p + ".self_attn", cfg, hd, qkv_bias=ab, o_bias=ab)
        c.add(p + ".self_attn.sinks", (cfg["num_attention_heads"],))
        c.add(p + ".mlp.router.weight", (E, H))
        c.add(p + ".mlp.router.bias", (E,))
        c.add(p + ".mlp.experts.gate_up_proj", (E, H, 2 * I))
        c.add(p + ".mlp.experts.gate_up_proj_bias", (E, 2 * I))
        c.add(p + ".mlp.experts.down_proj", (E, I, H))
        c.add(p + ".mlp.experts.down_proj_bias", (E, H))
        c.norm(p + ".input_layernorm", H)
        c.norm(p + ".post_attention_layernorm", H)
    _embed_and_head(c, cfg)
    return c


COUNTERS = {
    "mixtral": count_mixtral,
    "qwen2_moe": count_qwen2_moe,
    "qwen3_moe": count_qwen3_moe,
    "olmoe": count_olmoe,
    "granitemoe": count_granitemoe,
    "deepseek_v2": lambda cfg: count_deepseek(cfg, v3=False),
    "deepseek_v3": lambda cfg: count_deepseek(cfg, v3=True),
    "gpt_oss": count_gpt_oss,
}


# ---------------------------------------------------------------- active parameters
def _is_routed_expert(name):
    # per-expert module tensors, and fused expert tensors (granite / gpt-oss)
    return (".experts." in name and ".shared_expert" not in name) or \
        ".input_linear." in name or ".output_linear." in name


def active_params(cfg, c):
    """Parameters touched per token: everything except routed experts, plus top-k of
    them (embedding and lm_head included).  Fused expert tensors count k/E of their size."""
    k = cfg.get("num_experts_per_tok")
    E = cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts")
    total = 0
    routed = 0
    for n, s, kind in c.tensors:
        if kind != "param":
            continue
        size = math.prod(s)
        if _is_routed_expert(n):
            routed += size
        else:
            total += size
    return total + routed * k // E


def count(cfg):
    mt = cfg.get("model_type")
    if mt not in COUNTERS:
        raise SystemExit(f"unsupported model_type {mt!r}")
    c = COUNTERS[mt](cfg)
    out = {
        "model_type": mt,
        "total": c.total("param"),
        "active": active_params(cfg, c),
        "buffers": c.total("buffer"),
        "n_param_tensors": sum(1 for t in c.tensors if t[2] == "param"),
    }
    mtp = sum(math.prod(s) for _, s, k in c.tensors if k.startswith("mtp-"))
    if mtp:
        out["mtp_checkpoint_only"] = mtp
        out["checkpoint_total"] = out["total"] + out["buffers"] + mtp
    tie = _get(cfg, "tie_word_embeddings", False)
    out["tied_embeddings"] = bool(tie)
    q = cfg.get("quantization_config") or {}
    if q.get("quant_method") == "fp8" and q.get("weight_block_size"):
        # DeepSeek-V3 FP8 checkpoint: every Linear weight inside the decoder layers
        # (attention projections, dense MLP, experts, shared experts; MTP layer
        # included) is F8_E4M3 with an F32 `weight_scale_inv` of
        # ceil(out/128) x ceil(in/128); router gate, norms, embeddings, lm_head and the
        # MTP eh_proj stay BF16; e_score_correction_bias is F32.
        bo, bi = q["weight_block_size"]
        fp8 = scales = 0
        for n, s, kind in c.tensors:
            if kind.endswith("buffer") or len(s) != 2:
                continue
            if (".self_attn." in n or ".mlp." in n) and not n.endswith("mlp.gate.weight"):
                fp8 += math.prod(s)
                scales += -(-s[0] // bo) * -(-s[1] // bi)
        allw = out.get("checkpoint_total", out["total"] + out["buffers"])
        f32 = scales + sum(math.prod(s) for _, s, k in c.tensors if k.endswith("buffer"))
        out["checkpoint_dtypes"] = {"F8_E4M3": fp8, "F32": f32,
                                    "BF16": allw - fp8 - (f32 - scales)}
        out["checkpoint_safetensors_elements"] = allw + scales
    if q.get("quant_method") == "mxfp4":
        # gpt-oss: expert gate_up/down weights stored as *_blocks (U8, two FP4 values a
        # byte) and *_scales (U8, one E8M0 scale per 32 values); everything else BF16.
        ex = sum(math.prod(s) for n, s, _ in c.tensors
                 if n.endswith("experts.gate_up_proj") or n.endswith("experts.down_proj"))
        out["mxfp4_expert_params"] = ex
        out["checkpoint_dtypes"] = {"BF16": out["total"] - ex, "U8": ex // 2 + ex // 32}
        out["checkpoint_safetensors_elements"] = out["total"] - ex + ex // 2 + ex // 32
    return out, c


def check(figures_path):
    base = os.path.dirname(os.path.abspath(figures_path))
    with open(figures_path) as f:
        figures = json.load(f)
    bad = 0
    for fig in figures:
        path = os.path.join(base, fig["name"], "config.json")
        with open(path) as f:
            cfg = json.load(f)
        res, _ = count(cfg)
        pub = fig.get("total")
        if pub is None:
            verdict = "no exact published figure"
        elif pub == res["total"]:
            verdict = "AGREES"
        else:
            verdict = f"DIFFERS by {pub - res['total']:+,}"
            bad += 1
        print(f"{fig['name']:<27} ours={res['total']:>18,}  published={'-' if pub is None else format(pub, ','):>18}  {verdict}")
        ck = fig.get("checkpoint_total")
        if ck is not None:
            mine = res.get("checkpoint_safetensors_elements")
            ok = mine == ck
            bad += 0 if ok else 1
            print(f"{'':<27} checkpoint safetensors elements ours={mine:,} published={ck:,}  "
                  f"{'AGREES' if ok else 'DIFFERS'}")
    return bad


def main(argv):
    if len(argv) >= 2 and argv[0] == "--check":
        sys.exit(1 if check(argv[1]) else 0)
    if not argv:
        print(__doc__)
        sys.exit(2)
    with open(argv[0]) as f:
        cfg = json.load(f)
    res, c = count(cfg)
    if "--tensors" in argv:
        for n, s, k in c.tensors:
            print(f"{k:<18} {n:<70} {s}")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
