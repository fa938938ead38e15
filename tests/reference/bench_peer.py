#!/usr/bin/python3
"""Plain eager PyTorch speed peer for `moelab-cli bench`.

Builds a Mixtral-style model (random fp32 weights, HF-like modules and the
HF-style MoE forward: softmax -> top-k -> renormalise -> loop over the experts
that were hit, index_add_ back) and measures

  prefill_tokens_per_s  one forward over --prefill tokens (best of --repeats
                        after a warm-up), logits for all positions
  decode_tokens_per_s   --decode tokens generated one at a time (greedy) with a
                        KV cache after a --prompt token prompt (the prompt is not
                        timed); best of --decode-repeats after a warm-up

and prints ONE JSON line on stdout.

    /usr/bin/python3 tests/reference/bench_peer.py --layers 4 --hidden 256 --heads 8 \
        --kv-heads 8 --experts 8 --expert-hidden 512 --topk 2 --vocab 260 \
        --prefill 128 --decode 64 --threads 1

--train switches to a training benchmark of the same model (plain eager, fp32
unless --precision bf16, autograd, torch.optim.AdamW(lr 1e-3, betas (0.9,
0.95), eps 1e-8, weight decay 0.1 on tensors of >= 2 dims only),
clip_grad_norm_ 1.0, loss = mean CE +
0.01 * sum over layers of the Switch aux loss E * sum_i f_i * P_i with
f_i = top-k choices of expert i / (N*K), P_i = mean router probability) on
random [--batch, --seq + 1] token batches (a new batch per step). It runs 2
warm-up steps, times --train-steps steps (forward + backward + clip + step,
each timed on its own; the median is reported) and prints ONE JSON line:

    {"train_tokens_per_s", "train_step_ms" (median), "train_step_ms_min",
     "batch", "seq", "train_steps", "torch_threads", "openblas_num_threads",
     "blas", "torch_version", "loss_first", "loss_last"}

    /usr/bin/python3 tests/reference/bench_peer.py --train --batch 8 --seq 64 --threads 1

--device cpu|cuda (default cpu) picks where the model runs. With cuda (for
`moelab-cli bench --device cuda`, our CUDA backend against this peer on the same
NVIDIA GPU) the weights are still generated on the CPU generator and then moved,
so a seed gives the same model on both devices; every input (prefill/prompt ids,
training batches) is moved to the GPU before timing, the causal mask and the RoPE
positions are built on the GPU, and the greedy next token stays on the GPU
(no host round trip for it in the decode loop; the HF-style expert loop itself
still reads the hit experts back, as the HF forward does). Every timed interval
starts and ends with torch.cuda.synchronize(). Before timing, cuda runs one
untimed prefill and one untimed full decode (CUDA context, cuBLAS handles, the
caching allocator) on top of the usual warm-ups; --train keeps its 2 warm-up
steps. If cuda is asked for but torch.cuda.is_available() is false, one line goes
to stderr and the exit status is 3.

--precision fp32|tf32|bf16 (default fp32; the CPU accepts only fp32, anything
else exits 2 with one line on stderr):
  fp32  strict fp32 matmuls: torch.backends.cuda.matmul.allow_tf32 = False,
        torch.backends.cudnn.allow_tf32 = False,
        torch.set_float32_matmul_precision("highest")
  tf32  fp32 weights and activations, TF32 tensor-core matmuls allowed (both
        allow_tf32 flags True, matmul precision "high")
  bf16  weights and activations in torch.bfloat16 (model.to(dtype=bfloat16));
        RMSNorm and the attention/router softmaxes compute in fp32, the RoPE
        frequencies stay fp32 (cos/sin are cast to bf16), the loss is computed
        on fp32 logits. --train with bf16 trains pure bf16 parameters (AdamW on
        the bf16 tensors; no autocast, no fp32 master weights). fp32 matmul
        flags as for fp32.

Both JSON lines also carry "device" ("cpu", or the GPU's name from
torch.cuda.get_device_name()) and "precision", and with cuda "cuda_version"
(torch.version.cuda); the other keys are unchanged.

    /usr/bin/python3 tests/reference/bench_peer.py --device cuda --precision bf16 \
        --layers 4 --hidden 256 --heads 8 --kv-heads 8 --experts 8 --expert-hidden 512

--check-fixture DIR loads a mixtral fixture written by make_fixtures.py into
this module (fp32) and compares its logits with DIR/expected.json instead of
benchmarking; it proves the peer computes the same thing as the reference. It
always runs on the CPU in fp32 (--device and --precision do not apply to it).
"""

