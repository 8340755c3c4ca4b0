"""The layer-selection text a user types ("input 4-8, output 0-5", "double 0-18, single 0-37").

Grammar (ASCII only, case-insensitive; items separated by commas, semicolons or new lines):

    item    := "all" | group [ target { target } ]     group: ASCII letters, or an alias
    target  := range [ ":" [ range ] ]      blocks, then optionally transformer indices in them
    range   := N | N "-" M                  inclusive; N, M: digits 0-9, at most 6 of them

    "input 4-8"        blocks 4..8 of the input group, every transformer in them
    "output 1:0-3"     output block 1, transformer indices 0..3
    "middle"           the whole middle group
    "double 0-18, single 0-37"

Blanks are ASCII spaces and tabs (also CR, form feed and vertical tab). Any other character is an
error that names it: the grammar stays the same in every language, so the GAG Layers node's
JavaScript port (web/js/gag_layer_spec.js) gives the very same results and messages, which quote
the user's text plainly between single quotes.

A model's attention layers are ``LayerRef(group, block, sub)``; ``sub`` is the transformer index
inside a block for UNets and None for DiTs, whose blocks hold one attention each. Parsing is
separate from resolving: the text is checked for syntax alone, then resolved against the layers
a real model has, and anything that matches no layer is an error that lists what exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Optional

__all__ = ["LayerRef", "LayerPattern", "parse_layer_spec", "resolve_layers", "describe_layers",
           "GROUP_ALIASES"]

GROUP_ALIASES = {"down": "input", "in": "input", "up": "output", "out": "output", "mid": "middle"}
MAX_LENGTH = 10_000
MAX_DIGITS = 6  # no model has a million blocks; keeps every number exact in JavaScript too
_BLANKS = " \t\r\f\v"
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9: \t\r\f\v-]")
_RANGE = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")
_ALLOWED = ("a selection holds only ASCII letters, digits 0-9, '-', ':', spaces, tabs, commas, "
            "semicolons and new lines")


@dataclass(frozen=True, order=True)
class LayerRef:
    """One patchable attention layer: its group ("input", "double", …), block and transformer index."""
    group: str
    block: int
    sub: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.group} {self.block}" + ("" if self.sub is None else f":{self.sub}")


@dataclass(frozen=True)
class LayerPattern:
    """A parsed item: a group (None for "all") with optional inclusive block and sub ranges."""
    group: Optional[str]
    blocks: Optional[tuple[int, int]] = None
    subs: Optional[tuple[int, int]] = None
    text: str = ""

    def matches(self, ref: LayerRef) -> bool:
        if self.group is not None and ref.group != self.group:
            return False
        if self.blocks is not None and not self.blocks[0] <= ref.block <= self.blocks[1]:
            return False
        if self.subs is not None:
            if ref.sub is None or not self.subs[0] <= ref.sub <= self.subs[1]:
                return False
        return True


def _name_character(ch: str) -> str:
    """'.' for printable ASCII; 'ü' (U+00FC) otherwise, so invisible characters are named too."""
    return f"'{ch}'" if "!" <= ch <= "~" else f"'{ch}' (U+{ord(ch):04X})"


def _parse_range(token: str, item: str) -> tuple[int, int]:
    m = _RANGE.match(token)
    if not m:
        raise ValueError(f"layer selection: '{token}' in '{item}' is not a number or a range "
                         f"like 4-8")
    if max(len(m.group(1)), len(m.group(2) or "")) > MAX_DIGITS:
        raise ValueError(f"layer selection: '{token}' in '{item}' has a number longer than "
                         f"{MAX_DIGITS} digits; block and transformer numbers are far smaller")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
        raise ValueError(f"layer selection: range '{token}' in '{item}' runs backwards; "
                         f"write {hi}-{lo}")
    return lo, hi


def parse_layer_spec(text: str, max_length: int = MAX_LENGTH) -> tuple[LayerPattern, ...]:
    """Parse the selection text into patterns; raises ValueError with the offending item.

    An empty text is an error: selecting nothing would make the patch a silent no-op.
    """
    if not isinstance(text, str):
        raise ValueError(f"layer selection must be text; got {type(text).__name__}")
    if len(text) > max_length:
        raise ValueError(f"layer selection is {len(text)} characters long; at most {max_length} "
                         f"are accepted")
    items = [item.strip(_BLANKS) for item in re.split(r"[,;\n]", text)]
    items = [item for item in items if item]
    if not items:
        raise ValueError("layer selection is empty; write e.g. 'input 4-8, output 0-5', "
                         "'double 0-18' or 'all'")
    patterns = []
    for item in items:
        bad = _NOT_ALLOWED.search(item)
        if bad:
            raise ValueError(f"layer selection: {_name_character(bad.group())} in '{item}' is not "
                             f"allowed; {_ALLOWED}")
        words = item.lower().split()  # only ASCII blanks are left to split on
        group = GROUP_ALIASES.get(words[0], words[0])
        if not re.fullmatch(r"[a-z]+", group):
            raise ValueError(f"layer selection: item '{item}' must start with a block group "
                             f"name such as input, middle, output, double, single, joint or all")
        if group == "all":
            if len(words) > 1:
                raise ValueError(f"layer selection: 'all' takes no numbers; got '{item}'")
            patterns.append(LayerPattern(None, text=item))
            continue
        if len(words) == 1:
            patterns.append(LayerPattern(group, text=item))
            continue
        for target in words[1:]:
            block_part, _, sub_part = target.partition(":")
            blocks = _parse_range(block_part, item)
            subs = _parse_range(sub_part, item) if sub_part else None
            patterns.append(LayerPattern(group, blocks, subs, text=f"{group} {target}"))
    return tuple(patterns)


def _compress(numbers: Iterable[int]) -> str:
    """[0, 1, 2, 5] → '0-2, 5'."""
    nums = sorted(set(numbers))
    runs, start = [], None
    for i, n in enumerate(nums):
        if start is None:
            start = n
        if i + 1 == len(nums) or nums[i + 1] != n + 1:
            runs.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ", ".join(runs)


def describe_layers(refs: Iterable[LayerRef]) -> str:
    """A compact, readable list: 'input 4-5, 7-8 (transformers 0-9); output 0-5 (…)'."""
    by_group: dict[str, dict[int, list[int]]] = {}
    for ref in sorted(set(refs), key=lambda r: (r.group, r.block, -1 if r.sub is None else r.sub)):
        by_group.setdefault(ref.group, {}).setdefault(ref.block, [])
        if ref.sub is not None:
            by_group[ref.group][ref.block].append(ref.sub)
    parts = []
    for group, blocks in by_group.items():
        text = f"{group} {_compress(blocks)}"
        sub_counts = {len(s) for s in blocks.values()}
        if sub_counts != {0}:
            subs = sorted({n for s in blocks.values() for n in s})
            text += f" (transformer indices {_compress(subs)})"
        parts.append(text)
    return "; ".join(parts)


def resolve_layers(patterns: Iterable[LayerPattern], available: Iterable[LayerRef],
                   model_name: str = "this model") -> list[LayerRef]:
    """The available layers the patterns select, in model order.

    Every pattern must select at least one layer; otherwise ValueError names the pattern, the
    model, and the layers that exist.
    """
    available = sorted(set(available), key=lambda r: (r.group, r.block, -1 if r.sub is None else r.sub))
    if not available:
        raise ValueError(f"{model_name} has no attention layers GAG can patch")
    groups = sorted({r.group for r in available})
    chosen: set[LayerRef] = set()
    for pattern in patterns:
        if pattern.group is not None and pattern.group not in groups:
            raise ValueError(f"layer selection: {model_name} has no block group "
                             f"'{pattern.group}'; its groups are {', '.join(groups)}. "
                             f"Valid layers: {describe_layers(available)}")
        hits = [ref for ref in available if pattern.matches(ref)]
        if not hits:
            raise ValueError(f"layer selection: '{pattern.text}' matches no attention layer of "
                             f"{model_name}. Valid layers: {describe_layers(available)}")
        chosen.update(hits)
    return [ref for ref in available if ref in chosen]
