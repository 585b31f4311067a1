"""pipeline.plots and pipeline.report: valid PNGs with error bars, a self-contained HTML page."""

import base64
import html
import html.parser
import re

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from pipeline.analysis import fits, plots, presets, report, tables
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


# ---------------------------------------------------------------------------------------------
# Every analysis command on the three kinds of cube: Monte Carlo, exact solver, both
# ---------------------------------------------------------------------------------------------

KINDS = ("montecarlo", "markov", "both")


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """Three real cubes made once by the runner (in-process Dask): a few T, B <= 2, short budgets."""
    from distributed import LocalCluster

    from helpers import write_spec
    from pipeline import run_sweep
    from pipeline.deploy import ClusterOptions
    from pipeline.sweep.runner import RunOptions

    d = tmp_path_factory.mktemp("kinds")
    out = {}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as c:
        for kind in KINDS:
            spec = write_spec(d, name=kind, method=kind, walkers=1 if kind == "markov" else 3000,
                              T="[0.025, 0.03]", steps="[100, 1000]", batch_size="[1, 2]")
            s = run_sweep(str(spec), RunOptions(cluster=ClusterOptions(scheduler=c.scheduler_address), progress=False))
            out[kind] = s.path
    return out


def _legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


@pytest.mark.parametrize("kind", KINDS)
def test_every_analysis_command_on_each_kind_of_cube(kinds, kind, tmp_path, capsys):
    """query, fit, plot (every preset), report and theory run on Monte Carlo, exact-solver and both
    cubes; what a cube cannot show is refused in one line, never drawn empty or mislabelled."""
    path = kinds[kind]
    assert run_cli(["query", path, "--var", "log10_escape_time", "--sel", "steps=100", "--format", "csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 1 + 4
    assert run_cli(["fit", path, "--no-save"]) == 0
    text = capsys.readouterr().out
    assert ("tau from: exact solver" in text) == (kind != "montecarlo")
    assert ("Memorylessness" in text) == (kind != "markov")  # nothing sampled: nothing to test
    assert run_cli(["theory", path, "--no-save", "--sel", "batch_size=1", "T=0.03"]) == 0  # MC: solved on the fly
    capsys.readouterr()
    ds = fits.load_cube(path)
    for name in presets.PRESETS:
        out = tmp_path / f"{name}.png"
        sel = ["--sel", "batch_size=1", "T=0.03"] if name == "theory" else []  # MC: exact tau solved on the fly
        if (name == "survival" and kind == "markov") or (name == "markov" and kind == "montecarlo"):
            with pytest.raises(SelectionError, match="nothing to show|no mfpt variable"):
                run_cli(["plot", path, "--preset", name, "-o", str(out)])
            continue
        if name in ("p_escape", "theory"):  # the command line (theory: test_theory.py looks into it)
            assert run_cli(["plot", path, "--preset", name, *sel, "-o", str(out)]) == 0, name
            if name == "theory":
                continue
        fig = presets.preset(ds, name, out=out)
        assert out.stat().st_size > 10_000
        texts = [t for ax in fig.axes for t in _legend_texts(ax)] + [ax.get_title() for ax in fig.axes]
        if kind == "markov":  # nothing sampled: nothing called Monte Carlo or a censored MLE
            assert not [t for t in texts if "Monte Carlo" in t or "censored" in t.lower()], (name, texts)
        if name == "markov":
            ax = fig.axes[0]
            assert any(t.startswith("exact solver") for t in _legend_texts(ax))
            mc_bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
            assert bool(mc_bars) == (kind == "both")
            if kind == "both":  # the ratio panel: MC / exact with its interval, around 1
                axr = fig.axes[1]
                assert axr.get_ylabel() == "tau_MC / tau_exact" and axr.get_yscale() == "log"
                bars = [c for c in axr.containers if isinstance(c, ErrorbarContainer)]
                y = np.concatenate([c.lines[0].get_ydata() for c in bars])
                tau = ds["mfpt"].sel(batch_size=[1, 2]).isel(depth=0, width=0).transpose("batch_size", "T").values
                mc = 10 ** ds["log10_escape_time"].sel(steps=1000).isel(depth=0, width=0).transpose("batch_size", "T").values
                want = (mc / tau)[np.isfinite(mc)]
                np.testing.assert_allclose(np.sort(y), np.sort(want.ravel()), rtol=1e-9)
        if name == "escape_time" and kind != "montecarlo":
            assert [t for t in _legend_texts(fig.axes[0]) if "exact tau" in t]
    out = tmp_path / "r.html"
    assert run_cli(["report", path, "-o", str(out)]) == 0
    page = out.read_text()
    _, titles = report.render_report(ds, source=path)
    parser = _Collect()
    parser.feed(page)
    assert len(parser.imgs) == len(titles)
    for src in parser.imgs:  # every embedded figure has something on it
        img = mpimg.imread(__import__("io").BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img[..., :3].std() > 0.05
    if kind == "markov":
        assert "Survival curves" not in titles and "median escape time against T" not in titles
        assert "(Survival curves): not drawn: a method = markov cube samples no walkers" in html.unescape(page)
        assert "Censored exponential MLE" not in page and "Monte Carlo censored" not in page
        assert "Not checked: the exact solver sampled no walkers" in page and "memoryless cells only" not in page
        assert "Monte Carlo (red" not in page and "Weighted least squares of the exact ln tau" in page
    else:
        assert "Survival curves" in titles
    assert ("Markov chain against Monte Carlo" in titles) == (kind == "both")


def test_solver_cube_descriptions_are_true_for_it(kinds):
    """A method = markov cube says what its variables hold: the exact solver's values, not a censored MLE."""
    mk = fits.load_cube(kinds["markov"])
    d = mk["log10_escape_time"].attrs["description"]
    assert d.startswith("method = markov") and "mfpt" in d and "exposure" not in d and "censored" not in d
    for name in ("p_escape_low", "escape_rate", "log10_escape_time_low"):
        assert "chi-square" not in mk[name].attrs["description"] and "Wilson" not in mk[name].attrs["description"]
    mc = fits.load_cube(kinds["montecarlo"])
    assert "budget is >= 1000 steps or >= 3 tau" in mc["log10_escape_time"].attrs["description"]


def test_figures_draw_fits_only_over_their_data(cube, tmp_path):
    """escape_time and batch presets: each fit line spans only the x of the cells it used, its legend
    counts them and (escape_time) speaks log10 like the axis; a clipped T range is said in the title."""
    fig = presets.preset_escape_time(cube)
    ax = fig.axes[0]
    f = fits.fit_cube(cube.sel(T=slice(0.01, 0.02)).sel(batch_size=[1]))
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert dashed
    for ln in dashed:
        lab = ln.get_label()
        steps = int(lab.split("steps=")[1].split(",")[0])
        fi = f.sel(steps=steps).isel(batch_size=0, depth=0, width=0)
        x = ln.get_xdata()
        assert np.isclose(x.min(), float(fi["fit_T_min"])) and np.isclose(x.max(), float(fi["fit_T_max"]))
        assert f"{int(fi['fit_n_cells'])} points: log10 tau = " in lab
        a, b = float(fi["arrhenius_intercept"]), float(fi["arrhenius_slope"])
        np.testing.assert_allclose(ln.get_ydata(), (a + b / x) / np.log(10))  # drawn in log10, like the axis
    assert "T clipped to 0.011..0.019" in ax.get_title()
    # batch: at T = 0.012 nothing escaped at B = 4, so that T's fit spans B = 1..2 only (no extrapolation)
    ds = synthetic_cube([0.012, 0.03], steps=[1000], batch_size=[1, 2, 4], walkers=1000, seed=2,
                        ln_tau=arrhenius(-2.0, 0.1, 3.0))
    assert int(ds["n_escaped"].sel(T=0.012, batch_size=4).sum()) == 0 and (ds["n_escaped"].sel(T=0.03) > 0).all()
    fig = presets.preset_batch(ds)
    fl = {ln.get_label().split(",")[0]: ln.get_xdata() for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"}
    assert fl["fit T = 0.012"].max() == 2 and fl["fit T = 0.03"].max() == 4
    assert "fit T = 0.012, 2 points" in [t.split(":")[0] for t in _legend_texts(fig.axes[0])]
    lo, hi = fig.axes[0].get_ylim()
    assert hi < float(np.log(ds["exposure"].sel(T=0.012, batch_size=4).max())) + 3  # the axis is not stretched by a fit
    # survival: log steps, so curves that fall within tens of steps are not crushed on the axis
    assert presets.preset_survival(cube).axes[0].get_xscale() == "log"


def test_lower_bound_triangles_are_told_apart(tmp_path):
    """Cells where nothing escaped at the same T for two batch sizes: triangles in each line's
    colour, side by side, not one drawn over the other."""
    ds = synthetic_cube([0.005, 0.006, 0.02, 0.025], steps=[100], batch_size=[1, 2], walkers=300, seed=1,
                        ln_tau=arrhenius(-2.0, 0.1, 0.5))
    assert (ds["n_escaped"].sel(T=[0.005, 0.006]) == 0).all()
    fig = plots.plot_cube(ds, "T", "log10_escape_time", hue="batch_size", out=tmp_path / "b.png")
    tri = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() == "^"]
    assert len(tri) == 2
    assert tri[0].get_markerfacecolor() != tri[1].get_markerfacecolor()
    assert not np.allclose(tri[0].get_xdata(), tri[1].get_xdata())


def test_store_messages_are_one_uniform_line(tmp_path, capsys):
    """Every command that reads a store says which failure it was, in one line, exit 2."""
    from pipeline.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    cases = {tmp_path / "missing.zarr": "no such path", tmp_path / "empty": "not an escape-sweep cube (no zarr.json",
             tmp_path / "file.txt": "not an escape-sweep cube (a file", bad: "unreadable ("}
    extra = {"plot": ["--preset", "p_escape", "-o", str(tmp_path / "x.png")], "report": ["-o", str(tmp_path / "x.html")]}
    for cmd in ("query", "status", "verify", "plot", "fit", "report", "theory"):
        for path, why in cases.items():
            capsys.readouterr()
            assert main([cmd, str(path), *extra.get(cmd, [])]) == 2, (cmd, path)
            err = capsys.readouterr().err
            assert err == f"escape-sweep: error: STORE {path}: {why}" + err.split(why, 1)[1], (cmd, err)
            assert err.count("\n") == 1, (cmd, err)


def test_validate_prints_lines_a_person_reads(tmp_path, capsys):
    from pipeline.cli import main

    from helpers import write_spec

    f = write_spec(tmp_path, name="v", walkers=20000, T="[0.01, 0.02]", steps="[100, 1000]", batch_size="[1, 2]")
    assert main(["validate", str(f)]) == 0
    out = capsys.readouterr().out
    assert "{" not in out and "'" not in out.split("spec 'v'")[1]  # no Python dict or repr
    assert "= 4 cells, 20,000 walkers each" in out
    assert "walker-steps" in out and ".0 " not in out and not [w for w in out.split() if w.endswith(".0")]


def test_figures_and_report_say_which_fits_are_rejected_and_which_cells_are_left_out(cube, kinds):
    """A curved ln tau with a start-up delay: the Arrhenius fit is rejected (the legend and the Fits
    intro say so), the early-deficit cells are ringed on the figure and listed under their own
    heading (they have a two-sided tau); Figure 1's caption names the budgets drawn; the exact
    solver's figures say what their band is and are titled by the solver, not a budget."""
    ds = synthetic_cube(np.linspace(0.01, 0.02, 6), steps=[100, 1000], walkers=2000, seed=3, delay=20,
                        ln_tau=lambda T, B, d, w: -8 + 0.25 / T + 3e4 * (T - 0.015) ** 2)
    f = fits.fit_cube(ds)
    fi = f.sel(steps=1000).isel(batch_size=0, depth=0, width=0)
    assert float(fi["arrhenius_gof_p"]) < fits.REJECT_P
    ax = presets.preset_escape_time(ds).axes[0]
    dashed = [ln.get_label() for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert dashed == [next(t for t in _legend_texts(ax) if t.startswith("fit steps=1000"))]
    assert dashed[0].endswith(f"(rejected: chi\u00b2/dof {float(fi['arrhenius_chi2_dof']):.3g}, p < 0.01)")
    early = f["cell_status"].isel(batch_size=0, depth=0, width=0) == fits.EARLY
    assert int(early.sum()) > 0
    rings = [ln for ln in ax.get_lines() if ln.get_label() == "left out of the fit: early deficit"]
    assert len(rings) == 1 and rings[0].get_markerfacecolor() == "white"
    np.testing.assert_allclose(np.sort(rings[0].get_xdata()), np.sort(ds["T"].values[early.any("steps").values]))
    tested = int(np.isfinite(f["arrhenius_gof_p"]).sum() + np.isfinite(f["linear_gof_p"]).sum())
    assert f"Most fits are rejected: {tested} of {tested} tested fits" in report._fit_intro(ds, f)
    assert "Some fits are rejected: 6 of 12 tested fits (ln tau = a + b/T: 0 of 6; ln tau = a + b T: 6 of 6)" in \
        report._fit_intro(cube, fits.fit_cube(cube))  # Arrhenius data: the Arrhenius fits pass, the linear ones not
    sec = report._unbounded_section(f)
    head = sec.index("Cells left out of the fits (tau bounded on both sides)")
    assert sec.index("no escapes") < head < sec.index("early deficit (budget too short")
    assert "1 slice without a fit (fewer than 2 cells" in tables.format_table(f)
    assert re.search(r"fits with >= 2 cells \(table: --all\); \d+(\.\.\d+)? per step budget",
                     tables.format_table(fits.fit_cube(cube)))
    cap = report._figures(ds.sel(steps=[1000]), None)[0][1]
    assert cap.startswith("Probability of escaping within 1000 steps (the cube's budget nearest")
    assert presets.band_note(8e-4, 20.0) == "band: discretisation error, < 0.08% here (too thin to see)"
    assert presets.band_note(0.2, 1.0) == "band: discretisation error, up to 20%"
    mk = fits.load_cube(kinds["markov"])
    title = presets.preset_markov(mk).axes[0].get_title()
    rel = float(abs(mk["mfpt_rel_error"]).max())
    assert f"{100 * rel:.2g}%" in title and "band: discretisation error" in title
    title = report._exact_every_t(mk, None).axes[0].get_title()
    assert "exact solver (mfpt)" in title and "steps" not in title
