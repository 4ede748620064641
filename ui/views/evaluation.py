"""Evaluation runs page: each run's metrics (with their confidence intervals) and plots, newest first.

Shown only when `<data_dir>/eval-runs/*/metrics.json` exists (see ui/app.py).
"""

from __future__ import annotations

import streamlit as st

from ui.eval_runs import eval_runs_dir, list_eval_runs, metric_rows
from ui.session import current_context

ctx = current_context()
st.title("Evaluation runs")
st.caption(f"From {eval_runs_dir(ctx.settings.data_dir)}; intervals are shown as mean [low, high].")

runs, problems = list_eval_runs(ctx.settings.data_dir)
for problem in problems:
    st.warning(problem)
if not runs:
    st.info("No evaluation runs yet.")
    st.stop()

choice = st.selectbox("Run", [r.name for r in runs])
run = next(r for r in runs if r.name == choice)
rows = metric_rows(run.metrics)
if rows:
    st.dataframe([{"metric": name, "value": value} for name, value in rows], hide_index=True)
else:
    st.info("This run's metrics.json holds no numbers to show.")
for plot in run.plots:
    st.image(str(plot), caption=plot.name)
