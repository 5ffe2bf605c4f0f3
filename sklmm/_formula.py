"""Parse lme4-style random-effects specifications such as ``"(1 + Days | Subject)"``.

The grammar, after lme4 (whitespace is ignored everywhere)::

    spec     := term ("+" term)*
    term     := "(" lhs ("|" | "||") grouping ")"
    lhs      := ["-"] item (("+" ["-"] | "-") item)*     item := "1" | "0" | name
    grouping := factor ("/" factor)*                    factor := name (":" name)*
    name     := [A-Za-z_.][A-Za-z0-9_.]* (not a number) | `any text but a backquote`

Only ``1`` may follow a ``-``. The intercept is implicit as in R: ``(x | g)`` has
one, ``0 + x``, ``-1 + x`` and ``x - 1`` remove it, and when ``1`` and ``0`` (or
``-1``) are both written the last one wins. ``||`` asks for a diagonal covariance:
lme4 splits the term into independent terms, which is the same model. Nesting
expands as in lme4: ``(1 | a/b)`` is ``(1 | a) + (1 | a:b)``.

Examples
--------
>>> from sklmm._formula import parse_random_effects
>>> terms = parse_random_effects("(1 + Days | Subject) + (1 | batch/cask)")
>>> [str(t) for t in terms]
['(1 + Days | Subject)', '(1 | batch)', '(1 | batch:cask)']
>>> terms[0].columns
('(Intercept)', 'Days')
"""

import re
from dataclasses import dataclass

COVARIANCES = ("unstructured", "diagonal")
INTERCEPT = "(Intercept)"

_IDENT = re.compile(r"(?:[A-Za-z_]|\.(?![0-9]))[A-Za-z0-9_.]*")
_NUMBER = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")
_TOKEN = re.compile(r"\s*(?:(?P<op>\|\||[|()+\-:/])|`(?P<quoted>[^`]*)`|(?P<word>[A-Za-z0-9_.]+))")


def _quote(name):
    """Return ``name`` as written in a specification, backquoted unless a plain identifier."""
    return name if _IDENT.fullmatch(name) else f"`{name}`"


@dataclass(frozen=True)
class Term:
    """One random-effects term: columns of ``X`` varying by the levels of a grouping factor.

    Parameters
    ----------
    group : tuple of str
        Names of the factors whose interaction defines the levels, e.g.
        ``("batch", "cask")`` for lme4's ``batch:cask``.
    intercept : bool
        Whether the term has a random intercept.
    slopes : tuple of str
        Names of the slope columns of ``X``, in the written order.
    covariance : {"unstructured", "diagonal"}
        Covariance of the term's random effects (``|`` or ``||``). A one-column
        term is always stored as ``"unstructured"``.

    Raises
    ------
    ValueError
        If the term has no column, a repeated factor or slope, or an unknown
        covariance.

    Examples
    --------
    >>> t = Term(("Subject",), True, ("Days",), "diagonal")
    >>> print(t)
    (1 + Days || Subject)
    >>> t.name, t.columns
    ('Subject', ('(Intercept)', 'Days'))
    """

    group: tuple[str, ...]
    intercept: bool
    slopes: tuple[str, ...] = ()
    covariance: str = "unstructured"

    def __post_init__(self):
        group, slopes = tuple(self.group), tuple(self.slopes)
        object.__setattr__(self, "group", group)
        object.__setattr__(self, "slopes", slopes)
        object.__setattr__(self, "intercept", bool(self.intercept))
        names = (*group, *slopes)
        if not all(isinstance(n, str) and n and "`" not in n for n in names):
            raise ValueError(f"random_effects: names must be non-empty str without '`': {names}")
        if not group or len(set(group)) < len(group):
            raise ValueError(f"random_effects: group must be distinct factor names, got {group}")
        if len(set(self.columns)) < len(self.columns):
            raise ValueError(f"random_effects: repeated column in {self.columns}")
        if not self.columns:
            raise ValueError(f"random_effects: the term on {self.name!r} has no column")
        if self.covariance not in COVARIANCES:
            raise ValueError(f"random_effects: covariance {self.covariance!r} not in {COVARIANCES}")
        if len(self.columns) == 1:
            object.__setattr__(self, "covariance", "unstructured")

    @property
    def name(self):
        """str : lme4's name of the grouping factor, the factors joined by ``":"``."""
        return ":".join(self.group)

    @property
    def columns(self):
        """tuple of str : lme4's column names of the term, ``"(Intercept)"`` first if present."""
        return (INTERCEPT,) * bool(self.intercept) + self.slopes

    def __str__(self):
        lhs = " + ".join(("1" if self.intercept else "0", *map(_quote, self.slopes)))
        bar = "||" if self.covariance == "diagonal" else "|"
        return f"({lhs} {bar} {':'.join(map(_quote, self.group))})"


