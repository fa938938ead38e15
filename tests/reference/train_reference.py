#!/usr/bin/python3
"""Independent float64 reference for MoE Lab training steps.

    /usr/bin/python3 tests/reference/train_reference.py --model DIR --batch BATCH.json --out OUT.json [--bf16]

DIR holds config.json + safetensors (Mixtral or Qwen2-MoE family, Hugging Face
tensor names; single file or sharded). The forward pass is moe_reference.forward
(imported, not duplicated) run on float64 leaf copies of every checkpoint
tensor, so autograd follows exactly the HF computation (gate weights = chosen
softmax probabilities, renormalised over the K chosen when the family says so;
gradients flow through the chosen gate weights into the router; no noise, no
capacity limit, no straight-through).

BATCH.json
    {"tokens": [[T+1 ints], ... B sequences], "aux_loss_alpha": a, "z_loss_coef": c,
     "lr": lr, "betas": [b1, b2], "eps": eps, "weight_decay": wd,
     "clip": clip (0 = none), "steps": S}
    inputs = tokens[:, :-1], targets = tokens[:, 1:]; every sequence is run on
    its own (causal attention inside the sequence, positions 0..T-1).

Loss (N = B*T tokens, for each MoE layer l: router logits z [N,E], p = softmax(z),
chosen = top-K of p per token)
    lm_loss  = mean cross-entropy over the N predictions
    f_i      = #(token, slot) choices of expert i / (N*K)        (constant, no grad)
    P_i      = mean_t p[t, i]
    aux_l    = E * sum_i f_i * P_i                               (1 at perfect balance)
    z_l      = mean_t (logsumexp_e z[t, e])^2
    aux_loss = sum_l aux_l,  z_loss = sum_l z_l                  (sums over MoE layers)
    loss     = lm_loss + a * aux_loss + c * z_loss
    (For one layer, HF's load_balancing_loss_func with top-K equals K * aux_l.)

Optimizer, per step s = 1..S on the same batch:
    g = d loss / d w for every tensor (tied embeddings: one tensor, both uses summed)
    norm = sqrt(sum over all tensors of sum g^2)                 -> grad_norm[s-1]
    if clip > 0 and norm > clip: g *= clip / (norm + 1e-6)
    AdamW (torch.optim.AdamW, single-tensor form), wd_t = wd if w.dim() >= 2 else 0:
        w *= 1 - lr * wd_t
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        w -= lr / (1 - b1^s) * m / (sqrt(v) / sqrt(1 - b2^s) + eps)

The lab's router options (a batch or config that names one takes the batched
forward below instead of moe_reference.forward, written from the papers):
    batch "capacity_factor": cf > 0, "reroute": bool
        expert capacity (Switch Transformer, Fedus et al. 2021, eq. 3):
        C = ceil(cf * N * K / E) over the whole batch (N = B*T tokens). Slots are
        served in order of choice rank, then token (all first choices, then all
        second choices, ...); a slot whose expert already serves C slots is
        dropped, or with reroute given to the token's best expert by score +
        bias that it does not hold, that has room and is not banned (bias -inf).
        Gate weights: the scores of the slots that remain (renormalised over
        them). f_i in aux counts the final assignment.
    config "moelab": {"router": "noisy"}, batch "noise_seed": s
        noisy top-k gating (Shazeer et al. 2017, eq. 3-5): logits = x Wg^T +
        eps * softplus(x Wnoise^T) with tensor <moe>.gate_noise.weight [E,H];
        eps ~ N(0,1) drawn by SplitMix64 + Box-Muller from seed s (the C++
        Rng, core/random.hpp), [N,E] row-major per MoE layer in layer order,
        per step, rounded to float32. The losses see the noisy logits.
    config "moelab": {"router": "sigmoid"}
        scores = sigmoid(logits) (DeepSeek-V3); <moe>.gate.e_score_correction_bias
        [E] (a buffer, no gradient, not updated) is added to the scores for
        choosing only; the gate weights are the unbiased scores. aux's P_i is
        still the mean softmax probability of the logits.

OUT.json
    {"loss": [S], "lm_loss": [S], "aux_loss": [S], "z_loss": [S],   (before each update)
     "grad_norm": [S],                                             (before clipping)
     "grads": {name: [flat row-major step-0 gradient, unclipped]},
     "weights_after": {name: [flat row-major weights after S steps]},
     "routing": [S][MoE layers] {"ids": [N*K] final experts (-1 dropped),
                                 "dropped": [N*K] 0 kept, 1 dropped, 2 re-routed},
     "probs0": [MoE layers][N*E] step-0 router scores}
Names are the checkpoint's HF names (tied embeddings: only
"model.embed_tokens.weight"). All numbers are float64, written with repr
precision (round-trip exact).

--bf16: the same steps in MoE Lab's bf16 mode (Precision::BF16). Every matrix
product a @ w^T (q/k/v/o, router, lm head, dense and shared-expert MLPs, the
shared-expert gate, each routed expert's gate/up/down) rounds both operands to
bfloat16 (nearest even) and sums in float64, and so does its backward:
    da = R(dy) @ R(w),   dw += R(dy)^T @ R(a)        (Bf16Product)
Plain autograd through .to(bfloat16) would round the backward's RESULTS
instead. Everything between products stays unrounded, so autograd over the
per-product Function gives, for a routed expert (weight g, output gradient d):
    G = R(x)R(Wg)^T, U = R(x)R(Wu)^T, A = silu(G)*U, Y = R(A)R(Wd)^T,
    dY = R(g*d), dA = dY R(Wd), dG, dU unrounded from G, U, dA,
    dWd += dY^T R(A), dWg += R(dG)^T R(x), dWu += R(dU)^T R(x),
    dx = R(dG)R(Wg) + R(dU)R(Wu),  dg = d . Y   (unrounded)
Bias gradients are plain sums of dy. The router logits are ONE product whose
gradient (routing + aux + z-loss) is summed before it is rounded, as the
backend's linear_backward sees it. Attention, norms, softmax, losses and AdamW
are unrounded.
"""

