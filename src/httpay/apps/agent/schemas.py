"""Tool schemas for the Anthropic and OpenAI APIs, generated from the tools' own signatures, and a
dispatcher that runs a model's tool call with its arguments checked.

Why generated: the signature and its comments are the single source of truth, as in Claudette
(parameter comments, `-> str:  # what it returns`); a hand-written schema would drift. Google-style
`Args:` lines in a docstring are read too, for functions written that way.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

ToolSource = Any  # a Toolbox (anything with .tools()) or an iterable of documented functions

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


@dataclass(frozen=True)
class ToolSpec:
    """One tool as a model sees it: a name, what it does, a JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]


# -- reading a function --------------------------------------------------------------------------------
def comments(fn: Callable[..., Any]) -> tuple[dict[str, str], str | None]:
    """The `# comment` after each parameter, and after `-> type:`, in the function's source."""
    target = inspect.unwrap(fn)
    target = getattr(target, "__func__", target)
    try:
        src = textwrap.dedent(inspect.getsource(target))
    except (OSError, TypeError):
        return {}, None
    params: dict[str, str] = {}
    names_on_line: dict[int, str] = {}
    depth, started, expect_name, closed = 0, False, False, False
    end_line: int | None = None
    ret: str | None = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            kind, text, (line, _), _, _ = tok
            if kind == tokenize.OP and text in "([{":
                depth += 1
                if not started and text == "(":
                    started, expect_name = True, True
            elif kind == tokenize.OP and text in ")]}":
                depth -= 1
                if started and depth == 0 and not closed:
                    closed = True
            elif kind == tokenize.OP and text == "," and depth == 1:
                expect_name = True
            elif kind == tokenize.OP and text in ("*", "**") and depth == 1:
                continue
            elif kind == tokenize.NAME and depth == 1 and expect_name and not closed:
                expect_name = False
                if text not in ("self", "cls"):
                    names_on_line[line] = text
            elif kind == tokenize.OP and text == ":" and closed and depth == 0 and end_line is None:
                end_line = line
            elif kind == tokenize.COMMENT:
                note = text.lstrip("#").strip()
                if not closed and line in names_on_line:
                    params[names_on_line[line]] = note
                elif closed and (end_line is None or line == end_line):
                    ret = note
            elif kind == tokenize.NEWLINE and end_line is not None:
                break
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return params, ret
    return params, ret


def _split_doc(doc: str) -> tuple[str, dict[str, str]]:
    """A docstring's text without its `Args:` section, and that section's `name: description` lines."""
    keep: list[str] = []
    args: dict[str, str] = {}
    last: str | None = None
    in_args = False
    for line in inspect.cleandoc(doc).splitlines():
        if _ARGS_HEADER.match(line):
            in_args, last = True, None
            continue
        indented = line[:1] in (" ", "\t")
        if in_args and (indented or not line.strip()):
            m = _ARG_LINE.match(line)
            if m:
                last = m.group(1).lstrip("*")
                args[last] = m.group(2).strip()
            elif last is not None and line.strip():
                args[last] += " " + line.strip()
            continue
        in_args = False
        keep.append(line)
    return "\n".join(keep).strip(), args


def json_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema for a type hint; raises TypeError for a type a model cannot send."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return json_schema(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        schemas = [json_schema(a) for a in members]
        return schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    if origin is Literal:
        values = list(get_args(tp))
        out: dict[str, Any] = {"enum": values}
        kinds = {type(v) for v in values}
        if len(kinds) == 1:
            out["type"] = json_schema(kinds.pop())["type"]
        return out
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is dict or origin is dict:
        args = get_args(tp)
        return {"type": "object", "additionalProperties": json_schema(args[1])} if args else {"type": "object"}
    if tp in (list, tuple, set) or origin in (list, tuple, set):
        items = [a for a in get_args(tp) if a is not Ellipsis]
        return {"type": "array", "items": json_schema(items[0])} if items else {"type": "array"}
    raise TypeError(f"no JSON Schema for type {tp!r}: use str, int, float, bool, list, dict or Literal")


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(inspect.unwrap(fn))


def tool_spec(fn: Callable[..., Any]) -> ToolSpec:
    """Read one documented, type-hinted function into a ToolSpec."""
    name = getattr(fn, "__name__", None)
    doc = inspect.getdoc(fn)
    if not name or not doc:
        raise TypeError(f"a tool needs a name and a docstring: {fn!r}")
    description, doc_args = _split_doc(doc)
    param_notes, ret_note = comments(fn)
    hints = _hints(fn)
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or pname in ("self", "cls"):
            continue
        if pname not in hints:
            raise TypeError(f"tool {name}: parameter {pname!r} has no type hint")
        schema = json_schema(hints[pname])
        note = param_notes.get(pname) or doc_args.get(pname)
        if note:
            schema["description"] = note
        if p.default is p.empty:
            required.append(pname)
        elif p.default is not None and _json_able(p.default):
            schema["default"] = p.default
        props[pname] = schema
    if ret_note:
        description += f"\n\nReturns: {ret_note}"
    parameters: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    return ToolSpec(name=name, description=description, parameters=parameters, function=fn)


