"""Layer-selection text: the Python API around the grammar.

The grammar's results and messages, for both gag_core and its JS port, are the shared vectors in
layer_spec_cases.json (test_layer_spec_js_cases.py). Here: what only the Python side has — the
LayerRef / LayerPattern types, input that is not text, the max_length argument, numbers too long
for int() — and describe_layers on its own.
"""

from __future__ import annotations

import pytest

from gag_core.layer_spec import (LayerPattern, LayerRef, describe_layers, parse_layer_spec,
                                 resolve_layers)

# An SDXL-like UNet: input blocks 4, 5, 7, 8 with 2 / 2 / 10 / 10 transformers, middle 0 with 10,
# output blocks 0-5 with 10 / 10 / 10 / 2 / 2 / 2.
SDXL_LIKE = (
    [LayerRef("input", 4, s) for s in range(2)] + [LayerRef("input", 5, s) for s in range(2)]
    + [LayerRef("input", 7, s) for s in range(10)] + [LayerRef("input", 8, s) for s in range(10)]
    + [LayerRef("middle", 0, s) for s in range(10)]
    + [LayerRef("output", b, s) for b in range(3) for s in range(10)]
    + [LayerRef("output", b, s) for b in range(3, 6) for s in range(2)]
)
# A FLUX-like DiT: 19 double blocks, 38 single blocks, one attention each.
FLUX_LIKE = [LayerRef("double", b) for b in range(19)] + [LayerRef("single", b) for b in range(38)]


def test_patterns_and_what_they_match():
    assert parse_layer_spec("in 4-8, output 1:0-3") == (
        LayerPattern("input", (4, 8), None, "input 4-8"),
        LayerPattern("output", (1, 1), (0, 3), "output 1:0-3"))
    (every,) = parse_layer_spec("all")
    assert every.matches(LayerRef("anything", 3, 1)) and every.matches(LayerRef("double", 0))
    (dit_blocks,) = parse_layer_spec("double 0-3:0")
    assert not dit_blocks.matches(LayerRef("double", 1))  # a DiT block has no transformer index
    assert dit_blocks.matches(LayerRef("double", 1, 0))


def test_resolve_returns_layer_refs_in_model_order():
    chosen = resolve_layers(parse_layer_spec("output 0-5, input 4-8"), SDXL_LIKE)
    assert chosen == [r for r in SDXL_LIKE if r.group != "middle"] and len(chosen) == 60
    assert resolve_layers(parse_layer_spec("ALL"), FLUX_LIKE) == sorted(FLUX_LIKE)


@pytest.mark.parametrize("value", [None, 5, ["input 4"], b"input 4"])
def test_non_text(value):
    with pytest.raises(ValueError, match="must be text"):
        parse_layer_spec(value)


def test_length_limit():
    with pytest.raises(ValueError, match="22000 characters long; at most 10000"):
        parse_layer_spec("input 4-8, " * 2000)
    with pytest.raises(ValueError, match="8 characters long; at most 3"):
        parse_layer_spec("input 1,", max_length=3)
    assert len(parse_layer_spec("input 4-8, " * 909)) == 909  # just under the limit: parsed in full


def test_numbers_beyond_int_digit_limit_get_the_grammar_error():
    # CPython's int() refuses over 4300 digits with its own message; the digit limit comes first.
    with pytest.raises(ValueError, match="longer than 6 digits"):
        parse_layer_spec("input " + "9" * 9000)


def test_describe_layers():
    assert describe_layers(FLUX_LIKE) == "double 0-18; single 0-37"
    assert describe_layers(SDXL_LIKE) == ("input 4-5, 7-8 (transformer indices 0-9); "
                                          "middle 0 (transformer indices 0-9); "
                                          "output 0-5 (transformer indices 0-9)")
    assert describe_layers([LayerRef("single", 5), LayerRef("single", 3), LayerRef("single", 4),
                            LayerRef("single", 9), LayerRef("single", 4)]) == "single 3-5, 9"
    assert describe_layers([]) == ""


def test_layer_ref_text_and_order():
    assert str(LayerRef("output", 1, 3)) == "output 1:3"
    assert str(LayerRef("double", 7)) == "double 7"
    assert sorted([LayerRef("output", 0, 1), LayerRef("input", 8, 0), LayerRef("input", 4, 1)]) == [
        LayerRef("input", 4, 1), LayerRef("input", 8, 0), LayerRef("output", 0, 1)]
