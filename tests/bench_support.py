"""Loading a script of ``benchmarks/`` (not a package) as a module, for the tests of its ``--quick`` mode."""
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relpath: str) -> ModuleType:
    """``load_script("benchmarks/guidance.py")``: the script executed as a fresh module."""
    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
