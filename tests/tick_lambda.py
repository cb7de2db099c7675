"""TICKscript lambda expressions, read the way Kapacitor reads them: a small tokenizer and
recursive-descent parser for the subset the shipped templates and task vars use, so a
malformed value is caught here and not by a kapacitord that then refuses to start.

Grammar (Kapacitor's TICKscript spec, "LambdaExpr", "Primary", "LFunc"; precedence as its
parser: OR < AND < comparison < + - < * /, unary ! and -):

    expr    = and { "OR" and }
    and     = cmp { "AND" cmp }
    cmp     = sum [ ("==" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~") sum ]
    sum     = product { ("+" | "-") product }
    product = unary { ("*" | "/") unary }
    unary   = ("!" | "-") unary | primary
    primary = "(" expr ")" | number | duration | 'string' | /regex/ | TRUE | FALSE
            | "reference" | function "(" [ expr { "," expr } ] ")" | identifier (a var)

A field or tag is a "reference" (double quotes), a string is in single quotes, a regex
literal in slashes (in a task's vars a regex var is given without them: Kapacitor
compiles the value as it is). =~ and !~ take a regex on the right.
"""

import re

# Kapacitor's stateless and stateful lambda functions (docs: "Lambda expressions").
FUNCTIONS = {
    "isPresent", "bool", "int", "float", "string", "duration", "abs", "acos", "asin", "atan",
    "atan2", "ceil", "cos", "exp", "floor", "log", "log10", "max", "min", "pow", "sin", "sqrt",
    "tan", "trunc", "strContains", "strContainsRegex", "strCount", "strHasPrefix",
    "strHasSuffix", "strIndex", "strIndexAny", "strLastIndex", "strLength", "strReplace",
    "strSubstring", "strToLower", "strToUpper", "strTrim", "strTrimLeft", "strTrimPrefix",
    "strTrimRight", "strTrimSpace", "strTrimSuffix", "regexReplace", "humanBytes", "minute",
    "hour", "weekday", "day", "month", "year", "unixNano", "if", "sigma", "count", "spread",
}
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">", "=~", "!~")
DURATION_UNITS = ("ms", "u", "µ", "s", "m", "h", "d", "w")
# Constructs Python's re accepts and Go's RE2 (Kapacitor's regexp) rejects.
NOT_RE2 = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]|\(\?P=|[*+?}]\+|\(\?>")


class LambdaError(ValueError):
    pass


def check_regex(text: str) -> None:
    """A regex as Go's regexp.Compile takes it (RE2 ≈ Python re for this subset)."""
    if NOT_RE2.search(text):
        raise LambdaError(f"/{text}/: lookaround, backreference or possessive: not RE2")
    try:
        re.compile(text)
    except re.error as err:
        raise LambdaError(f"/{text}/: {err}") from err


def tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value): ref, string, regex, number, duration, bool, ident, op, end."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "\"'" or (ch == "/" and _operand_expected(out)):
            j = i + 1
            while j < len(text) and text[j] != ch:
                if text[j] == "\n":
                    break
                j += 2 if text[j] == "\\" else 1
            if j >= len(text) or text[j] != ch:
                raise LambdaError(f"unterminated {ch} at {text[i:i + 30]!r}")
            kind = {"\"": "ref", "'": "string", "/": "regex"}[ch]
            out.append((kind, text[i + 1:j]))
            i = j + 1
            continue
        m = re.match(r"\d+(?:\.\d*)?", text[i:])
        if m:
            number, i = m.group(0), i + m.end()
            unit = next((u for u in DURATION_UNITS if text.startswith(u, i)), None)
            if unit and not re.match(r"\w", text[i + len(unit):i + len(unit) + 1]):
                if "." in number:
                    raise LambdaError(f"{number}{unit}: a duration is a whole number")
                out.append(("duration", number + unit))
                i += len(unit)
            elif re.match(r"\w", text[i:i + 1]):
                raise LambdaError(f"{number}{text[i:i + 5]!r}: not a number or duration")
            else:
                out.append(("number", number))
            continue
        m = re.match(r"[A-Za-z_]\w*", text[i:])
        if m:
            word, i = m.group(0), i + m.end()
            if word in ("TRUE", "FALSE"):
                out.append(("bool", word))
            elif word in ("AND", "OR"):
                out.append(("op", word))
            elif word in ("and", "or", "not", "NOT", "true", "false"):
                raise LambdaError(f"{word}: TICKscript writes AND, OR, !, TRUE, FALSE")
            else:
                out.append(("ident", word))
            continue
        op = next((o for o in ("==", "!=", "<=", ">=", "=~", "!~", "<", ">", "+", "-", "*", "/",
                               "!", "(", ")", ",") if text.startswith(o, i)), None)
        if op is None:
            raise LambdaError(f"unexpected {text[i:i + 10]!r}")
        out.append(("op", op))
        i += len(op)
    return out + [("end", "")]


