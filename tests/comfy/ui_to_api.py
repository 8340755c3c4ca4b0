"""Convert a UI-format workflow (what ComfyUI's "Save" writes) to the API format /prompt takes.

The mapping from a node's ``widgets_values`` list to named inputs is not stored in the file: the
front end rebuilds it from the node definitions. This module does the same from a live server's
/object_info, following what ComfyUI's front end (1.2x) does:

* widgets are the inputs of type INT, FLOAT, STRING, BOOLEAN or COMBO (an option list or
  ``"COMBO"``) that are not ``forceInput``, in ``input_order`` (required, then optional);
* an input with ``control_after_generate`` or named ``seed`` / ``noise_seed`` owns two values,
  the number and the control mode ("fixed", "randomize", …), which the API format drops;
* an ``image_upload``-style combo owns an extra value for its upload button;
* a dynamic combo (``COMFY_DYNAMICCOMBO_V3``, ComfyUI 0.33+, e.g. SaveVideo's format) owns one
  value, the chosen option's key, followed by the widgets of that option's own inputs, named
  ``<combo>.<input>`` (recursively) as the API format names them; hidden inputs have no widget;
* a widget input that was turned into a socket and linked takes its value from the link.

Front-end-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) are not sent: reroutes are
followed, primitives' values are already in their targets' widgets_values. Muted nodes (mode 2)
are dropped; bypassed nodes (mode 4) pass their first input of the same type through.

Subgraphs (front end 1.2x, ``definitions.subgraphs``; a node whose type is a subgraph's id is an
instance of it) are expanded first by ``expand_subgraphs`` into one flat graph, as the front end
does before it queues a prompt: the inner nodes replace the instance, keep their own widget
values, and the subgraph's inputs and outputs are wired through to the instance's links.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Optional

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
VIRTUAL_NODE_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
SEED_NAMES = {"seed", "noise_seed"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowError(ValueError):
    """The workflow does not fit the node definitions; the message names the node and input."""


@dataclass(frozen=True)
class WidgetSlot:
    """One widget input of a node and the values it owns in widgets_values."""
    name: str
    spec: list            # the /object_info input spec: [type or options, {options}]
    first: int            # index of its value in widgets_values
    count: int            # 1, or 2 with a control/upload companion value
    required: bool = True


def input_type(spec: list) -> str:
    """The socket type of an /object_info input spec ("COMBO" for option lists)."""
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


def spec_options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_choices(spec: list) -> Optional[list]:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == DYNAMIC_COMBO:
        return [option["key"] for option in spec_options(spec).get("options", [])]
    if spec[0] == "COMBO":
        return spec_options(spec).get("options", [])
    return None


def is_widget(spec: list) -> bool:
    options = spec_options(spec)
    if input_type(spec) == DYNAMIC_COMBO:
        return not options.get("hidden")
    return input_type(spec) in WIDGET_TYPES and not options.get("forceInput")


def ordered_inputs(definition: dict) -> Iterator[tuple[str, list, bool]]:
    """(name, spec, required) for every input of a node definition, in the front end's order."""
    order = definition.get("input_order") or {k: list(v) for k, v in definition["input"].items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = definition["input"].get(section, {}).get(name)
            if spec is not None:
                yield name, spec, section == "required"


def widget_slots(definition: dict) -> list[WidgetSlot]:
    slots, index = [], 0
    for name, spec, required in ordered_inputs(definition):
        if not is_widget(spec):
            continue
        options = spec_options(spec)
        extra = bool(options.get("control_after_generate")) or name in SEED_NAMES or any(
            options.get(flag) for flag in UPLOAD_FLAGS)
        slots.append(WidgetSlot(name, spec, index, 2 if extra else 1, required))
        index += slots[-1].count
    return slots


def _option_definition(spec: list, key) -> Optional[dict]:
    """The inputs of a dynamic combo's option ``key`` as a node definition, or None."""
    for option in spec_options(spec).get("options", []):
        if option["key"] == key:
            return {"input": option.get("inputs", {})}
    return None


def widget_values_and_specs(node: dict, definition: dict) -> tuple[dict[str, Any], dict]:
    """({input name: value}, {input name: spec}) of the node's widgets, dynamic combos'
    chosen inputs included as ``<combo>.<input>``; WorkflowError when the count does not fit."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):
        raise WorkflowError(f"node {node['id']} ({node['type']}): widgets_values is a mapping; "
                            "only the list form is supported")
    named, specs, position = {}, {}, 0

    def walk(definition: dict, prefix: str) -> None:
        nonlocal position
        for slot in widget_slots(definition):
            name = prefix + slot.name
            if position + slot.count > len(values):
                # A workflow saved before a node gained optional widget inputs lacks their
                # trailing values; the front end keeps those widgets at their defaults, so the
                # server gets none. A missing required value is counted (and reported below).
                if slot.required:
                    position += slot.count
                continue
            named[name], specs[name] = values[position], slot.spec
            position += slot.count
            if input_type(slot.spec) == DYNAMIC_COMBO:
                chosen = _option_definition(slot.spec, named[name])
                if chosen is None:
                    raise WorkflowError(
                        f"node {node['id']} ({node['type']}): {name}={named[name]!r} is not "
                        f"among {combo_choices(slot.spec)}")
                walk(chosen, name + ".")

    walk(definition, "")
    if len(values) != position:
        names = ", ".join(f"{s.name}(+control)" if s.count == 2 else s.name
                          for s in widget_slots(definition))
        raise WorkflowError(f"node {node['id']} ({node['type']}): {len(values)} widgets_values "
                            f"{values!r}, but its inputs need {position}: {names}")
    return named, specs


def widget_values(node: dict, definition: dict) -> dict[str, Any]:
    """The node's widget values by input name; WorkflowError when the count does not fit."""
    return widget_values_and_specs(node, definition)[0]


# In a subgraph definition's links, the ids of its input and output boundary nodes.
SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20
MAX_SUBGRAPH_DEPTH = 32


def link_as_list(link) -> list:
    """[id, origin node, origin slot, target node, target slot, type] of a link in either the
    list form (top-level graphs) or the mapping form (subgraph definitions, newer files)."""
    if isinstance(link, dict):
        return [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                link["target_slot"], link["type"]]
    return list(link[:6])


def expand_subgraphs(workflow: dict) -> dict:
    """A copy of ``workflow`` with every subgraph instance replaced by the subgraph's nodes.

    Inner nodes get fresh ids (after the graph's largest; the same subgraph may be used twice)
    and keep their type, mode, title and widget values. A link into the instance's input k is
    carried to every inner input the subgraph's input k feeds; each consumer of the instance's
    output k is linked to the inner output that feeds the subgraph's output k (or, for an input
    wired straight to an output, to the instance's upstream). An unconnected subgraph input
    leaves the inner inputs it feeds unconnected: an inner widget input then keeps the inner
    node's own value. Nested subgraphs are expanded too. A muted instance mutes its inner
    nodes. Raises WorkflowError for what this does not model: promoted widget values on the
    instance (``proxyWidgets`` / ``widgets_values``), a bypassed instance, unknown boundary
    slots, or subgraphs nested deeper than MAX_SUBGRAPH_DEPTH.
    """
    definitions = {d["id"]: d for d in workflow.get("definitions", {}).get("subgraphs", [])}
    flat = copy.deepcopy({k: v for k, v in workflow.items() if k != "definitions"})
    if not definitions:
        return flat
    flat["links"] = [link_as_list(link) for link in flat.get("links", [])]
    next_id = {"node": max([int(n["id"]) for n in flat["nodes"]] +
                           [int(n["id"]) for d in definitions.values() for n in d["nodes"]] +
                           [int(flat.get("last_node_id") or 0)]) + 1,
               "link": max([int(link[0]) for link in flat["links"]] +
                           [int(flat.get("last_link_id") or 0)]) + 1}

    def fresh(kind: str) -> int:
        next_id[kind] += 1
        return next_id[kind] - 1

    for _ in range(MAX_SUBGRAPH_DEPTH):
        instances = [n for n in flat["nodes"] if n["type"] in definitions]
        if not instances:
            break
        for instance in instances:
            _expand_instance(flat, instance, definitions[instance["type"]], fresh)
    else:
        raise WorkflowError(f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} levels "
                            "(or a subgraph that contains itself)")
    _relink_outputs(flat)
    flat["last_node_id"] = max(int(n["id"]) for n in flat["nodes"])
    flat["last_link_id"] = max([int(link[0]) for link in flat["links"]], default=0)
    return flat


