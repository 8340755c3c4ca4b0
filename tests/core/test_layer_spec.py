"""Layer-selection text: parsing, resolving against a model's layers, describing them."""

from __future__ import annotations

import pytest

from gag_core.layer_spec import (GROUP_ALIASES, LayerPattern, LayerRef, describe_layers,
                                 parse_layer_spec, resolve_layers)

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


def select(text, available):
    return resolve_layers(parse_layer_spec(text), available)


# --- parsing ------------------------------------------------------------------------------------

def test_parse_ranges_and_single_blocks():
    patterns = parse_layer_spec("input 4-8, output 0-5")
    assert patterns == (LayerPattern("input", (4, 8), None, "input 4-8"),
                        LayerPattern("output", (0, 5), None, "output 0-5"))
    assert parse_layer_spec("double 3")[0].blocks == (3, 3)
    # Several targets after one group name.
    assert [p.blocks for p in parse_layer_spec("single 0-3 7 9-10")] == [(0, 3), (7, 7), (9, 10)]


def test_parse_transformer_indices():
    (pattern,) = parse_layer_spec("output 1:0-3")
    assert (pattern.group, pattern.blocks, pattern.subs) == ("output", (1, 1), (0, 3))
    (pattern,) = parse_layer_spec("input 7-8:2")
    assert (pattern.blocks, pattern.subs) == ((7, 8), (2, 2))
    # An empty transformer part means every transformer (the JS port's shared vectors agree).
    (pattern,) = parse_layer_spec("input 4:")
    assert (pattern.blocks, pattern.subs) == ((4, 4), None)


def test_parse_aliases_case_whitespace_and_separators():
    assert GROUP_ALIASES["down"] == "input" and GROUP_ALIASES["up"] == "output"
    assert GROUP_ALIASES["mid"] == "middle"
    text = "  DOWN 4-8 ;\n\tUp 0-2 \n Mid,\n\nOUTPUT   3:1  "
    groups = [(p.group, p.blocks, p.subs) for p in parse_layer_spec(text)]
    assert groups == [("input", (4, 8), None), ("output", (0, 2), None), ("middle", None, None),
                      ("output", (3, 3), (1, 1))]
    assert parse_layer_spec("in 4, out 1") == parse_layer_spec("input 4, output 1")


def test_parse_all():
    for text in ("all", "ALL", "  All  ", "all;", "all,\n"):
        (pattern,) = parse_layer_spec(text)
        assert (pattern.group, pattern.blocks, pattern.subs) == (None, None, None)
        assert pattern.matches(LayerRef("anything", 3, 1))
        assert pattern.matches(LayerRef("double", 0))


@pytest.mark.parametrize("text", ["", "   ", ",;\n", " ; , "])
def test_empty_selection(text):
    with pytest.raises(ValueError, match="empty"):
        parse_layer_spec(text)


@pytest.mark.parametrize("text,fragment", [
    ("input 8-4", "backwards"),
    ("double 19-0", "backwards"),
    ("all 3", "'all' takes no numbers"),
    ("ALL 0-5", "'all' takes no numbers"),
    ("input x", "not a number"),
    ("input 4-", "not a number"),
    ("input -3", "not a number"),
    ("input 4--8", "not a number"),
    ("input 4.5", "not a number"),
    ("input 4-8 output 0-5", "not a number"),   # a missing comma
    ("output 1:x", "not a number"),
    ("output 1:3-1", "backwards"),
    ("output 1::2", "not a number"),
    ("4-8", "must start with a block group"),
    ("input4-8", "must start with a block group"),
    ("!!!", "must start with a block group"),
    ("inpüt 4", "must start with a block group"),
])
def test_garbage_is_rejected_with_the_offending_item(text, fragment):
    with pytest.raises(ValueError, match="layer selection") as info:
        parse_layer_spec(text)
    message = str(info.value)
    assert fragment in message
    assert any(part in message for part in (text, text.split()[-1], text.lower()))


def test_enormous_text():
    with pytest.raises(ValueError, match="22000 characters long"):
        parse_layer_spec("input 4-8, " * 2000)
    with pytest.raises(ValueError, match="characters long"):
        parse_layer_spec("input 1", max_length=3)
    # Just under the default limit is still parsed in full.
    assert len(parse_layer_spec("input 4-8, " * 909)) == 909


