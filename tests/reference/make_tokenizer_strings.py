#!/usr/bin/env python3
"""Deterministic test strings for MoE Lab's tokenizer tests (no downloads).

    python3 make_tokenizer_strings.py [-o strings.json] [--count N] [--seed S] [--categories]
    python3 make_tokenizer_strings.py --bench-text FILE [--mb 10]

Writes a JSON array of strings (default 3,000; at least --count) covering:
prose in many scripts, emoji (ZWJ families, skin tones, flags, keycaps, tag
sequences), combining marks in NFC and NFD form, code, whitespace runs, numbers,
every special token of the four reference tokenizers (qwen3, deepseek_v3, gptoss,
llama2) embedded in text, and unusual but valid UTF-8 (controls, noncharacters,
private use, bidi controls, astral-plane symbols, U+0000).

All characters are assigned in Unicode 14.0 (Python 3.11's unicodedata), or are
private-use/noncharacters: the Rust library's regex engine (Oniguruma, Unicode 16)
and Debian 12's PCRE2 10.42 (Unicode 14) disagree about letters assigned later,
so such characters are left out on purpose.

--categories writes [{"category": C, "text": S}, ...] instead of plain strings.
--bench-text writes a ~N MB UTF-8 text (the same mix, long lines) for throughput.
"""
import argparse
import json
import os
import random
import sys
import unicodedata

PROSE = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "It's a truth universally acknowledged, isn't it? We'll see; they'd agree, I'm sure.",
        "Mixture-of-experts models route each token to a few experts chosen by a learned router.",
        "She said: \"Don't touch that!\" -- and then (quietly) left the room...",
        "HELLO WORLD, THIS IS SHOUTING. ThisIsCamelCase and snake_case_names.",
        "In 1969, Apollo 11 landed on the Moon; 600 million people watched.",
    ],
    "fr": [
        "Les élèves ont étudié la théorie des graphes à l'université de Montréal.",
        "Où est la bibliothèque ? Là-bas, près de l'église Saint-Étienne.",
        "Ça coûte 12,50 € — c'est cher ! « Vraiment ? » demanda-t-il.",
    ],
    "de": [
        "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
        "Die Größe der Straße überraschte die Fußgänger in München.",
    ],
    "es": [
        "¿Dónde está el niño? ¡Allí, junto a la señora Muñoz!",
        "El pingüino Wenceslao hizo kilómetros bajo exhaustiva lluvia y frío.",
    ],
    "pl": ["Zażółć gęślą jaźń. Pchnąć w tę łódź jeża lub ośm skrzyń fig."],
    "cs": ["Příliš žluťoučký kůň úpěl ďábelské ódy."],
    "tr": ["Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul'da ılık bir gün."],
    "vi": ["Tiếng Việt có nhiều dấu: ả, ã, ạ, ằ, ẳ, ẵ, ặ, ề, ể, ễ, ệ, ữ, ự.",
           "Tôi yêu Hà Nội và thành phố Hồ Chí Minh."],
    "is": ["Kæmi ný öxi hér, ykist þjófum nú bæði víl og ádrepa."],
    "ru": [
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "Москва — столица России. В 2024 году население превысило 13 млн.",
        "Широкая электрификация южных губерний даст мощный толчок подъёму сельского хозяйства.",
    ],
    "uk": ["Чуєш їх, доцю, га? Кумедна ж ти, прощайся без ґольфів!"],
    "el": [
        "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
        "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας· ΑΘΗΝΑ, ἀρχή, ῥήτωρ, ᾠδή.",
    ],
    "ar": [
        "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق.",
        "اللُّغَةُ العَرَبِيَّةُ جَمِيلَةٌ. العدد ٣٤٥٦ والعدد 3456.",
    ],
    "he": ["דג סקרן שט בים מאוכזב ולפתע מצא חברה.", "שָׁלוֹם עֲלֵיכֶם, מה שלומך היום?"],
    "fa": ["من به مدرسه می‌روم و کتاب می‌خوانم."],
    "hi": [
        "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम।",
        "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती। संख्या १२३४।",
    ],
    "bn": ["আমি কাঁচ খেতে পারি, তাতে আমার কোনো ক্ষতি হয় না।"],
    "ta": ["நான் கண்ணாடி சாப்பிடுவேன், அதனால் எனக்கு ஒரு கேடும் வராது."],
    "th": [
        "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
        "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ ๑๒๓๔",
    ],
    "ka": ["მინას ვჭამ და არა მტკივა."],
    "hy": ["Կրնամ ապակի ուտել և ինծի անհանգիստ չըներ։"],
    "am": ["ብርሃን ዘሪሁን በኢትዮጵያ ይኖራል።"],
    "zh": [
        "我能吞下玻璃而不伤身体。",
        "混合专家模型把每个词元路由到少数几个专家。今天是2024年6月1日。",
        "繁體中文：臺灣的資訊科技產業發達，「引號」與『書名號』。",
    ],
    "ja": [
        "私はガラスを食べられます。それは私を傷つけません。",
        "東京は日本の首都です。カタカナ、ひらがな、漢字を混ぜて書きます。ｶﾀｶﾅ半角。",
    ],
    "ko": [
        "다람쥐 헌 쳇바퀴에 타고파.",
        "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 한국어 2024년.",
    ],
}