def _tokenize(spec):
    """Split ``spec`` into ``(kind, value, start, end)`` tokens ending with an ``"end"`` token."""
    tokens, pos = [], 0
    while spec[pos:].strip():
        m = _TOKEN.match(spec, pos)
        if m is None:
            bad = spec[pos:].lstrip()
            what = "unclosed backquote" if bad[0] == "`" else f"unexpected character {bad[0]!r}"
            raise ValueError(f"random_effects: {what} at {bad!r} in {spec!r}")
        op, quoted, word = m.group("op", "quoted", "word")
        if quoted == "":
            raise ValueError(f"random_effects: empty backquoted name '``' in {spec!r}")
        if word is not None and not (_IDENT.fullmatch(word) or _NUMBER.fullmatch(word)):
            raise ValueError(
                f"random_effects: {word!r} in {spec!r} is not a name; "
                f"expected a name like 'x' or a backquoted name like '`{word}`'"
            )
        kind = "op" if op else "name" if quoted is not None or _IDENT.fullmatch(word) else "number"
        value = op or (word if quoted is None else quoted)
        tokens.append((kind, value, m.end() - len(m.group(0).lstrip()), m.end()))
        pos = m.end()
    return [*tokens, ("end", "", len(spec), len(spec))]


class _Cursor:
    """Read position in the token list of ``spec``; raises the parser's errors."""

    def __init__(self, spec):
        self.spec, self.tokens, self.i = spec, _tokenize(spec), 0

    def peek(self):
        return self.tokens[self.i]

    def accept(self, *ops):
        """Consume and return the next token if it is one of the operators ``ops``."""
        tok = self.peek()
        if tok[0] == "op" and tok[1] in ops:
            self.i += 1
            return tok
        return None

    def fail(self, expected):
        kind, _, start, end = self.peek()
        found = "the end" if kind == "end" else repr(self.spec[start:end])
        raise ValueError(f"random_effects: expected {expected}, found {found} in {self.spec!r}")

    def name(self, expected):
        if self.peek()[0] != "name":
            self.fail(expected)
        self.i += 1
        return self.tokens[self.i - 1][1]


def _parse_lhs(cur):
    """Parse the left-hand side of a term; return ``(intercept, slopes)``."""
    intercept, slopes = True, []
    if cur.peek()[1] in ("|", "||"):
        cur.fail("a left-hand side such as '1', '1 + x' or '0 + x' before '|'")
    negate = cur.accept("-") is not None
    while True:
        kind, value, _, _ = cur.peek()
        if negate and (kind, value) != ("number", "1"):
            cur.fail("'1' after '-' (only the intercept can be removed)")
        if kind == "number" and value in ("0", "1"):
            intercept = (value == "1") != negate
        elif kind == "name":
            if value in slopes:
                raise ValueError(
                    f"random_effects: the slope {_quote(value)!r} is named twice in {cur.spec!r}; "
                    "expected each slope once per term"
                )
            slopes.append(value)
        else:
            cur.fail("'1', '0' or a column name on the left of '|'")
        cur.i += 1
        if cur.accept("+"):
            negate = cur.accept("-") is not None
        elif cur.accept("-"):
            negate = True
        else:
            return intercept, tuple(slopes)