@pytest.mark.parametrize("value", [None, 5, ["input 4"], b"input 4"])
def test_non_text(value):
    with pytest.raises(ValueError, match="must be text"):
        parse_layer_spec(value)


# --- resolving ----------------------------------------------------------------------------------

def test_resolve_paper_preset_on_sdxl():
    chosen = select("input 4-8, output 0-5", SDXL_LIKE)
    assert chosen == [r for r in SDXL_LIKE if r.group != "middle"]
    assert len(chosen) == 24 + 36


def test_resolve_transformer_indices():
    chosen = select("output 1:0-3", SDXL_LIKE)
    assert chosen == [LayerRef("output", 1, s) for s in range(4)]
    # Blocks without that many transformers simply contribute what they have.
    chosen = select("input 4-8:5-20", SDXL_LIKE)
    assert chosen == [LayerRef("input", b, s) for b in (7, 8) for s in range(5, 10)]


def test_resolve_groups_all_and_overlaps():
    assert select("middle", SDXL_LIKE) == [LayerRef("middle", 0, s) for s in range(10)]
    assert select("all", SDXL_LIKE) == sorted(SDXL_LIKE)
    assert select("ALL", FLUX_LIKE) == sorted(FLUX_LIKE)
    # Overlapping items select each layer once, in model order.
    chosen = select("double 0-5, double 3-8, single 37", FLUX_LIKE)
    assert chosen == [LayerRef("double", b) for b in range(9)] + [LayerRef("single", 37)]
    assert select("single 30-37; double 18", FLUX_LIKE) == (
        [LayerRef("double", 18)] + [LayerRef("single", b) for b in range(30, 38)])


def test_sub_indices_select_nothing_on_dits():
    with pytest.raises(ValueError, match="matches no attention layer") as info:
        select("double 0-3:0", FLUX_LIKE)
    assert "double 0-18; single 0-37" in str(info.value)


@pytest.mark.parametrize("text,model", [
    ("input 0-3", SDXL_LIKE),
    ("output 6-11", SDXL_LIKE),
    ("input 4:2", SDXL_LIKE),        # block 4 has transformers 0-1 only
    ("double 19", FLUX_LIKE),
    ("single 38-40", FLUX_LIKE),
])
def test_no_match_lists_the_valid_layers(text, model):
    with pytest.raises(ValueError, match="matches no attention layer") as info:
        resolve_layers(parse_layer_spec(text), model, model_name="tiny-model")
    message = str(info.value)
    assert repr(text) in message and "tiny-model" in message
    assert "Valid layers: " + describe_layers(model) in message


def test_unknown_group_lists_the_groups_and_layers():
    with pytest.raises(ValueError, match="no block group 'double'") as info:
        select("double 0-3", SDXL_LIKE)
    message = str(info.value)
    assert "input, middle, output" in message
    assert describe_layers(SDXL_LIKE) in message
    with pytest.raises(ValueError, match="no block group 'input'") as info:
        select("down 4", FLUX_LIKE)  # UNet alias on a DiT
    assert "double 0-18; single 0-37" in str(info.value)


def test_model_without_layers():
    with pytest.raises(ValueError, match="no attention layers"):
        resolve_layers(parse_layer_spec("all"), [], model_name="empty model")


# --- describing ---------------------------------------------------------------------------------

def test_describe_layers():
    assert describe_layers(FLUX_LIKE) == "double 0-18; single 0-37"
    assert describe_layers(SDXL_LIKE) == ("input 4-5, 7-8 (transformer indices 0-9); "
                                          "middle 0 (transformer indices 0-9); "
                                          "output 0-5 (transformer indices 0-9)")
    assert describe_layers([LayerRef("single", 5), LayerRef("single", 3), LayerRef("single", 4),
                            LayerRef("single", 9), LayerRef("single", 4)]) == "single 3-5, 9"
    assert describe_layers([LayerRef("input", 1, 0)]) == "input 1 (transformer indices 0)"
    assert describe_layers([]) == ""


def test_layer_ref_text_and_order():
    assert str(LayerRef("output", 1, 3)) == "output 1:3"
    assert str(LayerRef("double", 7)) == "double 7"
    assert sorted([LayerRef("output", 0, 1), LayerRef("input", 8, 0), LayerRef("input", 4, 1)]) == [
        LayerRef("input", 4, 1), LayerRef("input", 8, 0), LayerRef("output", 0, 1)]