EMOJI = [
    "😀", "😂", "🥲", "👍", "👍🏻", "👍🏽", "👍🏿", "🙋‍♀️", "🙋🏾‍♂️", "👨‍👩‍👧‍👦", "👩‍👩‍👦",
    "👨🏽‍💻", "🧑‍🚀", "👩‍❤️‍💋‍👨", "🏳️‍🌈", "🏳️‍⚧️", "🇩🇪", "🇯🇵", "🇺🇸", "🇪🇺", "🇺🇳",
    "1️⃣", "#️⃣", "*️⃣", "❤️", "❤", "☺️", "✌🏼", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🏴󠁧󠁢󠁷󠁬󠁳󠁿", "🐕‍🦺", "🐈‍⬛",
    "🫠", "🫶🏻", "🤌", "🧬", "🦀", "🐍", "🚀", "🌍", "🎉", "♻️", "™️", "©", "🆗", "🈯",
]

COMBINING_BASE = [
    "café résumé naïve coöperate fiancée", "Ångström Øresund Ærøskøbing", "Việt Nam đẹp lắm",
    "ἀρχὴ ἦν ὁ λόγος", "ÀÉÎÕÜ àéîõü ÇçÑñ", "한국어 자모 결합", "क़ ख़ ग़ ज़", "Ǆ ǅ ǆ Ǳ", "ﬁ ﬂ ﬀ ＡＢＣ",
    "Ω Å K", "x\u0301\u0302\u0303\u0304", "e\u0328\u0301 o\u031b\u0323", "Z\u0351\u0364\u0350a\u0335\u0326l\u034cg\u0360o\u0489",
    "\u0301 leading combining mark", "a\u20dd b\u20e3 c\u0338",
]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\treturn v.size() == 3 ? 0 : 1;\n}\n",
    "const add = (a, b) => a + b;\nconsole.log(`sum=${add(2, 3)}`); // 5\n",
    "fn main() {\n    let xs: Vec<u64> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", xs);\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY id DESC;",
    "{\"name\": \"moe\", \"experts\": 64, \"top_k\": 8, \"ok\": true, \"nested\": {\"a\": [1, 2.5, null]}}",
    "<!DOCTYPE html>\n<html lang=\"en\"><body><p class='x'>Hi &amp; bye</p></body></html>\n",
    "for f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> counts.log 2>&1\ndone\n",
    "    if (x != nullptr && *x >= 0x7f) { y <<= 2; z ^= ~mask; }\r\n",
    "import numpy as np\nA = np.zeros((3, 3), dtype=np.float32)\nA[0, :] += 1e-3\n",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # even squares",
    "template <typename T>\nconcept Addable = requires(T a, T b) { a + b; };\n",
    "$ git commit -m \"Fix: off-by-one in router (top_k=2)\" && git push origin main",
    "regex = r'(?i:\\'s|\\'t)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+'",
    "\\begin{equation} E = mc^2 \\quad \\sum_{i=1}^{n} x_i \\end{equation}",
    "a:=b;c<=d;e>=f;g!=h;i==j;k->l;m=>n;o::p;q...r;s||t;u&&v",
    "https://example.com/path/to/page?query=1&lang=en#section-2",
    "user@example.org, +1 (555) 123-4567, 192.168.0.1:8080",
    "    \n\tindented\n\t\tmore\n\t\t\tdeeper\n",
    "/* comment */ // line comment\n# hash comment\n-- sql comment\n",
]

