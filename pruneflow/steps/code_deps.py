"""Which source files a step runs, read from the source: the project modules its compute
function imports, transitively.

A step's fingerprint hashes these files (:meth:`pruneflow.steps.base.Step.code_files`), and so
do DVC's ``deps:``. A hand-kept list missed what a module imports in turn (``train.py`` ->
``runtime.py``, ``memory_format.py``): a change there left every trained model "up to date".

The rules, all static (``ast``; nothing is imported):

* What a name needs is followed by name: the compute function's own body, the top-level
  functions, classes and assignments of its module that it refers to (transitively), and the
  imports of all of these (function-local imports too, ``if TYPE_CHECKING:`` blocks excepted).
  ``from m import f`` follows ``f``'s binding in ``m`` the same way; ``import m``, ``from
  package import submodule`` and a star import take the whole module (every binding).
* Every module reached also counts its top-level statements that bind nothing (they run at
  import), and its enclosing packages' ``__init__.py`` files are hashed with their own such
  statements (Python runs them first), not their every re-export: ``pruneflow/steps/__init__``
  imports every step, which would make every step depend on all the code.
* So two steps defined in one module (double descent's training and its plots) keep separate
  dependencies, and editing plot code retrains nothing.
* Imports are followed inside the *project packages*: ``pruneflow`` (resolved under
  ``code_root``) and the top-level package of the root module (a user's model module, once
  models can come from import paths: see :func:`import_path_module`).

Code reached only through an attribute of an object made elsewhere (a method of a class from a
module that nothing here imports) is not seen; within the project every object's class is
imported by whoever builds it, which then is in the closure.

Parsed files are cached per process by (size, mtime, inode), so a closure costs a few dozen
``stat`` calls once the files are read; an edited file is parsed again.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

PROJECT_PACKAGE = "pruneflow"
# ``package.module:attribute`` (a factory named by params)
_IMPORT_PATH = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*$")


# what a name needs: (module, name) pairs, name None for the whole module and "" for only the
# statements of its top level that bind nothing (what a package on the way runs for sure)
Unit = tuple[str, str | None]


@dataclass(frozen=True)
class _Parsed:
    """One source file's import facts (absolute dotted module names)."""

    # per top-level name: the units its binding needs, and the other top-level names it uses
    bindings: dict[str, tuple[frozenset[Unit], frozenset[str]]]
    # what the top-level statements binding nothing need
    always: tuple[frozenset[Unit], frozenset[str]]


_lock = threading.Lock()
_parsed: dict[Path, tuple[tuple[int, int, int], _Parsed]] = {}