def _expand_instance(flat: dict, instance: dict, definition: dict, fresh) -> None:
    """Replace ``instance`` in ``flat`` (links as lists) by the nodes of ``definition``."""
    where = f"node {instance['id']} (subgraph {definition.get('name') or definition['id']!r})"
    if instance.get("mode") == MODE_BYPASSED:
        raise WorkflowError(f"{where}: a bypassed subgraph instance is not supported")
    promoted = (instance.get("properties") or {}).get("proxyWidgets") or instance.get(
        "widgets_values")
    if promoted:
        raise WorkflowError(f"{where}: promoted widget values {promoted!r} are not supported")
    instance_id = int(instance["id"])
    by_id = {int(link[0]): link for link in flat["links"]}
    # The instance's boundary: which outer (node, slot) feeds each of its inputs, which outer
    # (node, slot) consume each of its outputs.
    feeds = {}
    for slot, entry in enumerate(instance.get("inputs") or []):
        if entry.get("link") is not None:
            feeds[slot] = tuple(by_id[int(entry["link"])][1:3])
    consumers: dict[int, list] = {}
    for link in flat["links"]:
        if int(link[1]) == instance_id:
            consumers.setdefault(int(link[2]), []).append((int(link[3]), int(link[4]), link[5]))
    n_inputs, n_outputs = len(definition.get("inputs", [])), len(definition.get("outputs", []))

    new_ids = {int(n["id"]): fresh("node") for n in definition["nodes"]}
    inner = []
    for node in definition["nodes"]:
        node = copy.deepcopy(node)
        node["id"] = new_ids[int(node["id"])]
        if instance.get("mode") == MODE_MUTED:
            node["mode"] = MODE_MUTED
        for entry in node.get("inputs") or []:
            entry["link"] = None   # set below from the definition's links
        inner.append(node)
    # The instance and its links go; the inner nodes and the rewired links come in.
    flat["links"] = [link for link in flat["links"]
                     if instance_id not in (int(link[1]), int(link[3]))]
    index = next(i for i, n in enumerate(flat["nodes"]) if n is instance)
    flat["nodes"][index:index + 1] = inner
    outer_by_id = {int(n["id"]): n for n in flat["nodes"]}

    def connect(origin, origin_slot, target, target_slot, kind):
        link_id = fresh("link")
        flat["links"].append([link_id, origin, origin_slot, target, target_slot, kind])
        outer_by_id[target]["inputs"][target_slot]["link"] = link_id

    def check(slot: int, count: int, side: str) -> None:
        if not 0 <= slot < count:
            raise WorkflowError(f"{where}: a link uses its {side} slot {slot}, but it has "
                                f"{count}")

    for link in definition.get("links", []):
        _, origin, origin_slot, target, target_slot, kind = link_as_list(link)
        origin, target = int(origin), int(target)
        if origin == SUBGRAPH_INPUT_NODE:
            check(origin_slot, n_inputs, "input")
            source = feeds.get(origin_slot)
        else:
            source = (new_ids[origin], origin_slot)
        if source is None:
            continue   # unconnected subgraph input: the inner input stays unconnected
        if target == SUBGRAPH_OUTPUT_NODE:
            check(target_slot, n_outputs, "output")
            for outer_target, outer_slot, outer_kind in consumers.get(target_slot, []):
                connect(source[0], source[1], outer_target, outer_slot, outer_kind)
        else:
            connect(source[0], source[1], new_ids[target], target_slot, kind)


