#!/usr/bin/env python3
"""Writes src/unicode_tables.rs: the Unicode facts the BERT normaliser needs, from Python's
unicodedata (the Rust std has no general categories). Run from this directory:
    python gen_unicode_tables.py
Deterministic for a given Python (its Unicode version is written into the file)."""
import unicodedata


def ranges(pred):
    out, start = [], None
    for cp in range(0x110000):
        ok = pred(cp)
        if ok and start is None:
            start = cp
        if not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def cat(cp):
    return unicodedata.category(chr(cp))


def fmt(name, rs):
    body = ",\n".join("    ({:#06x}, {:#06x})".format(a, b) for a, b in rs)
    return f"pub static {name}: &[(u32, u32)] = &[\n{body},\n];\n"


def main():
    punct = ranges(lambda cp: cat(cp).startswith("P"))
    mn = ranges(lambda cp: cat(cp) == "Mn")
    cf = ranges(lambda cp: cat(cp) in ("Cf", "Co", "Cs"))
    acc = []
    for cp in range(0xC0, 0x30000):
        if 0xAC00 <= cp <= 0xD7A3:
            continue  # Hangul: decomposed arithmetically
        c = chr(cp)
        d = unicodedata.normalize("NFD", c)
        if d == c:
            continue
        s = "".join(x for x in d if unicodedata.category(x) != "Mn")
        if s != c and s:
            acc.append((cp, s))
    with open("src/unicode_tables.rs", "w") as f:
        f.write(f"""//! Unicode tables for BERT normalisation, written by `gen_unicode_tables.py`
//! from Python's unicodedata (Unicode {unicodedata.unidata_version}); sorted, non-overlapping,
//! inclusive ranges. Do not edit.
//!
//! * `PUNCTUATION`: general category P* (BertPreTokenizer splits on these);
//! * `NONSPACING_MARKS`: category Mn (removed when stripping accents, after NFD);
//! * `FORMAT_CHARS`: categories Cf, Co, Cs (removed by clean_text, with Cc);
//! * `DECOMPOSED`: each character whose NFD differs from it once its Mn marks are
//!   removed, with that stripped NFD (Hangul syllables are decomposed arithmetically).

#![allow(clippy::unreadable_literal)]

""")
        f.write(fmt("PUNCTUATION", punct) + "\n")
        f.write(fmt("NONSPACING_MARKS", mn) + "\n")
        f.write(fmt("FORMAT_CHARS", cf) + "\n")
        esc = lambda s: "".join("\\u{%x}" % ord(ch) if ord(ch) > 0x7E else ch for ch in s)
        body = ",\n".join('    ({:#06x}, "{}")'.format(a, esc(s)) for a, s in acc)
        f.write(f"pub static DECOMPOSED: &[(u32, &str)] = &[\n{body},\n];\n")


if __name__ == "__main__":
    main()
