#!/usr/bin/env python3
"""Check BUILD and .build_defs files against the BUILD-language subset of docs/ARCHITECTURE.md.

There is no `plz` here, so the files are parsed with Python's own parser (the
BUILD language is a Python subset) and held to the rules this project relies on:

  - no tabs, no `;`
  - no imports, no classes
  - every call passes keyword arguments only; `subinclude` takes one
    positional string
  - string literals use no prefix (r, b, u, f) and only the escapes
    \\n \\t \\\\ \\' \\" (checked on the raw source text of each string token)
  - target names (`name = "..."` of a call) follow Please's rules: letters,
    digits and . _ + ~ -; none of | $ * ? [ ] { } : ( ) & / \\ or spaces; not
    starting with . or _; not `all`; unique within a file

usage: build-checker.py FILE...   (exit 0 when every file passes, 1 otherwise)
"""

import ast
import io
import re
import sys
import tokenize

ALLOWED_ESCAPES = set("nt\\'\"")
NAME_RE = re.compile(r"^[A-Za-z0-9+~-][A-Za-z0-9._+~-]*$")
FORBIDDEN_IN_NAMES = set("|$*?[]{}:()&/\\ \t\n\"'`;#=%,")
STRING_PREFIX_RE = re.compile(r"^([A-Za-z]*)('''|\"\"\"|'|\")")


def check_name(name):
    """Return a reason the target name is refused, or None."""
    if name == "":
        return "empty target name"
    if name == "all":
        return '"all" is reserved'
    if name[0] in "._":
        return "target names must not start with . or _"
    bad = sorted(set(name) & FORBIDDEN_IN_NAMES)
    if bad:
        return "target name holds forbidden character(s) " + " ".join(repr(c) for c in bad)
    if not NAME_RE.match(name):
        return "target names may hold only letters, digits and . _ + ~ -"
    if ".." in name:
        return 'target names must not hold ".."'
    return None


def check_string_token(text):
    """Problems in one STRING token's raw source text."""
    m = STRING_PREFIX_RE.match(text)
    if not m:
        return ["unrecognised string literal"]
    prefix, quote = m.group(1), m.group(2)
    if prefix:
        return ["string prefix %r is not allowed (no raw, byte, unicode or f-strings)" % prefix]
    body = text[len(quote):-len(quote)]
    problems = []
    i = 0
    while i < len(body):
        if body[i] == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in ALLOWED_ESCAPES or nxt == "":
                problems.append("escape \\%s is not one the BUILD language decodes (only \\n \\t \\\\ \\' \\\")" % nxt)
            i += 2
            continue
        if body[i] == "\n" and len(quote) == 1:
            problems.append("line break inside a string")
        i += 1
    return problems


def check_source(path, source):
    errors = []

    def err(line, col, message):
        errors.append("%s:%d:%d: %s" % (path, line, col + 1, message))

    for n, line in enumerate(source.split("\n"), 1):
        if "\t" in line:
            err(n, line.index("\t"), "tab character (the BUILD language allows none)")

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        err(1, 0, "cannot tokenize: %s" % e)
        return errors
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string == ";":
            err(tok.start[0], tok.start[1], "';' is not allowed")
        elif tok.type == tokenize.STRING:
            for problem in check_string_token(tok.string):
                err(tok.start[0], tok.start[1], problem)
        elif tok.type == tokenize.ERRORTOKEN and tok.string.strip():
            err(tok.start[0], tok.start[1], "unexpected %r" % tok.string)
    # Python 3.12 tokenizes f-strings as FSTRING_START; older ones as STRING (caught above).
    fstring_start = getattr(tokenize, "FSTRING_START", None)
    if fstring_start is not None:
        for tok in tokens:
            if tok.type == fstring_start:
                err(tok.start[0], tok.start[1], "f-strings are not allowed")

    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        err(e.lineno or 1, (e.offset or 1) - 1, "syntax error: %s" % e.msg)
        return errors

    names = {}
    for node in ast.walk(tree):
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            err(line, col, "imports are not allowed")
        elif isinstance(node, ast.ClassDef):
            err(line, col, "classes are not allowed")
        elif isinstance(node, ast.JoinedStr):
            err(line, col, "f-strings are not allowed")
        elif isinstance(node, ast.Call):
            func = node.func.id if isinstance(node.func, ast.Name) else None
            if func == "subinclude":
                if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or not isinstance(node.args[0].value, str):
                    err(line, col, "subinclude() takes exactly one positional string")
                continue
            if node.args:
                err(line, col, "%s() is called with positional arguments; rules take keyword arguments only" % (func or "a function"))
            for kw in node.keywords:
                if kw.arg is None:
                    err(line, col, "**kwargs are not allowed in a call")
                elif kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    if not isinstance(kw.value.value, str):
                        err(line, col, "name must be a string")
                        continue
                    reason = check_name(kw.value.value)
                    if reason:
                        err(kw.value.lineno, kw.value.col_offset, "%s: %r" % (reason, kw.value.value))
                    elif kw.value.value in names:
                        err(kw.value.lineno, kw.value.col_offset, "target name %r is also defined on line %d" % (kw.value.value, names[kw.value.value]))
                    else:
                        names[kw.value.value] = kw.value.lineno
    return errors


def main(argv):
    if not argv:
        sys.stderr.write(__doc__)
        return 2
    errors = []
    for path in argv:
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError) as e:
            errors.append("%s: cannot read: %s" % (path, e))
            continue
        errors.extend(check_source(path, source))
    for e in errors:
        print(e)
    if not errors:
        print("ok: %d file(s)" % len(argv))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