import argparse
import contextlib
import json
import math
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference as ref  # noqa: E402

TRAIN_FAMILIES = ("mixtral", "qwen2_moe")


class Bf16Product(torch.autograd.Function):
    """a @ w^T with both operands rounded to bfloat16 (sums in a's dtype), and a
    backward that rounds ITS operands the same way: da = R(dy) @ R(w),
    dw = R(dy)^T @ R(a). a: [rows, in], w: [out, in] -> [rows, out]."""

    @staticmethod
    def forward(ctx, a, w):
        ra, rw = ref.bf16_operands(a), ref.bf16_operands(w)
        ctx.save_for_backward(ra, rw)
        return ra @ rw.t()

    @staticmethod
    def backward(ctx, dy):
        ra, rw = ctx.saved_tensors
        rdy = ref.bf16_operands(dy)
        da = rdy @ rw if ctx.needs_input_grad[0] else None
        dw = rdy.t() @ ra if ctx.needs_input_grad[1] else None
        return da, dw


def matmul_t_bf16_train(a, w):
    return Bf16Product.apply(a, w)


@contextlib.contextmanager
def bf16_training_products(on):
    """moe_reference.forward(bf16_products=True) takes its product from the
    module-level ``matmul_t_bf16`` (forward-only rounding). For training, swap
    in Bf16Product, whose backward rounds its own operands."""
    orig = ref.matmul_t_bf16
    if on:
        ref.matmul_t_bf16 = matmul_t_bf16_train
    try:
        yield
    finally:
        ref.matmul_t_bf16 = orig


@contextlib.contextmanager
def record_router_logits(store):
    """moe_reference.forward calls the module-level ``route(x, gate_w, ...)``
    once per MoE layer, in layer order. Wrap it to also keep the router logits
    x @ gate_w^T (needed for the z-loss); the routing itself is untouched. The
    logits are computed once and shared, so (in bf16 mode) the gradients of
    routing and z-loss are summed before the product's backward rounds them."""
    orig = ref.route

    def route(x, gate_w, topk, renorm, mm=ref.matmul_t):
        z = mm(x, gate_w)  # [T, E] router logits
        store.append(z)
        return orig(x, gate_w, topk, renorm, lambda a, w: z)

    ref.route = route
    try:
        yield store
    finally:
        ref.route = orig


