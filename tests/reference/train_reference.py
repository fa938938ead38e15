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

OUT.json
    {"loss": [S], "lm_loss": [S], "aux_loss": [S], "z_loss": [S],   (before each update)
     "grad_norm": [S],                                             (before clipping)
     "grads": {name: [flat row-major step-0 gradient, unclipped]},
     "weights_after": {name: [flat row-major weights after S steps]}}
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


def make_params(cfg, tensors):
    """float64 leaf copies (requires_grad) of every checkpoint tensor, in model
    order (moe_reference.tensor_shapes), whatever the order in the file; the
    global grad norm is summed tensor by tensor in this order."""
    return OrderedDict((n, tensors[n].detach().to(torch.float64).clone().requires_grad_(True))
                       for n in ref.tensor_shapes(cfg))


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
        routing.append(dict(layer=acc[0]["layer"], probs=probs.detach(), experts=chosen))
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
    ref.check_tensors(cfg, tensors, strict=True)
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
    routings = []
    for step in range(1, steps + 1):
        for p in params.values():
            p.grad = None
        terms = loss_terms(cfg, params, batch["tokens"], alpha, zc, bf16)
        terms["loss"].backward()
        for k in ("loss", "lm_loss", "aux_loss", "z_loss"):
            out[k].append(float(terms[k]))
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
