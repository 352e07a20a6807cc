"""The shape of the package: no import cycles (lazy imports inside functions included), the library
apart from the application, every sampler registered with its facts, conditioning through every sampler."""
import ast
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src" / "difflab"
APPLICATION = ("difflab.cli", "difflab.explore", "difflab.__main__")


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = ("difflab",) + p.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the difflab modules it imports anywhere in its body (functions too).  Importing
    ``a.b.c`` runs the packages ``a.b`` and ``a`` as well, so they count, except the importer's own
    ancestors (already running when it is imported)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rsplit(".", 1)[0]
        own_ancestors = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if not t.startswith("difflab"):
                    continue
                parts = t.split(".")
                for k in range(1, len(parts) + 1):
                    m = ".".join(parts[:k])
                    if m in mods and m != name and (m == t or m not in own_ancestors):
                        graph[name].add(m)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    """The checker itself can fail: a lazy import of the CLI from a sampler would close a loop."""
    g = import_graph()
    g["difflab.sampling.api"].add("difflab.cli")
    assert any("difflab.sampling.api" in c for c in _cycles(g))


def test_library_never_imports_the_application():
    for mod, deps in import_graph().items():
        if mod.startswith(APPLICATION):
            continue
        bad = [d for d in deps if d.startswith(APPLICATION)]
        assert not bad, f"{mod} imports {bad}"


def test_no_sampler_name_branches_outside_the_registry():
    """Sampler facts live in the registry: api.py and the CLI never compare with a sampler's name."""
    from difflab.sampling import SAMPLERS
    for path in [SRC / "sampling" / "api.py", *(SRC / "cli").glob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant)]
                assert not set(consts) & set(SAMPLERS), f"{path.name}:{node.lineno} branches on a sampler name"


# -- conditioning reaches the network through every sampler -------------------------------------------
class _Recorder(torch.nn.Module):
    """An exact Gaussian denoiser that records the conditioning of every call and checks it is per sample."""

    def __init__(self, schedule):
        super().__init__()
        from oracle_net import random_gaussian
        self.inner, _, _ = random_gaussian(schedule, D=2)
        self.schedule = schedule
        self.seen = []

    def forward(self, x, t, **cond):
        assert set(cond) == {"label"} and cond["label"].shape == (x.shape[0],), cond
        self.seen.append(cond["label"].clone())
        return self.inner(x, t)


@pytest.mark.parametrize("name", sorted(__import__("difflab.sampling", fromlist=["SAMPLERS"]).SAMPLERS))
def test_conditioning_reaches_the_denoiser_through_every_sampler(name):
    import difflab as dl
    from difflab.sampling import nfe_settings
    den = _Recorder(dl.get_schedule("cosine", T=1000))
    labels = torch.arange(7) % 3
    steps, opts = nfe_settings(name, 10)
    res = dl.sample(den, n=7, shape=(2,), sampler=name, steps=steps, batch_size=4, progress=False,
                    cond={"label": labels}, **opts)
    assert len(den.seen) == 2 * res.nfe   # every call of both batches saw its own slice of the labels
    assert all(torch.equal(c, labels[:4]) for c in den.seen[:res.nfe])
    assert all(torch.equal(c, labels[4:]) for c in den.seen[res.nfe:])


def test_registry_facts():
    """Each sampler's facts agree with what it does: the NFE of its budget setting as counted, and
    "stochastic" exactly when, from the same x_T, a different noise stream changes the result."""
    import difflab as dl
    from difflab.sampling import SAMPLERS, get_sampler, time_grid
    from oracle_net import random_gaussian
    sch = dl.get_schedule("cosine", T=1000)
    den, _, _ = random_gaussian(sch, D=2)
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name, info in SAMPLERS.items():
        assert info.order >= 1 and info.summary and callable(info.fn)
        steps, opts = info.for_nfe(20)
        if not info.adaptive:
            den.data_shape = (2,)
            nfe = dl.sample(den, n=2, sampler=name, steps=steps, progress=False, **opts).nfe
            assert abs(nfe - 20) <= info.nfe_of_step(opts), (name, nfe)
        opts = dict(opts)
        ts = time_grid(sch, steps, opts.pop("grid", "default"), sigma_max=opts.pop("sigma_max", None))
        for extra in ({}, {"eta": 0.5} if "eta" in info.options else {}, {"s_churn": 5.0} if "s_churn" in info.options else {}):
            o = {**opts, **extra}
            a, b = (info.fn(den, x_T, ts, generator=torch.Generator().manual_seed(k), **o) for k in (1, 2))
            assert torch.equal(a, b) != info.is_stochastic(o), (name, o)
    assert get_sampler("ddim").is_stochastic({"eta": 0.5}) and not get_sampler("ddim").is_stochastic()
    assert get_sampler("pc").nfe_of_step({"corrector_steps": 2}) == 3
