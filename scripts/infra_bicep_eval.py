"""A small evaluator of Bicep expressions, for the infrastructure gate (scripts/infra_gate.py).

No Bicep compiler runs offline, so the gate cannot ask ARM what a template's variables come to. This
evaluates the pure part of a template — parameters, variables, string and array functions, loops,
lambdas — on the tree that tree-sitter-bicep gives (which, unlike checkov's parser, keeps operator
precedence and tells a reference from a string), for parameter values the gate chooses. It knows
only the functions listed in `FUNCTIONS` and a few scope functions (`resourceGroup(...)`,
`subscription(...)`, which evaluate to a `Scope`); anything else (a resource's or module's
properties, `uniqueString`, `environment()`) raises `BicepEvalError`, naming what it could not
evaluate, so a template the gate evaluates must keep those values within this subset.

Semantics follow the ARM template functions (Microsoft Learn, "Bicep functions"): `==` and `!=`
compare strings with case, `=~` and `!~` without; `union` of arrays keeps the first occurrence of
each value in order; `contains` compares strings with case (object keys without); an index out of range is an
error (ARM fails the deployment too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


class BicepEvalError(Exception):
    """What the evaluator could not evaluate, or an error the deployment would also hit."""


@dataclass(frozen=True)
class Scope:
    """The value of a scope function: `resourceGroup(<subscription>, <group>)` is
    Scope('resourceGroup', (<subscription>, <group>)); `subscription(<id>)` is
    Scope('subscription', (<id>,))."""

    kind: str
    args: tuple[Any, ...]


def _text(node: Any, source: bytes) -> str:
    return source[node.start_byte:node.end_byte].decode("utf-8")


def _named(node: Any) -> list[Any]:
    return [child for child in node.children if child.is_named and child.type != "comment"]


_ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


def _string_array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise BicepEvalError(f"{what}: expected an array, got {value!r}")
    return value


def _union(*values: Any) -> Any:
    if all(isinstance(v, dict) for v in values):
        merged: dict[str, Any] = {}
        for value in values:
            merged.update(value)
        return merged
    out: list[Any] = []
    for value in values:
        for item in _string_array(value, "union"):
            if item not in out:
                out.append(item)
    return out


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, dict):
        return any(isinstance(k, str) and isinstance(item, str) and k.lower() == item.lower() for k in container)
    return item in _string_array(container, "contains")


def _empty(value: Any) -> bool:
    return value is None or value in ("", [], {})


def _concat(*values: Any) -> Any:
    if all(isinstance(v, list) for v in values):
        return [item for value in values for item in value]
    return "".join(str(v) for v in values)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "split": lambda text, delimiter: str(text).split(delimiter),
    "trim": lambda text: str(text).strip(),
    "toLower": lambda text: str(text).lower(),
    "toUpper": lambda text: str(text).upper(),
    "replace": lambda text, old, new: str(text).replace(old, new),
    "empty": _empty,
    "contains": _contains,
    "concat": _concat,
    "union": _union,
    "join": lambda items, delimiter: delimiter.join(str(i) for i in _string_array(items, "join")),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "length": lambda items: len(items),
    "take": lambda items, count: items[: max(count, 0)],
    "skip": lambda items, count: items[max(count, 0):],
    "startsWith": lambda text, prefix: str(text).lower().startswith(str(prefix).lower()),
    "endsWith": lambda text, suffix: str(text).lower().endswith(str(suffix).lower()),
}


class Template:
    """One .bicep file's declarations, as tree-sitter-bicep nodes."""

    def __init__(self, source: bytes, parser: Any) -> None:
        self.source = source
        self.tree = parser.parse(source)
        self.params: dict[str, Any] = {}  # name -> default node (None: no default)
        self.variables: dict[str, Any] = {}
        self.resources: dict[str, tuple[str, bool, Any]] = {}  # symbol -> (type@version, existing, value)
        self.modules: dict[str, tuple[str, Any]] = {}  # symbol -> (path, value)
        self.target_scope = "resourceGroup"
        for node in _named(self.tree.root_node):
            children = _named(node)
            if node.type == "parameter_declaration":
                default = children[2] if len(children) > 2 else None
                self.params[_text(children[0], source)] = default
            elif node.type == "variable_declaration":
                self.variables[_text(children[0], source)] = children[-1]
            elif node.type == "resource_declaration":
                existing = any(child.type == "existing" for child in node.children)
                self.resources[_text(children[0], source)] = (self.string(children[1]), existing, children[-1])
            elif node.type == "module_declaration":
                self.modules[_text(children[0], source)] = (self.string(children[1]), children[-1])
            elif node.type == "target_scope_assignment":
                self.target_scope = self.string(children[-1])

    def text(self, node: Any) -> str:
        return _text(node, self.source)

    def string(self, node: Any) -> str:
        """A string literal without interpolation."""
        if node.type != "string" or any(child.type == "interpolation" for child in node.children):
            raise BicepEvalError(f"expected a plain string, found {self.text(node)!r}")
        return Evaluator(self, {}).value(node, {})