WHITESPACE_UNITS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\u2009", "\u202f",
                    "\u2028", "\u2029", "\u0085", "\u000b", "\u000c", "\u180e", "\u200b", "\u001c", "\u001f"]

SPECIALS = {
    "qwen3": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|box_end|>",
              "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
              "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
              "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"],
    "deepseek_v3": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜fim▁hole｜>",
                    "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜User｜>", "<｜Assistant｜>", "<|EOT|>",
                    "<｜tool▁calls▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",
                    "<｜place▁holder▁no▁0｜>", "<｜place▁holder▁no▁17｜>", "<｜place▁holder▁no▁795｜>"],
    "gptoss": ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
               "<|start|>", "<|end|>", "<|message|>", "<|call|>", "<|endofprompt|>",
               "<|reserved_200000|>", "<|reserved_200017|>"],
    "llama2": ["<s>", "</s>", "<unk>"],
}
NEAR_SPECIALS = ["<|im_", "im_end|>", "<|endoftext", "<s", "s>", "</ s>", "<S>", "<|END|>", "<｜User",
                 "<|end|", "< |end|>", "<<s>>", "<|<|im_start|>|>", "<think", "<unk >", "<|", "|>"]

UNUSUAL = [
    "", "\u0000", "a\u0000b", "\u0001\u0002\u0003\u007f", "\u0080\u0081\u009f", "\ufeffBOM at start",
    "zero\u200bwidth\u200cjoiner\u200dnon", "\u200f\u202eRTL override\u202c\u200e", "soft\u00adhyphen",
    "\ufdd0\ufdef", "\ufffe\uffff", "\U0001fffe\U0010ffff", "\ue000\uf8ff", "\U000f0000\U00100000",
    "\ufffd replacement char", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕳𝖊𝖑𝖑𝖔 𝒽ℯ𝓁𝓁ℴ", "𝟘𝟙𝟚𝟛 𝟶𝟷𝟸", "𒀀𒀁𒀂 cuneiform", "𓀀𓀁𓂀 hieroglyphs",
    "𝄞 𝄢 musical", "☃ ☂ ★ ☆ ♠ ♣ ♥ ♦", "→ ← ↑ ↓ ⇒ ⇔ ∀ ∃ ∅ ∇ ∈ ∉ ∑ ∏ √ ∞ ≠ ≤ ≥", "¼ ½ ¾ ⅓ ⅔ ² ³ ¹ ⁰",
    "Ⅰ Ⅱ Ⅲ Ⅻ ⅿ", "①②③ ⑴⑵ ⒈⒉", "\ufe0f\ufe0e lone variation selectors", "a\U000e0101b ideographic VS",
    "\U000e0041\U000e007f lone tags", "\U0001f3fb lone skin tone", "\u200d lone ZWJ \u200d\u200d",
    "\U0001f1e6 lone regional indicator \U0001f1e6\U0001f1e7\U0001f1e8", "ｆｕｌｌｗｉｄｔｈ　ＡＳＣＩＩ！",
    "ﾊﾝｶｸ ｶﾀｶﾅ", "\u3164 hangul filler", "\u115f\u1160 jamo fillers", "\u2060word\u2060joiner",
    "ǅungla ǈ ǋ", "ß ẞ ſ ﬅ", "İı Iİ iı", "ΣΑΣ σας ς", "it'ſ it'S IT'LL we'VE", "\u0130stanbul'S",
    "\u0600\u0601 arabic number sign", "\u06dd", "\u070f syriac", "\U00011000 brahmi", "\U0001e900 adlam",
]