def _relink_outputs(flat: dict) -> None:
    """Rebuild every output's ``links`` list from the link table."""
    by_id = {int(n["id"]): n for n in flat["nodes"]}
    for node in flat["nodes"]:
        for entry in node.get("outputs") or []:
            entry["links"] = []
    for link_id, origin, origin_slot, *_ in flat["links"]:
        by_id[int(origin)]["outputs"][int(origin_slot)]["links"].append(link_id)


class _Graph:
    def __init__(self, workflow: dict):
        workflow = expand_subgraphs(workflow)
        self.nodes = {int(n["id"]): n for n in workflow["nodes"]}
        # link id → (origin node, origin slot, target node, target slot, type)
        self.links = {}
        for link in map(link_as_list, workflow.get("links", [])):
            self.links[int(link[0])] = (int(link[1]), int(link[2]), int(link[3]), int(link[4]),
                                        link[5])

    def source(self, link_id: int) -> Optional[tuple[int, int]]:
        """The real (node, output slot) a link carries, through reroutes and bypassed nodes;
        None when it ends at a muted node or an unconnected reroute."""
        seen = set()
        while True:
            if link_id in seen:
                raise WorkflowError(f"link {link_id} loops through reroutes/bypassed nodes")
            seen.add(link_id)
            origin, slot, _, _, kind = self.links[link_id]
            node = self.nodes[origin]
            if node["type"] == "PrimitiveNode":
                return None  # its value is already in the target's widgets_values
            if node["type"] == "Reroute" or node.get("mode") == MODE_BYPASSED:
                upstream = self._pass_through_input(node, slot, kind)
                if upstream is None:
                    return None
                link_id = upstream
                continue
            if node.get("mode") == MODE_MUTED:
                return None
            return origin, slot

    def _pass_through_input(self, node: dict, slot: int, kind: str) -> Optional[int]:
        inputs = node.get("inputs") or []
        if node["type"] == "Reroute":
            return inputs[0].get("link") if inputs else None
        out_type = (node.get("outputs") or [{}])[slot].get("type", kind)
        for entry in inputs:
            if entry.get("link") is not None and entry.get("type") in (out_type, "*"):
                return entry["link"]
        return None