class Evaluator:
    """Evaluates a template's expressions for the given parameter values (others: their
    defaults)."""

    def __init__(self, template: Template, params: dict[str, Any]) -> None:
        self.template = template
        self.params = params
        self.cache: dict[str, Any] = {}
        self.evaluating: set[str] = set()

    def name(self, name: str) -> Any:
        template = self.template
        if name in self.params:
            return self.params[name]
        if name in self.cache:
            return self.cache[name]
        if name in self.evaluating:
            raise BicepEvalError(f"{name} refers to itself")
        if name in template.variables:
            node = template.variables[name]
        elif name in template.params:
            node = template.params[name]
            if node is None:
                raise BicepEvalError(f"parameter {name} has no default and no value was given")
        else:
            raise BicepEvalError(f"cannot evaluate {name!r} (a resource, module or unknown name)")
        self.evaluating.add(name)
        try:
            self.cache[name] = self.value(node, {})
        finally:
            self.evaluating.discard(name)
        return self.cache[name]

    def value(self, node: Any, scope: dict[str, Any]) -> Any:
        kind = node.type
        children = _named(node)
        if kind == "string":
            parts: list[str] = []
            for child in node.children:
                if child.type == "string_content":
                    parts.append(self.template.text(child))
                elif child.type == "escape_sequence":
                    raw = self.template.text(child)
                    parts.append(_ESCAPES.get(raw, raw))
                elif child.type == "interpolation":
                    inner = _named(child)[0]
                    parts.append(str(self.value(inner, scope)))
            return "".join(parts)
        if kind == "number":
            return int(self.template.text(node))
        if kind == "boolean":
            return self.template.text(node) == "true"
        if kind == "null":
            return None
        if kind == "identifier":
            name = self.template.text(node)
            return scope[name] if name in scope else self.name(name)
        if kind == "array":
            return [self.value(child, scope) for child in children]
        if kind == "object":
            out: dict[str, Any] = {}
            for prop in children:
                key_node, value_node = _named(prop)[0], _named(prop)[-1]
                key = self.value(key_node, scope) if key_node.type == "string" else self.template.text(key_node)
                out[key] = self.value(value_node, scope)
            return out
        if kind == "parenthesized_expression":
            return self.value(children[0], scope)
        if kind == "ternary_expression":
            condition, when_true, when_false = children
            return self.value(when_true if self.truth(condition, scope) else when_false, scope)
        if kind == "unary_expression":
            operator = node.children[0].type
            operand = self.value(children[0], scope)
            if operator == "!":
                return not operand
            if operator == "-":
                return -operand
            raise BicepEvalError(f"unknown operator {operator!r}")
        if kind == "binary_expression":
            return self.binary(node, scope)
        if kind == "subscript_expression":
            target, index = self.value(children[0], scope), self.value(children[1], scope)
            try:
                return target[index]
            except (IndexError, KeyError, TypeError) as error:
                raise BicepEvalError(f"{self.template.text(node)}: index {index!r} out of range of {target!r}") from error
        if kind == "member_expression":
            target = self.value(children[0], scope)
            prop = self.template.text(children[-1])
            if isinstance(target, dict) and prop in target:
                return target[prop]
            raise BicepEvalError(f"cannot evaluate {self.template.text(node)!r}")
        if kind == "for_statement":
            return self.loop(node, scope)
        if kind == "call_expression":
            return self.call(node, scope)
        raise BicepEvalError(f"cannot evaluate a {kind}: {self.template.text(node)[:80]!r}")

    def truth(self, node: Any, scope: dict[str, Any]) -> bool:
        value = self.value(node, scope)
        if not isinstance(value, bool):
            raise BicepEvalError(f"{self.template.text(node)!r} is {value!r}, not a bool")
        return value

    def binary(self, node: Any, scope: dict[str, Any]) -> Any:
        left_node, right_node = _named(node)
        operator = next(child.type for child in node.children if not child.is_named)
        if operator == "&&":
            return self.truth(left_node, scope) and self.truth(right_node, scope)
        if operator == "||":
            return self.truth(left_node, scope) or self.truth(right_node, scope)
        left, right = self.value(left_node, scope), self.value(right_node, scope)
        if operator == "??":
            return right if left is None else left
        if operator == "==":
            return left == right
        if operator == "!=":
            return left != right
        if operator in ("=~", "!~"):
            same = str(left).lower() == str(right).lower()
            return same if operator == "=~" else not same
        arithmetic = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
                      "<": lambda a, b: a < b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
                      ">=": lambda a, b: a >= b}
        if operator in arithmetic:
            return arithmetic[operator](left, right)
        raise BicepEvalError(f"unknown operator {operator!r}")

    def loop(self, node: Any, scope: dict[str, Any]) -> list[Any]:
        """`[for x in items: body]`, `[for (x, i) in items: body]`, `[for …: if (condition) body]`."""
        body = _named(node)[-1]
        out = []
        for inner in self.loop_items(node, scope):
            if body.type == "if_statement":
                condition, value = _named(body)
                if self.truth(condition, inner):
                    out.append(self.value(value, inner))
            else:
                out.append(self.value(body, inner))
        return out

    def loop_items(self, node: Any, scope: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A `[for …]`'s iterations: the scope (loop variable, and index) of each."""
        scope = scope or {}
        head, source = _named(node)[0], _named(node)[1]
        if head.type == "for_loop_parameters":
            names = [self.template.text(child) for child in _named(head)]
        else:
            names = [self.template.text(head)]
        scopes = []
        for index, item in enumerate(_string_array(self.value(source, scope), "for")):
            inner = {**scope, names[0]: item}
            if len(names) > 1:
                inner[names[1]] = index
            scopes.append(inner)
        return scopes

    def call(self, node: Any, scope: dict[str, Any]) -> Any:
        callee, arguments = _named(node)[0], _named(node)[-1]
        name = self.template.text(callee).removeprefix("sys.")
        args = _named(arguments)
        if name == "filter":
            items = _string_array(self.value(args[0], scope), "filter")
            lam = args[1]
            if lam.type != "lambda_expression":
                raise BicepEvalError("filter without a lambda")
            parameter, body = _named(lam)[0], _named(lam)[-1]
            variable = self.template.text(parameter)
            return [item for item in items if self.truth(body, {**scope, variable: item})]
        values = [self.value(arg, scope) for arg in args]
        if name == "resourceGroup" and len(values) in (1, 2):
            return Scope("resourceGroup", tuple(values))
        if name == "subscription" and len(values) == 1:
            return Scope("subscription", tuple(values))
        if name == "managementGroup" and len(values) == 1:
            return Scope("managementGroup", tuple(values))
        if name == "tenant" and not values:
            return Scope("tenant", ())
        function = FUNCTIONS.get(name)
        if function is None:
            raise BicepEvalError(f"cannot evaluate the function {name}() (not in the gate's evaluator)")
        try:
            return function(*values)
        except (TypeError, AttributeError, IndexError) as error:
            raise BicepEvalError(f"{self.template.text(node)[:80]!r}: {error}") from error