# --------------------------------------------------------------------------
# the lab's router options: a batched forward (capacity couples the sequences)
# --------------------------------------------------------------------------

MASK64 = (1 << 64) - 1


class SplitMix64Normal:
    """Standard normals from SplitMix64 (Steele, Lea & Flood 2014; Vigna's
    constants) and the Box-Muller transform, cos sample first, sin sample kept
    for the next call: the generator of core/random.hpp."""

    def __init__(self, seed):
        self.state = seed & MASK64
        self.spare = None

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self):  # [0, 1) from the top 53 bits
        return (self.next_u64() >> 11) * (1.0 / 9007199254740992.0)

    def normal(self):
        if self.spare is not None:
            v, self.spare = self.spare, None
            return v
        u1, u2 = max(self.uniform(), 1e-300), self.uniform()
        r, a = math.sqrt(-2.0 * math.log(u1)), 2.0 * math.pi * u2
        self.spare = r * math.sin(a)
        return r * math.cos(a)

    def normals_f32(self, rows, cols):
        vals = [self.normal() for _ in range(rows * cols)]
        return torch.tensor(vals, dtype=torch.float32).to(torch.float64).reshape(rows, cols)


def lab_router(cfg):
    return (cfg.get("moelab") or {}).get("router", "softmax")


def lab_tensor_shapes(cfg):
    """The lab router's extra tensors (C++ core/registry.cpp add_lab_router),
    name -> shape, for every MoE layer."""
    s = ref.model_spec(cfg)
    out = OrderedDict()
    for i in range(s["layers"]):
        if not s["sparse"][i]:
            continue
        m = ref.moe_prefix(s, i)
        if lab_router(cfg) == "noisy":
            out[m + ".gate_noise.weight"] = (s["experts"], s["hidden"])
        if lab_router(cfg) == "sigmoid":
            out[m + ".gate.e_score_correction_bias"] = (s["experts"],)
    return out


def is_buffer(name):
    return name.endswith("e_score_correction_bias")


def uses_router_options(cfg, batch):
    return lab_router(cfg) != "softmax" or float(batch.get("capacity_factor", 0)) > 0


def choose_with_capacity(sel, K, capacity, reroute, banned):
    """sel [N,E] selection scores (score + bias), capacity C (0 = none).
    Returns (ids [N,K] long, -1 = dropped; dropped [N,K] 0/1/2; rerouted_tokens)."""
    N, E = sel.shape
    # best first, ties to the lower index (a stable sort keeps index order among equals)
    order = torch.sort(sel, dim=-1, descending=True, stable=True).indices.tolist()
    ids = [row[:K] for row in order]
    dropped = [[0] * K for _ in range(N)]
    touched = set()
    if capacity > 0:
        load = [0] * E
        for k in range(K):            # choice rank first ...
            for t in range(N):        # ... then token order
                e = ids[t][k]
                if load[e] < capacity:
                    load[e] += 1
                    continue
                touched.add(t)
                ids[t][k], dropped[t][k] = -1, 1
                if not reroute:
                    continue
                for cand in order[t]:
                    if cand == e or cand in ids[t] or banned[cand] or load[cand] >= capacity:
                        continue
                    ids[t][k], dropped[t][k] = cand, 2
                    load[cand] += 1
                    break
    return torch.tensor(ids, dtype=torch.long), torch.tensor(dropped, dtype=torch.long), touched


