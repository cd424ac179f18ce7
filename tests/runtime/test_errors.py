"""The error tree drawn in runtime/errors.py is the tree the code defines, class for class."""

import importlib
import inspect
import pkgutil
import re

import runtime
import runtime.errors
from runtime.errors import FlowError

_LINE = re.compile(r"^(?P<indent> *(?:[│ ]   )*(?:[├└]── )?)(?P<name>\w+) +(?P<module>runtime(?:\.\w+)+)$")


def _modules():
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(runtime.__path__, "runtime.")]


def _drawn() -> dict[str, tuple[str, str | None]]:
    """name -> (module, parent name) as drawn."""
    drawn: dict[str, tuple[str, str | None]] = {}
    stack: list[str] = []
    for line in runtime.errors.__doc__.splitlines():
        if m := _LINE.match(line):
            depth = (len(m["indent"]) - 4) // 4
            del stack[depth:]
            assert m["name"] not in drawn, f"{m['name']} is drawn twice"
            drawn[m["name"]] = (m["module"], stack[-1] if stack else None)
            stack.append(m["name"])
    return drawn


def _defined() -> dict[str, tuple[str, str | None]]:
    _modules()
    defined = {"FlowError": ("runtime.errors", None)}
    todo = [FlowError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("runtime.") and not sub.__name__.startswith("_"):
                defined[sub.__name__] = (sub.__module__, cls.__name__)
            todo.append(sub)
    return defined


def test_the_drawing_is_the_tree():
    drawn, defined = _drawn(), _defined()
    assert {n: v for n, v in defined.items() if n not in drawn} == {}, "not drawn in runtime/errors.py"
    assert {n: v for n, v in drawn.items() if n not in defined} == {}, "drawn, but no such FlowError"
    assert drawn == defined


def test_every_other_exception_is_named_as_outside_the_tree():
    doc = runtime.errors.__doc__.split("Outside the tree", 1)[1]
    for module in _modules():
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and issubclass(cls, BaseException) and cls.__module__ == module.__name__
                    and not issubclass(cls, FlowError) and not name.startswith("_")):
                assert re.search(rf"\b{name}\b[^.]*?{re.escape(module.__name__)}", doc.replace("\n", " ")), \
                    f"{module.__name__}.{name} is neither a FlowError nor named outside the tree"
