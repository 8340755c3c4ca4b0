"""The tests' family registry (tests/comfy/tiny_families.py) against the family table
(nodes/adapters/families.py): every supported family has a recipe, every recipe names a family,
and every tiny model is claimed by its own family."""

from __future__ import annotations

import pytest

import tiny_families as tf

pytestmark = pytest.mark.comfy


def test_every_supported_family_has_a_recipe_and_every_recipe_a_family(family_table):
    supported = {family.id for family in family_table.FAMILIES if not family.refused}
    refused = {family.id for family in family_table.FAMILIES if family.refused}
    recipes = [recipe.family for recipe in tf.RECIPES]
    assert len(recipes) == len(set(recipes)), f"a family has two recipes: {recipes}"
    assert not supported - set(recipes), (
        f"supported families without a recipe in tests/comfy/tiny_families.py: "
        f"{sorted(supported - set(recipes))}")
    assert not set(recipes) - supported - refused, (
        f"recipes naming no family of the table: {sorted(set(recipes) - supported - refused)}")
    assert not set(recipes) & refused, (
        f"recipes for families the table refuses: {sorted(set(recipes) & refused)}")


def test_each_recipe_says_its_familys_hook_and_names_its_variants(family_table):
    for recipe in tf.RECIPES:
        assert recipe.hook == family_table.family_by_id(recipe.family).hook, recipe.family
        names = [variant.name for variant in recipe.variants]
        assert len(set(names)) == len(names), (recipe.family, names)
        assert names == [""] or all(names), (
            f"{recipe.family}: a family with several variants names every one: {names}")
        assert "-" not in recipe.family and not any("-" in name for name in names)


def test_each_recipe_is_tested_from_the_comfyui_the_table_claims(family_table):
    """The table's ``min_comfyui`` (what README and the help pages say) is what the tests skip
    below: a family the docs claim for a ComfyUI is tested on it."""
    for recipe in tf.RECIPES:
        claimed = family_table.family_by_id(recipe.family).min_comfyui
        assert recipe.min_comfyui == tuple(int(x) for x in claimed.split(".")), (
            f"{recipe.family}: the table says ComfyUI {claimed}+, the recipe tests from "
            f"{'.'.join(map(str, recipe.min_comfyui))}")


def test_every_released_layout_of_the_table_has_a_builder(family_table):
    """The layer map's layouts are checked against released models (test_frontend.py): each
    layout of the table has one in a recipe, in its own family's recipe."""
    for family in family_table.FAMILIES:
        if family.refused:
            continue
        built = set(tf.recipe(family.id).released)
        assert built == {layout.id for layout in family.layouts}, family.id


@pytest.mark.parametrize("key", tf.keys())
def test_the_tiny_model_is_claimed_by_its_own_family(family_table, key):
    """Each tiny model, built through ComfyUI's classes, is recognised as its recipe's family
    (not as a sibling sharing its class)."""
    tiny = tf.Tiny(key)
    assert family_table.find_family(tiny.patcher).id == tiny.family


@pytest.mark.parametrize("family", [recipe.family for recipe in tf.RECIPES])
def test_released_models_are_claimed_by_their_family(family_table, family):
    """Each released layout's model (full size, on the meta device) is recognised as the family
    whose recipe builds it; the layer map's check of the layouts (test_frontend.py) relies on
    these models."""
    recipe = tf.recipe(family)
    tf.skip_unavailable(recipe.key(recipe.main))
    import types
    for layout, model in tf.released_models(recipe).items():
        claimed = family_table.find_family(types.SimpleNamespace(model=model))
        assert claimed.id == family, layout
