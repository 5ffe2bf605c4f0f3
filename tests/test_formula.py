"""Parsing lme4-style random-effects specifications: a table of valid and malformed specs,
the round trip through ``str``, and hypothesis-generated terms."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sklmm._formula import Term, parse_random_effects


def T(group, intercept=True, slopes=(), covariance="unstructured"):
    """A term on ``group`` written ``"a:b"``: short rows in the tables below."""
    return Term(tuple(group.split(":")), intercept, tuple(slopes), covariance)


# (spec, expected terms)
VALID = [
    ("(1 | g)", (T("g"),)),
    ("(1 + Days | Subject)", (T("Subject", True, ["Days"]),)),
    ("(Days | Subject)", (T("Subject", True, ["Days"]),)),
    ("(0 + x | g)", (T("g", False, ["x"]),)),
    ("(x - 1 | g)", (T("g", False, ["x"]),)),
    ("(-1 + x | g)", (T("g", False, ["x"]),)),
    ("(x + -1 | g)", (T("g", False, ["x"]),)),
    ("(1 + x + 0 | g)", (T("g", False, ["x"]),)),  # as in R, the last of 1/0 wins
    ("(0 + x + 1 | g)", (T("g", True, ["x"]),)),
    ("(1 + z + x + y | g)", (T("g", True, ["z", "x", "y"]),)),
    ("(1 + x || g)", (T("g", True, ["x"], "diagonal"),)),
    ("(x + y || g)", (T("g", True, ["x", "y"], "diagonal"),)),
    ("(1 || g)", (T("g"),)),  # one column: the covariance is a variance
    ("(0 + x || g)", (T("g", False, ["x"]),)),
    ("(1 | batch:cask)", (T("batch:cask"),)),
    ("(1 | a/b)", (T("a"), T("a:b"))),
    ("(1 | a/b/c)", (T("a"), T("a:b"), T("a:b:c"))),
    ("(1 | a:b/c)", (T("a:b"), T("a:b:c"))),
    ("(1 | a/b:c)", (T("a"), T("a:b:c"))),
    ("(1 + x || a/b)", (T("a", True, ["x"], "diagonal"), T("a:b", True, ["x"], "diagonal"))),
    ("(1 | Subject) + (1 | Item)", (T("Subject"), T("Item"))),
    ("(1 | g) + (0 + x | g)", (T("g"), T("g", False, ["x"]))),
    ("(1 | a/b) + (0 + x | a)", (T("a"), T("a:b"), T("a", False, ["x"]))),
    ("(1 | a) + (1 | a:b)", (T("a"), T("a:b"))),
    ("(1 + `Days x` | `my group`)", (Term(("my group",), True, ("Days x",)),)),
    ("(`1st` + `a|b` | `g:h`:k)", (Term(("g:h", "k"), True, ("1st", "a|b")),)),
    ("(`x` | `g`)", (T("g", True, ["x"]),)),
    ("  (1+x|g)+(1|h)  ", (T("g", True, ["x"]), T("h"))),
    ("\n(\t1 +\n x\t||g )\n+\n( 1|h)", (T("g", True, ["x"], "diagonal"), T("h"))),
    ("(x||g)", (T("g", True, ["x"], "diagonal"),)),
    ("(1 + x.1 + .y + _z | my_group.a)", (T("my_group.a", True, ["x.1", ".y", "_z"]),)),
    ("(1 | .g_2:h.3)", (T(".g_2:h.3"),)),
]

# (spec, fragment of the message, matched literally)
MALFORMED = [
    ("", "empty specification ''"),
    ("  \n ", "empty specification"),
    ("(1 | g", "unbalanced parentheses in '(1 | g'"),
    ("(1 | g))", "unbalanced parentheses"),
    ("((1 | g)", "unbalanced parentheses"),
    ("1 | g", "expected '(' to start a term such as '(1 | g)', found '1'"),
    (
        "(1 + x)",
        "expected '|' or '||' between the left-hand side and the grouping factor, found ')'",
    ),
    ("(1 + x g)", "expected '|' or '||'"),
    ("(1 | )", "expected a grouping factor name, found ')'"),
    ("(1 | g) + (x ||)", "expected a grouping factor name, found ')'"),
    ("( | g)", "expected a left-hand side such as '1'"),
    ("(|| g)", "expected a left-hand side"),
    ("(1 + | g)", "expected '1', '0' or a column name on the left of '|', found '|'"),
    ("(2 + x | g)", "found '2'"),
    ("(1.5 | g)", "found '1.5'"),
    ("(x + x | g)", "the slope 'x' is named twice"),
    ("(1 + x + `x` | g)", "the slope 'x' is named twice"),
    ("(x - y | g)", "expected '1' after '-'"),
    ("(x - 0 | g)", "expected '1' after '-'"),
    ("(x - - 1 | g)", "expected '1' after '-'"),
    ("(0 | g)", "the term '(0 | g)' has no column"),
    ("(-1 | g)", "has no column"),
    ("(1 | g) x", "expected '+' between terms or the end of the specification, found 'x'"),
    ("(1 | g) (1 | h)", "expected '+' between terms"),
    ("(1 | g) +", "expected '(' to start a term such as '(1 | g)', found the end"),
    ("+ (1 | g)", "expected '(' to start a term"),
    ("(1 | g h)", "expected ')' to close the term, found 'h'"),
    ("((1 | g))", "expected '1', '0' or a column name"),
    (
        "(1 | g) + (1 | g)",
        "the terms '(1 | g)' and '(1 | g)' both give the column(s) ['(Intercept)']",
    ),
    ("(1 + x | g) + (0 + x + y | g)", "both give the column(s) ['x'] for the grouping factor 'g'"),
    ("(1 | a/b) + (1 | a)", "'(1 | a/b)' and '(1 | a)' both give"),
    ("(1 | a:b) + (1 | b:a)", "both give the column(s) ['(Intercept)']"),
    ("(1 | a:a)", "the factor 'a' appears twice in the grouping 'a:a'"),
    ("(1 | a/a)", "the factor 'a' appears twice"),
    ("(1 | a:b/a)", "appears twice in the grouping 'a:b:a'"),
    ("(1 | a:)", "expected a factor name after ':', found ')'"),
    ("(1 | a/)", "expected a grouping factor name, found ')'"),
    ("(1 | 2)", "expected a grouping factor name, found '2'"),
    ("(1 | 2x)", "'2x' in '(1 | 2x)' is not a name"),
    ("(1 | `g)", "unclosed backquote at '`g)'"),
    ("(1 + `` | g)", "empty backquoted name"),
    ("(1 | g) & (1 | h)", "unexpected character '&'"),
    (
        "(x:z | g)",
        "expected '|' or '||' between the left-hand side and the grouping factor, found ':'",
    ),
    ("(1 ||| g)", "expected a grouping factor name, found '|'"),
]


@pytest.mark.parametrize(("spec", "expected"), VALID, ids=[s for s, _ in VALID])
def test_valid(spec, expected):
    assert parse_random_effects(spec) == expected


@pytest.mark.parametrize(("spec", "expected"), VALID, ids=[s for s, _ in VALID])
def test_round_trip(spec, expected):
    assert parse_random_effects(" + ".join(map(str, expected))) == expected


@pytest.mark.parametrize(("spec", "fragment"), MALFORMED, ids=[s for s, _ in MALFORMED])
def test_malformed(spec, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)) as info:
        parse_random_effects(spec)
    assert str(info.value).startswith("random_effects: ")


@pytest.mark.parametrize("spec", [None, 1, b"(1 | g)", ["(1 | g)"]])
def test_not_a_string(spec):
    with pytest.raises(TypeError, match=f"random_effects must be a str.*got {type(spec).__name__}"):
        parse_random_effects(spec)


def test_term_text_and_properties():
    t = T("batch:cask", True, ["Days", "log dose"], "diagonal")
    assert str(t) == "(1 + Days + `log dose` || batch:cask)"
    assert t.name == "batch:cask"
    assert t.columns == ("(Intercept)", "Days", "log dose")
    assert str(T("g", False, ["x"])) == "(0 + x | g)"
    assert str(T("g")) == "(1 | g)"
    assert T("g", False, ["x"]).columns == ("x",)
    assert str(Term(("g 1", ".5"), True)) == "(1 | `g 1`:`.5`)"


def test_term_normalises():
    t = Term(["g"], 1, ["x"], "unstructured")
    assert (t.group, t.intercept, t.slopes) == (("g",), True, ("x",))
    assert Term(("g",), True, (), "diagonal").covariance == "unstructured"
    assert Term(("g",), False, ("x",), "diagonal") == T("g", False, ["x"])
    assert Term(("g",), False, ("x", "y"), "diagonal").covariance == "diagonal"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (((), True), "distinct factor names"),
        ((("g", "g"), True), "distinct factor names"),
        ((("g",), False), "has no column"),
        ((("g",), True, ("x", "x")), "repeated column"),
        ((("g",), True, ("(Intercept)",)), "repeated column"),
        ((("g",), True, ("a`b",)), "without '`'"),
        ((("",), True), "non-empty"),
        ((("g",), True, (), "banana"), "covariance 'banana'"),
    ],
)
def test_term_rejects(args, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Term(*args)


# plain identifiers, then names that need backquotes
NAMES = st.sampled_from(["g", "Subject", "x", "x.1", ".y", "_z", "T"])
NAMES |= st.sampled_from(["a b", "1st", "x-y", "a:b", "a|b", "(x)", ".5", "0", "1", "é", "+"])


@st.composite
def terms(draw):
    group = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    slopes = draw(st.lists(NAMES, max_size=3, unique=True))
    intercept = draw(st.booleans()) if slopes else True
    covariance = draw(st.sampled_from(["unstructured", "diagonal"]))
    return Term(tuple(group), intercept, tuple(slopes), covariance)


@given(terms())
def test_round_trip_one_term(term):
    assert parse_random_effects(str(term)) == (term,)


@given(st.lists(terms(), min_size=1, max_size=4, unique_by=lambda t: frozenset(t.group)))
def test_round_trip_terms(terms):
    terms = tuple(terms)
    assert parse_random_effects(" + ".join(map(str, terms))) == terms
    assert parse_random_effects("+".join(map(str, terms))) == terms


@given(st.text(alphabet="()|+-:/` 01xg2.\t", max_size=30) | st.text(max_size=30))
def test_only_value_errors(spec):
    try:
        terms = parse_random_effects(spec)
    except ValueError as error:
        assert str(error).startswith("random_effects: ")
    else:
        assert parse_random_effects(" + ".join(map(str, terms))) == terms
