#!/usr/bin/env python3
"""Which strings a grammar accepts, by Python's `lark` (the oracle of formwork-grammar's tests).

    grammar_oracle.py (--lark FILE | --gbnf FILE) STRINGS [--print-lark]

STRINGS holds one JSON-encoded string per line; the answer is one line per string, `1` when
the grammar accepts it in full and `0` when not. A Lark grammar is parsed as it is; a GBNF
grammar is first turned into a Lark grammar of character-level rules (each literal and class
one regex terminal, no `%ignore`). Both use lark's Earley parser with
`lexer='dynamic_complete'`, which lets a terminal end wherever its regex matches, as
formwork-grammar's parser does. Exit status 2: the grammar could not be read; 3: lark is
missing (install it with `pip install lark==1.3.1`).
"""

import argparse
import json
import sys

try:
    import lark
except ImportError:
    print(
        "grammar_oracle.py needs the `lark` package: pip install lark==1.3.1 "
        "(cargo xtask test makes a venv with it under target/oracle-venv)",
        file=sys.stderr,
    )
    sys.exit(3)

MAX_REPETITION = 2000


def enc(c, in_class):
    """One character as Python `re` text inside a lark `/.../` regex (lark unescapes
    `\\u`, `\\U`, `\\x` itself; every other backslash pair reaches `re` as it is)."""
    o = ord(c)
    if c.isascii() and c.isalnum():
        return c
    if 0x20 <= o < 0x7F:
        return "\\" + c
    if o <= 0xFFFF:
        return "\\u%04x" % o
    return "\\U%08x" % o


class Gbnf:
    """A GBNF reader for grammars formwork-grammar already accepted (it is lenient about
    where newlines go: rules are split at `name ::=`)."""

    def __init__(self, text):
        self.toks = self.tokenize(text)
        self.i = 0
        self.names = {}

    def tokenize(self, text):
        toks, i, n = [], 0, len(text)
        while i < n:
            c = text[i]
            if c in " \t\r\n":
                i += 1
            elif c == "#":
                while i < n and text[i] not in "\r\n":
                    i += 1
            elif text.startswith("::=", i):
                toks.append(("def", None))
                i += 3
            elif c in "|()*+?.":
                toks.append((c, None))
                i += 1
            elif c == "{":
                j = text.index("}", i)
                body = text[i + 1 : j].replace(" ", "").replace("\t", "")
                lo, _, hi = body.partition(",")
                if "," not in body:
                    hi = lo
                toks.append(("rep", (int(lo), int(hi) if hi else None)))
                i = j + 1
            elif c == '"':
                i += 1
                s = []
                while text[i] != '"':
                    ch, i = self.char(text, i)
                    s.append(ch)
                toks.append(("lit", "".join(s)))
                i += 1
            elif c == "[":
                i += 1
                neg = text[i] == "^"
                if neg:
                    i += 1
                ranges = []
                while text[i] != "]":
                    lo, i = self.char(text, i)
                    hi = lo
                    if text[i] == "-" and text[i + 1] != "]":
                        hi, i = self.char(text, i + 1)
                    ranges.append((lo, hi))
                toks.append(("class", (neg, ranges)))
                i += 1
            else:
                j = i
                while j < n and (text[j].isascii() and (text[j].isalnum() or text[j] in "-_")):
                    j += 1
                if j == i:
                    raise ValueError("unexpected %r at %d" % (c, i))
                toks.append(("name", text[i:j]))
                i = j
        return toks

    @staticmethod
    def char(text, i):
        if text[i] != "\\":
            return text[i], i + 1
        e = text[i + 1]
        simple = {"n": "\n", "t": "\t", "r": "\r"}
        if e in simple:
            return simple[e], i + 2
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width:
            return chr(int(text[i + 2 : i + 2 + width], 16)), i + 2 + width
        return e, i + 2

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else (None, None)

    def rule_name(self, name):
        if name not in self.names:
            self.names[name] = "r%d" % len(self.names)
        return self.names[name]

    def to_lark(self):
        out = []
        while self.i < len(self.toks):
            kind, name = self.peek()
            assert kind == "name" and self.peek(1)[0] == "def", (kind, name)
            self.i += 2
            out.append("%s: %s" % (self.rule_name(name), self.alternates(top=True)))
        out.append("start: %s" % self.rule_name("root"))
        return "\n".join(out) + "\n"

    def alternates(self, top):
        alts = [self.sequence(top)]
        while self.peek()[0] == "|":
            self.i += 1
            alts.append(self.sequence(top))
        return " | ".join(alts)

    def sequence(self, top):
        items = []
        while True:
            kind, val = self.peek()
            if kind == "name" and top and self.peek(1)[0] == "def":
                break
            if kind == "lit":
                item = "/%s/" % "".join(enc(c, False) for c in val) if val else None
            elif kind == "class":
                neg, ranges = val
                body = "".join(
                    enc(lo, True) if lo == hi else "%s-%s" % (enc(lo, True), enc(hi, True))
                    for lo, hi in ranges
                )
                item = "/[%s%s]/" % ("^" if neg else "", body)
            elif kind == ".":
                item = "/(?s:.)/"
            elif kind == "name":
                item = self.rule_name(val)
            elif kind == "(":
                self.i += 1
                item = "(%s)" % self.alternates(top=False)
                assert self.peek()[0] == ")"
            elif kind in ("*", "+", "?", "rep"):
                last = items.pop() if items else None
                if kind == "rep":
                    lo, hi = val
                    if hi is not None and hi > MAX_REPETITION:
                        hi = None
                else:
                    lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[kind]
                item = self.repeat(last, lo, hi)
            else:
                break
            self.i += 1
            items.append(item)
        return " ".join(i for i in items if i is not None)

    @staticmethod
    def repeat(item, lo, hi):
        if item is None:
            return None
        g = "(%s)" % item
        if hi is None:
            return "%s*" % g if lo == 0 else "(%s ~ %d %s*)" % (g, lo, g)
        if hi == 0:
            return None
        return "(%s ~ %d..%d)" % (g, lo, hi) if lo != hi else "(%s ~ %d)" % (g, lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--lark", help="a Lark grammar file")
    src.add_argument("--gbnf", help="a GBNF grammar file")
    ap.add_argument("strings", nargs="?", help="one JSON string per line")
    ap.add_argument("--print-lark", action="store_true", help="print the Lark grammar used")
    args = ap.parse_args()
    try:
        if args.lark:
            with open(args.lark, encoding="utf-8") as f:
                text = f.read()
        else:
            with open(args.gbnf, encoding="utf-8") as f:
                text = Gbnf(f.read()).to_lark()
        if args.print_lark:
            print(text)
        parser = lark.Lark(text, parser="earley", lexer="dynamic_complete", start="start")
    except Exception as e:  # noqa: BLE001 - any failure to read the grammar
        print("grammar_oracle.py: cannot read the grammar: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(2)
    if not args.strings:
        return
    with open(args.strings, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            s = json.loads(line)
            try:
                parser.parse(s)
                print("1")
            except lark.exceptions.LarkError:
                print("0")


if __name__ == "__main__":
    main()
