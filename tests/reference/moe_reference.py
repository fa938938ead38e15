#!/usr/bin/python3
"""Independent PyTorch reference for the MoE Lab model families.

Implements, from a Hugging Face style ``config.json`` dict plus a dict of
tensors keyed by their Hugging Face checkpoint names, the forward pass of

  * ``mixtral``    (MixtralForCausalLM)
  * ``qwen2_moe``  (Qwen2MoeForCausalLM)
  * ``qwen3_moe``  (Qwen3MoeForCausalLM)
  * ``olmoe``      (OlmoeForCausalLM)
  * ``granitemoe`` (GraniteMoeForCausalLM)

written from a reading of the semantics of the `transformers` modeling code
(not copied from it).  Everything is computed in float64 by default so the
outputs can serve as golden values for an fp32 C++ implementation.

Also contains a small hand-written safetensors writer / strict reader and a
sharded-checkpoint writer (``model-0000i-of-0000n.safetensors`` plus
``model.safetensors.index.json``).

Semantics summary (what a C++ implementation has to match)
----------------------------------------------------------
decoder layer (pre-norm, all four families):
    h = h + o_proj(attn(input_layernorm(h)))
    h = h + ffn(post_attention_layernorm(h))
    logits = lm_head(norm(h))            # lm_head = embed_tokens if tied
RMSNorm(x) = x * rsqrt(mean(x^2, -1) + eps) * w          (HF does it in fp32)
attention:
    q = q_proj(x) (+bias), k, v likewise
    olmoe:     q = q_norm(q) over the WHOLE projection (NH*D),
               k = k_norm(k) over NKV*D, THEN clamp q, k, v to
               [-clip_qkv, clip_qkv] (norm first, clamp second)
    qwen3_moe: reshape to heads, q_norm / k_norm over head_dim (per head)
    RoPE (rotate-half / NeoX layout): inv_freq[i] = theta^(-2i/D), i < D/2,
        angle = pos * inv_freq, emb = cat(angle, angle),
        x' = x*cos(emb) + cat(-x[D/2:], x[:D/2])*sin(emb)
    RoPE scaling (rope_scaling, or rope_parameters in transformers 5; from
        modeling_rope_utils): "linear": inv_freq / factor; "llama3": with
        wavelen = 2 pi / inv_freq, L = original_max_position_embeddings:
        wavelen > L / low_freq_factor -> inv_freq / factor, wavelen <
        L / high_freq_factor -> inv_freq, else (1 - s) inv_freq / factor +
        s inv_freq with s = (L / wavelen - low) / (high - low); "dynamic"
        changes nothing up to max_position_embeddings.
    GQA: query head h reads kv head h // (NH/NKV)
    scores = q.k / sqrt(D), causal mask, softmax, weighted sum of v,
    heads concatenated, o_proj.
MoE block:
    router_logits = x @ gate.weight^T           (no bias)
    probs = softmax(router_logits) in fp32
    top-k of probs (descending); weights renormalised to sum 1 if
        mixtral: always;  qwen2_moe / qwen3_moe / olmoe: config.norm_topk_prob
    out = sum_k weight_k * down(silu(gate_proj x) * up_proj x)
    qwen2_moe adds sigmoid(shared_expert_gate(x)) * shared_expert(x)
    qwen2_moe / qwen3_moe: layer i is sparse iff
        i not in mlp_only_layers and num_experts > 0 and
        (i + 1) % decoder_sparse_step == 0, otherwise a dense SwiGLU MLP of
        width intermediate_size (names mlp.gate_proj / up_proj / down_proj).
granitemoe (GraniteMoeModel / GraniteMoeDecoderLayer / GraniteMoeMoE):
    h = embed_tokens(ids) * embedding_multiplier
    h = h + residual_multiplier * o_proj(attn(input_layernorm(h)))
    h = h + residual_multiplier * moe(post_attention_layernorm(h))
    logits = lm_head(norm(h)) / logits_scaling
    attention: head_dim = hidden_size // num_attention_heads, q/k/v/o biases
        iff attention_bias, scores = q.k * attention_multiplier (NOT 1/sqrt(D))
    router (GraniteMoeTopKGating): logits = x @ router.layer.weight^T; the
        top-k of the LOGITS, and the gate weights are softmax over those k
        logits only; (the reported probs are softmax over all experts)
    experts (GraniteMoeParallelExperts): input_linear.weight [E, 2F, H],
        y = x @ input_linear[e]^T chunked in two along the last dim:
        silu(y[:, :F]) * y[:, F:], then @ output_linear[e]^T ([E, H, F]).
    tie_word_embeddings defaults to False (the config class's default).
"""