def moe_layer(cfg, W, x, i, opts, noise):
    """One MoE layer over all N tokens of the batch. Returns (y [N,H], record)."""
    s = ref.model_spec(cfg)
    m = ref.moe_prefix(s, i)
    E, K = s["experts"], s["topk"]
    logits = ref.matmul_t(x, W[m + ".gate.weight"])  # [N,E]
    if lab_router(cfg) == "noisy":
        eps = noise.normals_f32(x.shape[0], E)
        logits = logits + eps * torch.nn.functional.softplus(ref.matmul_t(x, W[m + ".gate_noise.weight"]))
    scores = torch.sigmoid(logits) if lab_router(cfg) == "sigmoid" else torch.softmax(logits, dim=-1)
    bias = W.get(m + ".gate.e_score_correction_bias")
    sel = (scores + bias if bias is not None else scores).detach()
    banned = [bool(b == -math.inf) for b in bias.tolist()] if bias is not None else [False] * E
    N = x.shape[0]
    cf = float(opts.get("capacity_factor", 0))
    capacity = math.ceil(cf * N * K / E) if cf > 0 else 0
    ids, dropped, touched = choose_with_capacity(sel, K, capacity, bool(opts.get("reroute", False)), banned)
    kept = ids >= 0
    w = torch.where(kept, scores.gather(1, ids.clamp(min=0)), torch.zeros((), dtype=scores.dtype))
    if s["renorm"]:
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-300)
    g, u, dn = ref.expert_names(s)
    y = torch.zeros_like(x)
    for t in range(N):
        for k in range(K):
            e = int(ids[t, k])
            if e < 0:
                continue
            pe = "%s.experts.%d." % (m, e)
            out = ref.swiglu(x[t:t + 1], W[pe + g + ".weight"], W[pe + u + ".weight"], W[pe + dn + ".weight"])
            y = y + torch.nn.functional.pad(w[t, k] * out, (0, 0, t, N - t - 1))
    if s["family"] == "qwen2_moe":
        se = m + ".shared_expert."
        shared = ref.swiglu(x, W[se + "gate_proj.weight"], W[se + "up_proj.weight"], W[se + "down_proj.weight"])
        y = y + torch.sigmoid(ref.matmul_t(x, W[m + ".shared_expert_gate.weight"])) * shared
    rec = dict(layer=i, logits=logits, scores=scores, sel=sel, ids=ids, dropped=dropped, touched=touched)
    return y, rec


def batch_forward(cfg, W, inputs, opts, noise):
    """The model over B sequences at once: attention inside each sequence, each
    MoE layer over all B*T tokens (so capacity is shared by the batch).
    Returns (logits [B*T, V], per-MoE-layer records)."""
    s = ref.model_spec(cfg)
    if s["qk_norm"] or s["clip_qkv"] is not None or s["o_bias"]:
        raise ValueError("the batched forward covers the training families only")
    B, T = inputs.shape
    NH, NKV, D, eps = s["heads"], s["kv_heads"], s["head_dim"], s["eps"]
    cos, sin = ref.rope_tables(torch.arange(T), D, s["theta"], torch.float64)
    h = W["model.embed_tokens.weight"][inputs.reshape(-1)]  # [N,H]
    records = []
    for i in range(s["layers"]):
        p, a = "model.layers.%d" % i, "model.layers.%d.self_attn" % i
        x = ref.rms_norm(h, W[p + ".input_layernorm.weight"], eps)
        q, k, v = (ref.matmul_t(x, W[a + ".%s_proj.weight" % n]) for n in "qkv")
        if s["qkv_bias"]:
            q, k, v = q + W[a + ".q_proj.bias"], k + W[a + ".k_proj.bias"], v + W[a + ".v_proj.bias"]
        att = torch.cat([
            ref.causal_attention(ref.apply_rope(q[b * T:(b + 1) * T].reshape(T, NH, D), cos, sin),
                                 ref.apply_rope(k[b * T:(b + 1) * T].reshape(T, NKV, D), cos, sin),
                                 v[b * T:(b + 1) * T].reshape(T, NKV, D)) for b in range(B)], 0)
        h = h + ref.matmul_t(att, W[a + ".o_proj.weight"])
        x = ref.rms_norm(h, W[p + ".post_attention_layernorm.weight"], eps)
        if s["sparse"][i]:
            y, rec = moe_layer(cfg, W, x, i, opts, noise)
            records.append(rec)
        else:
            m = p + ".mlp"
            y = ref.swiglu(x, W[m + ".gate_proj.weight"], W[m + ".up_proj.weight"], W[m + ".down_proj.weight"])
        h = h + y
    h = ref.rms_norm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if s["tie"] else W["lm_head.weight"]
    return ref.matmul_t(h, head), records


