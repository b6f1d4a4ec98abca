"""Pipeline trees (nested dicts of settings): dotted keys, layers merged, depth. Iterative where a
tree may come from outside (a file, ``--set``); :func:`merge` recurses only over trees already
bounded to :data:`aepipe.config.prescan.MAX_DEPTH`."""

from __future__ import annotations

import copy
from typing import Any

from aepipe.config.schema import MODEL_COMPONENTS, REGULARIZER_CORE_KEYS, REGULARIZERS_SECTION, DataSettings


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys to the leaves of ``tree`` (an empty table has none), in the tree's order;
    iterative, however deep the tree."""
    out: dict[str, Any] = {}
    stack = [(prefix, iter(tree.items()))]
    while stack:
        above, items = stack[-1]
        for key, value in items:
            if isinstance(value, dict):
                if value:
                    stack.append((f"{above}{key}.", iter(value.items())))
                    break
            else:
                out[f"{above}{key}"] = value
        else:
            stack.pop()
    return out


def merge(lower: dict[str, Any], upper: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Deep-merge ``upper`` over ``lower``. A component section whose ``name`` changes drops
    the lower layer's settings of the old component (they belong to another class). Recursive:
    every tree that reaches it is at most :data:`MAX_DEPTH` deep."""
    out = copy.deepcopy(lower)
    for key, value in upper.items():
        dotted = f"{path}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            low = out[key]
            if "name" in value and "name" in low and value["name"] != low["name"] and is_component(dotted):
                keep = DataSettings.model_fields if dotted == "data" else REGULARIZER_CORE_KEYS
                low = {k: v for k, v in low.items() if k in keep}
            out[key] = merge(low, value, dotted + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def is_component(dotted: str) -> bool:
    parts = dotted.split(".")
    return dotted == "data" or (len(parts) == 2 and parts[0] == "model" and parts[1] in MODEL_COMPONENTS) or (
        len(parts) == 3 and parts[:2] == ["model", REGULARIZERS_SECTION]
    )


def origins_of(tree: dict[str, Any], where: str) -> dict[str, str]:
    """Every dotted key and key prefix of ``tree``, mapped to where it was set."""
    return {key: where for key in all_prefixes(tree)}


def all_prefixes(tree: dict[str, Any]) -> list[str]:
    """Every dotted key of ``tree`` and of its sub-tables, parents first; iterative."""
    keys: list[str] = []
    stack = [("", iter(tree.items()))]
    while stack:
        above, items = stack[-1]
        for key, value in items:
            keys.append(above + key)
            if isinstance(value, dict):
                stack.append((f"{above}{key}.", iter(value.items())))
                break
        else:
            stack.pop()
    return keys


def tree_depth(tree: Any) -> int:
    """How deep ``tree`` nests: each key of a table and each array is a level (``{"a": [1]}``
    and ``{"a": []}``: 2), as :func:`check_nesting` counts a file's text; iterative."""
    deepest, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, (list, tuple)):
            deepest = max(deepest, depth + 1)
            stack.extend((value, depth + 1) for value in node)
    return deepest



def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return root