def _stat_key(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _import_units(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> dict:
    """{bound name: unit} of one import statement."""
    if isinstance(node, ast.Import):
        # `import a.b` binds `a` and loads a.b; `import a.b as x` binds x = a.b
        return {(a.asname or a.name.split(".")[0]): (a.name, None) for a in node.names}
    base = _resolve_from(node, module, is_package)
    return {(a.asname or a.name): (base, None if a.name == "*" else a.name) for a in node.names}


def _walk(node: ast.AST, module: str, is_package: bool) -> tuple[set[Unit], set[str]]:
    """The units that the import statements inside ``node`` load, and the names it uses."""
    units: set[Unit] = set()
    names: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if _is_type_checking(n):
            stack.extend(n.orelse)  # type: ignore[attr-defined]
            continue
        if isinstance(n, ast.Import | ast.ImportFrom):
            units.update(_import_units(n, module, is_package).values())
        elif isinstance(n, ast.Name):
            names.add(n.id)
        stack.extend(ast.iter_child_nodes(n))
    return units, names


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


def _parse(path: Path, module: str) -> _Parsed:
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_bytes(), filename=str(path))
    bindings: dict[str, tuple[set[Unit], set[str]]] = {}
    always: tuple[set[Unit], set[str]] = (set(), set())
    for stmt in tree.body:
        if _is_type_checking(stmt):
            continue
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            for bound, unit in _import_units(stmt, module, is_package).items():
                bindings.setdefault(bound, (set(), set()))[0].add(unit)
            continue
        units, used = _walk(stmt, module, is_package)
        names = _bound_names(stmt)
        if not names:
            always[0].update(units)
            always[1].update(used)
        for name in names:
            entry = bindings.setdefault(name, (set(), set()))
            entry[0].update(units)
            entry[1].update(used - {name})
    return _Parsed(
        bindings={k: (frozenset(u), frozenset(n)) for k, (u, n) in bindings.items()},
        always=(frozenset(always[0]), frozenset(always[1])),
    )


def _parsed_file(path: Path, module: str) -> _Parsed:
    key = _stat_key(path)
    with _lock:
        hit = _parsed.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = _parse(path, module)
    with _lock:
        _parsed[path] = (key, parsed)
    return parsed


def module_file(module: str, code_root: Path) -> Path | None:
    """The source file of ``module`` (``pruneflow.*`` under ``code_root``), None if none."""
    parts = module.split(".")
    if parts[0] == PROJECT_PACKAGE:
        base = code_root.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _needed(parsed: _Parsed, name: str | None) -> set[Unit]:
    """The units that binding ``name`` of a module needs (see :data:`Unit`)."""
    if name is not None and name != "" and name not in parsed.bindings:
        name = None  # a name made at run time (a module __getattr__): the whole module
    units, todo = set(parsed.always[0]), set(parsed.always[1])
    todo |= set(parsed.bindings) if name is None else ({name} if name else set())
    done: set[str] = set()
    while todo:
        n = todo.pop()
        if n in done or n not in parsed.bindings:
            continue
        done.add(n)
        binding_units, used = parsed.bindings[n]
        units |= binding_units
        todo |= used - done
    return units


_closures: dict[tuple[str, str | None, Path], dict[Path, tuple[int, int, int]]] = {}


def closure(module: str, qualname: str | None, code_root: Path) -> set[Path]:
    """The source files that running ``module.qualname`` may execute inside the project
    packages (see the module docstring); ``qualname`` None (or a nested function's): the whole
    module. Cached per process while none of the files changes (size, mtime, inode)."""
    if qualname is not None and "." in qualname:
        qualname = None
    key = (module, qualname, code_root)
    with _lock:
        hit = _closures.get(key)
    if hit is not None:
        try:
            if all(_stat_key(path) == stat for path, stat in hit.items()):
                return set(hit)
        except OSError:
            pass
    files = _closure(module, qualname, code_root)
    stats = {path: _stat_key(path) for path in files}
    with _lock:
        _closures[key] = stats
    return set(stats)


def _closure(module: str, qualname: str | None, code_root: Path) -> set[Path]:
    packages = {PROJECT_PACKAGE, module.split(".")[0]}
    if module_file(module, code_root) is None:
        raise FileNotFoundError(f"source of module {module} not found")
    files: set[Path] = set()
    seen: set[Unit] = set()
    todo: list[Unit] = [(module, qualname)]
    while todo:
        unit = todo.pop()
        if unit in seen or unit[0].split(".")[0] not in packages:
            continue
        seen.add(unit)
        mod, name = unit
        if name and module_file(f"{mod}.{name}", code_root) is not None:
            todo.append((f"{mod}.{name}", None))  # `from package import submodule`
            continue
        path = module_file(mod, code_root)
        if path is None:
            continue
        files.add(path)
        parts = mod.split(".")
        todo.extend((".".join(parts[:i]), "") for i in range(1, len(parts)))
        todo.extend(_needed(_parsed_file(path, mod), name))
    return files


def import_path_module(value: object) -> str | None:
    """The module of an import-path value ``package.module:attribute``, else None."""
    if not isinstance(value, str):
        return None
    match = _IMPORT_PATH.match(value)
    return match.group(1) if match else None


def relative_name(path: Path, code_root: Path) -> str:
    """``path`` relative to ``code_root`` (POSIX), or absolute when it lies outside."""
    try:
        return path.resolve().relative_to(code_root.resolve()).as_posix()
    except ValueError:
        return os.fspath(path.resolve())
