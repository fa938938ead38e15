#!/usr/bin/python3
"""Self-checks of train_reference.py (not part of its CLI).

    /usr/bin/python3 tests/reference/check_train_reference.py DIR

DIR is the output of make_train_fixture.py. For every fixture (and a tied-
embedding variant of the Mixtral one) it checks:
  * autograd gradients against float64 central finite differences, for the
    total loss (the batch's coefficients) and for aux_loss and z_loss on their
    own, at the largest-|g| entry and one random entry of every tensor; every
    perturbed forward must make exactly the same top-k choices;
  * with aux_loss_alpha = z_loss_coef = 0 the loss equals the mean
    cross-entropy computed from moe_reference.forward's logits;
  * aux_l equals HF's load_balancing_loss_func (one layer, one-hot over
    (token, slot)) divided by K;
  * the hand-written clip + AdamW equals torch.nn.utils.clip_grad_norm_ +
    torch.optim.AdamW with a decay / no-decay parameter-group split;
  * expected_train.json is reproduced exactly;
  * the batched forward (train_reference.py's, for the router options) equals
    the per-sequence moe_reference.forward path.
For the fixtures with router options (capacity, noisy, sigmoid + bias):
  * expected_train.json is reproduced exactly, and every tensor's largest
    gradient entry matches central differences with unchanged choices.
In bf16 mode (train_reference.py --bf16), for every fixture:
  * expected_train_bf16.json is reproduced exactly;
  * with aux_loss_alpha = z_loss_coef = 0 the loss equals the mean cross-entropy
    of moe_reference.forward(bf16_products=True)'s logits (the forward already
    checked against the C++ model);
  * the step-0 gradients through Bf16Product equal those of the same semantics
    written another way: operands rounded with a straight-through gradient and
    a hook rounding each product's incoming gradient. (Plain autograd through
    .to(bfloat16), which rounds the backward's results, is reported for scale.)
Prints one line per check; exits 1 on failure.
"""

import json
import math
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference as ref  # noqa: E402
import train_reference as tr  # noqa: E402

H_FD = 1e-5
FAILED = []


def report(name, ok, msg):
    print("%-44s %s  %s" % (name, "ok  " if ok else "FAIL", msg))
    if not ok:
        FAILED.append(name)


def choices(terms):
    return [r["experts"].clone() for r in terms["routing"]]


def fd_check(label, cfg, tensors, batch, which, alpha, zc, rng):
    params = tr.make_params(cfg, tensors)
    terms = tr.loss_terms(cfg, params, batch["tokens"], alpha, zc)
    terms[which].backward()
    base_choice = choices(terms)
    worst_abs, worst_rel, n, flips, skipped_zero = 0.0, 0.0, 0, 0, 0
    worst_at = None
    for name, p in params.items():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        gf = g.reshape(-1)
        if float(gf.abs().max()) == 0.0:
            skipped_zero += 1  # e.g. an expert no token chose: checked below for one entry anyway
        idxs = {int(gf.abs().argmax()), int(torch.randint(0, gf.numel(), (1,), generator=rng))}
        for i in idxs:
            vals = []
            for sgn in (1.0, -1.0):
                q = OrderedDict((k, v.detach().clone()) for k, v in params.items())
                q[name].reshape(-1)[i] += sgn * H_FD
                t2 = tr.loss_terms(cfg, q, batch["tokens"], alpha, zc)
                if any(not torch.equal(a, b) for a, b in zip(choices(t2), base_choice)):
                    flips += 1
                vals.append(float(t2[which]))
            fd = (vals[0] - vals[1]) / (2 * H_FD)
            ad = float(gf[i])
            err = abs(fd - ad)
            rel = err / max(abs(ad), 1e-3)
            n += 1
            if err > worst_abs:
                worst_abs = err
            if rel > worst_rel:
                worst_rel, worst_at = rel, "%s[%d] ad=%.6e fd=%.6e" % (name, i, ad, fd)
    ok = flips == 0 and worst_rel < 1e-6
    report("%s FD d(%s)" % (label, which), ok,
           "%d entries in %d tensors, max|fd-ad|=%.2e max rel=%.2e (worst %s), top-k flips=%d" % (
               n, len(params), worst_abs, worst_rel, worst_at, flips))


