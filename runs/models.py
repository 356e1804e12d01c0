"""Run and its lifecycle: arrives with the runs issue (DESIGN.md section 3)."""