import json
import math
import os
import struct
import sys
from collections import OrderedDict

import torch

FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe")

# Defaults of the corresponding transformers config classes (used only when a
# key is absent from config.json; the fixtures always write them explicitly).
_DEFAULTS = {
    "mixtral": dict(rope_theta=1e6, rms_norm_eps=1e-5, num_experts=8, num_experts_per_tok=2),
    "qwen2_moe": dict(rope_theta=10000.0, rms_norm_eps=1e-6, num_experts=60, num_experts_per_tok=4),
    "qwen3_moe": dict(rope_theta=10000.0, rms_norm_eps=1e-6, num_experts=128, num_experts_per_tok=8),
    "olmoe": dict(rope_theta=10000.0, rms_norm_eps=1e-5, num_experts=64, num_experts_per_tok=8),
    "granitemoe": dict(rope_theta=10000.0, rms_norm_eps=1e-6, num_experts=8, num_experts_per_tok=2),
}


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------

def model_spec(cfg):
    """Normalise a HF config dict into the few numbers the forward needs."""
    fam = cfg["model_type"]
    if fam not in FAMILIES:
        raise ValueError("unsupported model_type %r" % fam)
    d = _DEFAULTS[fam]
    H = int(cfg["hidden_size"])
    NH = int(cfg["num_attention_heads"])
    NKV = int(cfg.get("num_key_value_heads") or NH)
    D = H // NH if fam == "granitemoe" else int(cfg.get("head_dim") or H // NH)
    L = int(cfg["num_hidden_layers"])
    theta = cfg.get("rope_theta")
    if theta is None:
        theta = (cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}).get("rope_theta")
    if theta is None:
        theta = d["rope_theta"]
    if fam in ("mixtral", "granitemoe"):
        E = cfg.get("num_local_experts", cfg.get("num_experts", d["num_experts"]))
        moe_I = int(cfg["intermediate_size"])
        renorm = True
    elif fam == "olmoe":
        E = cfg.get("num_experts", cfg.get("num_local_experts", d["num_experts"]))
        moe_I = int(cfg["intermediate_size"])
        renorm = bool(cfg.get("norm_topk_prob", False))
    else:
        E = cfg.get("num_experts", cfg.get("num_local_experts", d["num_experts"]))
        moe_I = int(cfg["moe_intermediate_size"])
        renorm = bool(cfg.get("norm_topk_prob", False))
    E = int(E)
    if fam in ("qwen2_moe", "qwen3_moe"):
        only = set(cfg.get("mlp_only_layers") or [])
        step = int(cfg.get("decoder_sparse_step", 1))
        sparse = [(i not in only) and E > 0 and (i + 1) % step == 0 for i in range(L)]
    else:
        sparse = [True] * L
    if fam == "qwen2_moe":
        qkv_bias, o_bias = bool(cfg.get("qkv_bias", True)), False
    elif fam in ("qwen3_moe", "olmoe", "granitemoe"):
        qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
    else:
        qkv_bias = o_bias = False
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError("only silu experts are supported")
    rope = {"rope_type": "default"}
    for key in ("rope_scaling", "rope_parameters"):
        rs = cfg.get(key) or {}
        kind = rs.get("rope_type", rs.get("type", "default"))
        if kind not in ("default", "linear", "llama3", "dynamic"):
            raise ValueError("RoPE scaling %r (%s) is not implemented here" % (kind, key))
        if kind in ("linear", "llama3"):
            rope = dict(rs, rope_type=kind)
    granite = fam == "granitemoe"
    if fam == "mixtral":
        window = cfg.get("sliding_window")
    elif fam in ("qwen2_moe", "qwen3_moe") and cfg.get("use_sliding_window", False):
        window = cfg.get("sliding_window", 4096)
    else:
        window = None
    if D % 2:
        raise ValueError("head_dim must be even for rotate-half RoPE")
    if NH % NKV:
        raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    return dict(
        family=fam,
        vocab=int(cfg["vocab_size"]),
        hidden=H,
        layers=L,
        heads=NH,
        kv_heads=NKV,
        head_dim=D,
        eps=float(cfg.get("rms_norm_eps", d["rms_norm_eps"])),
        theta=float(theta),
        experts=E,
        topk=int(cfg.get("num_experts_per_tok", d["num_experts_per_tok"])),
        moe_inter=moe_I,
        dense_inter=int(cfg.get("intermediate_size", 0)),
        shared_inter=int(cfg.get("shared_expert_intermediate_size", 5632)) if fam == "qwen2_moe" else 0,
        renorm=renorm,
        sparse=sparse,
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        qk_norm={"qwen3_moe": "head", "olmoe": "full"}.get(fam),
        clip_qkv=(float(cfg["clip_qkv"]) if fam == "olmoe" and cfg.get("clip_qkv") is not None else None),
        tie=bool(cfg.get("tie_word_embeddings", False)),
        window=int(window) if window else None,
        rope=rope,
        # GraniteMoE's multipliers; neutral for the other families
        emb_mult=float(cfg.get("embedding_multiplier", 1.0)) if granite else 1.0,
        attn_scale=float(cfg.get("attention_multiplier", 1.0)) if granite else 1.0 / math.sqrt(D),
        res_mult=float(cfg.get("residual_multiplier", 1.0)) if granite else 1.0,
        logits_div=float(cfg.get("logits_scaling", 1.0)) if granite else 1.0,
    )