def ui_to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """API-format prompt {node_id: {"class_type", "inputs", "_meta"}} for a UI workflow.

    Raises WorkflowError for node types the server does not know, widget values that do not fit
    the node's inputs, or required inputs left unconnected.
    """
    graph = _Graph(workflow)
    prompt: dict[str, dict] = {}
    for node_id, node in sorted(graph.nodes.items()):
        kind = node["type"]
        if kind in VIRTUAL_NODE_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        definition = object_info.get(kind)
        if definition is None:
            raise WorkflowError(f"node {node_id}: type {kind!r} is not known to the server "
                                "(missing custom node pack?)")
        widgets = widget_values(node, definition)
        linked = {entry["name"]: entry.get("link") for entry in node.get("inputs") or []
                  if entry.get("link") is not None}
        inputs: dict[str, Any] = {}
        for name, spec, required in ordered_inputs(definition):
            if name in linked:
                source = graph.source(linked[name])
                if source is not None:
                    inputs[name] = [str(source[0]), source[1]]
                    continue
            if name in widgets:
                inputs[name] = widgets[name]
            elif required:
                raise WorkflowError(f"node {node_id} ({kind}): required input {name!r} "
                                    "is not connected")
        for name, value in widgets.items():
            if "." in name:  # a dynamic combo's chosen inputs
                inputs[name] = value
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs,
                                "_meta": {"title": node.get("title") or kind}}
    return prompt
