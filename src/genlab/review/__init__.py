"""Reviewing runs: `genlab-review` reads run directories through `genlab.run.layout.RunLayout`
and writes a comparison report (report.html) with a summary table in the terminal.

    runs     training runs, evaluate runs and sweeps read from their directories
    report   the self-contained HTML report (plotly charts, embedded grids)
    cli      the command line
"""