def loss_terms_batched(cfg, params, tokens, aux_alpha, z_coef, opts, noise):
    """loss_terms for the lab's router options (see the module docstring)."""
    s = ref.model_spec(cfg)
    tok = torch.as_tensor(tokens, dtype=torch.long)
    inputs, targets = tok[:, :-1], tok[:, 1:]
    logits, records = batch_forward(cfg, params, inputs, opts, noise)
    lm = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), reduction="mean")
    aux = zl = logits.new_zeros(())
    E, K = s["experts"], s["topk"]
    routing = []
    for r in records:
        N = r["logits"].shape[0]
        kept = r["ids"][r["ids"] >= 0]
        f = torch.bincount(kept, minlength=E).to(torch.float64) / (N * K)  # constant
        P = torch.softmax(r["logits"], dim=-1).mean(0)
        aux = aux + E * (f * P).sum()
        zl = zl + (torch.logsumexp(r["logits"], dim=-1) ** 2).mean()
        routing.append(dict(layer=r["layer"], probs=r["scores"].detach(), sel=r["sel"], experts=r["ids"],
                            dropped=r["dropped"], touched=r["touched"]))
    loss = lm + aux_alpha * aux + z_coef * zl
    return dict(loss=loss, lm_loss=lm, aux_loss=aux, z_loss=zl, routing=routing)


def make_params(cfg, tensors):
    """float64 leaf copies (requires_grad) of every checkpoint tensor, in model
    order (moe_reference.tensor_shapes), whatever the order in the file; the
    global grad norm is summed tensor by tensor in this order."""
    names = list(ref.tensor_shapes(cfg)) + list(lab_tensor_shapes(cfg))
    return OrderedDict((n, tensors[n].detach().to(torch.float64).clone().requires_grad_(not is_buffer(n)))
                       for n in names)


def loss_terms(cfg, params, tokens, aux_alpha, z_coef, bf16=False):
    """Forward over every sequence; returns dict of 0-dim tensors loss, lm_loss,
    aux_loss, z_loss plus 'routing' (per MoE layer, concatenated over the batch:
    probs [N,E], experts [N,K]) for diagnostics. bf16: every product in MoE
    Lab's bf16 mode (Bf16Product)."""
    s = ref.model_spec(cfg)
    tok = torch.as_tensor(tokens, dtype=torch.long)
    if tok.dim() != 2 or tok.shape[1] < 2:
        raise ValueError("tokens must be [B, T+1] with T >= 1")
    inputs, targets = tok[:, :-1], tok[:, 1:]
    logits_all, layers = [], None
    for b in range(tok.shape[0]):
        zs = []
        with record_router_logits(zs), bf16_training_products(bf16):
            logits, routing = ref.forward(cfg, params, inputs[b], dtype=torch.float64, bf16_products=bf16)
        logits_all.append(logits)
        per = [dict(layer=r["layer"], probs=r["probs"], experts=r["experts"], z=z)
               for r, z in zip(routing, zs)]
        if layers is None:
            layers = [[p] for p in per]
        else:
            for acc, p in zip(layers, per):
                acc.append(p)
    logits = torch.cat(logits_all, 0)
    lm = torch.nn.functional.cross_entropy(logits, targets.reshape(-1), reduction="mean")
    zero = logits.new_zeros(())
    aux, zl = zero, zero
    routing = []
    E, K = s["experts"], s["topk"]
    for acc in layers or []:
        probs = torch.cat([p["probs"] for p in acc], 0)   # [N, E]
        chosen = torch.cat([p["experts"] for p in acc], 0)  # [N, K]
        z = torch.cat([p["z"] for p in acc], 0)           # [N, E]
        N = probs.shape[0]
        counts = torch.bincount(chosen.reshape(-1), minlength=E).to(torch.float64)
        f = counts / (N * K)                               # constant
        P = probs.mean(0)
        aux = aux + E * (f * P).sum()
        zl = zl + (torch.logsumexp(z, dim=-1) ** 2).mean()
        routing.append(dict(layer=acc[0]["layer"], probs=probs.detach(), experts=chosen,
                            dropped=torch.zeros_like(chosen)))
    loss = lm + aux_alpha * aux + z_coef * zl
    return dict(loss=loss, lm_loss=lm, aux_loss=aux, z_loss=zl, routing=routing)


def weight_decay_applies(t):
    return t.dim() >= 2


