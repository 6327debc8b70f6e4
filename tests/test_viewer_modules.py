"""The viewer's modules (frontend/src/) import one another without a cycle.

The viewer is split by concern under ``frontend/src/viewer/`` (page, panel, tools, keyboard,
layout, cine, prefetch, series, protocol); the review client (``review.js``) reaches the
viewer's state only through the protocol module's converters and the viewer's events, so the
two never import each other. ``frontend/scripts/check-imports.mjs`` walks the imports and runs
before every ``npm run build``; these tests run it too, and check that it catches a cycle.
"""

import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import require_service

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
CHECK = FRONTEND / "scripts" / "check-imports.mjs"


def check_imports(directory: Path) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    require_service("Node.js", None if node else "no node on PATH")
    return subprocess.run(
        [node, str(CHECK), str(directory)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_viewer_modules_import_each_other_without_a_cycle():
    result = check_imports(FRONTEND / "src")
    assert result.returncode == 0, result.stderr
    assert "no import cycle" in result.stdout


def test_a_cycle_is_named_and_fails_the_check(tmp_path):
    (tmp_path / "viewer").mkdir()
    (tmp_path / "review.js").write_text(
        "import { Viewer } from './viewer/viewer.js';\nexport class ReviewClient {}\n"
    )
    (tmp_path / "viewer" / "viewer.js").write_text(
        "import { ReviewClient } from '../review.js';\nexport class Viewer {}\n"
    )
    (tmp_path / "viewer" / "cine.js").write_text("export const DEFAULT_STACK_FPS = 10;\n")

    result = check_imports(tmp_path)

    assert result.returncode == 1
    assert "import cycle: review.js -> viewer/viewer.js -> review.js" in result.stderr


def test_a_missing_module_fails_the_check(tmp_path):
    (tmp_path / "main.js").write_text("import { Viewer } from './viewer.js';\n")

    result = check_imports(tmp_path)

    assert result.returncode == 1
    assert "main.js imports viewer.js, which does not exist" in result.stderr


def local_imports(path: Path) -> set[str]:
    return set(re.findall(r"from '(\.[^']+)'", path.read_text()))


def test_the_review_client_converts_through_the_protocol_module_only():
    imports = local_imports(FRONTEND / "src" / "review.js")
    viewer_modules = {path for path in imports if path.startswith("./viewer/")}
    assert viewer_modules == {"./viewer/protocol.js"}
    for module in (FRONTEND / "src" / "viewer").glob("*.js"):
        assert "../review.js" not in local_imports(module), module.name
