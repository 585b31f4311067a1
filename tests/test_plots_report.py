"""pipeline.plots and pipeline.report: valid PNGs with error bars, a self-contained HTML page."""

import base64
import html
import html.parser

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from pipeline.analysis import fits, plots, presets, report
from pipeline.errors import SelectionError
from pipeline.errors import InputError
from helpers import run_cli
from synth import arrhenius, assert_survival_matches_counts, synthetic_cube, write_cube

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cube():
    T = np.round(np.linspace(0.005, 0.025, 11), 6)
    return synthetic_cube(T, steps=[100, 1000], batch_size=[1, 2, 4], walkers=1000, seed=8,
                          ln_tau=arrhenius(-2.0, 0.1, 0.3), delay=2, not_run=[(3, 1, 0, 0)])


@pytest.fixture(scope="module")
def store(cube, tmp_path_factory):
    return write_cube(cube, tmp_path_factory.mktemp("cube") / "c.zarr")


def _check_png(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    img = mpimg.imread(path)
    w, h = plots.FIGSIZE
    assert img.shape[:2] == (round(h * plots.DPI), round(w * plots.DPI))
    assert img[..., :3].std() > 0.05  # not blank
    return img


def test_plot_cube_png_with_errorbars(cube, tmp_path):
    out = tmp_path / "fig.png"
    fig = plots.plot_cube(cube, "T", "log10_escape_time", hue="batch_size", sel={"steps": 1000}, out=out)
    _check_png(out)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3  # one per batch size
    seg = bars[0].lines[2][0].get_segments()
    assert len(seg) > 0 and all(abs(s[1][1] - s[0][1]) > 0 for s in seg)  # bars with a height
    assert ax.get_xscale() == "linear" and ax.get_yscale() == "linear"  # log10 already
    # cells with nothing escaped show their lower bound (triangles)
    assert any(line.get_marker() == "^" for line in ax.lines)
    fig = plots.plot_cube(cube, "steps", "p_escape", hue="T", sel={"batch_size": 1}, out=tmp_path / "p.png")
    assert fig.axes[0].get_xscale() == "log"
    assert len(fig.axes[0].get_legend().get_texts()) == 11  # one entry per T
    many = synthetic_cube(np.linspace(0.01, 0.03, 15), steps=[100, 1000], walkers=200, seed=1)
    fig = plots.plot_cube(many, "steps", "p_escape", hue="T", out=tmp_path / "p15.png")
    assert len(fig.axes) == 2 and fig.axes[0].get_legend() is None  # 15 hue values: a colour bar instead
    fig = plots.plot_cube(cube, "T", "median_escape_time", sel={"batch_size": 2, "steps": 1000}, out=tmp_path / "m.png")
    assert not [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]  # no _low/_high: no bars
    fig = plots.plot_cube(cube, "escape_step_bin", "escape_hist", hue="T", sel={"T": [0.013, 0.021], "batch_size": 1},
                          out=tmp_path / "h.png")
    assert fig.axes[0].get_xscale() == "log"


@pytest.mark.parametrize("name", sorted(set(presets.PRESETS) - {"markov", "theory"}))  # markov: below; theory: test_theory.py
def test_presets(cube, tmp_path, name):
    out = tmp_path / f"{name}.png"
    fig = presets.preset(cube, name, out=out)
    _check_png(out)
    ax = fig.axes[0]
    if name in ("p_escape", "escape_time", "batch"):
        assert [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    if name == "escape_time":
        lo, hi = ax.get_xlim()
        assert lo > 0.009 and hi < 0.021  # the post's window 0.01..0.02
    if name == "survival":
        assert ax.get_yscale() == "log" and len(ax.collections) >= 3  # Greenwood bands


def test_plot_command(store, tmp_path, capsys):
    out = str(tmp_path / "cli.png")
    assert run_cli(["plot", store, "--x", "T", "--y", "log10_escape_time", "--hue", "batch_size",
                  "--sel", "steps=1000", "-o", out]) == 0
    _check_png(out)
    # nearest within tolerance: 0.01301 -> 0.013
    assert run_cli(["plot", store, "--x", "steps", "--y", "p_escape", "--sel", "T=0.01301", "batch_size=1", "-o", out]) == 0
    assert run_cli(["plot", store, "--preset", "survival", "--sel", "batch_size=2", "-o", out]) == 0
    _check_png(out)
    bad = {
        "--y nope: no such variable": ["--x", "T", "--y", "nope", "--sel", "steps=100", "batch_size=1"],
        "unknown dim 'temperature'": ["--x", "T", "--y", "p_escape", "--sel", "temperature=0.01"],
        "--sel batch=1: unknown dim 'batch'; did you mean batch_size": ["--x", "T", "--y", "p_escape", "--sel", "batch=1"],
        "--sel batch_size=3: no batch_size value equal to it": ["--x", "T", "--y", "p_escape", "--sel", "batch_size=3"],
        r"--sel T=0.0137: no T value within 1% \(the nearest is 0.013": ["--x", "steps", "--y", "p_escape", "--sel", "T=0.0137"],
        "--x escape_step_bin: not a dim of p_escape": ["--x", "escape_step_bin", "--y", "p_escape"],
        "give --x and --y": ["--x", "T"],
        "not a number": ["--x", "T", "--y", "p_escape", "--sel", "T=abc"],
        "unknown image type": ["--x", "T", "--y", "p_escape", "--sel", "steps=100", "batch_size=1", "-o", str(tmp_path / "f.xyz")],
    }
    for msg, extra in bad.items():
        argv = ["plot", store] + extra + ([] if "-o" in extra else ["-o", out])
        with pytest.raises(InputError, match=msg):
            run_cli(argv)
    # dims left open take defaults, said on stderr (the DESIGN example: no steps given)
    capsys.readouterr()
    assert run_cli(["plot", store, "--x", "T", "--y", "log10_escape_time", "--hue", "batch_size", "-o", out]) == 0
    assert "using steps=1000" in capsys.readouterr().err
    with pytest.raises(SelectionError, match="more than one value left on steps"):
        plots.plot_cube(fits.load_cube(store), "T", "p_escape", sel={"batch_size": 1}, auto_sel=False)
    with pytest.raises(InputError, match="not a Zarr store"):
        run_cli(["plot", str(tmp_path), "--x", "T", "--y", "p_escape", "-o", out])


class _Collect(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tags, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v.startswith(("http:", "https:", "//")) or (tag == "link" and v):
                self.external.append(v)


def test_report(store, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert run_cli(["report", store, "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    parser.close()
    ds = fits.load_cube(store)
    page, titles = report.render_report(ds, source=store)
    assert len(titles) == 6  # 3 batch sizes: the batch figure too
    assert len(parser.imgs) == len(titles)
    for src in parser.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    assert not parser.external  # self-contained
    assert {"html", "head", "body", "table", "figure", "pre"} <= set(parser.tags)
    assert 'name = "synthetic"' in html.unescape(text)  # the spec
    assert "spec_hash" in text and "versions" in text  # provenance
    assert "ln tau = a + b / T" in text and "Does T/B alone set tau?" in text
    assert "not run (n_walkers = 0) at T = 0.011" in text  # the unbounded list
    assert "no escapes (tau only bounded below) at T = 0.005" in text
    with pytest.raises(InputError, match="does not exist"):
        run_cli(["report", store, "-o", str(tmp_path / "nodir" / "r.html")])


def test_on_a_real_cube_from_the_runner(tmp_path, capsys):
    """The lead's writer end to end (in-process Dask): survival from escape_hist matches the counts,
    and fit / plot / report run on the real layout (progress group, consolidated metadata)."""
    from distributed import LocalCluster

    from helpers import write_spec
    from pipeline import open_cube, run_sweep
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep.runner import RunOptions
    from pipeline import stats

    spec = write_spec(tmp_path, name="real", walkers=600, T="[0.012, 0.016, 0.02, 0.03]", steps="[20, 100, 1000]",
                      batch_size="[1, 2]")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as c:
        s = run_sweep(str(spec), RunOptions(cluster=ClusterOptions(scheduler=c.scheduler_address), progress=False))
    path = s.path
    ds = open_cube(path).load()
    assert_survival_matches_counts(ds)
    # censored-rate columns of the writer agree with escape_time
    tau = stats.escape_time(ds["n_escaped"].values, ds["exposure"].values)[0]
    np.testing.assert_allclose(np.log10(tau), ds["log10_escape_time"].values, equal_nan=True)

    for argv in (["fit", path], ["fit", path, "--T-range", "0.01:0.02", "--exponential-only", "--no-save"],
                 ["plot", path, "--preset", "p_escape", "-o", str(tmp_path / "p.png")],
                 ["plot", path, "--x", "T", "--y", "log10_escape_time", "--hue", "batch_size", "-o", str(tmp_path / "t.png")],
                 ["report", path, "-o", str(tmp_path / "r.html")]):
        assert run_cli(argv) == 0, argv
    _check_png(tmp_path / "p.png")
    assert "ln tau = a + b / T" in capsys.readouterr().out
    f = fits.open_fits(path)
    assert int(f["fit_n_cells"].sel(steps=1000, batch_size=1).values.item()) >= 3
    again = open_cube(path)  # the cube still opens as before, with the fits group beside it
    assert set(again.data_vars) == set(ds.data_vars)


def test_markov_variables_when_present(cube, tmp_path):
    """A method = "both" cube adds mfpt / mfpt_rel_error on the cell dims: drawn with error bars,
    a markov preset, and a figure in the report; absent, the preset says what is missing."""
    with pytest.raises(SelectionError, match="no mfpt variable"):
        presets.preset(cube, "markov")
    ds = cube.copy()
    tau = np.exp(-2.0 + 0.1 / ds["T"] + 0.3 * (ds["batch_size"] - 1))
    ds["mfpt"] = tau.expand_dims(depth=ds["depth"], width=ds["width"]).transpose("T", "batch_size", "depth", "width")
    ds["mfpt_rel_error"] = 0.02 + 0 * ds["mfpt"]
    fig = plots.plot_cube(ds, "T", "mfpt", hue="batch_size", out=tmp_path / "m.png")
    assert [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert fig.axes[0].get_yscale() == "log"
    presets.preset(ds, "markov", out=tmp_path / "mk.png")
    _check_png(tmp_path / "mk.png")
    _, titles = report.render_report(ds)
    assert "Markov chain against Monte Carlo" in titles


def test_exact_solver_cube_counts_as_computed_and_is_fitted(tmp_path, capsys):
    """A method = markov cube has n_walkers = 0 everywhere: the report still counts its cells as
    computed, and `fit` fits the exact tau (and says so) instead of leaving every cell out."""
    import re

    from helpers import write_spec

    f = write_spec(tmp_path, name="mk", method="markov", walkers=1, T="[0.02, 0.025, 0.03]", steps="[100, 1000]",
                   batch_size="[1]", depth="[1.0]", width="[0.1]")
    assert run_cli(["run", str(f), "--workers", "1", "-q"]) == 0
    store = str(tmp_path / "mk.zarr")
    out = tmp_path / "r.html"
    assert run_cli(["report", store, "-o", str(out)]) == 0
    assert re.search(r"cells run</td><td[^>]*>3 / 3</td>", out.read_text())
    capsys.readouterr()
    assert run_cli(["fit", store, "--no-save"]) == 0
    text = capsys.readouterr().out
    assert "tau from: exact solver" in text
    f = fits.fit_cube(fits.load_cube(store))
    assert int(f["fit_n_cells"].isel(steps=0).squeeze()) == 3
    assert (f["tau_source"].values == 1).all()
