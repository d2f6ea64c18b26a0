"""The experiments behind the paper's tables, as library code that launch/ tools run.

  sweep.py        a grid of training runs, one `sine_jax.main` job per point and device
  tables.py       what the tables share: runs on disk, means and stds over seeds, cells
  paper_table.py  Table 1 (every model), with the paper's numbers
  sensitivity.py  Figure 4 (K x L heat map)
  ablations.py    SINE's switches one at a time, and the decision rule for a new default
"""