def batched_check(label, cfg, tensors, batch):
    """The batched forward (the lab's router options, off here) against the
    moe_reference.forward path, which is checked against transformers: the
    same loss terms and gradients to float64 rounding."""
    alpha, zc = batch["aux_loss_alpha"], batch["z_loss_coef"]
    got = []
    for batched in (False, True):
        params = tr.make_params(cfg, tensors)
        if batched:
            terms = tr.loss_terms_batched(cfg, params, batch["tokens"], alpha, zc, {}, tr.SplitMix64Normal(0))
        else:
            terms = tr.loss_terms(cfg, params, batch["tokens"], alpha, zc)
        terms["loss"].backward()
        got.append((terms, OrderedDict((n, p.grad.clone()) for n, p in params.items())))
    (a, ga), (b, gb) = got
    d_terms = max(abs(float(a[k]) - float(b[k])) for k in ("loss", "lm_loss", "aux_loss", "z_loss"))
    d_grads = max(float((ga[n] - gb[n]).abs().max()) for n in ga)
    same = all(bool((x["experts"] == y["experts"]).all()) for x, y in zip(a["routing"], b["routing"]))
    report("%s batched forward == per-sequence" % label, d_terms < 1e-12 and d_grads < 1e-12 and same,
           "loss terms %.1e, gradients %.1e, same choices %s" % (d_terms, d_grads, same))


def router_option_checks(label, cfg, tensors, batch):
    """Fixtures with the lab's router options: the gradients against central
    differences, every perturbed forward making the same choices (and drawing
    the same noise)."""
    alpha, zc = batch["aux_loss_alpha"], batch["z_loss_coef"]
    opts = dict(capacity_factor=float(batch.get("capacity_factor", 0)), reroute=bool(batch.get("reroute", False)))
    seed = int(batch.get("noise_seed", 0))

    def run(params):
        return tr.loss_terms_batched(cfg, params, batch["tokens"], alpha, zc, opts, tr.SplitMix64Normal(seed))

    params = tr.make_params(cfg, tensors)
    terms = run(params)
    terms["loss"].backward()
    base = [(r["experts"].clone(), r["dropped"].clone()) for r in terms["routing"]]
    worst, flips = 0.0, 0
    for name, p in params.items():
        if not p.requires_grad:
            continue
        i = int(p.grad.abs().reshape(-1).argmax())
        vals = []
        for h in (H_FD, -H_FD):
            q = tr.make_params(cfg, tensors)
            with torch.no_grad():
                q[name].view(-1)[i] += h
                t = run(q)
            flips += any(not (bool((e == r["experts"]).all()) and bool((d == r["dropped"]).all()))
                         for (e, d), r in zip(base, t["routing"]))
            vals.append(float(t["loss"]))
        fd = (vals[0] - vals[1]) / (2 * H_FD)
        g = float(p.grad.view(-1)[i])
        worst = max(worst, abs(fd - g) / max(1e-6, abs(g)))
    report("%s fd gradients (router options)" % label, worst < 1e-5 and flips == 0,
           "worst rel %.1e over %d tensors, %d choice flips" % (worst, len(params), flips))


def ce_check(label, cfg, tensors, batch):
    params = tr.make_params(cfg, tensors)
    with torch.no_grad():
        terms = tr.loss_terms(cfg, params, batch["tokens"], 0.0, 0.0)
        tot, cnt = 0.0, 0
        for seq in batch["tokens"]:
            logits, _ = ref.forward(cfg, tensors, seq[:-1])
            lp = logits.log_softmax(-1)
            for t, y in enumerate(seq[1:]):
                tot -= float(lp[t, y])
                cnt += 1
    ce = tot / cnt
    err = abs(float(terms["loss"]) - ce)
    report("%s loss(a=0,z=0) == mean CE" % label, err < 1e-12,
           "loss=%.15f ce=%.15f diff=%.1e" % (float(terms["loss"]), ce, err))


