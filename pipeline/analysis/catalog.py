"""Names and one-line descriptions of the preset figures (no imports: the CLI's --help reads them)."""

PRESETS = {
    "p_escape": "P(escape within 100 and within 1000 steps) against T",
    "escape_time": "log10 escape time against T on 0.01..0.02 (said when clipped) with error bars and fit",
    "survival": "survival curves S(n) for a few T from escape_hist, log steps (Monte Carlo cubes)",
    "batch": "ln tau against batch size B for a few T",
    "markov": "the exact solver's mean escape time against T; on a both-cube with the Monte Carlo points and tau_MC / tau_exact below",
    "theory": "ln tau against 1/T: exact, Monte Carlo and each law, with a residual panel (escape-sweep theory)",
}