def moe_prefix(spec, i):
    return "model.layers.%d.%s" % (i, "block_sparse_moe" if spec["family"] in ("mixtral", "granitemoe") else "mlp")


def expert_names(spec):
    """(gate, up, down) projection names of one expert."""
    if spec["family"] == "mixtral":
        return ("w1", "w3", "w2")
    return ("gate_proj", "up_proj", "down_proj")


def tensor_shapes(cfg):
    """OrderedDict of every checkpoint tensor name -> shape, in model order."""
    s = model_spec(cfg) if "family" not in cfg else cfg
    H, V, NH, NKV, D = s["hidden"], s["vocab"], s["heads"], s["kv_heads"], s["head_dim"]
    out = OrderedDict()
    out["model.embed_tokens.weight"] = (V, H)
    for i in range(s["layers"]):
        p = "model.layers.%d" % i
        out[p + ".input_layernorm.weight"] = (H,)
        a = p + ".self_attn"
        out[a + ".q_proj.weight"] = (NH * D, H)
        out[a + ".k_proj.weight"] = (NKV * D, H)
        out[a + ".v_proj.weight"] = (NKV * D, H)
        if s["qkv_bias"]:
            out[a + ".q_proj.bias"] = (NH * D,)
            out[a + ".k_proj.bias"] = (NKV * D,)
            out[a + ".v_proj.bias"] = (NKV * D,)
        out[a + ".o_proj.weight"] = (H, NH * D)
        if s["o_bias"]:
            out[a + ".o_proj.bias"] = (H,)
        if s["qk_norm"] == "head":
            out[a + ".q_norm.weight"] = (D,)
            out[a + ".k_norm.weight"] = (D,)
        elif s["qk_norm"] == "full":
            out[a + ".q_norm.weight"] = (NH * D,)
            out[a + ".k_norm.weight"] = (NKV * D,)
        out[p + ".post_attention_layernorm.weight"] = (H,)
        if s["sparse"][i]:
            m = moe_prefix(s, i)
            g, u, d = expert_names(s)
            I = s["moe_inter"]
            if s["family"] == "granitemoe":  # all experts in two parameters
                out[m + ".router.layer.weight"] = (s["experts"], H)
                out[m + ".input_linear.weight"] = (s["experts"], 2 * I, H)
                out[m + ".output_linear.weight"] = (s["experts"], H, I)
            else:
                out[m + ".gate.weight"] = (s["experts"], H)
                for e in range(s["experts"]):
                    out["%s.experts.%d.%s.weight" % (m, e, g)] = (I, H)
                    out["%s.experts.%d.%s.weight" % (m, e, u)] = (I, H)
                    out["%s.experts.%d.%s.weight" % (m, e, d)] = (H, I)
            if s["family"] == "qwen2_moe":
                Is = s["shared_inter"]
                out[m + ".shared_expert.gate_proj.weight"] = (Is, H)
                out[m + ".shared_expert.up_proj.weight"] = (Is, H)
                out[m + ".shared_expert.down_proj.weight"] = (H, Is)
                out[m + ".shared_expert_gate.weight"] = (1, H)
        else:
            m = p + ".mlp"
            I = s["dense_inter"]
            out[m + ".gate_proj.weight"] = (I, H)
            out[m + ".up_proj.weight"] = (I, H)
            out[m + ".down_proj.weight"] = (H, I)
    out["model.norm.weight"] = (H,)
    if not s["tie"]:
        out["lm_head.weight"] = (V, H)
    return out


