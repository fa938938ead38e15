#!/usr/bin/python3
"""Eager PyTorch peer for `moelab-cli bench --shape NAME`: the same checkpoint, in bf16.

Opens a model folder (config.json + model.safetensors, as written by the lab's random
checkpoint generator or a real OLMoE / GraniteMoE / Qwen3-MoE checkpoint in BF16), maps the
safetensors file and views every tensor in place (torch.frombuffer over the mmap: the header is
parsed here, nothing is copied, so this process and moelab share the page cache instead of
holding the weights twice), then runs the family's forward as transformers writes it in eager
mode (modeling_olmoe.py, modeling_granitemoe.py, modeling_qwen3_moe.py: RMSNorm in fp32 and back,
rotate-half RoPE with fp32 cos/sin cast to bf16, eager attention with an fp32 softmax, the MoE
block's loop over the experts that were hit with index_add_) with a KV cache (per layer, grown
with torch.cat as DynamicCache does). Measures in this process:

  first_token_s         open the checkpoint + --prompt token prefill + the greedy first token
  decode_tokens_per_s   --decode tokens one at a time (greedy) after the prompt
  prefill_tokens_per_s  one forward over --prefill tokens (logits for all positions)
  peak_rss_bytes        getrusage ru_maxrss (mapped weight pages included, as for moelab)

and prints ONE JSON line. Random prompt ids come from torch.Generator seeded 7.

    /usr/bin/python3 tests/reference/bench_shape_peer.py --dir ~/.cache/moelab/shapes/olmoe-1b-7b \\
        --prompt 32 --decode 64 --prefill 128 --threads 2
"""
import argparse
import json
import math
import mmap
import resource
import struct
import sys
import time
import warnings

import torch
import torch.nn.functional as F

DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def open_safetensors(path):
    """name -> tensor viewing the mapped file (no copy)."""
    f = open(path, "rb")
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        dt = DTYPES[t["dtype"]]
        count = (e - b) // torch.tensor([], dtype=dt).element_size()
        ten = torch.frombuffer(mm, dtype=dt, count=count, offset=base + b) if count else torch.empty(0, dtype=dt)
        out[name] = ten.view(t["shape"])
    return out, (f, mm)