def train(cfg, tensors, batch, keep_routing=False, bf16=False):
    """Run batch['steps'] steps; returns the OUT.json dict (plus '_routing':
    list per step of the per-layer routing when keep_routing). bf16: every
    product in MoE Lab's bf16 mode (see the module docstring)."""
    s = ref.model_spec(cfg)
    if s["family"] not in TRAIN_FAMILIES:
        raise ValueError("training reference supports %s, not %s" % (TRAIN_FAMILIES, s["family"]))
    lab = lab_tensor_shapes(cfg)
    ref.check_tensors(cfg, OrderedDict((n, t) for n, t in tensors.items() if n not in lab), strict=True)
    for n, shape in lab.items():
        if n not in tensors or tuple(tensors[n].shape) != tuple(shape):
            raise ValueError("the %s router needs %s %s" % (lab_router(cfg), n, shape))
    batched = uses_router_options(cfg, batch)
    if batched and bf16:
        raise ValueError("the router options have no bf16 reference")
    noise = SplitMix64Normal(int(batch.get("noise_seed", 0)))
    opts = dict(capacity_factor=float(batch.get("capacity_factor", 0)), reroute=bool(batch.get("reroute", False)))
    params = make_params(cfg, tensors)
    lr = float(batch["lr"])
    b1, b2 = (float(x) for x in batch["betas"])
    eps = float(batch["eps"])
    wd = float(batch["weight_decay"])
    clip = float(batch.get("clip", 0.0))
    steps = int(batch["steps"])
    alpha = float(batch["aux_loss_alpha"])
    zc = float(batch["z_loss_coef"])
    m = OrderedDict((n, torch.zeros_like(p)) for n, p in params.items())
    v = OrderedDict((n, torch.zeros_like(p)) for n, p in params.items())
    out = OrderedDict((k, []) for k in ("loss", "lm_loss", "aux_loss", "z_loss", "grad_norm"))
    out["grads"] = OrderedDict()
    out["routing"] = []
    routings = []
    for step in range(1, steps + 1):
        for p in params.values():
            p.grad = None
        if batched:
            terms = loss_terms_batched(cfg, params, batch["tokens"], alpha, zc, opts, noise)
        else:
            terms = loss_terms(cfg, params, batch["tokens"], alpha, zc, bf16)
        terms["loss"].backward()
        for k in ("loss", "lm_loss", "aux_loss", "z_loss"):
            out[k].append(float(terms[k]))
        out["routing"].append([dict(ids=r["experts"].reshape(-1).tolist(), dropped=r["dropped"].reshape(-1).tolist())
                               for r in terms["routing"]])
        if step == 1:
            out["probs0"] = [r["probs"].reshape(-1).tolist() for r in terms["routing"]]
        if keep_routing:
            routings.append(terms["routing"])
        grads = OrderedDict((n, p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                            for n, p in params.items())
        if step == 1:
            for n, g in grads.items():
                out["grads"][n] = g.reshape(-1).tolist()
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        out["grad_norm"].append(norm)
        if clip > 0 and norm > clip:
            scale = clip / (norm + 1e-6)
            for g in grads.values():
                g.mul_(scale)
        bc1 = 1.0 - b1 ** step
        bc2 = 1.0 - b2 ** step
        with torch.no_grad():
            for n, p in params.items():
                g = grads[n]
                if is_buffer(n):  # the selection bias: no gradient, no update
                    continue
                if weight_decay_applies(p):
                    p.mul_(1.0 - lr * wd)
                m[n].mul_(b1).add_(g, alpha=1.0 - b1)
                v[n].mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v[n].sqrt() / math.sqrt(bc2)).add_(eps)
                p.addcdiv_(m[n], denom, value=-(lr / bc1))
    out["weights_after"] = OrderedDict((n, p.detach().reshape(-1).tolist()) for n, p in params.items())
    if keep_routing:
        out["_routing"] = routings
    return out


def load_batch(path):
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json + safetensors)")
    ap.add_argument("--batch", required=True, help="batch / hyper-parameter JSON")
    ap.add_argument("--out", required=True, help="output JSON")
    ap.add_argument("--bf16", action="store_true", help="every product in bf16 mode (see above)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg, tensors = ref.load_model_dir(a.model)
    res = train(cfg, tensors, load_batch(a.batch), bf16=a.bf16)
    with open(a.out, "w") as f:
        json.dump(res, f)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
