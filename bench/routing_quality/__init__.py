"""Routing quality of the difficulty classifier (APGR, CPT) and its cost per decision."""