def aux_hf_check(label, cfg, tensors, batch):
    s = ref.model_spec(cfg)
    params = tr.make_params(cfg, tensors)
    with torch.no_grad():
        terms = tr.loss_terms(cfg, params, batch["tokens"], 1.0, 0.0)
        ours = 0.0
        for r in terms["routing"]:
            probs, sel = r["probs"], r["experts"]
            expert_mask = F.one_hot(sel, s["experts"]).to(torch.float64)   # [N, K, E]
            tokens_per_expert = expert_mask.mean(0)                         # [K, E]
            router_prob = probs.mean(0)                                     # [E]
            hf = float((tokens_per_expert * router_prob[None]).sum()) * s["experts"]
            ours += hf / s["topk"]
    err = abs(ours - float(terms["aux_loss"]))
    report("%s aux == sum_l HF_lbl_l / K" % label, err < 1e-12,
           "aux=%.15f hf/K=%.15f diff=%.1e" % (float(terms["aux_loss"]), ours, err))


def adamw_check(label, cfg, tensors, batch, res):
    params = tr.make_params(cfg, tensors)
    decay = [p for p in params.values() if p.dim() >= 2]
    nodecay = [p for p in params.values() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": batch["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=batch["lr"], betas=tuple(batch["betas"]), eps=batch["eps"], foreach=False)
    worst_loss = 0.0
    for step in range(batch["steps"]):
        opt.zero_grad(set_to_none=True)
        terms = tr.loss_terms(cfg, params, batch["tokens"], batch["aux_loss_alpha"], batch["z_loss_coef"])
        terms["loss"].backward()
        for p in params.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        norm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), batch["clip"]))
        worst_loss = max(worst_loss, abs(float(terms["loss"]) - res["loss"][step]),
                         abs(norm - res["grad_norm"][step]) / norm)
        opt.step()
    worst_w = 0.0
    for n, p in params.items():
        w = torch.tensor(res["weights_after"][n], dtype=torch.float64)
        worst_w = max(worst_w, float((p.detach().reshape(-1) - w).abs().max()))
    report("%s AdamW == torch.optim.AdamW" % label, worst_w < 1e-12 and worst_loss < 1e-12,
           "max|w diff|=%.1e max loss/norm diff=%.1e" % (worst_w, worst_loss))


def ste_hook_product(a, w):
    """a @ w^T in bf16 mode, written without a custom Function: the operands are
    rounded with a straight-through gradient, and a hook rounds the product's
    incoming gradient, so da = R(dy) @ R(w) and dw = R(dy)^T @ R(a)."""
    ra = a + (ref.bf16_operands(a) - a).detach()
    rw = w + (ref.bf16_operands(w) - w).detach()
    out = ra @ rw.t()
    if out.requires_grad:
        out.register_hook(ref.bf16_operands)
    return out