def _operand_expected(out) -> bool:
    return not out or (out[-1][0] == "op" and out[-1][1] not in (")",))


class _Parser:
    def __init__(self, text: str, variables: dict[str, str]):
        self.toks, self.pos, self.variables = tokens(text), 0, variables
        self.refs: list[str] = []

    def peek(self):
        return self.toks[self.pos]

    def take(self, value=None):
        tok = self.toks[self.pos]
        if value is not None and tok != ("op", value):
            raise LambdaError(f"expected {value!r}, found {tok[1] or 'the end'!r}")
        self.pos += 1
        return tok

    def binary(self, operators, operand):
        left = operand()
        while self.peek()[0] == "op" and self.peek()[1] in operators:
            op = self.take()[1]
            left = (op, left, operand())
        return left

    def expr(self):
        return self.binary(("OR",), lambda: self.binary(("AND",), self.cmp))

    def cmp(self):
        left = self.binary(("+", "-"), lambda: self.binary(("*", "/"), self.unary))
        if self.peek()[0] == "op" and self.peek()[1] in COMPARISONS:
            op = self.take()[1]
            right = self.binary(("+", "-"), lambda: self.binary(("*", "/"), self.unary))
            is_regex = right[0] == "regex" or (right[0] == "var" and self.variables[right[1]] == "regex")
            if (op in ("=~", "!~")) != is_regex:
                raise LambdaError(f"{op} with {right[1]!r}: =~ and !~ (only) take a regex")
            if self.peek()[0] == "op" and self.peek()[1] in COMPARISONS:
                raise LambdaError("comparisons do not chain: use AND")
            return (op, left, right)
        return left

    def unary(self):
        if self.peek() in (("op", "!"), ("op", "-")):
            return (self.take()[1], self.unary())
        return self.primary()

    def primary(self):
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "ref":
            self.refs.append(value)
            return ("ref", value)
        if kind == "regex":
            check_regex(value)
            return ("regex", value)
        if kind in ("string", "number", "duration", "bool"):
            return (kind, value)
        if kind == "ident" and self.peek() == ("op", "("):
            if value not in FUNCTIONS:
                raise LambdaError(f"{value}(): no such lambda function")
            self.take("(")
            args = []
            if self.peek() != ("op", ")"):
                args.append(self.expr())
                while self.peek() == ("op", ","):
                    self.take(",")
                    args.append(self.expr())
            self.take(")")
            return ("call", value, args)
        if kind == "ident":
            if value not in self.variables:
                raise LambdaError(f"{value}: not a var here (a field or tag is written \"{value}\")")
            return ("var", value)
        raise LambdaError(f"expected a value, found {value or 'the end'!r}")


def parse(text: str, variables: dict[str, str] | None = None):
    """(tree, refs) of a lambda expression (without `lambda:`), or LambdaError.
    `variables`: {name: type} of the vars it may use (a template's; none in a task)."""
    if text.strip().startswith("lambda:"):
        raise LambdaError("a lambda var's value is the expression, without `lambda:`")
    parser = _Parser(text, variables or {})
    tree = parser.expr()
    if parser.peek()[0] != "end":
        raise LambdaError(f"unexpected {parser.peek()[1]!r} after a complete expression")
    return tree, parser.refs


def lambdas_in(source: str) -> list[str]:
    """The text of every `lambda:` in a TICKscript: up to its call's closing parenthesis,
    or the end of the line for a var declaration."""
    out = []
    for m in re.finditer(r"\blambda:", source):
        start, i, depth, quote = m.end(), m.end(), 0, None
        while i < len(source):
            ch = source[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    break
                depth -= 1
            elif ch == "\n" and depth == 0:
                break
            i += 1
        out.append(source[start:i].strip())
    return out