NUMBERS_FIXED = [
    "0", "00", "007", "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678901234567890",
    "3.14159", "-42", "+7", "1e10", "6.022e23", "1.0E-9", "0x1F", "0b1010", "0o777", "1_000_000",
    "1,234,567.89", "1.234.567,89", "1 234 567", "12:34:56", "2024-06-01", "01/02/2003", "v1.2.3-rc.4",
    "٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹", "०१२३४५६७८९", "০১২৩", "๐๑๒๓", "１２３４５", "²³¹", "½¾", "ⅫⅣ", "〇一二三",
    "$1,000", "€12.50", "¥500", "£3", "50%", "3×4=12", "10^6", "2^64-1=18446744073709551615", "π≈3.14",
    "phone: 555-0100", "ISBN 978-3-16-148410-0", "No.5", "#1", "1st 2nd 3rd 4th", "a1b2c3", "x86_64",
]


def nfd(s):
    return unicodedata.normalize("NFD", s)


def nfc(s):
    return unicodedata.normalize("NFC", s)


def all_prose():
    return [s for lang in PROSE for s in PROSE[lang]]


def gen(seed, count):
    rng = random.Random(seed)
    out = []  # (category, text), no duplicates
    seen = set()

    def add(cat, s):
        if s not in seen:
            seen.add(s)
            out.append((cat, s))

    prose = all_prose()
    # --- prose: as is, with a leading space, trailing newline, two sentences, case variants
    for s in prose:
        add("prose", s)
        add("prose", " " + s)
        add("prose", s + "\n")
        add("prose", s.upper())
        add("prose", s.lower())
        words = s.split(" ")
        for k in (1, 2, 3):
            if len(words) > k:
                add("prose", " ".join(words[:k]))
    for _ in range(200):
        a, b = rng.choice(prose), rng.choice(prose)
        add("prose-mixed", a + rng.choice([" ", "\n", "\n\n", "", "  ", "\t"]) + b)
    # scripts glued without spaces (letters of different scripts, mixed with digits)
    for _ in range(60):
        a, b = rng.choice(prose), rng.choice(prose)
        wa, wb = rng.choice(a.split()), rng.choice(b.split())
        add("prose-glued", wa + wb + str(rng.randint(0, 9999)) + rng.choice(wa.split() or [""]))

    # --- emoji
    for e in EMOJI:
        add("emoji", e)
        add("emoji", f"I like {e} a lot")
        add("emoji", e * 3)
    for _ in range(150):
        k = rng.randint(2, 6)
        add("emoji-mixed", rng.choice(["", " ", "text "]) + "".join(rng.choice(EMOJI) + rng.choice(["", " ", "\n", "a"]) for _ in range(k)))

    # --- combining marks: NFC and NFD forms
    bases = COMBINING_BASE + [s for lang in ("fr", "de", "vi", "el", "ko", "hi", "pl", "cs", "he", "ar") for s in PROSE[lang]]
    for s in bases:
        add("nfc", nfc(s))
        add("nfd", nfd(s))
        add("nfd", "mixed: " + nfc(s) + " | " + nfd(s))
    for _ in range(60):
        base = rng.choice("aeiouAEIOUnczsxyq")
        marks = "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 8)))
        add("combining-stack", base + marks + rng.choice([" ", "", "b"]) + base + marks[::-1])

    # --- code
    for c in CODE:
        add("code", c)
        add("code", c.replace("    ", "\t"))
        add("code", c.replace("\n", "\r\n"))
        add("code", "```\n" + c + "```")
        add("code", c.strip())

    # --- whitespace runs
    for u in WHITESPACE_UNITS:
        for n in (1, 2, 3, 4, 7, 16):
            add("whitespace", u * n)
            add("whitespace", "a" + u * n + "b")
            add("whitespace", "word" + u * n)
            add("whitespace", u * n + "word")
    for _ in range(200):
        ws = "".join(rng.choice(WHITESPACE_UNITS[:8]) for _ in range(rng.randint(1, 12)))
        add("whitespace-mixed", rng.choice(["", "x", "Hello", "123", "!", "世界"]) + ws + rng.choice(["", "y", "world", "456", "?", "😀"]) + rng.choice(["", ws]))
    add("whitespace", " " * 100)
    add("whitespace", "\n" * 50)
    add("whitespace", "\t" * 40 + "x")

    # --- numbers
    for n in NUMBERS_FIXED:
        add("numbers", n)
        add("numbers", f"The value is {n}.")
        add("numbers", f" {n} ")
    for _ in range(150):
        d = rng.randint(1, 25)
        digits = "".join(rng.choice("0123456789") for _ in range(d))
        add("numbers-random", rng.choice(["", "x", "id", " ", "$", "-", "(", "版本"]) + digits + rng.choice(["", ".", "%", "px", " items", ")", "年"]))

    # --- special tokens in text (all tokenizers' specials in every tokenizer's strings)
    every = [t for name in SPECIALS for t in SPECIALS[name]]
    for t in every:
        add("special", t)
        add("special", f"Hello {t} world")
        add("special", f"Hello{t}world")
        add("special", f"{t}\n{t}")
        add("special", f" {t} ")
    for t in NEAR_SPECIALS:
        add("special-near", t)
        add("special-near", f"x {t} y")
    for _ in range(120):
        parts = []
        for _ in range(rng.randint(2, 6)):
            parts.append(rng.choice(every) if rng.random() < 0.5 else rng.choice(prose + NEAR_SPECIALS + ["", " ", "\n", "123"]))
        add("special-mixed", "".join(parts))

    # --- unusual but valid UTF-8
    for u in UNUSUAL:
        add("unusual", u)
        add("unusual", f"text {u} text")
    for _ in range(60):
        add("unusual-mixed", "".join(rng.choice(UNUSUAL) for _ in range(rng.randint(2, 4))))

    # --- fill: random mixtures of all categories, until count
    pools = [prose, EMOJI, CODE, NUMBERS_FIXED, every, UNUSUAL, [nfd(s) for s in COMBINING_BASE], WHITESPACE_UNITS]
    while len(out) < count:
        k = rng.randint(1, 6)
        add("random-mix", "".join(rng.choice(rng.choice(pools)) for _ in range(k)))

    # every string: valid Unicode scalars only, assigned in Unicode 14 or private use / noncharacters
    for cat, s in out:
        for ch in s:
            cp = ord(ch)
            assert not (0xD800 <= cp <= 0xDFFF), (cat, s)
            nonchar = (cp & 0xFFFE) == 0xFFFE or 0xFDD0 <= cp <= 0xFDEF
            assert unicodedata.category(ch) != "Cn" or nonchar, (cat, repr(ch))
    return out