import argparse
import ctypes
import json
import math
import os
import re
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(nn.Module):
    def __init__(self, hidden, heads, kv_heads, head_dim):
        super().__init__()
        self.nh, self.nkv, self.d = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def forward(self, x, cos, sin, past):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.d).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.d).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.d).transpose(1, 2)
        c, s = cos[None, None], sin[None, None]  # [1, 1, T, D]
        q = q * c + rotate_half(q) * s
        k = k * c + rotate_half(k) * s
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        rep = self.nh // self.nkv
        if rep > 1:
            k = k[:, :, None].expand(b, self.nkv, rep, k.shape[2], self.d).reshape(b, self.nh, -1, self.d)
            v = v[:, :, None].expand(b, self.nkv, rep, v.shape[2], self.d).reshape(b, self.nh, -1, self.d)
        s_len = k.shape[2]
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.d)
        if t > 1:
            mask = torch.full((t, s_len), float("-inf"), dtype=scores.dtype, device=scores.device).triu(s_len - t + 1)
            scores = scores + mask
        p = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(p, v).transpose(1, 2).reshape(b, t, self.nh * self.d)
        return self.o_proj(out), present


class Expert(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.w1 = nn.Linear(hidden, inter, bias=False)
        self.w2 = nn.Linear(inter, hidden, bias=False)
        self.w3 = nn.Linear(hidden, inter, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoe(nn.Module):
    def __init__(self, hidden, inter, experts, topk):
        super().__init__()
        self.e, self.k = experts, topk
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList([Expert(hidden, inter) for _ in range(experts)])

    def forward(self, x):
        b, t, h = x.shape
        x = x.view(-1, h)
        probs = F.softmax(self.gate(x), dim=1, dtype=torch.float)
        w, sel = torch.topk(probs, self.k, dim=-1)
        w = (w / w.sum(dim=-1, keepdim=True)).to(x.dtype)
        if self.training:  # router statistics for the aux loss of --train
            self.last_probs, self.last_sel = probs, sel
        out = torch.zeros_like(x)
        mask = F.one_hot(sel, num_classes=self.e).permute(2, 1, 0)
        for e in (mask.sum(dim=(-1, -2)) > 0).nonzero(as_tuple=True)[0].tolist():
            idx, rows = torch.where(mask[e])
            y = self.experts[e](x[rows]) * w[rows, idx, None]
            out.index_add_(0, rows, y.to(x.dtype))
        return out.view(b, t, h)


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden, a.eps)
        self.self_attn = Attention(a.hidden, a.heads, a.kv_heads, a.head_dim)
        self.post_attention_layernorm = RMSNorm(a.hidden, a.eps)
        self.block_sparse_moe = SparseMoe(a.hidden, a.expert_hidden, a.experts, a.topk)

    def forward(self, x, cos, sin, past):
        a, present = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + a
        x = x + self.block_sparse_moe(self.post_attention_layernorm(x))
        return x, present


class Backbone(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList([Layer(a) for _ in range(a.layers)])
        self.norm = RMSNorm(a.hidden, a.eps)


class MixtralLike(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.model = Backbone(a)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        # a buffer so that .to(device) moves it; non-persistent, so not in the state dict.
        # place() keeps it fp32 when the weights go to bf16.
        inv_freq = 1.0 / (a.theta ** (torch.arange(0, a.head_dim, 2, dtype=torch.int64).float() / a.head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids, past=None):
        start = 0 if past is None else past[0][0].shape[2]
        pos = torch.arange(start, start + ids.shape[1], device=ids.device).float()
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        x = self.model.embed_tokens(ids)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)  # fp32 angles, cast for bf16
        presents = []
        for i, layer in enumerate(self.model.layers):
            x, pr = layer(x, cos, sin, None if past is None else past[i])
            presents.append(pr)
        return self.lm_head(self.model.norm(x)), presents


def blas_report():
    info = {}
    shown = torch.__config__.show()
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        m = re.search(key + r"=([^,\s]+)", shown)
        info[key.lower()] = m.group(1) if m else None
    libs = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1] if len(line.split()) >= 6 else ""
                low = os.path.basename(p).lower()
                if any(s in low for s in ("blas", "lapack", "mkl", "gomp", "iomp")) and p not in libs:
                    libs.append(p)
    except OSError:
        pass
    info["libopenblas_loaded"] = any("openblas" in p.lower() for p in libs)
    info["loaded_libs"] = libs
    ob = _openblas()
    if ob is not None:
        try:
            ob.openblas_get_config.restype = ctypes.c_char_p
            info["openblas_config"] = ob.openblas_get_config().decode()
            info["openblas_threads"] = int(ob.openblas_get_num_threads())
        except (AttributeError, OSError):
            pass
    return info


def _openblas():
    """ctypes handle of the libopenblas mapped into this process, if any."""
    try:
        with open("/proc/self/maps") as f:
            paths = [l.split()[-1] for l in f if "libopenblas" in l and len(l.split()) >= 6]
        return ctypes.CDLL(paths[0]) if paths else None
    except (OSError, IndexError):
        return None


def pin_openblas_threads(n):
    """torch.set_num_threads does not reach a BLAS_INFO=generic OpenBLAS (Debian's
    libblas.so.3 alternative), which otherwise uses one thread per core. Unless
    OPENBLAS_NUM_THREADS was given explicitly, make OpenBLAS use --threads too."""
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        return
    ob = _openblas()
    if ob is not None:
        try:
            ob.openblas_set_num_threads(int(n))
        except AttributeError:
            pass


def random_init(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(0.8 + 0.4 * torch.rand(p.shape, generator=g))
            elif name.endswith("embed_tokens.weight"):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def place(model, device, dtype):
    """Move a (CPU-initialised) model to device/dtype; the RoPE inverse frequencies stay fp32."""
    inv_freq = model.inv_freq
    model.to(device=device, dtype=dtype)
    model.inv_freq = inv_freq.to(device)
    return model


def setup_device(a):
    """Check --device/--precision and set the CUDA matmul precision. Returns an exit
    status (2 or 3) after one line on stderr, or None with a.dev, a.dtype, a.sync set."""
    if a.device == "cpu":
        if a.precision != "fp32":
            print("bench_peer: --precision %s needs --device cuda (the CPU peer is fp32 only)" % a.precision,
                  file=sys.stderr)
            return 2
        a.dev, a.dtype, a.sync = torch.device("cpu"), torch.float32, lambda: None
        return None
    if not torch.cuda.is_available():
        print("bench_peer: --device cuda asked for but torch.cuda.is_available() is false (torch %s, CUDA %s)"
              % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 3
    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    a.dev = torch.device("cuda")
    a.dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    a.sync = torch.cuda.synchronize
    return None


def device_info(a):
    """The keys every JSON line ends with."""
    info = {"device": "cpu" if a.dev.type == "cpu" else torch.cuda.get_device_name(a.dev),
            "precision": a.precision}
    if a.dev.type == "cuda":
        info["cuda_version"] = torch.version.cuda
    return info


def check_fixture(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(d, "expected.json")) as f:
        exp = json.load(f)
    if cfg["model_type"] != "mixtral":
        raise SystemExit("--check-fixture needs a mixtral fixture")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import moe_reference as ref
    a = argparse.Namespace(layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"],
                           heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"],
                           head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
                           experts=cfg["num_local_experts"], expert_hidden=cfg["intermediate_size"],
                           topk=cfg["num_experts_per_tok"], vocab=cfg["vocab_size"],
                           eps=cfg["rms_norm_eps"], theta=cfg["rope_theta"])
    m = MixtralLike(a).eval()
    sd = {k: v.float() for k, v in ref.load_checkpoint(d).items()}
    m.load_state_dict(sd, strict=True)
    toks = exp["tokens"]
    with torch.no_grad():
        full, _ = m(torch.tensor([toks]))
        # prompt + token-by-token with the KV cache, as in the benchmark
        lg, past = m(torch.tensor([toks[:4]]))
        rows = [lg[0]]
        for t in toks[4:]:
            lg, past = m(torch.tensor([[t]]), past)
            rows.append(lg[0])
    e = torch.tensor(exp["logits"], dtype=torch.float64)
    scale = float(e.abs().max())
    d_full = float((full[0].double() - e).abs().max()) / scale
    d_inc = float((torch.cat(rows).double() - e).abs().max()) / scale
    ok = d_full < 1e-4 and d_inc < 1e-4
    print(json.dumps({"fixture": d, "max_rel_diff_full": d_full, "max_rel_diff_kv": d_inc, "ok": ok}))
    return 0 if ok else 1


def switch_aux_loss(model):
    """Sum over MoE layers of E * sum_i f_i * P_i (f constant, no gradient)."""
    total = 0.0
    for layer in model.model.layers:
        moe = layer.block_sparse_moe
        probs, sel = moe.last_probs, moe.last_sel
        n, k = sel.shape
        f = torch.bincount(sel.reshape(-1), minlength=moe.e).to(probs.dtype) / (n * k)
        total = total + moe.e * (f * probs.mean(0)).sum()
    return total


def train_bench(a):
    model = MixtralLike(a)
    random_init(model, a.seed)  # on the CPU generator, then moved: same model on every device
    place(model, a.dev, a.dtype)  # bf16: pure bf16 parameters, no autocast
    model.train()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(a.seed + 2)
    warm = 2
    batches = [torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g).to(a.dev)
               for _ in range(warm + a.train_steps)]
    times, losses = [], []
    for i, tok in enumerate(batches):
        a.sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, _ = model(tok[:, :-1])
        lm = F.cross_entropy(logits.float().reshape(-1, a.vocab), tok[:, 1:].reshape(-1))  # loss in fp32
        loss = lm + a.aux_alpha * switch_aux_loss(model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        a.sync()
        dt = time.perf_counter() - t0
        losses.append(float(loss))
        if i >= warm:
            times.append(dt)
    times.sort()
    mid = len(times) // 2
    med = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])
    print(json.dumps({
        "train_tokens_per_s": a.batch * a.seq / med,
        "train_step_ms": 1e3 * med,
        "train_step_ms_min": 1e3 * times[0],
        "batch": a.batch,
        "seq": a.seq,
        "train_steps": a.train_steps,
        "torch_threads": torch.get_num_threads(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "blas": blas_report(),
        "torch_version": torch.__version__,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        **device_info(a),
    }))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--expert-hidden", type=int, default=512)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=260)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=8, help="prompt length before timed decoding")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed prefill repeats (best is kept)")
    ap.add_argument("--decode-repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rope-theta", type=float, default=1e6)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--check-fixture", default=None)
    ap.add_argument("--train", action="store_true", help="benchmark training steps instead of inference")
    ap.add_argument("--batch", type=int, default=8, help="--train: sequences per step")
    ap.add_argument("--seq", type=int, default=64, help="--train: tokens per sequence")
    ap.add_argument("--train-steps", type=int, default=10, help="--train: timed steps (after 2 warm-up)")
    ap.add_argument("--aux-alpha", type=float, default=0.01, help="--train: Switch aux loss weight")
    ap.add_argument("--lr", type=float, default=1e-3, help="--train: AdamW learning rate")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                    help="fp32 (strict), tf32 (TF32 matmuls) or bf16 weights/activations; the CPU takes fp32 only")
    a = ap.parse_args()
    rc = setup_device(a)
    if rc is not None:
        return rc
    torch.set_num_threads(max(1, a.threads))
    pin_openblas_threads(max(1, a.threads))
    if a.check_fixture:
        with torch.no_grad():
            return check_fixture(a.check_fixture)
    if a.hidden % a.heads or a.heads % a.kv_heads:
        raise SystemExit("hidden must divide by heads and heads by kv-heads")
    a.head_dim = a.hidden // a.heads
    a.theta = a.rope_theta
    if a.train:
        if a.batch < 1 or a.seq < 1 or a.train_steps < 1:
            raise SystemExit("--batch, --seq and --train-steps must be >= 1")
        return train_bench(a)
    model = MixtralLike(a).eval()
    random_init(model, a.seed)  # on the CPU generator, then moved: same model on every device
    place(model, a.dev, a.dtype)
    g = torch.Generator().manual_seed(a.seed + 1)
    prefill_ids = torch.randint(0, a.vocab, (1, a.prefill), generator=g).to(a.dev)
    prompt_ids = torch.randint(0, a.vocab, (1, a.prompt), generator=g).to(a.dev)

    def decode_run(steps):
        logits, past = model(prompt_ids)
        nxt = logits[:, -1:].argmax(-1)  # stays on the model's device
        a.sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            logits, past = model(nxt, past)
            nxt = logits[:, -1:].argmax(-1)
        a.sync()
        return time.perf_counter() - t0

    with torch.no_grad():
        if a.dev.type == "cuda":  # CUDA context, cuBLAS handles, caching allocator: untimed
            model(prefill_ids)
            decode_run(a.decode)
        model(prefill_ids)  # warm-up
        best_p = float("inf")
        for _ in range(max(1, a.repeats)):
            a.sync()
            t0 = time.perf_counter()
            model(prefill_ids)
            a.sync()
            best_p = min(best_p, time.perf_counter() - t0)
        decode_run(min(8, a.decode))  # warm-up
        best_d = min(decode_run(a.decode) for _ in range(max(1, a.decode_repeats)))

    print(json.dumps({
        "prefill_tokens_per_s": a.prefill / best_p,
        "decode_tokens_per_s": a.decode / best_d,
        "torch_threads": torch.get_num_threads(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "blas": blas_report(),
        "torch_version": torch.__version__,
        "prefill_tokens": a.prefill,
        "decode_tokens": a.decode,
        "prompt_tokens": a.prompt,
        **device_info(a),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