def _json_able(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _functions(source: ToolSource) -> list[Callable[..., Any]]:
    tools = getattr(source, "tools", None)
    if callable(tools):
        return list(tools())
    if isinstance(source, Iterable):
        return list(source)
    raise TypeError(f"expected a Toolbox or a list of functions, got {type(source).__name__}")


def tool_specs(source: ToolSource) -> list[ToolSpec]:
    return [tool_spec(fn) for fn in _functions(source)]


# -- the two API formats ---------------------------------------------------------------------------------
def anthropic_tools(toolbox: ToolSource) -> list[dict[str, Any]]:
    """Tools in the Anthropic Messages API format: name, description, input_schema."""
    return [{"name": s.name, "description": s.description, "input_schema": s.parameters} for s in tool_specs(toolbox)]


def openai_tools(toolbox: ToolSource) -> list[dict[str, Any]]:
    """Tools in the OpenAI Chat Completions format: {"type": "function", "function": {...}}."""
    return [
        {"type": "function", "function": {"name": s.name, "description": s.description, "parameters": s.parameters}}
        for s in tool_specs(toolbox)
    ]


# -- running a call --------------------------------------------------------------------------------------
def _fits(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether `value` (decoded JSON) fits hint `tp`, and the value to pass (ints widen to float)."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return _fits(value, get_args(tp)[0])
    if origin in (Union, types.UnionType):
        for member in get_args(tp):
            ok, v = (value is None, None) if member is type(None) else _fits(value, member)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return value in get_args(tp), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        try:
            return ok, float(value) if ok else value
        except OverflowError:  # an integer of thousands of digits is no amount
            return False, value
    if tp is str:
        return isinstance(value, str), value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            return False, value
        args = get_args(tp)
        if args:
            return all(isinstance(k, str) and _fits(v, args[1])[0] for k, v in value.items()), value
        return True, value
    if tp in (list, tuple, set) or origin in (list, tuple, set):
        return isinstance(value, list), value
    return True, value


def _type_name(tp: Any) -> str:
    return json.dumps(json_schema(tp)) if tp is not Any else "any value"


def _prepared(toolbox: ToolSource, name: str,
              arguments: dict[str, Any] | str | None) -> tuple[Callable[..., Any], dict[str, Any]] | str:
    """The tool `name` and its checked arguments, or the error text a model reads to correct its call."""
    fns = {getattr(f, "__name__", ""): f for f in _functions(toolbox)}
    fn = fns.get(name)
    if fn is None:
        return _bad(f"error: there is no tool named {name!r}; the tools are: {', '.join(fns)}")
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return _bad(f"error: the arguments for {name} are not valid JSON")
    if not isinstance(arguments, dict):
        return _bad(f"error: the arguments for {name} must be a JSON object, got {type(arguments).__name__}")
    params = {k: p for k, p in inspect.signature(fn).parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    hints = _hints(fn)
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        return _bad(f"error: {name} has no argument(s) {', '.join(unknown)}; it takes: {', '.join(params)}")
    missing = [k for k, p in params.items() if p.default is p.empty and k not in arguments]
    if missing:
        return _bad(f"error: {name} needs the argument(s) {', '.join(missing)}")
    kwargs: dict[str, Any] = {}
    for key, value in arguments.items():
        tp = hints.get(key, Any)
        if value is None and params[key].default is None:
            kwargs[key] = None
            continue
        ok, coerced = _fits(value, tp)
        if not ok:
            return _bad(f"error: argument {key!r} of {name} must match {_type_name(tp)}, got {json.dumps(value)[:80]}")
        kwargs[key] = coerced
    return fn, kwargs


def _bad(text: str) -> str:
    from httpay.apps.agent.tools import ToolText

    return ToolText(text, is_error=True)


def _scrubber(toolbox: ToolSource) -> Callable[[str], str]:
    """A Toolbox's last pass (secrets scrubbed, control characters cleaned, bounded); else its scrub."""
    return getattr(toolbox, "for_model", None) or getattr(toolbox, "scrub", None) or str


def _crashed(toolbox: ToolSource, name: str, exc: Exception) -> str:
    return _bad(str(_scrubber(toolbox)(f"error: {name} failed: {type(exc).__name__}: {exc}")))


def dispatch(toolbox: ToolSource, name: str, arguments: dict[str, Any] | str | None) -> str:
    """Run the tool `name` with a model's `arguments` (a dict, or a JSON string as OpenAI sends).

    Unknown tools and bad arguments come back as a clear `error: ...` text (a `ToolText` with
    `is_error` set), never an exception, so the model can correct itself.
    """
    prepared = _prepared(toolbox, name, arguments)
    if isinstance(prepared, str):
        return prepared
    fn, kwargs = prepared
    try:
        result = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a model needs text, not a traceback
        return _crashed(toolbox, name, exc)
    if inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):
            close()  # never awaited: say so instead of a warning later
        return _bad(f"error: {name} is a coroutine function: run it with `await adispatch(...)`")
    return result if isinstance(result, str) else str(_scrubber(toolbox)(str(result)))


async def adispatch(toolbox: ToolSource, name: str, arguments: dict[str, Any] | str | None) -> str:
    """`dispatch` for async frameworks: an `AsyncToolbox`'s coroutine tools are awaited (plain
    functions are called as `dispatch` calls them)."""
    prepared = _prepared(toolbox, name, arguments)
    if isinstance(prepared, str):
        return prepared
    fn, kwargs = prepared
    try:
        result = fn(**kwargs)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # noqa: BLE001 - a model needs text, not a traceback
        return _crashed(toolbox, name, exc)
    return result if isinstance(result, str) else str(_scrubber(toolbox)(str(result)))