def step0_grads(cfg, tensors, batch, product):
    """Step-0 gradients of the batch's loss with ``product`` as every matrix
    product of the forward (moe_reference.matmul_t swapped for it)."""
    params = tr.make_params(cfg, tensors)
    orig = ref.matmul_t
    ref.matmul_t = product
    try:
        terms = tr.loss_terms(cfg, params, batch["tokens"], batch["aux_loss_alpha"], batch["z_loss_coef"])
    finally:
        ref.matmul_t = orig
    terms["loss"].backward()
    return OrderedDict((n, p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in params.items())


def max_rel_diff(a, b):
    return max(float((a[n] - b[n]).abs().max()) / max(float(b[n].abs().max()), 1e-30) for n in b)


def bf16_checks(label, cfg, tensors, batch, exp):
    res = json.loads(json.dumps(tr.train(cfg, tensors, batch, bf16=True)))
    report("%s expected_train_bf16.json reproduced" % label, res == exp,
           "steps=%d loss=%s" % (batch["steps"], ["%.6f" % x for x in exp["loss"]]))
    params = tr.make_params(cfg, tensors)
    with torch.no_grad():
        terms = tr.loss_terms(cfg, params, batch["tokens"], 0.0, 0.0, bf16=True)
        tot, cnt = 0.0, 0
        for seq in batch["tokens"]:
            logits, _ = ref.forward(cfg, tensors, seq[:-1], bf16_products=True)
            lp = logits.log_softmax(-1)
            for t, y in enumerate(seq[1:]):
                tot -= float(lp[t, y])
                cnt += 1
    err = abs(float(terms["loss"]) - tot / cnt)
    report("%s bf16 loss(a=0,z=0) == mean CE" % label, err < 1e-12,
           "loss=%.15f ce=%.15f diff=%.1e" % (float(terms["loss"]), tot / cnt, err))
    fn = step0_grads(cfg, tensors, batch, tr.matmul_t_bf16_train)
    hook = step0_grads(cfg, tensors, batch, ste_hook_product)
    plain = step0_grads(cfg, tensors, batch, ref.matmul_t_bf16)
    d_hook, d_plain = max_rel_diff(fn, hook), max_rel_diff(plain, fn)
    report("%s bf16 Function == STE + gradient hook" % label, d_hook < 1e-12,
           "max rel diff %.1e over %d tensors (autograd through .to(bfloat16) differs by %.1e)" % (
               d_hook, len(fn), d_plain))


def main():
    torch.set_num_threads(1)
    root = sys.argv[1]
    rng = torch.Generator().manual_seed(7)
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "expected_train.json")):
            continue
        cfg, tensors = ref.load_model_dir(d)
        batch = tr.load_batch(os.path.join(d, "batch.json"))
        with open(os.path.join(d, "expected_train.json")) as f:
            exp = json.load(f)
        res = json.loads(json.dumps(tr.train(cfg, tensors, batch)))
        report("%s expected_train.json reproduced" % name, res == exp,
               "steps=%d loss=%s" % (batch["steps"], ["%.6f" % x for x in exp["loss"]]))
        if tr.uses_router_options(cfg, batch):
            router_option_checks(name, cfg, tensors, batch)
            continue
        batched_check(name, cfg, tensors, batch)
        bf16_path = os.path.join(d, "expected_train_bf16.json")
        if os.path.exists(bf16_path):
            with open(bf16_path) as f:
                bf16_checks(name, cfg, tensors, batch, json.load(f))
        variants = [(name, cfg, tensors)]
        if cfg["model_type"] == "mixtral":
            tcfg = dict(cfg, tie_word_embeddings=True)
            tt = OrderedDict((k, v) for k, v in tensors.items() if k != "lm_head.weight")
            variants.append((name + "+tied", tcfg, tt))
        for label, c, t in variants:
            fd_check(label, c, t, batch, "loss", batch["aux_loss_alpha"], batch["z_loss_coef"], rng)
            if label == name:
                fd_check(label, c, t, batch, "aux_loss", 1.0, 0.0, rng)
                fd_check(label, c, t, batch, "z_loss", 0.0, 1.0, rng)
                ce_check(label, c, t, batch)
                aux_hf_check(label, c, t, batch)
                adamw_check(label, c, t, batch, exp)
            else:
                r2 = tr.train(c, t, batch)
                g = r2["grads"]
                report("%s names" % label, "lm_head.weight" not in g and "model.embed_tokens.weight" in g,
                       "%d tensors, embed grad norm %.6f" % (
                           len(g), math.sqrt(sum(x * x for x in g["model.embed_tokens.weight"]))))
                adamw_check(label, c, t, batch, r2)
    print("FAILED: %s" % FAILED if FAILED else "all train reference checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