class Model:
    def __init__(self, d):
        cfg = json.load(open(d + "/config.json"))
        self.cfg = cfg
        self.mt = cfg["model_type"]
        self.w, self._keep = open_safetensors(d + "/model.safetensors")
        self.H = cfg["hidden_size"]
        self.L = cfg["num_hidden_layers"]
        self.NH = cfg["num_attention_heads"]
        self.NKV = cfg.get("num_key_value_heads", self.NH)
        self.D = cfg.get("head_dim") or self.H // self.NH
        self.K = cfg["num_experts_per_tok"]
        self.E = cfg.get("num_experts") or cfg.get("num_local_experts")
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.norm_topk = cfg.get("norm_topk_prob", False)
        self.emb_mult = cfg.get("embedding_multiplier", 1.0)
        self.res_mult = cfg.get("residual_multiplier", 1.0)
        self.logits_scaling = cfg.get("logits_scaling", 1.0)
        self.scale = cfg.get("attention_multiplier") if self.mt == "granitemoe" else self.D ** -0.5
        theta = float(cfg.get("rope_theta", 10000.0))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.D, 2, dtype=torch.int64).float() / self.D))
        self.lm_head = self.w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else self.w["lm_head.weight"]
        if self.mt not in ("olmoe", "granitemoe", "qwen3_moe"):
            sys.exit(f"bench_shape_peer: model_type {self.mt} not implemented here")

    def rms(self, x, w):
        dt = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * x.to(dt)

    def rope(self, pos):
        freqs = torch.outer(pos.float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16)

    @staticmethod
    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def attention(self, l, x, cos, sin, cache):
        p = f"model.layers.{l}.self_attn."
        T = x.shape[0]
        q, k, v = F.linear(x, self.w[p + "q_proj.weight"]), F.linear(x, self.w[p + "k_proj.weight"]), F.linear(x, self.w[p + "v_proj.weight"])
        if self.mt == "olmoe":  # q_norm / k_norm over the whole projection
            q, k = self.rms(q, self.w[p + "q_norm.weight"]), self.rms(k, self.w[p + "k_norm.weight"])
        q = q.view(T, self.NH, self.D).transpose(0, 1)
        k = k.view(T, self.NKV, self.D).transpose(0, 1)
        v = v.view(T, self.NKV, self.D).transpose(0, 1)
        if self.mt == "qwen3_moe":  # per-head norms before RoPE
            q, k = self.rms(q, self.w[p + "q_norm.weight"]), self.rms(k, self.w[p + "k_norm.weight"])
        q, k = q * cos + self.rot(q) * sin, k * cos + self.rot(k) * sin
        if cache[l] is not None:
            k, v = torch.cat((cache[l][0], k), dim=1), torch.cat((cache[l][1], v), dim=1)
        cache[l] = (k, v)
        rep = self.NH // self.NKV
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=0), v.repeat_interleave(rep, dim=0)
        S = k.shape[1]
        a = torch.matmul(q, k.transpose(1, 2)) * self.scale  # [NH,T,S]
        if T > 1:
            mask = torch.full((T, S), float("-inf")).triu(S - T + 1).to(a.dtype)
            a = a + mask
        a = torch.softmax(a, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(a, v).transpose(0, 1).reshape(T, self.NH * self.D)
        return F.linear(o, self.w[p + "o_proj.weight"])

    def moe(self, l, x):
        p = f"model.layers.{l}."
        if self.mt == "granitemoe":
            logits = F.linear(x, self.w[p + "block_sparse_moe.router.layer.weight"]).float()
            top_logits, idx = logits.topk(self.K, dim=1)
            gates = torch.softmax(top_logits, dim=1).to(x.dtype)
        else:
            logits = F.linear(x, self.w[p + "mlp.gate.weight"])
            probs = torch.softmax(logits, dim=1, dtype=torch.float)
            gates, idx = torch.topk(probs, self.K, dim=-1)
            if self.norm_topk:
                gates = gates / gates.sum(dim=-1, keepdim=True)
            gates = gates.to(x.dtype)
        out = torch.zeros_like(x)
        hit = torch.unique(idx).tolist()
        for e in hit:
            tok, slot = torch.where(idx == e)
            xe = x[tok]
            if self.mt == "granitemoe":
                gu = F.linear(xe, self.w[p + "block_sparse_moe.input_linear.weight"][e])
                g, u = gu.chunk(2, dim=-1)
                y = F.linear(F.silu(g) * u, self.w[p + "block_sparse_moe.output_linear.weight"][e])
            else:
                q = p + f"mlp.experts.{e}."
                y = F.linear(F.silu(F.linear(xe, self.w[q + "gate_proj.weight"])) * F.linear(xe, self.w[q + "up_proj.weight"]),
                             self.w[q + "down_proj.weight"])
            out.index_add_(0, tok, y * gates[tok, slot, None])
        return out

    def forward(self, ids, cache, pos0):
        T = ids.shape[0]
        x = F.embedding(ids, self.w["model.embed_tokens.weight"]) * self.emb_mult
        cos, sin = self.rope(torch.arange(pos0, pos0 + T))
        for l in range(self.L):
            p = f"model.layers.{l}."
            x = x + self.attention(l, self.rms(x, self.w[p + "input_layernorm.weight"]), cos, sin, cache) * self.res_mult
            x = x + self.moe(l, self.rms(x, self.w[p + "post_attention_layernorm.weight"])) * self.res_mult
        x = self.rms(x, self.w["model.norm.weight"])
        return F.linear(x, self.lm_head) / self.logits_scaling


def main():
    warnings.filterwarnings("ignore", message="The given buffer is not writable")
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--logits", help="comma-separated token ids: print this forward's logits [T,V] as JSON instead")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.logits:
        with torch.inference_mode():
            m = Model(a.dir)
            ids = torch.tensor([int(t) for t in a.logits.split(",")])
            print(json.dumps(m.forward(ids, [None] * m.L, 0).float().tolist()))
        return
    gen = torch.Generator().manual_seed(7)
    with torch.inference_mode():
        t0 = time.perf_counter()
        m = Model(a.dir)
        load_s = time.perf_counter() - t0
        V = m.lm_head.shape[0]
        ids = torch.randint(0, V, (max(a.prompt, a.prefill),), generator=gen)
        cache = [None] * m.L
        logits = m.forward(ids[: a.prompt], cache, 0)
        nxt = int(logits[-1].float().argmax())
        first_s = time.perf_counter() - t0
        t = time.perf_counter()
        for i in range(a.decode):
            logits = m.forward(torch.tensor([nxt]), cache, a.prompt + i)
            nxt = int(logits[-1].float().argmax())
        decode_s = time.perf_counter() - t
        finite = bool(torch.isfinite(logits.float()).all())
        t = time.perf_counter()
        m.forward(ids[: a.prefill], [None] * m.L, 0)
        prefill_s = time.perf_counter() - t
    print(json.dumps({
        "first_token_s": first_s, "load_s": load_s, "prompt_prefill_s": first_s - load_s,
        "decode_tokens_per_s": a.decode / decode_s, "prefill_tokens_per_s": a.prefill / prefill_s,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "logits_finite": finite, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
        "setting": f"eager bf16, torch threads {torch.get_num_threads()}, weights mapped zero-copy",
    }))


if __name__ == "__main__":
    main()