def _parse_grouping(cur):
    """Parse a grouping; ``a:b/c`` gives the expanded groups ``[("a", "b"), ("a", "b", "c")]``."""
    groups, group = [], ()
    while True:
        factor = (cur.name("a grouping factor name"),)
        while cur.accept(":"):
            factor += (cur.name("a factor name after ':'"),)
        group += factor
        if len(set(group)) < len(group):
            twice = next(g for g in group if group.count(g) > 1)
            raise ValueError(
                f"random_effects: the factor {_quote(twice)!r} appears twice in the grouping "
                f"{':'.join(map(_quote, group))!r} in {cur.spec!r}; expected distinct factors"
            )
        groups.append(group)
        if not cur.accept("/"):
            return groups


def _parse_term(cur):
    """Parse one parenthesised term; return its expanded terms (several for ``/``)."""
    start = cur.peek()[2]
    if not cur.accept("("):
        cur.fail("'(' to start a term such as '(1 | g)'")
    intercept, slopes = _parse_lhs(cur)
    bar = cur.accept("|", "||")
    if bar is None:
        cur.fail("'|' or '||' between the left-hand side and the grouping factor")
    groups = _parse_grouping(cur)
    if not cur.accept(")"):
        cur.fail("')' to close the term")
    text = cur.spec[start : cur.tokens[cur.i - 1][3]]
    if not intercept and not slopes:
        raise ValueError(
            f"random_effects: the term {text!r} has no column; expected '1' or a slope name"
        )
    covariance = "diagonal" if bar[1] == "||" else "unstructured"
    return [(text, Term(group, intercept, slopes, covariance)) for group in groups]


def parse_random_effects(spec):
    """Parse an lme4-style random-effects specification into terms.

    Parameters
    ----------
    spec : str
        Terms joined by ``"+"``, each ``"(lhs | grouping)"`` or
        ``"(lhs || grouping)"``, e.g. ``"(1 + Days | Subject) + (1 | Item)"``.
        See the module docstring for the grammar.

    Returns
    -------
    terms : tuple of Term
        The terms in the written order, nesting ``a/b`` expanded to ``a`` and ``a:b``.

    Raises
    ------
    TypeError
        If ``spec`` is not a str.
    ValueError
        If ``spec`` is malformed, or two terms on the same grouping factor share a
        column (lme4 would duplicate it). The message starts with ``"random_effects: "``.

    Examples
    --------
    >>> a, b = parse_random_effects("(x - 1 || g) + (1 | g)")
    >>> a
    Term(group=('g',), intercept=False, slopes=('x',), covariance='unstructured')
    >>> print(b)
    (1 | g)
    """
    if not isinstance(spec, str):
        raise TypeError(
            f"random_effects must be a str such as '(1 | g)', got {type(spec).__name__}"
        )
    if not spec.strip():
        raise ValueError(f"random_effects: empty specification {spec!r}; expected e.g. '(1 | g)'")
    cur, terms = _Cursor(spec), []
    opened, closed = (sum(t[:2] == ("op", p) for t in cur.tokens) for p in "()")
    if opened != closed:
        raise ValueError(
            f"random_effects: unbalanced parentheses in {spec!r}: {opened} '(' and {closed} ')'"
        )
    while True:
        for text, term in _parse_term(cur):
            for earlier_text, earlier in terms:
                shared = [c for c in term.columns if c in earlier.columns]
                if set(earlier.group) == set(term.group) and shared:
                    raise ValueError(
                        f"random_effects: the terms {earlier_text!r} and {text!r} both give "
                        f"the column(s) {shared} for the grouping factor {term.name!r}; "
                        "expected each column once per grouping factor"
                    )
            terms.append((text, term))
        if cur.peek()[0] == "end":
            return tuple(term for _, term in terms)
        if not cur.accept("+"):
            cur.fail("'+' between terms or the end of the specification")
