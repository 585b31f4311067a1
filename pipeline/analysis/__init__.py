"""Reading cubes: selection, per-cell estimates and fits, tables, figures, presets and the report."""
