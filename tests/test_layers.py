"""The layers of the portal: an app imports only those below it.

portal is the lowest layer, imaging sits on it, rcp and expertise on both and never on each
other. A lower layer learns about a higher one only through AppConfig hooks that the higher
app answers (see ``imaging.selectors.studies_shared_by_apps``). The demo sits above them all:
it builds its data with every app, and no app imports it, so production code never depends on
demo data. The walk reads every module's imports, those inside functions included (a deferred
import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each app may import among the project's apps (itself aside).
ALLOWED = {
    "portal": set(),
    "imaging": {"portal"},
    "rcp": {"portal", "imaging"},
    "expertise": {"portal", "imaging"},
    "demo": {"portal", "imaging", "rcp", "expertise"},
}

# The project's composition root lives in portal's package: the ASGI application and the
# WebSocket routes assemble every app's consumers, as the root URLconf includes their URLs.
COMPOSITION_ROOT = {"portal/asgi.py", "portal/routing.py"}


def imported_apps(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names]
    return found


def upward_imports(app: str, root: Path = ROOT) -> list[str]:
    others = set(ALLOWED) - {app} - ALLOWED[app]
    return [
        f"{path.relative_to(root)}:{line} imports {target}"
        for path in sorted((root / app).rglob("*.py"))
        if str(path.relative_to(root)) not in COMPOSITION_ROOT
        for line, target in imported_apps(path)
        if target in others
    ]


@pytest.mark.parametrize("app", sorted(ALLOWED))
def test_no_app_imports_a_layer_above_or_beside_it(app):
    assert upward_imports(app) == []


def test_the_walk_finds_a_deferred_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from rcp.selectors import x\n    import expertise.models\n")
    assert imported_apps(module) == [(2, "rcp"), (3, "expertise")]


@pytest.mark.parametrize("app", ["portal", "imaging", "rcp", "expertise"])
def test_the_walk_finds_an_app_importing_the_demo(tmp_path, app):
    package = tmp_path / app / "management"
    package.mkdir(parents=True)
    (package / "m.py").write_text(
        "import demo\n\n\ndef f():\n    from demo.synthetic import ct_series\n"
    )
    assert upward_imports(app, root=tmp_path) == [
        f"{app}/management/m.py:1 imports demo",
        f"{app}/management/m.py:5 imports demo",
    ]


# Tasks are thin and call services; a service, view or helper that imported a tasks module to
# schedule one would close a cycle. They send tasks by name (portal.task_queue) instead.
MAY_IMPORT_TASKS = {"tasks.py", "celery.py"}


def imported_tasks_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # "from imaging import tasks" names the module among the imported names.
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, module) for module in modules if module.split(".")[-1] == "tasks"]
    return found


def tasks_imports() -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for app in sorted(ALLOWED)
        for path in sorted((ROOT / app).rglob("*.py"))
        if path.name not in MAY_IMPORT_TASKS and str(path.relative_to(ROOT)) not in COMPOSITION_ROOT
        for line, module in imported_tasks_modules(path)
    ]


def test_only_tasks_modules_import_tasks_modules():
    assert tasks_imports() == []


def test_the_walk_finds_a_deferred_tasks_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from imaging.tasks import ingest_batch\n"
        "    from portal import tasks\n    import rcp.tasks\n"
    )
    assert imported_tasks_modules(module) == [
        (2, "imaging.tasks"),
        (3, "portal.tasks"),
        (4, "rcp.tasks"),
    ]
