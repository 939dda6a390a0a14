"""YAML for files a user hands us: safe types only, no anchors/aliases, no repeated keys."""

from __future__ import annotations

from typing import Any

import yaml

from .errors import short


class Refused(yaml.YAMLError):
    """A YAML construct configs may not use (an alias, a repeated key), with the line it is on."""

    def __init__(self, message: str, mark: Any):
        super().__init__(message)
        self.message, self.mark = message, mark


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases and without repeated keys.

    An alias (`*name`) lets a few lines stand for an exponentially large value ("billion
    laughs"); no setting needs one, so they are refused outright. A repeated key is silently
    last-wins in YAML; here it names the key and both lines.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise Refused(f"the alias *{short(event.anchor)[1:-1]} is not accepted (anchors and aliases are "
                           "refused in config files); write the value out", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key; SafeLoader names it below
                    continue
                if first is not key_node.start_mark:
                    raise Refused(f"key {short(key)} appears twice (lines {first.line + 1} and "
                                   f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python refuses to parse an integer of more than 4300 digits
            raise Refused(f"the number {short(node.value)} is too long", node.start_mark) from None


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)


def strict_yaml_load(stream: Any) -> Any:
    """Parse YAML text or a file with `StrictLoader` (safe types only, no aliases, no repeated keys)."""
    loader = StrictLoader(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