def bench_text(mb, seed=7):
    rng = random.Random(seed)
    prose = all_prose()
    target = int(mb * 1024 * 1024)
    parts, size = [], 0
    while size < target:
        r = rng.random()
        if r < 0.70:
            p = " ".join(rng.choice(prose) for _ in range(rng.randint(1, 5))) + "\n"
        elif r < 0.85:
            p = rng.choice(CODE) + "\n"
        elif r < 0.95:
            p = " ".join(rng.choice(NUMBERS_FIXED) for _ in range(5)) + "\n"
        else:
            p = " ".join(rng.choice(EMOJI) for _ in range(4)) + "\n\n"
        parts.append(p)
        size += len(p.encode("utf-8"))
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default="-")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--categories", action="store_true")
    ap.add_argument("--bench-text", metavar="FILE")
    ap.add_argument("--mb", type=float, default=10.0)
    a = ap.parse_args()
    if a.bench_text:
        with open(a.bench_text, "w", encoding="utf-8", newline="") as f:
            f.write(bench_text(a.mb))
        return
    items = gen(a.seed, a.count)
    data = [{"category": c, "text": s} for c, s in items] if a.categories else [s for _, s in items]
    text = json.dumps(data, ensure_ascii=False, indent=0 if a.categories else None)
    if a.output == "-":
        sys.stdout.write(text + "\n")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
        with open(a.output, "w", encoding="utf-8", newline="\n") as f:
            f.write(text + "\n")
    print(f"{len(items)} strings", file=sys.stderr)


if __name__ == "__main__":
    main()