# --------------------------------------------------------------------------
# math
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def matmul_t(a, w):
    """a @ w^T, the product every linear layer computes."""
    return a @ w.t()


def bf16_operands(a):
    """Round to bfloat16 (round to nearest even) and back, keeping the dtype."""
    return a.to(torch.bfloat16).to(a.dtype)


def matmul_t_bf16(a, w):
    """a @ w^T with both operands rounded to bfloat16 and the products summed in a's dtype:
    the semantics of MoE Lab's bf16 mode (bf16 operands, wider accumulation)."""
    return bf16_operands(a) @ bf16_operands(w).t()


def swiglu(x, wg, wu, wd, mm=matmul_t):
    return mm(silu(mm(x, wg)) * mm(x, wu), wd)


def rope_inv_freq(dim, theta, rope=None):
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    kind = (rope or {}).get("rope_type", "default")
    if kind == "linear":
        inv_freq = inv_freq / float(rope["factor"])
    elif kind == "llama3":
        factor, low, high = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
        old = float(rope["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        smooth = (old / wavelen - low) / (high - low)
        medium = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old / low, inv_freq / factor,
                               torch.where(wavelen < old / high, inv_freq, medium))
    return inv_freq


def rope_tables(positions, dim, theta, dtype=torch.float64, rope=None):
    inv_freq = rope_inv_freq(dim, theta, rope)
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x, cos, sin):
    """x: [T, heads, D]; cos/sin: [T, D]. Rotate-half layout."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def causal_attention(q, k, v, scale=None, window=None):
    """q: [T, NH, D]; k, v: [S, NKV, D] (S >= T, the last T keys belong to the
    queries). Query t sits at absolute position S - T + t. scale: the softmax
    scale of q.k (default 1/sqrt(D)); window: sliding window (a query sees the
    `window` positions up to and including its own), None = full causal."""
    T, NH, D = q.shape
    S, NKV, _ = k.shape
    rep = NH // NKV
    k = k.repeat_interleave(rep, dim=1)  # head h -> kv head h // rep
    v = v.repeat_interleave(rep, dim=1)
    scores = torch.einsum("thd,shd->hts", q, k) * (1.0 / math.sqrt(D) if scale is None else scale)
    qpos = torch.arange(T)[:, None] + (S - T)
    kpos = torch.arange(S)[None, :]
    masked = kpos > qpos
    if window is not None:
        masked = masked | (kpos <= qpos - window)
    scores = scores.masked_fill(masked[None], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.einsum("hts,shd->thd", p, v).reshape(T, NH * D)


def route(x, gate_w, topk, renorm, mm=matmul_t):
    probs = torch.softmax(mm(x, gate_w), dim=-1)
    top_p, top_i = torch.topk(probs, topk, dim=-1, largest=True, sorted=True)
    w = top_p / top_p.sum(dim=-1, keepdim=True) if renorm else top_p
    return probs, top_i, w


def route_granite(x, router_w, topk, mm=matmul_t):
    """GraniteMoeTopKGating: top-k of the raw logits, softmax over those k."""
    logits = mm(x, router_w)
    top_logits, top_i = torch.topk(logits, topk, dim=-1, largest=True, sorted=True)
    w = torch.softmax(top_logits, dim=-1)
    return torch.softmax(logits, dim=-1), top_i, w


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------

def check_tensors(cfg, tensors, strict=True):
    shapes = tensor_shapes(cfg)
    missing = [n for n in shapes if n not in tensors]
    extra = [n for n in tensors if n not in shapes]
    bad = [(n, tuple(tensors[n].shape), shapes[n]) for n in shapes
           if n in tensors and tuple(tensors[n].shape) != tuple(shapes[n])]
    if missing or bad or (strict and extra):
        raise ValueError("tensor set mismatch: missing=%s extra=%s bad_shapes=%s"
                         % (missing[:8], extra[:8], bad[:8]))


class _KV:
    """Per-layer key/value cache for incremental decoding."""

    def __init__(self, layers):
        self.k = [None] * layers
        self.v = [None] * layers

    def length(self):
        return 0 if self.k[0] is None else self.k[0].shape[0]

    def append(self, i, k, v):
        if self.k[i] is None:
            self.k[i], self.v[i] = k, v
        else:
            self.k[i] = torch.cat([self.k[i], k], 0)
            self.v[i] = torch.cat([self.v[i], v], 0)
        return self.k[i], self.v[i]


def new_cache(cfg):
    return _KV(model_spec(cfg)["layers"])


def forward(cfg, tensors, tokens, dtype=torch.float64, cache=None, stats=None, bf16_products=False):
    """Run the model.

    cfg     HF config dict (parsed config.json)
    tensors dict HF name -> tensor (any float dtype; upcast to ``dtype``)
    tokens  list / 1-D tensor of token ids (the new tokens when ``cache`` is given)
    cache   optional object from new_cache(); extended in place
    stats   optional dict; receives clip counts for olmoe
    bf16_products  round both operands of every linear / expert product to bfloat16 (the
            products still sum in ``dtype``); attention, norms and softmax stay in ``dtype``

    Returns (logits [T, V], routing) where routing is a list, one entry per MoE
    layer in layer order, of dicts {layer, probs [T,E], experts [T,K] (desc.
    probability), weights [T,K] (after renormalisation when applicable)}.
    """
    s = model_spec(cfg)
    check_tensors(cfg, tensors, strict=True)

    def W(name):
        return tensors[name].to(dtype)

    mm = matmul_t_bf16 if bf16_products else matmul_t

    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    T = ids.shape[0]
    past = cache.length() if cache is not None else 0
    NH, NKV, D, eps = s["heads"], s["kv_heads"], s["head_dim"], s["eps"]
    cos, sin = rope_tables(torch.arange(past, past + T), D, s["theta"], dtype, s["rope"])

    h = W("model.embed_tokens.weight")[ids] * s["emb_mult"]
    routing = []
    for i in range(s["layers"]):
        p = "model.layers.%d" % i
        a = p + ".self_attn"
        x = rms_norm(h, W(p + ".input_layernorm.weight"), eps)
        q = mm(x, W(a + ".q_proj.weight"))
        k = mm(x, W(a + ".k_proj.weight"))
        v = mm(x, W(a + ".v_proj.weight"))
        if s["qkv_bias"]:
            q = q + W(a + ".q_proj.bias")
            k = k + W(a + ".k_proj.bias")
            v = v + W(a + ".v_proj.bias")
        if s["qk_norm"] == "full":  # olmoe: norm over whole projection, then clamp
            q = rms_norm(q, W(a + ".q_norm.weight"), eps)
            k = rms_norm(k, W(a + ".k_norm.weight"), eps)
        if s["clip_qkv"] is not None:
            c = s["clip_qkv"]
            if stats is not None:
                for nm, t in (("q", q), ("k", k), ("v", v)):
                    stats.setdefault("clipped_" + nm, 0)
                    stats.setdefault("total_" + nm, 0)
                    stats["clipped_" + nm] += int((t.abs() > c).sum())
                    stats["total_" + nm] += t.numel()
            q, k, v = q.clamp(-c, c), k.clamp(-c, c), v.clamp(-c, c)
        q = q.reshape(T, NH, D)
        k = k.reshape(T, NKV, D)
        v = v.reshape(T, NKV, D)
        if s["qk_norm"] == "head":  # qwen3_moe: per-head norm over head_dim
            q = rms_norm(q, W(a + ".q_norm.weight"), eps)
            k = rms_norm(k, W(a + ".k_norm.weight"), eps)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(i, k, v)
        attn = mm(causal_attention(q, k, v, s["attn_scale"], s["window"]), W(a + ".o_proj.weight"))
        if s["o_bias"]:
            attn = attn + W(a + ".o_proj.bias")
        h = h + attn * s["res_mult"]

        x = rms_norm(h, W(p + ".post_attention_layernorm.weight"), eps)
        if s["sparse"][i] and s["family"] == "granitemoe":
            m = moe_prefix(s, i)
            probs, top_i, top_w = route_granite(x, W(m + ".router.layer.weight"), s["topk"], mm)
            w_in, w_out, F = W(m + ".input_linear.weight"), W(m + ".output_linear.weight"), s["moe_inter"]
            y = torch.zeros_like(x)
            for e in range(s["experts"]):
                rows, slot = torch.nonzero(top_i == e, as_tuple=True)
                if rows.numel() == 0:
                    continue
                both = mm(x[rows], w_in[e])  # [n, 2F]: chunk(2) -> activation(first) * second
                out = mm(silu(both[:, :F]) * both[:, F:], w_out[e])
                y.index_add_(0, rows, out * top_w[rows, slot][:, None])
            routing.append(dict(layer=i, probs=probs, experts=top_i, weights=top_w))
        elif s["sparse"][i]:
            m = moe_prefix(s, i)
            g, u, dn = expert_names(s)
            probs, top_i, top_w = route(x, W(m + ".gate.weight"), s["topk"], s["renorm"], mm)
            y = torch.zeros_like(x)
            for e in range(s["experts"]):
                rows, slot = torch.nonzero(top_i == e, as_tuple=True)
                if rows.numel() == 0:
                    continue
                pe = "%s.experts.%d." % (m, e)
                out = swiglu(x[rows], W(pe + g + ".weight"), W(pe + u + ".weight"), W(pe + dn + ".weight"), mm)
                y.index_add_(0, rows, out * top_w[rows, slot][:, None])
            if s["family"] == "qwen2_moe":
                se = m + ".shared_expert."
                shared = swiglu(x, W(se + "gate_proj.weight"), W(se + "up_proj.weight"), W(se + "down_proj.weight"), mm)
                y = y + torch.sigmoid(mm(x, W(m + ".shared_expert_gate.weight"))) * shared
            routing.append(dict(layer=i, probs=probs, experts=top_i, weights=top_w))
        else:
            m = p + ".mlp"
            y = swiglu(x, W(m + ".gate_proj.weight"), W(m + ".up_proj.weight"), W(m + ".down_proj.weight"), mm)
        h = h + y * s["res_mult"]

    h = rms_norm(h, W("model.norm.weight"), eps)
    head = W("model.embed_tokens.weight") if s["tie"] else W("lm_head.weight")
    return mm(h, head) / s["logits_div"], routing


def routing_margin(routing, topk):
    """Smallest relative gap (p_j - p_{j+1}) / p_j over j = 0..topk-1, over all
    tokens and MoE layers: how robust the top-k choice and its order are."""
    worst = float("inf")
    for r in routing:
        srt = torch.sort(r["probs"], dim=-1, descending=True).values
        for j in range(min(topk, srt.shape[-1] - 1)):
            gap = (srt[:, j] - srt[:, j + 1]) / srt[:, j]
            worst = min(worst, float(gap.min()))
    return worst


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

_ST_DTYPES = {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2)}
_ST_NAMES = {v[0]: (k, v[1]) for k, v in _ST_DTYPES.items()}


def _tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.float32:
        return t.numpy().astype("<f4", copy=False).tobytes()
    if t.dtype == torch.float16:
        return t.numpy().astype("<f2", copy=False).tobytes()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    raise TypeError("unsupported dtype %s" % t.dtype)


def safetensors_bytes(tensors, order=None):
    """Serialise {name: tensor} to safetensors bytes. Tensors are laid out in
    ``order`` (default: sorted by name) and the header lists them in offset
    order after ``__metadata__``. The header is padded with spaces so that
    its length (and thus the data start, 8 + len) is a multiple of 8."""
    names = list(order) if order is not None else sorted(tensors)
    if sorted(names) != sorted(tensors):
        raise ValueError("order must list every tensor exactly once")
    header = OrderedDict()
    header["__metadata__"] = {"format": "pt"}
    blobs = []
    off = 0
    for n in names:
        t = tensors[n]
        if t.dtype not in _ST_DTYPES:
            raise TypeError("%s: unsupported dtype %s" % (n, t.dtype))
        b = _tensor_bytes(t)
        assert len(b) == t.numel() * _ST_DTYPES[t.dtype][1]
        header[n] = OrderedDict([("dtype", _ST_DTYPES[t.dtype][0]),
                                 ("shape", [int(d) for d in t.shape]),
                                 ("data_offsets", [off, off + len(b)])])
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    return struct.pack("<Q", len(hj)) + hj + b"".join(blobs)


def write_safetensors(path, tensors, order=None):
    data = safetensors_bytes(tensors, order)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def parse_safetensors(data, strict=True):
    """Parse safetensors bytes -> (OrderedDict name -> tensor, metadata).

    Validates: header length within file, JSON header, every entry's byte size
    equals prod(shape) * itemsize, entries tile the data area exactly with no
    gap / overlap, and (strict) header length % 8 == 0 with space padding."""
    if len(data) < 8:
        raise ValueError("file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError("header length %d exceeds file" % n)
    raw = data[8:8 + n]
    if strict:
        if n % 8:
            raise ValueError("header length %d not a multiple of 8" % n)
        body = raw.rstrip(b" ")
        if not body.endswith(b"}"):
            raise ValueError("header padding is not spaces")
    header = json.loads(raw.decode("utf-8"), object_pairs_hook=OrderedDict)
    meta = header.pop("__metadata__", None)
    base = 8 + n
    size = len(data) - base
    spans = []
    out = OrderedDict()
    for name, e in header.items():
        if e["dtype"] not in _ST_NAMES:
            raise ValueError("%s: unsupported dtype %s" % (name, e["dtype"]))
        dt, isz = _ST_NAMES[e["dtype"]]
        b, en = e["data_offsets"]
        numel = 1
        for d in e["shape"]:
            numel *= d
        if en - b != numel * isz:
            raise ValueError("%s: byte span %d != %d" % (name, en - b, numel * isz))
        spans.append((b, en, name))
        buf = data[base + b:base + en]
        if dt == torch.float32:
            arr = torch.frombuffer(bytearray(buf), dtype=torch.float32)
        elif dt == torch.float16:
            arr = torch.frombuffer(bytearray(buf), dtype=torch.float16)
        else:
            arr = torch.frombuffer(bytearray(buf), dtype=torch.int16).view(torch.bfloat16)
        out[name] = arr.reshape(e["shape"]).clone()
    spans.sort()
    pos = 0
    for b, en, name in spans:
        if b != pos:
            raise ValueError("%s: data_offsets do not tile the buffer (at %d, expected %d)" % (name, b, pos))
        pos = en
    if pos != size:
        raise ValueError("data area is %d bytes but tensors cover %d" % (size, pos))
    if strict and [s[2] for s in spans] != list(header.keys()):
        raise ValueError("header entries are not in offset order")
    return out, meta


def read_safetensors(path, strict=True):
    with open(path, "rb") as f:
        return parse_safetensors(f.read(), strict)[0]


def shard_plan(names_and_sizes, n_shards):
    """Split an ordered list of (name, nbytes) into n contiguous groups of
    roughly equal byte size (every group non-empty)."""
    total = sum(sz for _, sz in names_and_sizes)
    groups = [[] for _ in range(n_shards)]
    acc = 0
    g = 0
    remaining = len(names_and_sizes)
    for name, sz in names_and_sizes:
        # move to the next shard once this one holds its share, but leave at
        # least one tensor for every remaining shard
        if (g < n_shards - 1 and groups[g] and acc >= total * (g + 1) / n_shards) or \
                (g < n_shards - 1 and remaining <= n_shards - 1 - g):
            g += 1
        groups[g].append(name)
        acc += sz
        remaining -= 1
    return groups


def write_sharded(directory, tensors, n_shards=2, order=None):
    """Write model-0000i-of-0000n.safetensors shards + model.safetensors.index.json."""
    names = list(order) if order is not None else sorted(tensors)
    sizes = [(n, tensors[n].numel() * _ST_DTYPES[tensors[n].dtype][1]) for n in names]
    groups = shard_plan(sizes, n_shards)
    weight_map = OrderedDict()
    files = []
    for gi, grp in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (gi + 1, n_shards)
        write_safetensors(os.path.join(directory, fname), {n: tensors[n] for n in grp}, order=grp)
        files.append(fname)
        for n in grp:
            weight_map[n] = fname
    index = OrderedDict([("metadata", {"total_size": sum(sz for _, sz in sizes)}),
                         ("weight_map", OrderedDict(sorted(weight_map.items())))])
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    return files, index


def load_checkpoint(directory, strict=True):
    """Load model.safetensors or an index.json-described sharded checkpoint."""
    single = os.path.join(directory, "model.safetensors")
    idx = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(single):
        return read_safetensors(single, strict)
    with open(idx) as f:
        index = json.load(f)
    out = OrderedDict()
    total = 0
    for fname in sorted(set(index["weight_map"].values())):
        part = read_safetensors(os.path.join(directory, fname), strict)
        for n, t in part.items():
            if index["weight_map"].get(n) != fname:
                raise ValueError("%s found in %s but index says %s" % (n, fname, index["weight_map"].get(n)))
            out[n] = t
            total += t.numel() * t.element_size()
    if set(out) != set(index["weight_map"]):
        raise ValueError("index weight_map and shard contents differ")
    if total != index["metadata"]["total_size"]:
        raise ValueError("total_size %d != %d" % (index["metadata"]["total_size"], total))
    return out


def load_model_dir(directory):
    with open(os.path.join(directory, "config.json")) as f:
        cfg = json.load(f)
    return cfg, load_checkpoint(directory)


if __name__ == "__main__":
    # usage: moe_reference.py MODEL_DIR TOKEN [TOKEN ...]  -> prints last-token argmax
    torch.set_num_threads(1)
    cfg, ts = load_model_dir(sys.argv[1])
    logits, routing = forward(cfg, ts, [int(t) for t in sys.argv[2:]])
    print(json.dumps({"argmax": logits.argmax(-1).tolist(),
                      "experts": [r["experts"].tolist() for r in routing]}))
